"""The B2BUA core driven by hand: fake SIP ports and a fake media anchor, no sockets, no clock."""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from recorder.call.b2bua import B2bua, CallPlan, CallState, SipSideRuntime
from recorder.config import SipSide
from sip.message import Message, Request, Response, make_response, parse_message
from sip.sdp import SessionDescription
from sip.transaction import RequestReceived, ResponseReceived, TransactionTimedOut

Address = tuple[str, int]
CALLER: Address = ("203.0.113.5", 5060)
PBX: Address = ("127.0.0.1", 5070)
TRUNK: Address = ("203.0.113.10", 5060)


@dataclass
class FakePort:
    name: str
    requests: list[tuple[str, Request, Address]] = field(default_factory=list)
    responses: list[tuple[str, Response]] = field(default_factory=list)
    stateless: list[tuple[Message, Address]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    cancel_targets: dict[str, str] = field(default_factory=dict)
    keys: Any = field(default_factory=lambda: itertools.count(1))

    def send_request(self, request: Request, destination: Address, transport: str = "UDP") -> str:
        key = f"{self.name}-c{next(self.keys)}"
        self.requests.append((key, request, destination))
        return key

    def send_response(self, key: str, response: Response) -> None:
        self.responses.append((key, response))

    def send_stateless(self, msg: Message, destination: Address, transport: str = "UDP") -> None:
        self.stateless.append((msg, destination))

    def cancel_request(self, key: str) -> str | None:
        self.cancelled.append(key)
        return None

    def find_cancelled(self, cancel: Request) -> str | None:
        return self.cancel_targets.get(cancel.call_id)

    def statuses(self, key: str) -> list[int]:
        return [r.status for k, r in self.responses if k == key]


@dataclass
class FakeMedia:
    ports: dict[str, int]
    remotes: dict[str, tuple[Address | None, Address | None]] = field(default_factory=dict)
    closed: bool = False

    def local_port(self, role: str) -> int:
        return self.ports[role]

    def set_remote(self, role: str, rtp: Address | None, rtcp: Address | None) -> None:
        self.remotes[role] = (rtp, rtcp)

    def crypto(self, from_role: str, to_role: str | None) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def stats(self) -> dict[str, Any]:
        return {}

    def finish(self, done: Callable[[dict[str, Any]], None]) -> None:
        self.close()
        done(self.stats())


def side(name: str, allow: str, next_hop: Address, listen: Address) -> SipSide:
    return SipSide(name, listen, (ipaddress.ip_network(allow),), next_hop)


class Harness:
    def __init__(self) -> None:
        self.ext_port = FakePort("ext")
        self.int_port = FakePort("int")
        self.media: list[FakeMedia] = []
        self.external = SipSideRuntime(
            side("external", "203.0.113.0/24", TRUNK, ("192.0.2.1", 5060)),
            self.ext_port,
            ("192.0.2.1", 5060),
        )
        self.internal = SipSideRuntime(
            side("internal", "127.0.0.1/32", PBX, ("127.0.0.1", 5062)),
            self.int_port,
            ("127.0.0.1", 5062),
        )
        self.b2bua = B2bua(
            self.external,
            self.internal,
            self.new_media,
            media_address="192.0.2.1",
            ring_timeout=60,
        )
        self.now = 100.0
        self.server_keys = itertools.count(1)

    def new_media(self, _call_id: str, _side: str) -> FakeMedia:
        n = len(self.media)
        media = FakeMedia({"a": 20000 + 4 * n, "b": 20002 + 4 * n})
        self.media.append(media)
        return media

    def receive(
        self, runtime: SipSideRuntime, data: bytes, source: Address = CALLER, key: str | None = None
    ) -> str | None:
        msg = parse_message(data)
        if isinstance(msg, Request):
            if key is None and msg.method != "ACK":
                key = f"s{next(self.server_keys)}"
            self.b2bua.handle_event(runtime, RequestReceived(msg, source, "UDP", key), self.now)
            return key
        self.b2bua.handle_event(runtime, ResponseReceived(msg, key), self.now)
        return key

    def b_invite(self) -> tuple[str, Request]:
        key, request, destination = self.int_port.requests[-1]
        assert destination == PBX
        return key, request

    def answer_b(self, status: int, *, sdp: bytes | None = None, tag: str = "pbxtag") -> Response:
        key, invite = self.b_invite()
        response = make_response(invite, status, to_tag=tag)
        if status < 300 or status == 183:
            response.headers.add("Contact", "<sip:pbx@127.0.0.1:5070>")
        if sdp is not None:
            response.body = sdp
            response.headers.add("Content-Type", "application/sdp")
        self.b2bua.handle_event(self.internal, ResponseReceived(response, key), self.now)
        return response


def sdp(address: str, port: int, extra: str = "") -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        f"a=fmtp:101 0-15\r\n{extra}"
    ).encode()


