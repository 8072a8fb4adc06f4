"""SIP dialogs (RFC 3261 section 12), sans-IO.

A :class:`Dialog` holds the dialog state of section 12.1 (Call-ID, tags, local
and remote URIs, CSeq numbers, remote target, route set, secure flag) and
builds or checks the requests sent inside it. It never sends anything and has
no clock: the transaction layer adds the Via and carries the messages, the
transaction user (TU) decides what to answer.

Errors: :class:`~sip.errors.RemoteProtocolError` (with ``status_hint``) when
what the peer sent cannot be accepted in this dialog (500 out-of-order CSeq,
491 re-INVITE glare, 481 dialog gone); :class:`~sip.errors.LocalProtocolError`
when the caller misuses the object (wrong dialog, request on a terminated
dialog, a second INVITE while one is pending).
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Iterable, Iterator

from sip.errors import LocalProtocolError, RemoteProtocolError
from sip.message import Headers, Request, Response, make_response
from sip.uri import NameAddr, SipUri

__all__ = [
    "TARGET_REFRESH_METHODS",
    "Dialog",
    "DialogId",
    "DialogRegistry",
    "DialogState",
]

DialogId = tuple[str, str, str]
"""``(call_id, local_tag, remote_tag)``; a missing remote tag (RFC 2543 peer) is ``""``."""

# RFC 3261 12.2 (INVITE), RFC 3311 (UPDATE), RFC 6665 (SUBSCRIBE, NOTIFY), RFC 3515 (REFER).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})

# CSeq numbers are 32-bit unsigned (RFC 3261 8.1.1.5).
_MAX_CSEQ = 2**32 - 1
# URI parts that section 19.1.1 (table 1) forbids in a Request-URI; a strict
# router's Record-Route may carry them.
_NOT_IN_REQUEST_URI = ("method",)


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


def _with_tag(addr: NameAddr, tag: str) -> NameAddr:
    out = addr.copy()
    out.params.pop("tag", None)
    if tag:
        out.params["tag"] = tag
    return out


def _tag_of(addr: NameAddr) -> str:
    return addr.params.get("tag") or ""


def _route_set(values: list[str]) -> list[NameAddr]:
    return [NameAddr.parse(v) for v in values]


def _is_success(status: int) -> bool:
    return 200 <= status < 300


class Dialog:
    """One dialog, UAC or UAS side. Build it with :meth:`from_uac_response` or
    :meth:`from_uas_request`; the constructor is public so that a B2BUA or a
    test can restore a dialog from stored state."""

    __slots__ = (
        "_initial_local_seq",
        "_pending_invite_seq",
        "call_id",
        "is_uac",
        "local_contact",
        "local_party",
        "local_seq",
        "local_tag",
        "remote_party",
        "remote_seq",
        "remote_tag",
        "remote_target",
        "route_set",
        "secure",
        "state",
    )

    def __init__(
        self,
        *,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_party: NameAddr,
        remote_party: NameAddr,
        local_seq: int | None,
        remote_seq: int | None,
        remote_target: SipUri,
        route_set: Iterable[NameAddr],
        local_contact: NameAddr,
        is_uac: bool,
        secure: bool = False,
        state: DialogState = DialogState.EARLY,
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        # From/To of our requests: the display name and URI are the dialog's
        # local/remote URI (12.1), the tag is kept in sync with the dialog ID.
        self.local_party = _with_tag(local_party, local_tag)
        self.remote_party = _with_tag(remote_party, remote_tag)
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.remote_target = remote_target
        self.route_set = list(route_set)
        self.local_contact = local_contact
        self.is_uac = is_uac
        self.secure = secure
        self.state = state
        self._pending_invite_seq: int | None = None
        self._initial_local_seq: int | None = None

    # ------------------------------------------------------------------ creation

    @classmethod
    def from_uac_response(cls, request: Request, response: Response) -> Dialog:
        """The UAC's dialog (12.1.2) from a dialog-creating request we sent and a
        101-199 response carrying a To tag (early dialog) or a 2xx (confirmed)."""
        if not 101 <= response.status < 300:
            raise LocalProtocolError(f"a {response.status} response does not create a dialog")
        if response.call_id != request.call_id:
            raise RemoteProtocolError("response Call-ID differs from the request's")
        local_tag = _tag_of(request.from_)
        if not local_tag:
            raise LocalProtocolError("the request has no From tag")
        if _tag_of(response.from_) != local_tag:
            raise RemoteProtocolError("response From tag differs from the request's")
        remote_tag = _tag_of(response.to)
        if not remote_tag:
            raise RemoteProtocolError("dialog-creating response without a To tag")
        request_contacts = request.contact
        if not request_contacts:
            raise LocalProtocolError("the dialog-creating request has no Contact")
        contacts = response.contact
        if contacts:
            remote_target = contacts[0].uri.copy()
        elif _is_success(response.status):
            raise RemoteProtocolError("2xx response without Contact")
        else:
            # A 1xx without Contact still creates the early dialog; the 2xx
            # that confirms it must carry the real target (confirm()).
            remote_target = request.uri.copy()
        dialog = cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_party=request.from_,
            remote_party=request.to,
            local_seq=request.cseq.seq,
            remote_seq=None,
            remote_target=remote_target,
            route_set=reversed(_route_set(response.headers.get_all("Record-Route"))),
            local_contact=request_contacts[0],
            is_uac=True,
            # No transport here: a SIPS Request-URI is the part of 12.1.2 we can see.
            secure=request.uri.scheme == "sips",
            state=DialogState.CONFIRMED if _is_success(response.status) else DialogState.EARLY,
        )
        if request.method == "INVITE" and not _is_success(response.status):
            dialog._pending_invite_seq = request.cseq.seq
        return dialog

    @classmethod
    def from_uas_request(
        cls,
        request: Request,
        local_tag: str,
        local_contact: NameAddr,
        *,
        local_seq: int | None = None,
    ) -> Dialog:
        """The UAS's dialog (12.1.1) for a dialog-creating request we received.

        It stays early until :meth:`confirm` (call it when the 2xx is sent).
        ``local_seq`` is the CSeq our first request will use; by default it is
        drawn at random (8.1.1.5) when that request is built."""
        if _tag_of(request.to):
            raise LocalProtocolError("the request already has a To tag: it is inside a dialog")
        if not local_tag:
            raise LocalProtocolError("empty local tag")
        contacts = request.contact
        if not contacts:
            raise RemoteProtocolError("dialog-creating request without Contact")
        dialog = cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=_tag_of(request.from_),
            local_party=request.to,
            remote_party=request.from_,
            local_seq=None,
            remote_seq=request.cseq.seq,
            remote_target=contacts[0].uri.copy(),
            route_set=_route_set(request.headers.get_all("Record-Route")),
            local_contact=local_contact,
            is_uac=False,
            secure=request.uri.scheme == "sips",
        )
        dialog._initial_local_seq = local_seq
        return dialog

    # ------------------------------------------------------------------ state

    @property
    def id(self) -> DialogId:
        return (self.call_id, self.local_tag, self.remote_tag)

    @property
    def invite_pending(self) -> bool:
        """True while an INVITE we sent in this dialog has no final response:
        no new INVITE may be sent, and an incoming re-INVITE gets 491 (14.1)."""
        return self._pending_invite_seq is not None

    def invite_ended(self) -> None:
        """The outgoing INVITE transaction ended without a final response
        reaching :meth:`receive_response` (timeout, transport error)."""
        self._pending_invite_seq = None

    def confirm(self, response: Response | None = None) -> None:
        """early -> confirmed. The UAC passes the 2xx: the route set and remote
        target are recomputed from it (13.2.2.4). The UAS calls it when it sends
        its 2xx (no argument needed). A no-op once confirmed."""
        if self.state is DialogState.TERMINATED:
            raise LocalProtocolError("dialog is terminated")
        if self.state is DialogState.CONFIRMED:
            return
        if self.is_uac:
            if response is None:
                raise LocalProtocolError("the UAC confirms a dialog with the 2xx it received")
            self._check_response(response)
            if not _is_success(response.status):
                raise LocalProtocolError(f"a {response.status} response does not confirm a dialog")
            contacts = response.contact
            if not contacts:
                raise RemoteProtocolError("2xx response without Contact")
            self.route_set = list(reversed(_route_set(response.headers.get_all("Record-Route"))))
            self.remote_target = contacts[0].uri.copy()
            self._invite_answered(response)
        elif response is not None and not _is_success(response.status):
            raise LocalProtocolError(f"a {response.status} response does not confirm a dialog")
        self.state = DialogState.CONFIRMED

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED
        self._pending_invite_seq = None

    # ------------------------------------------------------------------ sending

    def create_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> Request:
        """A new request inside the dialog (12.2.1.1), without Via.

        Takes the next local CSeq. An INVITE marks :attr:`invite_pending` until
        its final response reaches :meth:`receive_response`."""
        if method in ("ACK", "CANCEL"):
            raise LocalProtocolError(
                f"{method} is not built here: use create_ack(), or CANCEL from the INVITE (9.1)"
            )
        if self.state is DialogState.TERMINATED:
            raise LocalProtocolError("dialog is terminated")
        if method == "INVITE" and self.invite_pending:
            raise LocalProtocolError("an INVITE transaction is already in progress (14.1)")
        if body and content_type is None:
            raise LocalProtocolError("a body needs a Content-Type")
        seq = self._next_local_seq()
        request = self._build(method, seq, body, content_type, extra_headers)
        if method in TARGET_REFRESH_METHODS:
            request.headers.add("Contact", str(self.local_contact))
        if method == "INVITE":
            self._pending_invite_seq = seq
        return request

    def create_ack(
        self,
        invite: Request,
        response_2xx: Response,
        *,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """The ACK for a 2xx to ``invite`` (13.2.2.4): built like any request in
        the dialog, but with the INVITE's CSeq number and credentials. Pass the
        SDP answer as ``body`` when the 2xx carried the offer. Does not change
        the dialog: feed the 2xx to :meth:`receive_response` first."""
        if invite.method != "INVITE":
            raise LocalProtocolError(f"ACK for a {invite.method}")
        if not _is_success(response_2xx.status):
            raise LocalProtocolError("the ACK for a non-2xx response belongs to the transaction")
        self._check_response(response_2xx)
        cseq = response_2xx.cseq
        if cseq.method != "INVITE" or cseq.seq != invite.cseq.seq:
            raise LocalProtocolError("the 2xx does not answer this INVITE")
        if body and content_type is None:
            raise LocalProtocolError("a body needs a Content-Type")
        credentials = [
            (name, value)
            for name in ("Authorization", "Proxy-Authorization")
            for value in invite.headers.get_all(name)
        ]
        return self._build("ACK", invite.cseq.seq, body, content_type, credentials)

    def create_response(
        self,
        request: Request,
        status: int,
        reason: str | None = None,
        *,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        """A response to ``request`` received in (or creating) this dialog.

        ``make_response`` plus what section 12 adds: our tag in To; for
        101-299, the request's Record-Route copied in order (12.1.1; the UAC
        builds its route set from it) and our Contact when the method is a
        target refresh. Does not change the dialog: call :meth:`confirm` when
        sending the 2xx that establishes it."""
        if request.call_id != self.call_id or _tag_of(request.from_) != self.remote_tag:
            raise LocalProtocolError("request does not belong to this dialog")
        to_tag = _tag_of(request.to)
        if to_tag and to_tag != self.local_tag:
            raise LocalProtocolError("request does not belong to this dialog")
        if body and content_type is None:
            raise LocalProtocolError("a body needs a Content-Type")
        response = make_response(request, status, reason, to_tag=self.local_tag)
        if 101 <= status < 300:
            for record_route in request.headers.get_all("Record-Route"):
                response.headers.add("Record-Route", record_route)
            if request.method in TARGET_REFRESH_METHODS:
                response.headers.add("Contact", str(self.local_contact))
        if content_type is not None:
            response.headers.add("Content-Type", content_type)
        response.body = body
        return response

    def _next_local_seq(self) -> int:
        if self.local_seq is None:
            if self._initial_local_seq is not None:
                seq = self._initial_local_seq
            else:
                # 8.1.1.5: any start below 2**31; kept small so it can grow for ever.
                seq = secrets.randbelow(2**16) + 1
        elif self.local_seq >= _MAX_CSEQ:
            raise LocalProtocolError("local CSeq exhausted")
        else:
            seq = self.local_seq + 1
        self.local_seq = seq
        return seq

    def _request_uri_and_routes(self) -> tuple[SipUri, list[str]]:
        # The remote target comes from a Contact, whose ?headers and method parameter have
        # no place in a Request-URI (RFC 3261 §19.1.1 table 1; a peer answers 400 to them).
        target = self.remote_target.copy()
        for name in _NOT_IN_REQUEST_URI:
            target.params.pop(name, None)
        target.headers.clear()
        if not self.route_set:
            return target, []
        first = self.route_set[0]
        if "lr" in first.uri.params:
            return target, [str(r) for r in self.route_set]
        # Strict router (12.2.1.1): it wants to be the Request-URI, and the
        # real target travels as the last Route.
        uri = first.uri.copy()
        for name in _NOT_IN_REQUEST_URI:
            uri.params.pop(name, None)
        uri.headers.clear()
        routes = [str(r) for r in self.route_set[1:]]
        routes.append(f"<{self.remote_target}>")
        return uri, routes

    def _build(
        self,
        method: str,
        seq: int,
        body: bytes,
        content_type: str | None,
        extra_headers: Iterable[tuple[str, str]],
    ) -> Request:
        uri, routes = self._request_uri_and_routes()
        headers = Headers([("Route", route) for route in routes])
        headers.add("Max-Forwards", "70")
        headers.add("From", str(self.local_party))
        headers.add("To", str(self.remote_party))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{seq} {method}")
        for name, value in extra_headers:
            headers.add(name, value)
        if content_type is not None:
            headers.add("Content-Type", content_type)
        return Request(method=method, uri=uri, headers=headers, body=body)

    # ------------------------------------------------------------------ receiving

    def receive_request(self, request: Request) -> None:
        """Check and apply a request received in this dialog (12.2.2).

        Raises RemoteProtocolError with status_hint 500 for an out-of-order CSeq,
        491 for a re-INVITE
        while our INVITE is pending (14.1; the CSeq is still recorded, the
        target is not refreshed), 481 if the dialog is terminated. A BYE
        terminates the dialog; the TU still answers it 200."""
        if request.call_id != self.call_id or _tag_of(request.to) != self.local_tag:
            raise LocalProtocolError("request does not belong to this dialog")
        if _tag_of(request.from_) != self.remote_tag:
            raise LocalProtocolError("request does not belong to this dialog")
        if self.state is DialogState.TERMINATED:
            raise RemoteProtocolError("dialog is terminated", status_hint=481)
        method = request.method
        if method in ("ACK", "CANCEL"):
            # Both reuse the CSeq number of the INVITE they belong to.
            return
        seq = request.cseq.seq
        refresh: SipUri | None = None
        if method in TARGET_REFRESH_METHODS:
            contacts = request.contact
            if contacts:
                refresh = contacts[0].uri.copy()
        if self.remote_seq is not None and seq < self.remote_seq:
            raise RemoteProtocolError(
                f"CSeq {seq} lower than {self.remote_seq}: out of order", status_hint=500
            )
        self.remote_seq = seq
        if method == "INVITE" and self.invite_pending:
            raise RemoteProtocolError("an INVITE of ours is pending (glare)", status_hint=491)
        if refresh is not None:
            self.remote_target = refresh
        if method == "BYE":
            self.terminate()

    def receive_response(self, response: Response) -> None:
        """Apply a response to a request we sent in this dialog: confirm an early
        UAC dialog on 2xx to the INVITE (recomputing route set and target),
        terminate it on a non-2xx final response to that INVITE or on 481/408
        to any request (12.2.1.2), refresh the remote target on a 2xx to a
        target refresh request, and clear :attr:`invite_pending`."""
        self._check_response(response)
        status = response.status
        cseq = response.cseq
        if self.state is DialogState.TERMINATED:
            return
        if cseq.method == "INVITE" and status >= 200 and cseq.seq == self._pending_invite_seq:
            self._invite_answered(response)
        if status in (408, 481):
            self.terminate()
            return
        if self.state is DialogState.EARLY and self.is_uac and cseq.method == "INVITE":
            if _is_success(status):
                self.confirm(response)
            elif status >= 300:
                self.terminate()
            return
        if _is_success(status) and cseq.method in TARGET_REFRESH_METHODS:
            contacts = response.contact
            if contacts:
                self.remote_target = contacts[0].uri.copy()

    def _invite_answered(self, response: Response) -> None:
        if response.cseq.method == "INVITE" and response.cseq.seq == self._pending_invite_seq:
            self._pending_invite_seq = None

    def _check_response(self, response: Response) -> None:
        if (
            response.call_id != self.call_id
            or _tag_of(response.from_) != self.local_tag
            or _tag_of(response.to) != self.remote_tag
        ):
            raise LocalProtocolError("response does not belong to this dialog")

    def __repr__(self) -> str:
        role = "UAC" if self.is_uac else "UAS"
        return f"<Dialog {role} {self.state.value} id={self.id!r}>"


def _message_dialog_id(msg: Request | Response) -> DialogId | None:
    to_tag = _tag_of(msg.to)
    if not to_tag:
        return None
    from_tag = _tag_of(msg.from_)
    if isinstance(msg, Request):
        # We are the recipient: our tag is in To.
        return (msg.call_id, to_tag, from_tag)
    # A response to our request: our tag is in From.
    return (msg.call_id, from_tag, to_tag)


class DialogRegistry:
    """The dialogs of one UA, found by Call-ID and tags (12.2.2, 12.1.2)."""

    __slots__ = ("_dialogs",)

    def __init__(self) -> None:
        self._dialogs: dict[DialogId, Dialog] = {}

    def add(self, dialog: Dialog) -> None:
        if dialog.id in self._dialogs:
            raise LocalProtocolError(f"dialog {dialog.id!r} already registered")
        self._dialogs[dialog.id] = dialog

    def remove(self, dialog: Dialog) -> None:
        self._dialogs.pop(dialog.id, None)

    def get(self, dialog_id: DialogId) -> Dialog | None:
        return self._dialogs.get(dialog_id)

    def match(self, msg: Request | Response) -> Dialog | None:
        """The live dialog a received message belongs to. None for a request
        outside any dialog (no To tag), for a response from a new fork (a To
        tag we do not know yet) and for a terminated dialog (answer 481)."""
        dialog_id = _message_dialog_id(msg)
        if dialog_id is None:
            return None
        dialog = self._dialogs.get(dialog_id)
        if dialog is None or dialog.state is DialogState.TERMINATED:
            return None
        return dialog

    def prune(self) -> list[Dialog]:
        """Forget terminated dialogs; returns them."""
        gone = [d for d in self._dialogs.values() if d.state is DialogState.TERMINATED]
        for dialog in gone:
            del self._dialogs[dialog.id]
        return gone

    def __contains__(self, dialog: object) -> bool:
        return isinstance(dialog, Dialog) and self._dialogs.get(dialog.id) is dialog

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))

    def __len__(self) -> int:
        return len(self._dialogs)
