"""The back-to-back user agent: two dialogs per call, media anchored between them.

Sans-IO like the SIP core it composes: it is fed transaction-layer events and
`now`, and answers by calling the two sides' TransactionLayers and the media
allocator. The asyncio service (recorder.service) moves the bytes and arms the
one timer that `get_timer()` asks for.

Vocabulary: the **A leg** faces whoever sent the INVITE, the **B leg** faces
where we sent ours. Inbound calls arrive on the external (trunk) side and their
B leg goes to the PBX; outbound calls the other way round.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from recorder.call.contact import contact_uri
from recorder.call.limits import Admission
from recorder.call.sdp_anchor import CryptoRewrite, LocalAnswer, anchor_sdp, is_sdp, local_answer
from recorder.config import SipSide
from recorder.ops.logs import get_logger
from sip.dialog import Dialog, DialogState
from sip.errors import RemoteProtocolError
from sip.message import (
    Headers,
    Message,
    Request,
    Response,
    generate_call_id,
    generate_tag,
    make_response,
)
from sip.transaction import (
    RequestReceived,
    ResponseReceived,
    TransactionEvent,
    TransactionTerminated,
    TransactionTimedOut,
)
from sip.uri import NameAddr, SipUri

Address = tuple[str, int]
log = get_logger("recorder.b2bua")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY, REFER, MESSAGE"
SUPPORTED = "timer, replaces"

# Headers of the A leg's INVITE that the B leg carries on (identity, privacy, RFC 4028 session
# timers, call information); everything else belongs to one leg only.
_INVITE_PASS = (
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Privacy",
    "Session-Expires",
    "Min-SE",
    "Subject",
    "Priority",
    "Alert-Info",
    "Call-Info",
    "Diversion",
    "History-Info",
    "User-to-User",
    "Accept",
    "Allow-Events",
)
_RESPONSE_PASS = (
    "P-Asserted-Identity",
    "Privacy",
    "Session-Expires",
    "Min-SE",
    "Retry-After",
    "Warning",
    "Reason",
    "Unsupported",
    "Accept",
    "Call-Info",
    "Alert-Info",
)
_IN_DIALOG_PASS = (
    *_INVITE_PASS,
    "Event",
    "Subscription-State",
    "Refer-To",
    "Referred-By",
    "Info-Package",
    "Recv-Info",
)

# Final responses that make sense only to the leg that received them are mapped (RFC 7092 §4).
_MAPPED_STATUS = {
    401: 403,  # credentials of one leg mean nothing to the other
    407: 403,
    300: 480,
    301: 480,
    302: 480,
    305: 480,
    380: 480,
    481: 500,  # "no such dialog" on one leg is our failure towards the other
    491: 491,
}


class MediaAnchor(Protocol):
    """One call's relay: a socket facing each leg."""

    def local_port(self, role: str) -> int: ...
    def set_remote(self, role: str, rtp: Address | None, rtcp: Address | None) -> None: ...
    # SRTP keys for an SDP going from `from_role` to `to_role` (None: only read it).
    def crypto(self, from_role: str, to_role: str | None) -> CryptoRewrite | None: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    # Close, then hand the final counters to `done`: at once for an in-process relay, once the
    # worker has closed the sockets for a media worker's session (issue 18).
    def finish(self, done: Callable[[dict[str, Any]], None]) -> None: ...


# (call id, the caller's side name) -> anchor (raises RuntimeError when full)
MediaFactory = Callable[[str, str], MediaAnchor]


@dataclass(frozen=True, slots=True)
class CallPlan:
    """What the application wants done with a new call, decided before any B leg exists.

    `answer_first`: the recorder answers the caller itself (to play the recording notice and
    listen for a refusal) and calls the PBX only when the application calls `B2bua.proceed`.
    """

    answer_first: bool = False
    # With answer_first: play the notice as early media (183) and answer only when the PBX does.
    early_media: bool = False
    # Codec names the B leg may be offered (issue 6: a recorded call uses codecs we decode).
    keep_codecs: tuple[str, ...] | None = None
    detail: Any = None
    # Refuse the call instead (e.g. 503 while storage is full, issue 20): nothing connects.
    reject: int | None = None
    retry_after: int | None = None
    reject_reason: str = "refused"


class CallHooks(Protocol):
    """The application's side of every call (policy, consent, recording)."""

    def plan(self, call: Call, now: float) -> CallPlan: ...
    def on_local_answer(self, call: Call, now: float) -> None: ...
    def on_b_progress(self, call: Call, early_media: bool, now: float) -> None: ...
    def on_bridged(self, call: Call, now: float) -> None: ...
    def on_info(self, call: Call, role: str, request: Request, now: float) -> bool: ...
    def on_ended(self, call: Call, now: float) -> None: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...


class SipPort(Protocol):
    """What the B2BUA needs of a SIP side: `sip.asyncio.SipEndpoint` in the service.

    The port reads its own clock, retransmits 2xx responses to INVITE until their ACK
    (reporting `TransactionTimedOut` with the INVITE's key when none comes), and delivers
    the layer's events back to `B2bua.handle_event`.
    """

    def send_request(self, request: Request, destination: Address, transport: str = ...) -> str: ...
    def send_response(self, key: str, response: Response) -> None: ...
    def send_stateless(self, msg: Message, destination: Address, transport: str = ...) -> None: ...
    def cancel_request(self, key: str) -> str | None: ...
    def find_cancelled(self, cancel: Request) -> str | None: ...


class SipSideRuntime:
    """A configured SIP side and the port it talks through."""

    def __init__(self, config: SipSide, port: SipPort, contact_host: Address) -> None:
        self.config = config
        self.port = port
        self.contact_host = contact_host

    @property
    def name(self) -> str:
        return self.config.name


class CallState(Enum):
    INVITING = "inviting"
    EARLY = "early"
    CONFIRMED = "confirmed"
    ENDED = "ended"