def invite(
    *, call_id: str = "call-1", max_forwards: int = 70, body: bytes | None = None, extra: str = ""
) -> bytes:
    body = sdp("203.0.113.5", 40000) if body is None else body
    head = (
        "INVITE sip:5551234@192.0.2.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKa1\r\n"
        f"Max-Forwards: {max_forwards}\r\n"
        'From: "Alice" <sip:+15145550100@203.0.113.5>;tag=alice\r\n'
        "To: <sip:5551234@192.0.2.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 10 INVITE\r\n"
        "Contact: <sip:alice@203.0.113.5:5060>\r\n"
        "P-Asserted-Identity: <sip:+15145550100@trunk>\r\n"
        "Privacy: id\r\n"
        "Session-Expires: 1800;refresher=uac\r\n"
        "X-Campaign: spring\r\n"
        f"{extra}"
    )
    if body:
        head += "Content-Type: application/sdp\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def in_dialog(method: str, cseq: int, to_tag: str, *, body: bytes = b"") -> bytes:
    head = (
        f"{method} sip:recorder@192.0.2.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK{method}{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+15145550100@203.0.113.5>;tag=alice\r\n"
        f"To: <sip:5551234@192.0.2.1>;tag={to_tag}\r\n"
        "Call-ID: call-1\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@203.0.113.5:5060>\r\n"
    )
    if body:
        head += "Content-Type: application/sdp\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def connect(h: Harness) -> tuple[str, Response]:
    """A caller INVITE answered by the PBX and ACKed; returns the A key and the A 200."""
    a_key = h.receive(h.external, invite())
    assert a_key is not None
    h.answer_b(180)
    h.answer_b(200, sdp=sdp("127.0.0.1", 16000))
    final = next(r for k, r in h.ext_port.responses if k == a_key and r.status == 200)
    ack = (
        "ACK sip:recorder@192.0.2.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKack\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+15145550100@203.0.113.5>;tag=alice\r\n"
        f"To: <sip:5551234@192.0.2.1>;tag={final.to.tag}\r\n"
        "Call-ID: call-1\r\nCSeq: 10 ACK\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    h.receive(h.external, ack)
    return a_key, final


def pbx_bye(b_invite: Request) -> bytes:
    """The PBX's BYE on the dialog of the B leg's INVITE (its To tag "pbxtag")."""
    return (
        "BYE sip:recorder@127.0.0.1:5062 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKpbxbye\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:5551234@127.0.0.1>;tag=pbxtag\r\n"
        f"To: {b_invite.headers.get('From')}\r\n"
        f"Call-ID: {b_invite.call_id}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_invite_from_unknown_source_gets_403_and_allocates_nothing() -> None:
    h = Harness()
    key = h.receive(h.external, invite(), source=("198.51.100.7", 5060))
    assert key is not None
    assert h.ext_port.statuses(key) == [403]
    assert h.media == []
    assert h.int_port.requests == []
    assert h.b2bua.active_calls() == 0


def test_b_leg_is_a_new_dialog_with_anchored_sdp() -> None:
    h = Harness()
    key = h.receive(h.external, invite())
    assert key is not None
    assert h.ext_port.statuses(key) == [100]
    _, b = h.b_invite()
    assert b.call_id != "call-1"
    assert b.from_.tag not in (None, "alice")
    assert b.from_.uri.user == "+15145550100"
    assert b.to.tag is None
    assert b.uri.user == "5551234" and (b.uri.host, b.uri.port) == PBX
    assert b.max_forwards == 69
    assert b.cseq.seq == 1
    assert b.headers.get("P-Asserted-Identity") == "<sip:+15145550100@trunk>"
    assert b.headers.get("Privacy") == "id"
    assert b.headers.get("Session-Expires") == "1800;refresher=uac"
    assert b.headers.get("X-Campaign") == "spring"
    offer = SessionDescription.parse(b.body)
    audio = offer.media[0]
    assert (audio.connection_address, audio.port) == ("192.0.2.1", h.media[0].ports["b"])
    assert b"203.0.113.5" not in b.body
    assert h.media[0].remotes["a"] == (("203.0.113.5", 40000), ("203.0.113.5", 40001))


def test_full_call_relays_ringing_answer_ack_and_bye() -> None:
    h = Harness()
    a_key, final = connect(h)
    assert h.ext_port.statuses(a_key) == [100, 180, 200]
    ringing = next(r for k, r in h.ext_port.responses if k == a_key and r.status == 180)
    assert ringing.to.tag == final.to.tag  # one A-leg dialog
    answer = SessionDescription.parse(final.body).media[0]
    assert (answer.connection_address, answer.port) == ("192.0.2.1", h.media[0].ports["a"])
    assert h.media[0].remotes["b"][0] == ("127.0.0.1", 16000)
    ack_b = [m for m, _ in h.int_port.stateless if isinstance(m, Request) and m.method == "ACK"]
    assert len(ack_b) == 1 and ack_b[0].cseq.seq == 1
    call = next(iter(h.b2bua.calls.values()))
    assert call.state is CallState.CONFIRMED

    bye_key = h.receive(h.external, in_dialog("BYE", 11, final.to.tag or ""))
    assert bye_key is not None
    assert h.ext_port.statuses(bye_key) == [200]
    bye_b = h.int_port.requests[-1][1]
    assert bye_b.method == "BYE" and bye_b.call_id == h.b_invite()[1].call_id
    assert h.media[0].closed
    assert h.b2bua.active_calls() == 0


def test_bye_from_the_pbx_ends_the_caller_leg() -> None:
    h = Harness()
    _a_key, final = connect(h)
    _, b = h.b_invite()
    key = h.receive(h.internal, pbx_bye(b), source=PBX)
    assert key is not None
    assert h.int_port.statuses(key) == [200]
    bye_a = h.ext_port.requests[-1]
    assert bye_a[1].method == "BYE" and bye_a[2] == CALLER
    assert bye_a[1].call_id == "call-1" and bye_a[1].from_.tag == final.to.tag
    assert h.media[0].closed


def test_caller_bye_on_the_early_dialog_ends_its_invite_and_cancels_the_pbx() -> None:
    """RFC 3261 §15.1.2: the caller's INVITE gets 487; the B leg, still ringing, is
    CANCELled (a BYE would end one early dialog and leave its INVITE pending)."""
    h = Harness()
    a_key = h.receive(h.external, invite())
    assert a_key is not None
    h.answer_b(183, sdp=sdp("127.0.0.1", 16000))
    early = next(r for k, r in h.ext_port.responses if k == a_key and r.status == 183)
    bye_key = h.receive(h.external, in_dialog("BYE", 11, early.to.tag or ""))
    assert bye_key is not None
    assert h.ext_port.statuses(bye_key) == [200]
    assert h.ext_port.statuses(a_key)[-1] == 487
    b_key, _ = h.b_invite()
    assert h.int_port.cancelled == [b_key]
    assert [r.method for _, r, _ in h.int_port.requests] == ["INVITE"]  # no BYE
    assert h.media[0].closed
    assert h.b2bua.active_calls() == 0


def test_pbx_bye_on_the_early_dialog_is_refused_and_the_call_rings_on() -> None:
    """RFC 3261 §15: a callee must not BYE an early dialog; the B leg's dialog is known
    to the B2BUA from its 2xx only, so such a BYE gets 481 and changes nothing."""
    h = Harness()
    a_key = h.receive(h.external, invite())
    assert a_key is not None
    h.answer_b(183, sdp=sdp("127.0.0.1", 16000))
    b_key, b = h.b_invite()
    key = h.receive(h.internal, pbx_bye(b), source=PBX)
    assert key is not None
    assert h.int_port.statuses(key) == [481]
    assert h.ext_port.statuses(a_key)[-1] == 183
    assert h.int_port.cancelled == []
    assert not h.media[0].closed
    h.answer_b(200, sdp=sdp("127.0.0.1", 16000))
    assert h.ext_port.statuses(a_key)[-1] == 200
    assert h.b_invite()[0] == b_key


def test_cancel_before_answer_then_late_200_is_acked_and_released() -> None:
    h = Harness()
    a_key = h.receive(h.external, invite())
    assert a_key is not None
    h.answer_b(180)
    h.ext_port.cancel_targets["call-1"] = a_key
    cancel = (
        invite(body=b"").replace(b"INVITE sip", b"CANCEL sip").replace(b"10 INVITE", b"10 CANCEL")
    )
    cancel_key = h.receive(h.external, cancel)
    assert cancel_key is not None
    assert h.ext_port.statuses(cancel_key) == [200]
    assert h.ext_port.statuses(a_key)[-1] == 487
    b_key, _ = h.b_invite()
    assert h.int_port.cancelled == [b_key]
    assert h.media[0].closed
    # The PBX answered before it saw the CANCEL (RFC 3261 §9.1 race).
    h.answer_b(200, sdp=sdp("127.0.0.1", 16000))
    assert [m.method for m, _ in h.int_port.stateless if isinstance(m, Request)] == ["ACK"]
    assert h.int_port.requests[-1][1].method == "BYE"
    assert h.ext_port.statuses(a_key).count(200) == 0


@pytest.mark.parametrize(("pbx_status", "caller_status"), [(486, 486), (407, 403), (302, 480)])
def test_final_errors_are_relayed_or_mapped(pbx_status: int, caller_status: int) -> None:
    h = Harness()
    a_key = h.receive(h.external, invite())
    assert a_key is not None
    h.answer_b(pbx_status)
    assert h.ext_port.statuses(a_key)[-1] == caller_status
    assert h.media[0].closed
    assert h.b2bua.active_calls() == 0


def test_pbx_silence_gives_the_caller_408() -> None:
    h = Harness()
    a_key = h.receive(h.external, invite())
    assert a_key is not None
    b_key, b = h.b_invite()
    h.b2bua.handle_event(h.internal, TransactionTimedOut(b_key, b), h.now + 32)
    assert h.ext_port.statuses(a_key)[-1] == 408
    assert h.media[0].closed


def test_ringing_forever_is_cancelled_at_ring_timeout() -> None:
    h = Harness()
    a_key = h.receive(h.external, invite())
    assert a_key is not None
    h.answer_b(180)
    deadline = h.b2bua.get_timer()
    assert deadline == h.now + 60
    h.b2bua.handle_timer(deadline)
    assert h.ext_port.statuses(a_key)[-1] == 408
    assert h.int_port.cancelled == [h.b_invite()[0]]
    assert h.b2bua.get_timer() is None


def test_max_forwards_zero_is_a_loop() -> None:
    h = Harness()
    key = h.receive(h.external, invite(max_forwards=0))
    assert key is not None
    assert h.ext_port.statuses(key) == [483]
    assert h.int_port.requests == []


def test_unsupported_require_gets_420() -> None:
    h = Harness()
    key = h.receive(h.external, invite(extra="Require: 100rel\r\n"))
    assert key is not None
    assert h.ext_port.statuses(key) == [420]
    response = h.ext_port.responses[-1][1]
    assert response.headers.get("Unsupported") == "100rel"


def test_out_of_dialog_options_is_answered() -> None:
    h = Harness()
    options = (
        invite(body=b"").replace(b"INVITE sip", b"OPTIONS sip").replace(b"10 INVITE", b"10 OPTIONS")
    )
    key = h.receive(h.external, options)
    assert key is not None
    assert h.ext_port.statuses(key) == [200]
    assert "INVITE" in (h.ext_port.responses[-1][1].headers.get("Allow") or "")


def test_a_draining_b2bua_answers_options_and_invites_with_503() -> None:
    """Issue 19: a load balancer's OPTIONS probe (Kamailio's dispatcher) takes a node that is
    stopping out of its set; an INVITE that reaches it anyway gets 503 and goes elsewhere."""
    h = Harness()
    h.b2bua.accepting = False
    options = (
        invite(body=b"").replace(b"INVITE sip", b"OPTIONS sip").replace(b"10 INVITE", b"10 OPTIONS")
    )
    key = h.receive(h.external, options)
    assert key is not None
    assert h.ext_port.statuses(key) == [503]
    key = h.receive(h.external, invite(call_id="drain-2"))
    assert key is not None
    assert h.ext_port.statuses(key) == [503]
    assert h.int_port.requests == []


def test_unknown_dialog_gets_481() -> None:
    h = Harness()
    key = h.receive(h.external, in_dialog("BYE", 11, "nosuchtag"))
    assert key is not None
    assert h.ext_port.statuses(key) == [481]


def test_reinvite_hold_is_relayed_and_anchored() -> None:
    h = Harness()
    _, final = connect(h)
    hold = sdp("203.0.113.5", 40002, "a=sendonly\r\n")
    key = h.receive(h.external, in_dialog("INVITE", 11, final.to.tag or "", body=hold))
    assert key is not None
    b_key, reinvite, _ = h.int_port.requests[-1]
    assert reinvite.method == "INVITE" and reinvite.to.tag == "pbxtag"
    offer = SessionDescription.parse(reinvite.body).media[0]
    assert offer.direction == "sendonly"
    assert offer.port == h.media[0].ports["b"]
    assert h.media[0].remotes["a"][0] == ("203.0.113.5", 40002)
    # Glare: a second re-INVITE while the first is pending gets 491.
    glare = h.receive(h.external, in_dialog("INVITE", 12, final.to.tag or "", body=hold))
    assert glare is not None
    assert h.ext_port.statuses(glare) == [491]
    ok = make_response(reinvite, 200)
    ok.headers.add("Contact", "<sip:pbx@127.0.0.1:5070>")
    ok.headers.add("Content-Type", "application/sdp")
    ok.body = sdp("127.0.0.1", 16000, "a=recvonly\r\n")
    h.b2bua.handle_event(h.internal, ResponseReceived(ok, b_key), h.now)
    relayed = [r for k, r in h.ext_port.responses if k == key][-1]
    assert relayed.status == 200
    answer = SessionDescription.parse(relayed.body).media[0]
    assert answer.direction == "recvonly" and answer.port == h.media[0].ports["a"]
    acks = [m for m, _ in h.int_port.stateless if isinstance(m, Request) and m.method == "ACK"]
    assert acks[-1].cseq.seq == reinvite.cseq.seq


def test_info_is_relayed_and_its_answer_comes_back() -> None:
    h = Harness()
    _, final = connect(h)
    info = in_dialog("INFO", 11, final.to.tag or "").replace(
        b"Content-Length: 0\r\n\r\n",
        b"Content-Type: application/dtmf-relay\r\nContent-Length: 24\r\n\r\n"
        b"Signal=9\r\nDuration=160\r\n",
    )
    key = h.receive(h.external, info)
    assert key is not None
    b_key, relayed, _ = h.int_port.requests[-1]
    assert relayed.method == "INFO" and relayed.body == b"Signal=9\r\nDuration=160\r\n"
    h.b2bua.handle_event(h.internal, ResponseReceived(make_response(relayed, 200), b_key), h.now)
    assert h.ext_port.statuses(key) == [200]


def test_late_offer_answer_travels_in_the_ack() -> None:
    h = Harness()
    a_key = h.receive(h.external, invite(body=b""))
    assert a_key is not None
    _, b = h.b_invite()
    assert b.body == b""
    h.answer_b(200, sdp=sdp("127.0.0.1", 16000))
    final = next(r for k, r in h.ext_port.responses if k == a_key and r.status == 200)
    assert SessionDescription.parse(final.body).media[0].port == h.media[0].ports["a"]
    assert not [m for m, _ in h.int_port.stateless if isinstance(m, Request)]  # ACK held
    ack = in_dialog("ACK", 10, final.to.tag or "", body=sdp("203.0.113.5", 40000))
    h.receive(h.external, ack)
    acks = [m for m, _ in h.int_port.stateless if isinstance(m, Request) and m.method == "ACK"]
    assert len(acks) == 1
    assert SessionDescription.parse(acks[0].body).media[0].port == h.media[0].ports["b"]
    assert h.media[0].remotes["a"][0] == ("203.0.113.5", 40000)


# --------------------------------------------------------------------------- answer first


@dataclass
class FakeHooks:
    answer_first: bool = True
    log: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)
    deadline: float | None = None

    def plan(self, call: Any, now: float) -> CallPlan:
        self.log.append("plan")
        return CallPlan(answer_first=self.answer_first)

    def on_local_answer(self, call: Any, now: float) -> None:
        self.log.append("local_answer")

    def on_b_progress(self, call: Any, early_media: bool, now: float) -> None:
        self.log.append(f"progress early={early_media}")

    def on_bridged(self, call: Any, now: float) -> None:
        self.log.append("bridged")

    def on_info(self, call: Any, role: str, request: Request, now: float) -> bool:
        self.infos.append(request.body.decode())
        return True

    def on_ended(self, call: Any, now: float) -> None:
        self.log.append(f"ended {call.end_reason}")

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        self.log.append("timer")
        self.deadline = None


def answer_first_harness() -> tuple[Harness, FakeHooks]:
    h = Harness()
    hooks = FakeHooks()
    h.b2bua.hooks = hooks
    return h, hooks


def test_answer_first_answers_the_caller_and_waits_for_proceed() -> None:
    h, hooks = answer_first_harness()
    offer = (
        sdp("203.0.113.5", 40000)
        .replace(b"RTP/AVP 0 101", b"RTP/AVP 18 8 0 101")
        .replace(b"a=rtpmap:0 PCMU/8000\r\n", b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:18 G729/8000\r\n")
    )
    key = h.receive(h.external, invite(body=offer))
    assert key is not None
    assert h.ext_port.statuses(key) == [100, 200]
    assert h.int_port.requests == []  # the PBX is not called yet
    assert hooks.log == ["plan", "local_answer"]
    answer = SessionDescription.parse(h.ext_port.responses[-1][1].body).media[0]
    assert answer.formats == ["8", "101"]  # the first G.711 the caller offered
    assert answer.port == h.media[0].ports["a"]
    call = next(iter(h.b2bua.calls.values()))
    # A DTMF INFO during the notice goes to the application and is answered 200.
    final = h.ext_port.responses[-1][1]
    info = in_dialog("INFO", 11, final.to.tag or "").replace(
        b"Content-Length: 0\r\n\r\n",
        b"Content-Type: application/dtmf-relay\r\nContent-Length: 10\r\n\r\nSignal=9\r\n",
    )
    info_key = h.receive(h.external, info)
    assert info_key is not None and h.ext_port.statuses(info_key) == [200]
    assert hooks.infos == ["Signal=9\r\n"]

    h.b2bua.proceed(call, h.now)
    _, b = h.b_invite()
    offer_b = SessionDescription.parse(b.body).media[0]
    assert offer_b.formats == ["8", "101"]  # no transcoding: the PBX gets the caller's codec
    assert offer_b.port == h.media[0].ports["b"]
    h.answer_b(180)
    assert h.ext_port.statuses(key) == [100, 200]  # nothing more reaches the caller
    h.answer_b(200, sdp=sdp("127.0.0.1", 16000).replace(b"0 101", b"8 101"))
    assert hooks.log[-2:] == ["progress early=False", "bridged"]
    assert h.media[0].remotes["b"][0] == ("127.0.0.1", 16000)
    acks = [m for m, _ in h.int_port.stateless if isinstance(m, Request) and m.method == "ACK"]
    assert len(acks) == 1


def test_answer_first_pbx_failure_hangs_up_the_caller() -> None:
    h, hooks = answer_first_harness()
    h.receive(h.external, invite())
    call = next(iter(h.b2bua.calls.values()))
    h.b2bua.proceed(call, h.now)
    h.answer_b(486)
    bye = h.ext_port.requests[-1]
    assert bye[1].method == "BYE" and bye[2] == CALLER
    assert hooks.log[-1] == "ended callee answered 486"
    assert h.media[0].closed


def test_caller_hangs_up_during_notice_cancels_nothing_it_never_sent() -> None:
    h, hooks = answer_first_harness()
    h.receive(h.external, invite())
    final = h.ext_port.responses[-1][1]
    h.receive(h.external, in_dialog("BYE", 11, final.to.tag or ""))
    assert h.int_port.requests == [] and h.int_port.cancelled == []
    assert hooks.log[-1] == "ended bye from a"
    assert h.media[0].closed


def test_hook_timers_are_driven_by_the_b2bua() -> None:
    h, hooks = answer_first_harness()
    hooks.deadline = h.now + 0.02
    assert h.b2bua.get_timer() == h.now + 0.02
    h.b2bua.handle_timer(h.now + 0.02)
    assert hooks.log == ["timer"]
    assert h.b2bua.get_timer() is None


def test_recordable_call_offers_the_pbx_only_decodable_codecs() -> None:
    h, hooks = answer_first_harness()
    hooks.answer_first = False
    h.b2bua.hooks = hooks

    def plan(call: Any, now: float) -> CallPlan:
        return CallPlan(keep_codecs=("PCMU", "PCMA", "telephone-event"))

    hooks.plan = plan  # type: ignore[method-assign]
    offer = (
        sdp("203.0.113.5", 40000)
        .replace(b"RTP/AVP 0 101", b"RTP/AVP 18 9 0 101")
        .replace(
            b"a=rtpmap:0 PCMU/8000\r\n",
            b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:18 G729/8000\r\na=rtpmap:9 G722/8000\r\n",
        )
    )
    h.receive(h.external, invite(body=offer))
    _, b = h.b_invite()
    assert SessionDescription.parse(b.body).media[0].formats == ["0", "101"]


def test_early_media_notice_answers_only_when_the_pbx_does() -> None:
    h, hooks = answer_first_harness()

    def plan(call: Any, now: float) -> CallPlan:
        return CallPlan(answer_first=True, early_media=True)

    hooks.plan = plan  # type: ignore[method-assign]
    key = h.receive(h.external, invite())
    assert key is not None
    assert h.ext_port.statuses(key) == [100, 183]  # the notice plays as early media
    progress = h.ext_port.responses[-1][1]
    assert SessionDescription.parse(progress.body).media[0].port == h.media[0].ports["a"]
    call = next(iter(h.b2bua.calls.values()))
    h.b2bua.proceed(call, h.now)
    h.answer_b(200, sdp=sdp("127.0.0.1", 16000))
    assert h.ext_port.statuses(key) == [100, 183, 200]
    final = h.ext_port.responses[-1][1]
    assert final.to.tag == progress.to.tag and final.body == progress.body


def test_early_media_notice_pbx_refusal_reaches_the_caller() -> None:
    h, hooks = answer_first_harness()
    hooks.plan = lambda call, now: CallPlan(answer_first=True, early_media=True)  # type: ignore[method-assign]
    key = h.receive(h.external, invite())
    assert key is not None
    h.b2bua.proceed(next(iter(h.b2bua.calls.values())), h.now)
    h.answer_b(486)
    assert h.ext_port.statuses(key) == [100, 183, 486]
    assert h.media[0].closed