@dataclass(slots=True)
class Leg:
    role: str  # "a" or "b"
    side: SipSideRuntime
    peer: Address
    transport: str
    local_tag: str
    dialog: Dialog | None = None
    invite_key: str | None = None
    # The ACK we sent for the last 2xx received on this leg, resent when that 2xx is.
    last_ack: Request | None = None
    last_ack_cseq: int | None = None
    reinvite_pending: bool = False


@dataclass(slots=True)
class PendingAck:
    """A 2xx carried an offer (the INVITE had none): the ACK of the other leg brings the answer."""

    to_role: str  # the leg whose 2xx we must ACK once the answer arrives
    invite: Request
    response: Response


@dataclass(slots=True)
class Call:
    id: str
    direction: str
    a: Leg
    b: Leg
    a_invite: Request
    a_invite_key: str
    b_invite: Request
    created: float
    media: MediaAnchor | None = None
    state: CallState = CallState.INVITING
    a_final_sent: bool = False
    cancelled: bool = False
    answered_at: float | None = None
    end_reason: str = ""
    pending_ack: PendingAck | None = None
    ring_deadline: float | None = None
    plan: CallPlan = field(default_factory=CallPlan)
    # Set when we answered the caller ourselves (notice first); the B leg comes later.
    local: LocalAnswer | None = None
    b_sent: bool = False
    bridged_at: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def leg(self, role: str) -> Leg:
        return self.a if role == "a" else self.b

    def other(self, role: str) -> Leg:
        return self.b if role == "a" else self.a


@dataclass(slots=True)
class ClientContext:
    """What a request we sent was for, so that its responses reach the right place."""

    call: Call
    role: str  # the leg the request went out on
    kind: str  # "invite" (B leg's initial INVITE), "relay", "bye"
    request: Request
    upstream_key: str | None = None  # the server transaction on the other leg
    upstream_request: Request | None = None
    answered: bool = False


class B2bua:
    def __init__(
        self,
        external: SipSideRuntime,
        internal: SipSideRuntime,
        media_factory: MediaFactory,
        *,
        media_address: str,
        ring_timeout: float = 180.0,
        user_agent: str = "recorder",
        on_call_ended: Callable[[Call], None] | None = None,
        hooks: CallHooks | None = None,
    ) -> None:
        self.external = external
        self.internal = internal
        self.media_factory = media_factory
        self.media_address = media_address
        self.ring_timeout = ring_timeout
        self.user_agent = user_agent
        self.on_call_ended = on_call_ended
        self.hooks = hooks
        self.accepting = True
        self.admission: Admission | None = None  # [limits]: floods get 503 (issue 20)
        self.calls: dict[str, Call] = {}
        self._by_a_invite: dict[tuple[str, str], Call] = {}
        self._dialogs: dict[tuple[str, str, str, str], tuple[Call, str]] = {}
        self._b_call_ids: dict[tuple[str, str], Call] = {}
        self._clients: dict[tuple[str, str], ClientContext] = {}
        self._timers: list[tuple[float, int, str]] = []
        self._timer_seq = itertools.count()
        self.counters = {"calls": 0, "rejected": 0, "answered": 0, "failed": 0, "bad_requests": 0}
        self.counters["throttled"] = 0

    # ------------------------------------------------------------------ entry points
    def handle_event(self, side: SipSideRuntime, event: TransactionEvent, now: float) -> None:
        if isinstance(event, RequestReceived):
            try:
                self._on_request(side, event, now)
            except RemoteProtocolError as exc:
                self.counters["bad_requests"] += 1
                log.warning("sip.bad_request", side=side.name, error=str(exc))
                if event.key is not None and event.request.method != "ACK":
                    self._respond_bad_request(side, event.key, event.request, exc.status_hint, now)
        elif isinstance(event, ResponseReceived):
            context = self._clients.get((side.name, event.key)) if event.key else None
            try:
                self._on_response(side, event, now)
            except RemoteProtocolError as exc:
                self._on_bad_response(side, event, context, exc, now)
        elif isinstance(event, TransactionTimedOut):
            self._on_timeout(side, event, now)
        elif isinstance(event, TransactionTerminated):
            # A 2xx leaves its INVITE client transaction to end later (RFC 6026 timer M): what
            # it was for is forgotten then, or every answered call would leave it behind.
            self._clients.pop((side.name, event.key), None)

    def get_timer(self) -> float | None:
        own = self._timers[0][0] if self._timers else None
        theirs = self.hooks.get_timer() if self.hooks is not None else None
        if own is None or theirs is None:
            return own if theirs is None else theirs
        return min(own, theirs)

    def handle_timer(self, now: float) -> None:
        if self.hooks is not None:
            when = self.hooks.get_timer()
            if when is not None and when <= now:
                self.hooks.handle_timer(now)
        while self._timers and self._timers[0][0] <= now:
            _, _, call_id = heapq.heappop(self._timers)
            call = self.calls.get(call_id)
            if call and call.ring_deadline is not None and call.ring_deadline <= now:
                self._ring_timeout(call, now)

    def active_calls(self) -> int:
        return len(self.calls)

    def hangup_all(self, now: float) -> None:
        """End every call: BYE on answered legs, 503/CANCEL on calls still ringing."""
        for call in list(self.calls.values()):
            self.hangup(call, now, "shutdown")

    def hangup(self, call: Call, now: float, reason: str) -> None:
        """End one call from our side: BYE on answered legs, 503/CANCEL while ringing."""
        if call.state is CallState.ENDED:
            return
        if call.state is CallState.CONFIRMED:
            self._hangup(call, now, reason=reason, send_to=("a", "b"))
            return
        self._send_a_final(call, self._response(call.a_invite, 503, to_tag=call.a.local_tag), now)
        if call.b.invite_key is not None:
            call.b.side.port.cancel_request(call.b.invite_key)
        self._end_call(call, reason, now)

    # ------------------------------------------------------------------ requests
    def _on_request(self, side: SipSideRuntime, event: RequestReceived, now: float) -> None:
        request = event.request
        method = request.method
        to_tag = request.to.tag
        if method == "ACK":
            self._on_ack(side, request, now)
            return
        assert event.key is not None
        if method == "CANCEL":
            self._on_cancel(side, event.key, request, now)
            return
        if to_tag:
            found = self._dialogs.get((side.name, request.call_id, to_tag, request.from_.tag or ""))
            if found is None:
                self._respond(side, event.key, request, 481, now)
                return
            call, role = found
            self._on_in_dialog(call, role, event.key, request, now)
            return
        if method == "INVITE":
            self._on_new_invite(side, event, now)
        elif method == "OPTIONS":  # a draining node says 503: a load balancer's probe skips it
            response = self._response(request, 200 if self.accepting else 503)
            response.headers.set("Allow", ALLOW)
            response.headers.set("Accept", "application/sdp")
            response.headers.set("Supported", SUPPORTED)
            side.port.send_response(event.key, response)
        elif method in ("REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE", "NOTIFY", "REFER"):
            response = self._response(request, 405)
            response.headers.set("Allow", ALLOW)
            side.port.send_response(event.key, response)
        elif method == "BYE":
            self._respond(side, event.key, request, 481, now)
        else:
            response = self._response(request, 501)
            response.headers.set("Allow", ALLOW)
            side.port.send_response(event.key, response)

    def _on_new_invite(self, side: SipSideRuntime, event: RequestReceived, now: float) -> None:
        request, key = event.request, event.key
        assert key is not None
        source_host = event.source[0]
        if not side.config.allows(source_host):
            self.counters["rejected"] += 1
            log.warning("call.refused_source", side=side.name, source=source_host)
            self._respond(side, key, request, 403, now)
            return
        if not self.accepting:
            response = self._response(request, 503)
            response.headers.set("Retry-After", "30")
            side.port.send_response(key, response)
            return
        refusal = (
            None
            if self.admission is None
            else self.admission.admit(source_host, len(self.calls), now)
        )
        if refusal is not None:
            self.counters["throttled"] += 1
            if refusal.log:
                log.warning(
                    "call.throttled", side=side.name, source=source_host, reason=refusal.reason
                )
            response = self._response(request, 503)
            response.headers.set("Retry-After", str(refusal.retry_after))
            side.port.send_response(key, response)
            return
        for name in request.headers.get_all("Require"):
            if name.strip().lower() not in ("timer",):
                response = self._response(request, 420)
                response.headers.set("Unsupported", name.strip())
                side.port.send_response(key, response)
                return
        max_forwards = request.max_forwards
        if max_forwards is None:
            max_forwards = 70
        if max_forwards <= 0:
            self._respond(side, key, request, 483, now)
            return
        other = self.internal if side is self.external else self.external
        direction = "inbound" if side is self.external else "outbound"
        call_id = secrets.token_hex(8)
        try:
            media = self.media_factory(call_id, side.name)
        except RuntimeError:
            log.error("media.ports_exhausted", side=side.name)
            response = self._response(request, 503)
            response.headers.set("Retry-After", "5")
            side.port.send_response(key, response)
            return
        body = request.body
        content_type = request.headers.get("Content-Type")
        if is_sdp(content_type, body):
            try:
                body, offer = anchor_sdp(
                    body, self.media_address, media.local_port("b"), crypto=media.crypto("a", "b")
                )
            except RemoteProtocolError as exc:
                media.close()
                self._respond(side, key, request, 488, now, warning=str(exc))
                return
            media.set_remote("a", offer.rtp, offer.rtcp)
        a_leg = Leg("a", side, event.source, event.transport, generate_tag(), invite_key=key)
        try:
            a_leg.dialog = Dialog.from_uas_request(request, a_leg.local_tag, self._contact(a_leg))
        except RemoteProtocolError as exc:
            media.close()
            self._respond(side, key, request, exc.status_hint, now, warning=str(exc))
            return
        b_invite = self._build_b_invite(request, other, max_forwards - 1, body, content_type)
        b_leg = Leg(
            "b",
            other,
            other.config.next_hop,
            other.config.transport.upper(),
            b_invite.from_.tag or "",
        )
        call = Call(
            id=call_id,
            direction=direction,
            a=a_leg,
            b=b_leg,
            a_invite=request,
            a_invite_key=key,
            b_invite=b_invite,
            created=now,
            media=media,
        )
        self.calls[call_id] = call
        self._by_a_invite[(side.name, key)] = call
        self._b_call_ids[(other.name, b_invite.call_id)] = call
        self.counters["calls"] += 1
        log.info(
            "call.received",
            call_id=call_id,
            direction=direction,
            side=side.name,
            caller=request.from_.uri.user or "",
            callee=request.uri.user or "",
            sip_call_id=request.call_id,
        )
        self._respond(side, key, request, 100, now)
        if self.hooks is not None:
            call.plan = self.hooks.plan(call, now)
        if call.plan.reject is not None:
            response = self._response(request, call.plan.reject, to_tag=call.a.local_tag)
            if call.plan.retry_after is not None:
                response.headers.set("Retry-After", str(call.plan.retry_after))
            self._send_a_final(call, response, now)
            self._end_call(call, call.plan.reject_reason, now)
            return
        if call.plan.answer_first and is_sdp(content_type, request.body):
            self._answer_locally(call, media, now)
            return
        if call.plan.keep_codecs is not None and is_sdp(content_type, request.body):
            try:
                call.b_invite.body, _ = anchor_sdp(
                    request.body,
                    self.media_address,
                    media.local_port("b"),
                    keep_codecs=call.plan.keep_codecs,
                    crypto=media.crypto("a", "b"),
                )
            except RemoteProtocolError as exc:
                self._send_a_final(call, self._response(request, 488, to_tag=call.a.local_tag), now)
                self._end_call(call, f"no recordable codec: {exc}", now)
                return
        self.proceed(call, now)

    def _answer_locally(self, call: Call, media: MediaAnchor, now: float) -> None:
        """Answer the caller ourselves; the PBX is called once the application says so."""
        request = call.a_invite
        try:
            answer = local_answer(
                request.body,
                self.media_address,
                media.local_port("a"),
                int(now * 1000),
                crypto=media.crypto("a", "a"),
            )
        except RemoteProtocolError as exc:
            self._send_a_final(call, self._response(request, 488, to_tag=call.a.local_tag), now)
            self._end_call(call, f"unusable offer: {exc}", now)
            return
        call.local = answer
        # The PBX is offered only the codec the caller now uses: no transcoding, ever.
        keep = (answer.codec, "telephone-event")
        b_body, _ = anchor_sdp(
            request.body,
            self.media_address,
            media.local_port("b"),
            keep_codecs=keep,
            crypto=media.crypto("a", "b"),
        )
        call.b_invite.body = b_body
        early = call.plan.early_media
        response = self._local_answer_response(call, 183 if early else 200)
        self._register_a_dialog(call)
        if early:
            # The notice plays as early media: nothing is answered (nor billed) yet.
            call.state = CallState.EARLY
        else:
            assert call.a.dialog is not None
            call.a.dialog.confirm()
            call.a_final_sent = True
            call.state = CallState.CONFIRMED
            call.answered_at = now
        call.a.side.port.send_response(call.a_invite_key, response)
        log.info("call.answered_locally", call_id=call.id, codec=answer.codec, early_media=early)
        if self.hooks is not None:
            self.hooks.on_local_answer(call, now)

    def _local_answer_response(self, call: Call, status: int) -> Response:
        """Our own 183 or 200 to the caller, with the SDP answer we chose."""
        assert call.local is not None
        request = call.a_invite
        response = self._response(request, status, to_tag=call.a.local_tag)
        for route in request.headers.get_all("Record-Route"):
            response.headers.add("Record-Route", route)
        response.headers.set("Contact", str(self._contact(call.a)))
        response.headers.set("Allow", ALLOW)
        response.headers.set("Content-Type", "application/sdp")
        response.body = call.local.body
        return response

    def proceed(self, call: Call, now: float) -> None:
        """Send the B leg's INVITE (at once for plain calls; after the notice otherwise)."""
        if call.b_sent or call.state is CallState.ENDED:
            return
        call.b_sent = True
        b_leg = call.b
        b_key = b_leg.side.port.send_request(call.b_invite, b_leg.peer, b_leg.transport)
        b_leg.invite_key = b_key
        self._clients[(b_leg.side.name, b_key)] = ClientContext(call, "b", "invite", call.b_invite)

    def _build_b_invite(
        self,
        a_invite: Request,
        other: SipSideRuntime,
        max_forwards: int,
        body: bytes,
        content_type: str | None,
    ) -> Request:
        host, port = other.config.next_hop
        a_uri = a_invite.uri
        uri = SipUri(
            scheme="sip",
            user=a_uri.user,
            password=None,
            host=host,
            port=port,
            params={k: v for k, v in a_uri.params.items() if k == "user"},
            headers={},
        )
        a_from = a_invite.from_
        from_ = NameAddr(
            display=a_from.display, uri=a_from.uri.copy(), params={"tag": generate_tag()}
        )
        a_to = a_invite.to
        to = NameAddr(display=a_to.display, uri=a_to.uri.copy(), params={})
        user, transport = a_from.uri.user or "recorder", other.config.transport
        contact = contact_uri(user, other.config, other.contact_host, transport)
        headers = Headers()
        headers.add("Max-Forwards", str(max_forwards))
        headers.add("From", str(from_))
        headers.add("To", str(to))
        headers.add("Call-ID", generate_call_id())
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", str(NameAddr(display=None, uri=contact, params={})))
        headers.add("Allow", ALLOW)
        supported = [
            s.strip()
            for s in a_invite.headers.get_all("Supported")
            if s.strip().lower() != "100rel"
        ]
        if supported:
            headers.add("Supported", ", ".join(supported))
        headers.add("User-Agent", self.user_agent)
        _copy_headers(a_invite.headers, headers, _INVITE_PASS)
        _copy_x_headers(a_invite.headers, headers)
        if body:
            headers.add("Content-Type", content_type or "application/sdp")
        return Request(method="INVITE", uri=uri, headers=headers, body=body)

    def _on_cancel(self, side: SipSideRuntime, key: str, cancel: Request, now: float) -> None:
        invite_key = side.port.find_cancelled(cancel)
        call = self._by_a_invite.get((side.name, invite_key)) if invite_key else None
        if call is None or call.a_final_sent:
            self._respond(side, key, cancel, 481 if call is None else 200, now)
            return
        self._respond(side, key, cancel, 200, now)
        call.cancelled = True
        log.info("call.cancelled", call_id=call.id, by="caller")
        self._send_a_final(call, self._response(call.a_invite, 487, to_tag=call.a.local_tag), now)
        if call.b.invite_key is not None:
            call.b.side.port.cancel_request(call.b.invite_key)
        self._end_call(call, "cancelled", now, release_only=True)

    def _on_ack(self, side: SipSideRuntime, ack: Request, now: float) -> None:
        to_tag = ack.to.tag or ""
        found = self._dialogs.get((side.name, ack.call_id, to_tag, ack.from_.tag or ""))
        if found is None:
            return  # an ACK for a non-2xx is absorbed by its transaction; a stray one is dropped
        call, role = found
        pending = call.pending_ack
        if pending is not None and pending.to_role != role:
            call.pending_ack = None
            body = ack.body
            target = call.leg(pending.to_role)
            if is_sdp(ack.headers.get("Content-Type"), body) and call.media is not None:
                try:
                    body, answer = anchor_sdp(
                        body,
                        self.media_address,
                        call.media.local_port(target.role),
                        crypto=call.media.crypto(role, target.role),
                    )
                    call.media.set_remote(role, answer.rtp, answer.rtcp)
                except RemoteProtocolError as exc:
                    log.warning("call.bad_sdp_in_ack", call_id=call.id, error=str(exc))
                    body = b""
            self._ack_leg(call, target, pending.invite, pending.response, body, now)

    def _on_in_dialog(self, call: Call, role: str, key: str, request: Request, now: float) -> None:
        leg = call.leg(role)
        other = call.other(role)
        assert leg.dialog is not None
        leg.dialog.receive_request(request)
        method = request.method
        if method == "BYE":
            self._respond(leg.side, key, request, 200, now)
            log.info("call.bye", call_id=call.id, by="caller" if role == "a" else "callee")
            if role == "a" and not call.a_final_sent:
                # A BYE on the caller's early dialog (RFC 3261 §15.1.2): its INVITE gets 487.
                self._send_a_final(
                    call, self._response(call.a_invite, 487, to_tag=call.a.local_tag), now
                )
            self._hangup(call, now, reason=f"bye from {role}", send_to=(other.role,))
            return
        if (
            method == "INFO"
            and self.hooks is not None
            and self.hooks.on_info(call, role, request, now)
        ):
            self._respond(leg.side, key, request, 200, now)
            return
        other_gone = other.dialog is None or other.dialog.state is DialogState.TERMINATED
        if other_gone or call.state is CallState.ENDED:
            # The other leg does not exist yet (notice playing) or no longer does.
            if method in ("OPTIONS", "INFO", "NOTIFY"):
                self._respond(leg.side, key, request, 200, now)
            else:
                response = self._response(request, 491)
                response.headers.set("Retry-After", "2")
                leg.side.port.send_response(key, response)
            return
        assert other.dialog is not None
        body = request.body
        content_type = request.headers.get("Content-Type")
        if body and content_type is None and method not in ("INVITE", "UPDATE"):
            # RFC 3261 §7.4.1: a body needs its Content-Type (an offer without one is SDP)
            self._respond(leg.side, key, request, 400, now, warning="body without Content-Type")
            return
        if method == "INVITE":
            # The other leg's INVITE (its first one, still early, included) is pending (§14.1).
            if other.reinvite_pending or leg.reinvite_pending or other.dialog.invite_pending:
                self._respond(leg.side, key, request, 491, now)
                return
            other.reinvite_pending = True
        if method in ("INVITE", "UPDATE") and is_sdp(content_type, body) and call.media is not None:
            try:
                body, offer = anchor_sdp(
                    body,
                    self.media_address,
                    call.media.local_port(other.role),
                    crypto=call.media.crypto(role, other.role),
                )
            except RemoteProtocolError as exc:
                other.reinvite_pending = False
                self._respond(leg.side, key, request, 488, now, warning=str(exc))
                return
            call.media.set_remote(role, offer.rtp, offer.rtcp)
        extra: list[tuple[str, str]] = []
        for name in _IN_DIALOG_PASS:
            extra.extend((name, value) for value in request.headers.get_all(name))
        out = other.dialog.create_request(
            method,
            body=body,
            content_type=(content_type or "application/sdp") if body else None,
            extra_headers=extra,
        )
        out_key = other.side.port.send_request(out, other.peer, other.transport)
        self._clients[(other.side.name, out_key)] = ClientContext(
            call, other.role, "relay", out, upstream_key=key, upstream_request=request
        )

    # ------------------------------------------------------------------ responses
    def _on_response(self, side: SipSideRuntime, event: ResponseReceived, now: float) -> None:
        response = event.response
        if event.key is None:
            self._on_stray_response(side, response, now)
            return
        context = self._clients.get((side.name, event.key))
        if context is None:
            return
        if response.status >= 200 and not (
            response.status < 300 and response.cseq.method == "INVITE"
        ):
            # Non-INVITE finals and INVITE error finals end the transaction for us.
            self._clients.pop((side.name, event.key), None)
        if context.kind == "invite":
            self._on_b_invite_response(context, event.key, response, now)
        elif context.kind == "relay":
            self._on_relay_response(context, event.key, response, now)
        # "bye": nothing to relay; the call is already gone.

    def _on_bad_response(
        self,
        side: SipSideRuntime,
        event: ResponseReceived,
        context: ClientContext | None,
        exc: RemoteProtocolError,
        now: float,
    ) -> None:
        """A response the dialog layer cannot use (a 2xx without Contact, a To of another
        scheme...): end what it answers rather than leave the caller's transaction hanging."""
        response = event.response
        log.warning("sip.bad_response", side=side.name, status=response.status, error=str(exc))
        if context is None:
            return
        self._clients.pop((side.name, event.key or ""), None)
        call = context.call
        if context.kind == "invite" and call.state is not CallState.ENDED:
            if response.status < 200 and call.b.invite_key is not None:
                call.b.side.port.cancel_request(call.b.invite_key)
            if not call.a_final_sent:
                final = self._response(call.a_invite, 502, to_tag=call.a.local_tag)
                self._send_a_final(call, final, now)
                self._end_call(call, "bad response from callee", now)
            else:
                self._hangup(call, now, reason="bad response from callee", send_to=("a",))
        elif context.kind == "relay" and not context.answered:
            call.leg(context.role).reinvite_pending = False
            if context.upstream_key is not None and context.upstream_request is not None:
                up = call.other(context.role)
                self._respond(up.side, context.upstream_key, context.upstream_request, 502, now)

    def _on_stray_response(self, side: SipSideRuntime, response: Response, now: float) -> None:
        if not (200 <= response.status < 300 and response.cseq.method == "INVITE"):
            return
        call = self._b_call_ids.get((side.name, response.call_id))
        if call is None:
            # A 2xx retransmitted by the A leg's peer (we are the UAC only on B legs) or for an
            # ended call: ACK and BYE it statelessly is what RFC 3261 §13.2.2.4 asks of a UAC.
            return
        leg = call.b
        if leg.last_ack is not None and leg.last_ack_cseq == response.cseq.seq:
            leg.side.port.send_stateless(leg.last_ack, leg.peer, leg.transport)

    def _on_b_invite_response(
        self, context: ClientContext, key: str, response: Response, now: float
    ) -> None:
        call = context.call
        status = response.status
        b = call.b
        if call.local is not None and call.state is not CallState.ENDED:
            self._on_b_response_after_local_answer(context, response, now)
            return
        if status < 200:
            if call.a_final_sent:
                return
            # A 100 stops timer B: without the ring timeout, a PBX that says nothing after it
            # would hold the caller (and the call's media ports) for ever.
            self._arm_ring_timeout(call, now)
            if status == 100:
                return
            if response.to.tag and b.dialog is None:
                b.dialog = Dialog.from_uac_response(call.b_invite, response)
            self._arm_ring_timeout(call, now)
            provisional = self._relay_response(call, "a", call.a_invite, response, now)
            if provisional is None:
                return
            call.state = CallState.EARLY
            call.a.side.port.send_response(call.a_invite_key, provisional)
            self._register_a_dialog(call)
            return
        if 200 <= status < 300:
            if context.answered:
                # A retransmitted 2xx: our ACK got lost.
                if b.last_ack is not None:
                    b.side.port.send_stateless(b.last_ack, b.peer, b.transport)
                return
            context.answered = True
            if (
                b.dialog is None
                or b.dialog.state is DialogState.TERMINATED
                or b.dialog.remote_tag != (response.to.tag or "")
            ):
                b.dialog = Dialog.from_uac_response(call.b_invite, response)
            else:
                b.dialog.confirm(response)
            if call.a_final_sent or call.state is CallState.ENDED:
                # The CANCEL/200 race (RFC 3261 §9.1): the callee answered after the caller gave up.
                self._ack_leg(call, b, call.b_invite, response, b"", now)
                self._send_bye(call, b, now)
                log.info("call.late_answer_released", call_id=call.id)
                return
            self._register_b_dialog(call)
            late_offer = not call.b_invite.body
            answer = self._relay_response(call, "a", call.a_invite, response, now)
            if answer is None:
                self._ack_leg(call, b, call.b_invite, response, b"", now)
                self._send_bye(call, b, now)
                self._send_a_final(
                    call, self._response(call.a_invite, 502, to_tag=call.a.local_tag), now
                )
                self._end_call(call, "bad answer", now)
                return
            if late_offer and answer.body:
                call.pending_ack = PendingAck("b", call.b_invite, response)
            else:
                self._ack_leg(call, b, call.b_invite, response, b"", now)
            assert call.a.dialog is not None
            call.a.dialog.confirm()
            self._register_a_dialog(call)
            call.a.side.port.send_response(call.a_invite_key, answer)
            call.a_final_sent = True
            call.state = CallState.CONFIRMED
            call.answered_at = now
            call.ring_deadline = None
            call.bridged_at = now
            call.info["b_answer"] = response
            self.counters["answered"] += 1
            log.info("call.answered", call_id=call.id, setup_ms=round((now - call.created) * 1000))
            if self.hooks is not None:
                self.hooks.on_bridged(call, now)
            return
        # Final error.
        if call.a_final_sent:
            return
        mapped = self._relay_response(call, "a", call.a_invite, response, now)
        if mapped is not None:
            self._send_a_final(call, mapped, now)
        self.counters["failed"] += 1
        log.info("call.failed", call_id=call.id, status=status)
        self._end_call(call, f"callee answered {status}", now)

    def _arm_ring_timeout(self, call: Call, now: float) -> None:
        if call.ring_deadline is None:
            call.ring_deadline = now + self.ring_timeout
            heapq.heappush(self._timers, (call.ring_deadline, next(self._timer_seq), call.id))

    def _on_b_response_after_local_answer(
        self, context: ClientContext, response: Response, now: float
    ) -> None:
        """The caller already has our 200: the PBX's answers are ours to absorb."""
        call = context.call
        b = call.b
        status = response.status
        if status == 100:
            self._arm_ring_timeout(call, now)  # as for a plain call: no silence for ever
            return
        if status < 200:
            if response.to.tag and b.dialog is None:
                b.dialog = Dialog.from_uac_response(call.b_invite, response)
            early = self._b_media_from(call, response)
            self._arm_ring_timeout(call, now)
            if self.hooks is not None:
                self.hooks.on_b_progress(call, early, now)
            return
        if status < 300:
            if context.answered:
                if b.last_ack is not None:
                    b.side.port.send_stateless(b.last_ack, b.peer, b.transport)
                return
            context.answered = True
            if (
                b.dialog is None
                or b.dialog.state is DialogState.TERMINATED
                or b.dialog.remote_tag != (response.to.tag or "")
            ):
                b.dialog = Dialog.from_uac_response(call.b_invite, response)
            else:
                b.dialog.confirm(response)
            self._register_b_dialog(call)
            self._b_media_from(call, response)
            self._ack_leg(call, b, call.b_invite, response, b"", now)
            call.ring_deadline = None
            call.bridged_at = now
            if not call.a_final_sent:
                # Early-media notice: the caller is answered when the PBX answers.
                assert call.a.dialog is not None
                call.a.dialog.confirm()
                self._send_a_final(call, self._local_answer_response(call, 200), now)
                call.state = CallState.CONFIRMED
                call.answered_at = now
            call.info["b_answer"] = response
            self.counters["answered"] += 1
            log.info("call.bridged", call_id=call.id, setup_ms=round((now - call.created) * 1000))
            if self.hooks is not None:
                self.hooks.on_bridged(call, now)
            return
        self.counters["failed"] += 1
        log.info("call.failed", call_id=call.id, status=status)
        if not call.a_final_sent:
            # Not answered yet (early-media notice): the caller gets the PBX's answer.
            mapped = self._relay_response(call, "a", call.a_invite, response, now)
            if mapped is not None:
                mapped.body = b""
                mapped.headers.remove("Content-Type")
                self._send_a_final(call, mapped, now)
            self._end_call(call, f"callee answered {status}", now)
            return
        self._hangup(call, now, reason=f"callee answered {status}", send_to=("a",))

    def _b_media_from(self, call: Call, response: Response) -> bool:
        """Point the B leg's media at the PBX's SDP, if the response has one."""
        if call.media is None or not is_sdp(response.headers.get("Content-Type"), response.body):
            return False
        try:
            _, endpoint = anchor_sdp(
                response.body, self.media_address, 0, crypto=call.media.crypto("b", None)
            )
        except RemoteProtocolError as exc:
            log.warning("call.bad_sdp", call_id=call.id, error=str(exc))
            return False
        call.media.set_remote("b", endpoint.rtp, endpoint.rtcp)
        return endpoint.rtp is not None

    def _on_relay_response(
        self, context: ClientContext, key: str, response: Response, now: float
    ) -> None:
        call = context.call
        out_leg = call.leg(context.role)
        up_leg = call.other(context.role)
        upstream = context.upstream_request
        assert upstream is not None and context.upstream_key is not None
        status = response.status
        method = response.cseq.method
        if method == "INVITE" and status >= 200:
            out_leg.reinvite_pending = False
        if status == 100:
            return
        if status >= 200 and out_leg.dialog is not None and method in ("INVITE", "UPDATE"):
            out_leg.dialog.receive_response(response)
        if method == "INVITE" and 200 <= status < 300:
            if context.answered:
                if out_leg.last_ack is not None:
                    out_leg.side.port.send_stateless(
                        out_leg.last_ack, out_leg.peer, out_leg.transport
                    )
                return
            context.answered = True
            relayed = self._relay_response(call, up_leg.role, upstream, response, now)
            if relayed is None:
                self._ack_leg(call, out_leg, context.request, response, b"", now)
                self._respond(up_leg.side, context.upstream_key, upstream, 488, now)
                return
            if not context.request.body and relayed.body:
                call.pending_ack = PendingAck(out_leg.role, context.request, response)
            else:
                self._ack_leg(call, out_leg, context.request, response, b"", now)
            up_leg.side.port.send_response(context.upstream_key, relayed)
            return
        relayed = self._relay_response(call, up_leg.role, upstream, response, now)
        if relayed is not None:
            up_leg.side.port.send_response(context.upstream_key, relayed)

    def _relay_response(
        self, call: Call, to_role: str, request: Request, response: Response, now: float
    ) -> Response | None:
        """The response to send on leg `to_role`, SDP anchored; None if its SDP is unusable."""
        leg = call.leg(to_role)
        from_role = "b" if to_role == "a" else "a"
        status = _MAPPED_STATUS.get(response.status, response.status)
        reason = response.reason if status == response.status else None
        out = self._response(request, status, reason=reason, to_tag=leg.local_tag)
        _copy_headers(response.headers, out.headers, _RESPONSE_PASS)
        _copy_x_headers(response.headers, out.headers)
        if response.status < 300 or response.status == 422:
            for name in ("Require", "Supported"):
                values = [
                    v.strip()
                    for v in response.headers.get_all(name)
                    if v.strip().lower() != "100rel"
                ]
                if values:
                    out.headers.set(name, ", ".join(values))
        if response.status < 300:
            if request.method == "INVITE" and request.to.tag is None:
                # Proxies in front of us stay on the path of the A-leg dialog (§12.1.1).
                for route in request.headers.get_all("Record-Route"):
                    out.headers.add("Record-Route", route)
            out.headers.set("Contact", str(self._contact(leg)))
            out.headers.set("Allow", ALLOW)
        content_type = response.headers.get("Content-Type")
        # An error final's body describes no session: it is dropped, never anchored (a bad
        # SDP in a 302 must not keep the caller from the 480 it is owed; found by the fuzzer).
        if response.status < 300 and is_sdp(content_type, response.body) and call.media is not None:
            try:
                body, endpoint = anchor_sdp(
                    response.body,
                    self.media_address,
                    call.media.local_port(to_role),
                    crypto=call.media.crypto(from_role, to_role),
                )
            except RemoteProtocolError as exc:
                log.warning("call.bad_sdp", call_id=call.id, error=str(exc))
                return None
            call.media.set_remote(from_role, endpoint.rtp, endpoint.rtcp)
            out.body = body
            out.headers.set("Content-Type", "application/sdp")
        return out

    # ------------------------------------------------------------------ timeouts
    def _on_timeout(self, side: SipSideRuntime, event: TransactionTimedOut, now: float) -> None:
        context = self._clients.pop((side.name, event.key), None)
        if context is None:
            call_waiting = self._by_a_invite.get((side.name, event.key))
            if call_waiting is not None and call_waiting.state is CallState.CONFIRMED:
                # Our 2xx was never ACKed (RFC 3261 §13.3.1.4): the session is over.
                log.warning("call.ack_timeout", call_id=call_waiting.id)
                self._hangup(call_waiting, now, reason="no ACK", send_to=("a", "b"))
            return
        call = context.call
        if context.kind == "invite" and call.local is not None:
            log.warning("call.callee_timeout", call_id=call.id)
            self.counters["failed"] += 1
            if not call.a_final_sent:
                self._send_a_final(
                    call, self._response(call.a_invite, 408, to_tag=call.a.local_tag), now
                )
                self._end_call(call, "callee did not answer", now)
            else:
                self._hangup(call, now, reason="callee did not answer", send_to=("a",))
        elif context.kind == "invite":
            if not call.a_final_sent:
                log.warning("call.callee_timeout", call_id=call.id)
                self._send_a_final(
                    call, self._response(call.a_invite, 408, to_tag=call.a.local_tag), now
                )
                self.counters["failed"] += 1
            self._end_call(call, "callee did not answer", now)
        elif context.kind == "relay":
            out_leg = call.leg(context.role)
            out_leg.reinvite_pending = False
            if context.upstream_key is not None and context.upstream_request is not None:
                up = call.other(context.role)
                self._respond(up.side, context.upstream_key, context.upstream_request, 408, now)
            if context.request.method in ("INVITE", "UPDATE") and call.state is CallState.CONFIRMED:
                # RFC 3261 §12.2.1.2: a timed-out in-dialog request ends the dialog.
                self._hangup(call, now, reason="request timeout", send_to=("a", "b"))

    def _ring_timeout(self, call: Call, now: float) -> None:
        if call.local is not None and call.bridged_at is None:
            log.info("call.ring_timeout", call_id=call.id)
            if not call.a_final_sent:
                self._send_a_final(
                    call, self._response(call.a_invite, 408, to_tag=call.a.local_tag), now
                )
            self._hangup(call, now, reason="no answer", send_to=("a", "b"))
            return
        if call.a_final_sent:
            return
        log.info("call.ring_timeout", call_id=call.id)
        self._send_a_final(call, self._response(call.a_invite, 408, to_tag=call.a.local_tag), now)
        if call.b.invite_key is not None:
            call.b.side.port.cancel_request(call.b.invite_key)
        self._end_call(call, "no answer", now, release_only=True)

    # ------------------------------------------------------------------ helpers
    def _send_a_final(self, call: Call, response: Response, now: float) -> None:
        call.a_final_sent = True
        call.a.side.port.send_response(call.a_invite_key, response)

    def _ack_leg(
        self, call: Call, leg: Leg, invite: Request, response: Response, body: bytes, now: float
    ) -> None:
        dialog = leg.dialog
        if dialog is None:
            dialog = Dialog.from_uac_response(invite, response)
        ack = dialog.create_ack(invite, response)
        if body:
            ack.body = body
            ack.headers.set("Content-Type", "application/sdp")
        leg.last_ack = ack
        leg.last_ack_cseq = invite.cseq.seq
        leg.side.port.send_stateless(ack, leg.peer, leg.transport)

    def _send_bye(self, call: Call, leg: Leg, now: float) -> None:
        # A leg whose dialog already ended (its party's BYE came first) gets no BYE of ours.
        if leg.dialog is None or leg.dialog.state is DialogState.TERMINATED:
            return
        bye = leg.dialog.create_request("BYE")
        key = leg.side.port.send_request(bye, leg.peer, leg.transport)
        self._clients[(leg.side.name, key)] = ClientContext(call, leg.role, "bye", bye)

    def _hangup(self, call: Call, now: float, *, reason: str, send_to: Iterable[str]) -> None:
        for role in send_to:
            leg = call.leg(role)
            if role == "a" and not call.a_final_sent:
                self._send_a_final(
                    call, self._response(call.a_invite, 480, to_tag=call.a.local_tag), now
                )
            elif role == "b" and call.bridged_at is None:
                # Still ringing (or never called): cancel, don't BYE. A BYE would end one
                # early dialog and leave the INVITE pending (RFC 3261 §15.1.1).
                if call.b_sent and call.b.invite_key is not None:
                    call.b.side.port.cancel_request(call.b.invite_key)
            else:
                self._send_bye(call, leg, now)
        self._end_call(call, reason, now)

    def _end_call(self, call: Call, reason: str, now: float, *, release_only: bool = False) -> None:
        if call.state is CallState.ENDED:
            return
        call.state = CallState.ENDED
        call.end_reason = reason
        media = call.media
        call.media = None
        self.calls.pop(call.id, None)
        self._by_a_invite.pop((call.a.side.name, call.a_invite_key), None)
        # Dialog entries stay until the legs' BYE/ACK traffic is over: dropped lazily below.
        for leg in (call.a, call.b):
            if leg.dialog is not None:
                leg.dialog.terminate()
                self._dialogs.pop(self._dialog_key(leg), None)
        self._b_call_ids.pop((call.b.side.name, call.b_invite.call_id), None)
        duration = round(now - call.answered_at, 3) if call.answered_at is not None else 0.0

        def ended(stats: dict[str, Any]) -> None:
            call.info["media_stats"] = stats
            log.info(
                "call.ended",
                call_id=call.id,
                reason=reason,
                answered=call.answered_at is not None,
                duration=duration,
                media=stats,
            )
            if self.on_call_ended is not None:
                self.on_call_ended(call)

        if media is not None:
            media.finish(ended)
        else:
            ended({})
        if self.hooks is not None:
            self.hooks.on_ended(call, now)

    def _dialog_key(self, leg: Leg) -> tuple[str, str, str, str]:
        assert leg.dialog is not None
        call_id, local_tag, remote_tag = leg.dialog.id
        return (leg.side.name, call_id, local_tag, remote_tag)

    def _register_a_dialog(self, call: Call) -> None:
        a_invite = call.a_invite
        key = (call.a.side.name, a_invite.call_id, call.a.local_tag, a_invite.from_.tag or "")
        self._dialogs[key] = (call, "a")

    def _register_b_dialog(self, call: Call) -> None:
        if call.b.dialog is not None:
            self._dialogs[self._dialog_key(call.b)] = (call, "b")

    def _contact(self, leg: Leg) -> NameAddr:
        uri = contact_uri("recorder", leg.side.config, leg.side.contact_host, leg.transport)
        return NameAddr(display=None, uri=uri, params={})

    def _response(
        self, request: Request, status: int, *, reason: str | None = None, to_tag: str | None = None
    ) -> Response:
        response = make_response(request, status, reason, to_tag=to_tag)
        response.headers.set("Server", self.user_agent)
        return response

    def _respond_bad_request(
        self, side: SipSideRuntime, key: str, request: Request, status: int, now: float
    ) -> None:
        try:
            self._respond(side, key, request, status, now)
        except RemoteProtocolError:
            # The To header itself cannot be read (a URI of another scheme, RFC 4475 §3.3.4):
            # answer with it as received, tagged as a UAS must (RFC 3261 §8.2.6.2).
            response = self._response(request, status)
            to = response.headers.get("To") or ""
            if ";tag=" not in to.replace(" ", "").lower():
                response.headers.set("To", f"{to};tag={generate_tag()}")
            side.port.send_response(key, response)

    def _respond(
        self,
        side: SipSideRuntime,
        key: str,
        request: Request,
        status: int,
        now: float,
        *,
        warning: str | None = None,
    ) -> None:
        to_tag = None if status == 100 else generate_tag()
        response = self._response(request, status, to_tag=to_tag)
        if warning:
            response.headers.set("Warning", f'399 recorder "{warning[:100]}"')
        side.port.send_response(key, response)


def _copy_headers(source: Headers, target: Headers, names: Iterable[str]) -> None:
    for name in names:
        for value in source.get_all(name):
            target.add(name, value)


def _copy_x_headers(source: Headers, target: Headers) -> None:
    for name, value in source:
        if name[:2].lower() == "x-":
            target.add(name, value)
