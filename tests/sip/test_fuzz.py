"""Grammar-based fuzzing of the SIP stack (issue 20): parser, transaction layer, endpoint and
the B2BUA's handler, all in memory (no socket, no clock), plus the RFC 4475 and RFC 5118
torture cases that tests/sip/test_torture.py does not cover: what goes back on the wire.

The inputs come from tests/sip/sip_grammar.py. Every property runs a fixed number of examples
with `derandomize=True` and no example database, so a CI run tests exactly what the last one
did; the whole file stays within ~30 s. tests/interop/test_sip_fuzz.py sends the same grammar
to a real `recorder serve`, and bench/bench_fuzz.py a million messages.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.call.b2bua import B2bua, CallPlan, SipSideRuntime
from recorder.config import SipSide
from sip.asyncio.endpoint import SipEndpoint
from sip.asyncio.transport import UdpProtocol, error_response
from sip.errors import LocalProtocolError, RemoteProtocolError
from sip.message import Message, Request, Response, StreamParser, make_response, parse_message
from sip.transaction import (
    Address,
    RequestReceived,
    ResponseReceived,
    TimerConfig,
    TransactionEvent,
    TransactionLayer,
    TransactionTimedOut,
)
from sip.uri import NameAddr, SipUri
from tests.sip import sip_grammar as g
from tests.sip.pair import make_request

TORTURE = Path(__file__).parent / "torture"
# What the parser may answer (RFC 3261 §21; sip.message's docstring lists when).
PARSER_STATUSES = {400, 413, 416, 501, 505, 513}


def fuzz_settings(examples: int) -> Any:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


# ============================================================================================
# (a) the parser
# ============================================================================================


def _same_uri(uri: SipUri, model: g.UriModel) -> None:
    got = (uri.scheme, uri.user, uri.password, uri.host, uri.port, uri.params, uri.headers)
    want = (
        model.scheme,
        model.user,
        model.password,
        model.host,
        model.port,
        model.params,
        model.headers,
    )
    assert got == want


def _same_name_addr(value: NameAddr, model: g.NameAddrModel) -> None:
    assert value.display == model.display
    _same_uri(value.uri, model.uri)
    assert value.params == model.params


def check_model(msg: Message, model: g.Model) -> None:
    """The parsed message holds exactly what the grammar put in the wire form."""
    if model.kind == "request":
        assert isinstance(msg, Request)
        assert msg.method == model.method
        assert model.uri is not None
        _same_uri(msg.uri, model.uri)
    else:
        assert isinstance(msg, Response)
        assert (msg.status, msg.reason) == (model.status, model.reason)
    assert list(msg.headers) == model.headers
    assert msg.body == model.body
    vias = [(v.transport, v.host, v.port, v.params) for v in msg.via]
    assert vias == [(v.transport, v.host, v.port, v.params) for v in model.vias]
    _same_name_addr(msg.from_, model.from_)
    _same_name_addr(msg.to, model.to)
    assert msg.call_id == model.call_id
    assert (msg.cseq.seq, msg.cseq.method) == (model.cseq, model.method)
    assert msg.max_forwards == model.max_forwards
    if model.contacts is None:
        assert msg.headers.get("Contact") == "*" and msg.contact == []
    else:
        contacts = msg.contact
        assert len(contacts) == len(model.contacts)
        for value, want in zip(contacts, model.contacts, strict=True):
            _same_name_addr(value, want)


def check_round_trip(msg: Message) -> None:
    """serialize() then parse_message() gives the same message back."""
    again = parse_message(msg.serialize())
    assert type(again) is type(msg)
    assert again.body == msg.body
    assert [h for h in again.headers if h[0] != "Content-Length"] == [
        h for h in msg.headers if h[0] != "Content-Length"
    ]
    assert again.headers.get("Content-Length") == str(len(msg.body))
    if isinstance(msg, Request) and isinstance(again, Request):
        assert (again.method, again.uri) == (msg.method, msg.uri)
    elif isinstance(msg, Response) and isinstance(again, Response):
        assert (again.status, again.reason) == (msg.status, msg.reason)


def exercise(msg: Message) -> None:
    """Every accessor works or raises RemoteProtocolError; the message round-trips."""
    for attr in ("via", "call_id", "cseq", "from_", "to", "contact", "max_forwards"):
        try:
            getattr(msg, attr)
        except RemoteProtocolError as exc:
            assert 400 <= exc.status_hint <= 599
    if isinstance(msg, Response) and msg.status > 699:
        # 7xx-9xx are grammatical (extension-code = 3DIGIT) but we never send one
        with pytest.raises(LocalProtocolError):
            msg.serialize()
        return
    check_round_trip(msg)


@fuzz_settings(200)
@given(g.valid_messages())
def test_valid_messages_parse_to_what_the_grammar_put_in(generated: g.Generated) -> None:
    msg = parse_message(generated.wire)
    check_model(msg, generated.model)
    check_round_trip(msg)


@fuzz_settings(40)
@given(
    st.lists(g.valid_messages(content_length=True), min_size=1, max_size=3),
    st.lists(st.integers(1, 400), min_size=1, max_size=12),
)
def test_valid_messages_on_a_stream_in_any_chunks(
    messages: list[g.Generated], steps: list[int]
) -> None:
    data = b"".join(m.wire + b"\r\n" * (i % 2) for i, m in enumerate(messages))  # keepalives
    parser = StreamParser()
    got: list[Message] = []
    pos = 0
    for step in itertools.cycle(steps):
        if pos >= len(data):
            break
        got += parser.feed(data[pos : pos + step])
        pos += step
    assert not parser.broken
    assert len(got) == len(messages)
    for msg, generated in zip(got, messages, strict=True):
        check_model(msg, generated.model)


@fuzz_settings(250)
@given(g.oracle_mutants())
def test_each_mutation_gets_its_status(mutant: g.Mutant) -> None:
    """One structural mutation of a valid message: the parser's answer is known exactly."""
    if mutant.oracle == "valid":
        msg = parse_message(mutant.data)
        assert msg.body == mutant.body
        exercise(msg)
        return
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(mutant.data)
    assert info.value.status_hint == mutant.oracle, (mutant.ops, str(info.value))


@fuzz_settings(300)
@given(g.any_datagrams())
def test_any_bytes_raise_nothing_but_remote_protocol_error(data: bytes) -> None:
    """Whatever the datagram, the parser returns a message or raises RemoteProtocolError
    with a status it may answer; then error_response() builds that answer or gives None
    (nobody to answer), and never raises."""
    try:
        msg = parse_message(data)
    except RemoteProtocolError as exc:
        assert exc.status_hint in PARSER_STATUSES
        answer = error_response(data, exc.status_hint)
        if answer is not None:
            check_error_answer(answer, exc.status_hint)
        return
    exercise(msg)


@fuzz_settings(60)
@given(st.lists(g.any_datagrams(), min_size=1, max_size=4), st.lists(st.integers(0, 5000)))
def test_any_bytes_on_a_stream_raise_nothing_but_remote_protocol_error(
    chunks: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(chunks)
    parser = StreamParser()
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for start, end in itertools.pairwise([*bounds, len(data)]):
        try:
            for msg in parser.feed(data[start:end]):
                exercise(msg)
        except RemoteProtocolError as exc:
            assert exc.status_hint in PARSER_STATUSES
            if parser.broken:
                return


# ============================================================================================
# (b) the stateless error answer, the transaction layer and the endpoint
# ============================================================================================

_STATUS_RE = re.compile(rb"SIP/2\.0 ([0-9]{3}) [^\r\n]*\r\n")
_LINE_RE = re.compile(rb"\r\n([^:\r\n]+):([^\r\n]*)")


def check_error_answer(answer: bytes, status: int) -> None:
    """A stateless answer: the status line, the five headers of RFC 3261 §8.2.6, framing."""
    m = _STATUS_RE.match(answer)
    assert m is not None and int(m.group(1)) == status, answer[:80]
    assert answer.endswith(b"Content-Length: 0\r\n\r\n")
    names = [n.strip().lower() for n, _ in _LINE_RE.findall(answer[: -len(b"\r\n")])]
    assert {b"via", b"from", b"to", b"call-id", b"cseq"} <= set(names)
    assert names.count(b"to") == 1 and names.count(b"call-id") == 1
    to = next(v for n, v in _LINE_RE.findall(answer) if n.strip().lower() == b"to")
    assert b"tag=" in to.replace(b" ", b"").lower()  # §8.2.6.2


# Mutations that leave the request line's shape and the five mandatory header lines alone:
# the endpoint can always build the answer, so the request must get it.
ANSWERABLE = frozenset(
    {
        "content_length_larger", "content_length_garbage", "cseq_number_huge",
        "cseq_number_garbage", "cseq_method_mismatch", "huge_header_value",
        "max_forwards_huge", "lf_only", "no_empty_line", "line_without_colon",
        "leading_continuation", "duplicate_single", "unknown_scheme", "ltgt_request_uri",
        "uri_headers_in_request_uri", "extra_space_request_line",
    }
)  # fmt: skip


@st.composite
def answerable_mutants(draw: st.DrawFn) -> g.Mutant:
    c = g.DrawChoices(draw)
    method = c.choice([m for m in g.KNOWN_METHODS if m != "ACK"] + ["FOO~"])
    generated = g.message(c, kind="request", method_name=method)  # an ACK gets no answer
    op = c.choice(sorted(ANSWERABLE))
    mutant = g.single_mutation(c, generated, op)
    if mutant is None or mutant.oracle == "valid" or len(mutant.data) > g.MAX_UDP_PAYLOAD:
        # the op does not apply: a wrong version (505) instead, always answerable
        mutant = g.Mutant(
            generated.wire.replace(b" SIP/2.0\r\n", b" SIP/3.0\r\n", 1).replace(
                b" sip/2.0\r\n", b" SIP/3.0\r\n", 1
            ),
            ("bad_version",),
            505,
        )
    return mutant


@fuzz_settings(200)
@given(answerable_mutants())
def test_every_malformed_request_with_its_headers_gets_its_answer(mutant: g.Mutant) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(mutant.data)
    status = info.value.status_hint
    assert status == mutant.oracle
    answer = error_response(mutant.data, status)
    assert answer is not None, mutant.ops
    check_error_answer(answer, status)


ME: Address = ("192.0.2.1", 5060)
PEER: Address = ("192.0.2.2", 5070)


@dataclass
class _Tu:
    """What the transaction user does with each new server transaction."""

    finals: list[int]
    provisional_first: list[bool]
    answered: set[str] = field(default_factory=set)
    index: int = 0

    def answer(self, layer: TransactionLayer, event: RequestReceived, now: float) -> None:
        # Every RequestReceived is a new server transaction: also one with the key of a
        # transaction that has ended (a retransmission that came after timer H or I, which
        # RFC 3261 §17.2.1 hands to the TU as a new request; found by the fuzzer).
        if event.key is None:
            return
        self.answered.add(event.key)
        i = self.index
        self.index += 1
        status = self.finals[i % len(self.finals)]
        if status == 0:
            if event.request.method != "INVITE":
                return  # never answered: the layer's guard timer must still end it
            status = 500  # an INVITE server transaction waits for its TU as long as it takes
        try:
            to_tag = event.request.to.tag
        except RemoteProtocolError:
            to_tag = "known"  # a To make_response() cannot read: answer without tagging it
        tag = None if to_tag else "tu"
        if self.provisional_first[i % len(self.provisional_first)]:
            layer.send_response(event.key, make_response(event.request, 180, to_tag=tag), now)
        layer.send_response(event.key, make_response(event.request, status, to_tag=tag), now)


def run_layer(layer: TransactionLayer, until: float, on_event: Callable[[Any], None]) -> None:
    while (t := layer.get_timer()) is not None and t <= until:
        layer.handle_timer(t)
        for event in layer.events():
            on_event(event)


@fuzz_settings(100)
@given(
    st.lists(
        st.one_of(g.valid_messages(), g.any_datagrams()),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.sampled_from([0, 200, 200, 404, 486, 500, 603]), min_size=1, max_size=4),
    st.lists(st.booleans(), min_size=1, max_size=3),
    st.lists(st.sampled_from([0.0, 0.1, 0.6, 5.0, 40.0]), min_size=1, max_size=4),
    st.lists(st.sampled_from([100, 180, 200, 200, 302, 486, 503]), min_size=0, max_size=4),
)
def test_transaction_layer_takes_anything_and_drains(
    inputs: list[g.Generated | bytes],
    finals: list[int],
    provisional_first: list[bool],
    gaps: list[float],
    client_answers: list[int],
) -> None:
    """Fed whatever a socket brings (each valid message twice: the retransmission), the
    layer raises nothing but RemoteProtocolError, everything it sends parses, and once its
    timers have run every transaction has ended: nothing is left hanging."""
    layer = TransactionLayer(TimerConfig(), local_sent_by=ME)
    tu = _Tu(finals, provisional_first)
    now = 0.0
    sent: list[tuple[bytes, Address, str]] = []

    def on_event(event: TransactionEvent) -> None:
        if isinstance(event, RequestReceived):
            tu.answer(layer, event, now)

    # a few client transactions of our own, so that responses have something to match
    clients = [layer.send_request(make_request(m, call_id=f"c{m}"), PEER, "UDP", now) for m in
               ("INVITE", "OPTIONS")]  # fmt: skip
    outgoing = [parse_message(d) for d, _, _ in layer.datagrams_to_send()]
    datagrams: list[bytes] = []
    for item in inputs:
        if isinstance(item, g.Generated):
            datagrams += [item.wire, item.wire]
        else:
            datagrams.append(item)
    for request, status in [*zip(itertools.cycle(outgoing), client_answers),
                            *((r, 487) for r in outgoing)]:  # fmt: skip
        # (a client INVITE transaction in Proceeding waits for a final as long as it takes)
        assert isinstance(request, Request)
        tag = None if status == 100 else "peer"
        datagrams.append(make_response(request, status, to_tag=tag).serialize())
    for i, data in enumerate(datagrams):
        now += gaps[i % len(gaps)]
        run_layer(layer, now, on_event)
        try:
            msg = parse_message(data)
        except RemoteProtocolError:
            continue
        try:
            layer.receive(msg, PEER, "UDP", now)
        except RemoteProtocolError as exc:
            assert 400 <= exc.status_hint <= 599
        for event in layer.events():
            on_event(event)
        sent += layer.datagrams_to_send()
    run_layer(layer, now + 400.0, on_event)
    sent += layer.datagrams_to_send()
    for data, destination, _ in sent:
        parse_message(data)  # we never send what we would not accept
        assert destination == PEER
    assert len(layer) == 0
    assert layer.get_timer() is None
    assert all(layer.state(key) is None for key in clients)


# --- the endpoint and the B2BUA behind it, in memory ----------------------------------------

CALLER: Address = ("203.0.113.5", 5060)
STRANGER: Address = ("198.51.100.7", 5060)
PBX: Address = ("127.0.0.1", 5070)
TRUNK: Address = ("203.0.113.10", 5060)
EXTERNAL: Address = ("192.0.2.1", 5060)
INTERNAL: Address = ("127.0.0.1", 5062)


class _Handle:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """The little of an event loop SipEndpoint uses: time() and call_at()."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._heap: list[tuple[float, int, _Handle]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Handle:
        handle = _Handle(when, callback)
        heapq.heappush(self._heap, (when, next(self._seq), handle))
        return handle

    def next_deadline(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def run_due(self) -> None:
        while self._heap and self._heap[0][0] <= self.now:
            _, _, handle = heapq.heappop(self._heap)
            if not handle.cancelled:
                handle.callback()


class _Wire:
    """The UDP transport and every TCP connection of one side: what it sends is recorded."""

    def __init__(self, side: str, sent: list[tuple[str, bytes, Address, str]]) -> None:
        self.side = side
        self.sent = sent
        self.is_open = True

    def sendto(self, data: bytes, addr: Address) -> None:
        self.sent.append((self.side, data, addr, "UDP"))

    def is_closing(self) -> bool:
        return False


class _TcpTo:
    def __init__(self, wire: _Wire, peer: Address) -> None:
        self.wire = wire
        self.peer = peer
        self.is_open = True

    def send(self, data: bytes) -> None:
        self.wire.sent.append((self.wire.side, data, self.peer, "TCP"))


class _Connections(dict[Address, Any]):
    """Any destination is connected already (requests past 1300 bytes go over TCP)."""

    def __init__(self, wire: _Wire) -> None:
        super().__init__()
        self.wire = wire

    def get(self, key: Address, default: Any = None) -> Any:  # type: ignore[override]
        return _TcpTo(self.wire, key)


class FakeMedia:
    def __init__(self, first: int) -> None:
        self.ports = {"a": first, "b": first + 2}
        self.closed = False

    def local_port(self, role: str) -> int:
        return self.ports[role]

    def set_remote(self, role: str, rtp: Address | None, rtcp: Address | None) -> None:
        pass

    def crypto(self, from_role: str, to_role: str | None) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def stats(self) -> dict[str, Any]:
        return {}

    def finish(self, done: Callable[[dict[str, Any]], None]) -> None:
        self.close()
        done(self.stats())


def sip_side(name: str, allow: str, next_hop: Address, listen: Address) -> SipSide:
    return SipSide(name, listen, (ipaddress.ip_network(allow),), next_hop)


class Stack:
    """Two SipEndpoints (each with its real TransactionLayer and UdpProtocol) in front of
    the real B2BUA, as `recorder serve` wires them, minus the sockets and the clock. The PBX
    answers the B leg's INVITEs with the statuses of `pbx_plan` (silence when empty) and
    every other request with 200."""

    def __init__(self, pbx_plan: list[int] | None = None) -> None:
        self.clock = FakeClock()
        self.sent: list[tuple[str, bytes, Address, str]] = []
        self.errors: list[BaseException] = []
        self.pbx_plan = pbx_plan or []
        self._pbx_seen = 0
        self._pbx_invites = 0
        self.media: list[FakeMedia] = []
        self.endpoints: dict[str, SipEndpoint] = {}
        self.protocols: dict[str, UdpProtocol] = {}
        runtimes: dict[str, SipSideRuntime] = {}
        config = {
            "external": sip_side("external", "203.0.113.0/24", TRUNK, EXTERNAL),
            "internal": sip_side("internal", "127.0.0.1/32", PBX, INTERNAL),
        }
        for name, side in config.items():
            endpoint = SipEndpoint(
                self._handler(name, runtimes), TimerConfig(), sent_by=side.listen
            )
            wire = _Wire(name, self.sent)
            # What start() does, without binding: the layer, the UDP protocol, the clock.
            endpoint._loop = self.clock  # type: ignore[assignment]
            endpoint._layer = TransactionLayer(TimerConfig(), local_sent_by=side.listen)
            protocol = UdpProtocol(endpoint._on_message, endpoint._on_parse_error)
            protocol.connection_made(wire)  # type: ignore[arg-type]
            endpoint._udp = protocol
            endpoint._local = side.listen
            endpoint._connections = _Connections(wire)  # type: ignore[assignment]
            self.endpoints[name] = endpoint
            self.protocols[name] = protocol
            runtimes[name] = SipSideRuntime(side, endpoint, side.listen)
        self.b2bua = B2bua(
            runtimes["external"],
            runtimes["internal"],
            self._new_media,
            media_address="192.0.2.1",
            ring_timeout=60,
        )

    def _new_media(self, _call_id: str, _side: str) -> FakeMedia:
        media = FakeMedia(20000 + 4 * len(self.media))
        self.media.append(media)
        return media

    def _handler(
        self, name: str, runtimes: dict[str, SipSideRuntime]
    ) -> Callable[[SipEndpoint, TransactionEvent], None]:
        def on_event(_endpoint: SipEndpoint, event: TransactionEvent) -> None:
            try:
                self.b2bua.handle_event(runtimes[name], event, self.clock.now)
            except Exception as exc:  # the endpoint would log it and carry on: a bug
                self.errors.append(exc)
                raise

        return on_event

    def feed(self, data: bytes, source: Address = CALLER, side: str = "external") -> None:
        self.protocols[side].datagram_received(data, source)
        self._pbx()

    def advance(self, seconds: float) -> None:
        until = self.clock.now + seconds
        while True:
            deadlines = [d for d in (self.clock.next_deadline(), self.b2bua.get_timer()) if d]
            when = min(deadlines, default=None)
            if when is None or when > until:
                break
            self.clock.now = max(self.clock.now, when)
            self.clock.run_due()
            b2bua_timer = self.b2bua.get_timer()
            if b2bua_timer is not None and b2bua_timer <= self.clock.now:
                self.b2bua.handle_timer(self.clock.now)
            self._pbx()
        self.clock.now = until

    def _pbx(self) -> None:
        """Answer what the recorder sent the PBX since last time."""
        while self._pbx_seen < len(self.sent):
            side, data, destination, _ = self.sent[self._pbx_seen]
            self._pbx_seen += 1
            if side != "internal" or destination != PBX:
                continue
            msg = parse_message(data)  # the recorder sends nothing we would refuse
            if not isinstance(msg, Request) or msg.method == "ACK":
                continue
            if msg.method == "INVITE" and msg.to.tag is None:
                if not self.pbx_plan:
                    continue
                status = self.pbx_plan[self._pbx_invites % len(self.pbx_plan)]
                self._pbx_invites += 1
                statuses = [180, status] if status >= 200 else [status]
            else:
                statuses = [200]
            for code in statuses:
                response = make_response(msg, code, to_tag="pbx")
                if code < 300:
                    response.headers.add("Contact", "<sip:pbx@127.0.0.1:5070>")
                if msg.method == "INVITE" and code in (183, 200) and msg.body:
                    response.headers.add("Content-Type", "application/sdp")
                    response.body = (
                        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                        b"t=0 0\r\nm=audio 16000 RTP/AVP 0\r\n"
                    )
                self.protocols["internal"].datagram_received(response.serialize(), PBX)

    def sent_to(self, address: Address, since: int = 0) -> list[bytes]:
        return [data for _, data, dest, _ in self.sent[since:] if dest == address]

    def leftovers(self) -> list[str]:
        """What is still held once every timer has run: should be nothing."""
        out = []
        for name, endpoint in self.endpoints.items():
            if len(endpoint.layer):
                out.append(f"{name}: {len(endpoint.layer)} transactions")
            if endpoint._pending_2xx or endpoint._invites:
                out.append(f"{name}: 2xx awaiting ACK / INVITEs held")
        b2bua = self.b2bua
        if b2bua.calls:
            out.append(f"{len(b2bua.calls)} calls")
        if b2bua._clients:
            out.append(f"{len(b2bua._clients)} client contexts")
        if b2bua._by_a_invite or b2bua._b_call_ids or b2bua._dialogs:
            out.append("call indexes")
        if not all(media.closed for media in self.media):
            out.append("media left open")
        return out


def statuses(datagrams: list[bytes]) -> list[int]:
    return [int(d[8:11]) for d in datagrams if d.startswith(b"SIP/2.0 ") and d[8:11].isdigit()]


@dataclass(frozen=True)
class Expected:
    kind: str  # "none": nothing goes back; "final": some final; "status": exactly that one
    status: int = 0


def expected_answer(data: bytes) -> Expected:
    """What the endpoint must send back to the source of `data` (RFC 3261 §8.2, §18.2)."""
    if not data.strip(b"\r\n"):
        return Expected("none")  # RFC 5626 keepalive
    try:
        msg = parse_message(data)
    except RemoteProtocolError as exc:
        if error_response(data, exc.status_hint) is None:
            return Expected("none")  # no request, or nothing to copy into an answer
        return Expected("status", exc.status_hint)
    if isinstance(msg, Response) or msg.method == "ACK":
        return Expected("none")
    return Expected("final")


def check_answered(stack: Stack, data: bytes, source: Address, since: int) -> None:
    expected = expected_answer(data)
    got = statuses(stack.sent_to(source, since))
    if expected.kind == "none":
        assert got == [], data[:200]
    elif expected.kind == "status":
        assert set(got) == {expected.status}, (got, data[:200])
    else:
        assert any(s >= 200 for s in got), (got, data[:300])


@fuzz_settings(80)
@given(
    st.lists(
        st.tuples(g.any_datagrams(), st.sampled_from([CALLER, CALLER, STRANGER])),
        min_size=1,
        max_size=4,
    ),
    st.lists(st.sampled_from([100, 180, 183, 200, 200, 302, 407, 486, 503]), max_size=3),
)
def test_stack_answers_every_request_and_drains(
    datagrams: list[tuple[bytes, Address]], pbx_plan: list[int]
) -> None:
    """Datagrams into the external side's UDP protocol: a malformed request gets the
    parser's status (400...) when it can be answered at all, a valid request gets a final
    response, a response or an ACK gets nothing; the handler never fails; and once the
    timers have run, no transaction, call, media or index is left."""
    stack = Stack(pbx_plan)
    for data, source in datagrams:
        since = len(stack.sent)
        stack.feed(data, source)
        stack.advance(300.0)
        check_answered(stack, data, source, since)
    assert stack.errors == []
    assert stack.leftovers() == []


@fuzz_settings(60)
@given(
    g.requests_to_recorder("INVITE", to_tag="", content_length=True),
    st.lists(st.sampled_from([180, 183, 200, 486, 503, 100]), min_size=1, max_size=2),
    st.lists(
        st.sampled_from(["BYE", "INFO", "INVITE", "UPDATE", "OPTIONS", "ACK", "CANCEL"]),
        max_size=4,
    ),
)
def test_stack_carries_a_fuzzed_call_to_its_end(
    invite: g.Generated, pbx_plan: list[int], follow_ups: list[str]
) -> None:
    """A grammar INVITE from an allowed source, answered by the PBX, then in-dialog
    requests from the caller built on the dialog the recorder gave: all answered, nothing
    left once the timers have run."""
    stack = Stack(pbx_plan)
    stack.feed(invite.wire, CALLER)
    stack.advance(0.5)
    sent = parse_message(invite.wire)
    assert isinstance(sent, Request)
    answers = [parse_message(d) for d in stack.sent_to(CALLER)]
    tags = [r.to.tag for r in answers if isinstance(r, Response) and 100 < r.status < 300]
    if tags and tags[0]:
        for n, method in enumerate(follow_ups, start=1):
            request = _in_dialog_request(method, sent, tags[0], sent.cseq.seq + n, b"", None)
            since = len(stack.sent)
            stack.feed(request, CALLER)
            stack.advance(60.0)
            if method != "ACK":
                got = statuses(stack.sent_to(CALLER, since))
                assert any(s >= 200 for s in got), (method, got)
    stack.advance(300.0)
    check_answered(stack, invite.wire, CALLER, 0)
    assert stack.errors == []
    assert stack.leftovers() == []


# ============================================================================================
# (c) the B2BUA's handler, driven by hand (as tests/recorder/test_b2bua.py does)
# ============================================================================================


class WirePort:
    """A SipPort that puts every message through serialize() and parse_message(), as the
    wire would, and checks the rules a TransactionLayer enforces on its TU: a server
    transaction gets one final response (2xx to an INVITE may repeat), no 1xx after it."""

    def __init__(self, name: str, sent_by: Address) -> None:
        self.name = name
        self.sent_by = sent_by
        self.requests: list[tuple[str, Request, Address]] = []
        self.server: dict[str, Request] = {}
        self.finals: dict[str, list[int]] = defaultdict(list)
        self.stateless: list[Message] = []
        self.cancelled: list[str] = []
        self.cancel_targets: dict[str, str] = {}
        self.violations: list[str] = []
        self._keys = itertools.count(1)

    def _via(self, request: Request) -> None:
        if "Via" not in request.headers:
            host, port = self.sent_by
            branch = f"z9hG4bK{self.name}{next(self._keys)}"
            request.headers.add("Via", f"SIP/2.0/UDP {host}:{port};branch={branch}", first=True)

    def send_request(self, request: Request, destination: Address, transport: str = "UDP") -> str:
        self._via(request)
        wire = parse_message(request.serialize())
        assert isinstance(wire, Request)
        key = f"{self.name}-c{next(self._keys)}"
        self.requests.append((key, wire, destination))
        return key

    def send_response(self, key: str, response: Response) -> None:
        parse_message(response.serialize())
        request = self.server.get(key)
        if request is None:
            self.violations.append(f"response {response.status} for unknown key {key}")
            return
        finals = self.finals[key]
        if response.status < 200:
            if finals:
                self.violations.append(f"{key}: {response.status} after final {finals}")
            return
        if finals and not (
            request.method == "INVITE" and 200 <= response.status < 300 and finals[-1] < 300
        ):
            self.violations.append(f"{key}: final {response.status} after {finals}")
        finals.append(response.status)

    def send_stateless(self, msg: Message, destination: Address, transport: str = "UDP") -> None:
        if isinstance(msg, Request):
            self._via(msg)
        self.stateless.append(parse_message(msg.serialize()))

    def cancel_request(self, key: str) -> str | None:
        self.cancelled.append(key)
        return None

    def find_cancelled(self, cancel: Request) -> str | None:
        return self.cancel_targets.get(cancel.call_id)

    def new_key(self, request: Request) -> str:
        key = f"{self.name}-s{next(self._keys)}"
        self.server[key] = request
        return key

    def unanswered(self) -> list[str]:
        return [
            f"{key} ({req.method})" for key, req in self.server.items() if not self.finals.get(key)
        ]


class FuzzHooks:
    """The application side, planned by the fuzzer: notice first or not, early media, codecs."""

    def __init__(self, plans: list[CallPlan], info_taken: bool) -> None:
        self.plans = plans
        self.info_taken = info_taken
        self.count = 0

    def plan(self, call: Any, now: float) -> CallPlan:
        self.count += 1
        return self.plans[self.count % len(self.plans)]

    def on_local_answer(self, call: Any, now: float) -> None:
        pass

    def on_b_progress(self, call: Any, early_media: bool, now: float) -> None:
        pass

    def on_bridged(self, call: Any, now: float) -> None:
        pass

    def on_info(self, call: Any, role: str, request: Request, now: float) -> bool:
        return self.info_taken

    def on_ended(self, call: Any, now: float) -> None:
        pass

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


class Scenario:
    """A B2BUA between two WirePorts, fed requests and responses by the fuzzer."""

    def __init__(self, hooks: FuzzHooks | None) -> None:
        self.ext = WirePort("ext", EXTERNAL)
        self.int = WirePort("int", INTERNAL)
        self.external = SipSideRuntime(
            sip_side("external", "203.0.113.0/24", TRUNK, EXTERNAL), self.ext, EXTERNAL
        )
        self.internal = SipSideRuntime(
            sip_side("internal", "127.0.0.1/32", PBX, INTERNAL), self.int, INTERNAL
        )
        self.media: list[FakeMedia] = []
        self.b2bua = B2bua(
            self.external,
            self.internal,
            lambda _id, _side: self._media(),
            media_address="192.0.2.1",
            ring_timeout=60,
            hooks=hooks,
        )
        self.now = 100.0
        self.answered_clients: set[str] = set()

    def _media(self) -> FakeMedia:
        media = FakeMedia(20000 + 4 * len(self.media))
        self.media.append(media)
        return media

    def port(self, side: SipSideRuntime) -> WirePort:
        return self.ext if side is self.external else self.int

    def request(self, side: SipSideRuntime, data: bytes, source: Address) -> str | None:
        msg = parse_message(data)
        assert isinstance(msg, Request)
        port = self.port(side)
        key = None if msg.method == "ACK" else port.new_key(msg)
        if msg.method == "INVITE" and key is not None:
            port.cancel_targets[msg.call_id] = key
        self.b2bua.handle_event(side, RequestReceived(msg, source, "UDP", key), self.now)
        return key

    def respond(self, key: str, request: Request, status: int, body: bytes, contact: str) -> None:
        response = make_response(request, status, to_tag=None if status == 100 else "pbx")
        if contact:
            response.headers.add("Contact", contact)
        if body:
            response.headers.add("Content-Type", "application/sdp")
            response.body = body
        wire = parse_message(response.serialize())
        assert isinstance(wire, Response)
        if status >= 200:
            self.answered_clients.add(key)
        self.b2bua.handle_event(self.internal, ResponseReceived(wire, key), self.now)

    def pending_clients(self, port: WirePort) -> list[tuple[str, Request]]:
        return [
            (key, request) for key, request, _ in port.requests if key not in self.answered_clients
        ]

    def time_out_everything(self) -> None:
        """What the layers would do in the end: every unanswered client transaction times
        out; then the calls still up are hung up, and what that sent times out in turn."""
        for _ in range(3):
            for port, side in ((self.int, self.internal), (self.ext, self.external)):
                for key, request in self.pending_clients(port):
                    self.answered_clients.add(key)
                    self.b2bua.handle_event(side, TransactionTimedOut(key, request), self.now)
            self.now += 200.0
            self.b2bua.handle_timer(self.now)
            self.b2bua.hangup_all(self.now)


def _in_dialog_request(
    method: str, invite: Request, to_tag: str, cseq: int, body: bytes, ctype: str | None
) -> bytes:
    head = (
        f"{method} sip:recorder@192.0.2.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKd{cseq}{method}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {invite.headers.get('From')}\r\n"
        f"To: {invite.headers.get('To')};tag={to_tag}\r\n"
        f"Call-ID: {invite.call_id}\r\nCSeq: {cseq} {method}\r\n"
        "Contact: <sip:caller@203.0.113.5:5060>\r\n"
    )
    if ctype:
        head += f"Content-Type: {ctype}\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode("utf-8", "surrogateescape") + body


@st.composite
def call_plans(draw: st.DrawFn) -> CallPlan:
    return CallPlan(
        answer_first=draw(st.booleans()),
        early_media=draw(st.booleans()),
        keep_codecs=draw(st.sampled_from([None, ("PCMU", "PCMA", "telephone-event"), ("G729",)])),
    )


@st.composite
def scenario_steps(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """What happens to the B2BUA, in order: requests from the caller (new INVITEs, random
    requests, in-dialog ones on a dialog it created), answers and requests of the PBX,
    timeouts, time passing, the application's go-ahead after a notice."""
    c = g.DrawChoices(draw)
    first = g.message(c, kind="request", method_name="INVITE", to_tag="",
                      content=(g.sdp_body(c), "application/sdp"), content_length=True)  # fmt: skip
    steps: list[tuple[str, Any]] = [("invite", (first.wire, CALLER))]
    for _ in range(c.integer(1, 10)):
        kind = c.choice(
            ("invite", "invite", "request", "in_dialog", "in_dialog", "pbx_response",
             "pbx_response", "pbx_response", "pbx_request", "cancel", "timeout", "time",
             "proceed")
        )  # fmt: skip
        if kind == "invite":
            content = (g.sdp_body(c), "application/sdp") if c.chance(0.8) else g.body(c)
            generated = g.message(c, kind="request", method_name="INVITE", to_tag="",
                                  content=content, content_length=True)  # fmt: skip
            source = CALLER if c.chance(0.9) else STRANGER
            steps.append((kind, (generated.wire, source)))
        elif kind == "request":
            steps.append((kind, g.message(c, kind="request", content_length=True).wire))
        elif kind == "in_dialog":
            method = c.choice(("BYE", "INFO", "INVITE", "UPDATE", "OPTIONS", "ACK", "NOTIFY",
                               "REFER", "MESSAGE", "PRACK", "FOO~"))  # fmt: skip
            content = g.body(c) if c.chance(0.5) else (g.sdp_body(c), "application/sdp")
            steps.append((kind, (method, c.integer(0, 5), content)))
        elif kind == "pbx_response":
            status = c.choice((100, 180, 183, 200, 200, 202, 302, 401, 407, 481, 486, 491, 500,
                               503, 603, c.integer(100, 699)))  # fmt: skip
            body = g.sdp_body(c) if c.chance(0.6) else (c.binary(0, 40) if c.chance(0.3) else b"")
            contact = c.choice(("<sip:pbx@127.0.0.1:5070>", "", g.name_addr(c)[0]))
            steps.append((kind, (c.integer(0, 5), status, body, contact)))
        elif kind == "pbx_request":
            method = c.choice(("BYE", "INFO", "INVITE", "UPDATE", "OPTIONS"))
            steps.append((kind, (method, c.integer(0, 5))))
        elif kind == "timeout":
            steps.append((kind, (c.choice(("ext", "int")), c.integer(0, 5))))
        elif kind == "time":
            steps.append((kind, c.choice((0.5, 5.0, 70.0, 200.0))))
        else:
            steps.append((kind, None))
    return steps


def run_step(s: Scenario, kind: str, arg: Any) -> None:
    b2bua = s.b2bua
    if kind == "invite":
        data, source = arg
        s.request(s.external, data, source)
    elif kind == "request":
        s.request(s.external, arg, CALLER)
    elif kind == "in_dialog":
        method, pick, (body, ctype) = arg
        calls = list(b2bua.calls.values())
        if not calls:
            return
        call = calls[pick % len(calls)]
        seq = call.a_invite.cseq.seq
        cseq = seq if method == "ACK" else seq + 1 + pick
        data = _in_dialog_request(method, call.a_invite, call.a.local_tag, cseq, body, ctype)
        s.request(s.external, data, call.a.peer)
    elif kind == "pbx_response":
        pick, status, body, contact = arg
        pending = s.pending_clients(s.int)
        if pending:
            key, request = pending[pick % len(pending)]
            s.respond(key, request, status, body, contact)
    elif kind == "pbx_request":
        method, pick = arg
        calls = [c for c in b2bua.calls.values() if c.b.dialog is not None]
        if not calls:
            return
        dialog = calls[pick % len(calls)].b.dialog
        assert dialog is not None
        # the PBX's request on the B dialog: its parties are ours the other way round
        data = (
            f"{method} sip:recorder@127.0.0.1:5062 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKpbx{pick}{method}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: {dialog.remote_party}\r\nTo: {dialog.local_party}\r\n"
            f"Call-ID: {dialog.call_id}\r\nCSeq: {1000 + pick} {method}\r\n"
            "Contact: <sip:pbx@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n"
        ).encode("utf-8", "surrogateescape")
        s.request(s.internal, data, PBX)
    elif kind == "cancel":
        calls = [c for c in b2bua.calls.values() if not c.a_final_sent]
        if calls:
            invite = calls[0].a_invite
            cancel = make_request("CANCEL", call_id=invite.call_id, cseq=invite.cseq.seq)
            cancel.headers.set("From", invite.headers.get("From") or "")
            cancel.headers.set("To", invite.headers.get("To") or "")
            cancel.headers.add("Via", invite.headers.get_all("Via")[0], first=True)
            s.request(s.external, cancel.serialize(), CALLER)
    elif kind == "timeout":
        which, pick = arg
        port, side = (s.int, s.internal) if which == "int" else (s.ext, s.external)
        pending = s.pending_clients(port)
        if pending:
            key, request = pending[pick % len(pending)]
            s.answered_clients.add(key)
            b2bua.handle_event(side, TransactionTimedOut(key, request), s.now)
        elif which == "ext":
            # no ACK for a 2xx we sent the caller (the port reports the INVITE's key)
            for key, request in list(s.ext.server.items())[:1]:
                if request.method == "INVITE":
                    b2bua.handle_event(side, TransactionTimedOut(key, request), s.now)
    elif kind == "time":
        s.now += arg
        b2bua.handle_timer(s.now)
    elif kind == "proceed":
        for call in list(b2bua.calls.values()):
            b2bua.proceed(call, s.now)


@fuzz_settings(150)
@given(
    scenario_steps(),
    st.one_of(st.none(), st.lists(call_plans(), min_size=1, max_size=3)),
    st.booleans(),
)
def test_b2bua_answers_every_request_it_is_given(
    steps: list[tuple[str, Any]], plans: list[CallPlan] | None, info_taken: bool
) -> None:
    """Whatever it is fed, the handler raises nothing, every message it sends serializes
    and parses, no transaction gets two finals (or a 1xx after one), and in the end
    every request it was given has its final response: none is left hanging."""
    hooks = FuzzHooks(plans, info_taken) if plans is not None else None
    s = Scenario(hooks)
    for kind, arg in steps:
        run_step(s, kind, arg)
    s.time_out_everything()
    assert s.ext.violations == [] and s.int.violations == []
    assert s.ext.unanswered() == [] and s.int.unanswered() == []
    assert s.b2bua.active_calls() == 0
    assert all(media.closed for media in s.media)
    for port in (s.ext, s.int):
        for key, statuses_ in port.finals.items():
            request = port.server[key]
            # what it could not take is refused with a 4xx/5xx (or 6xx relayed from the PBX)
            assert all(200 <= status <= 699 for status in statuses_), (request.method, statuses_)


# ============================================================================================
# Regression tests: bugs this fuzzer found
# ============================================================================================


def test_error_answer_skips_a_header_line_whose_name_is_no_token() -> None:
    # found: error_response() raised LocalProtocolError (Headers refused the name), so the
    # malformed request got no 400 and the exception escaped datagram_received()
    data = (
        b"INVITE sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: x\r\n"
        b"CSeq: 1 INVITE\r\nCon\x00tact: <sip:a@h>\r\nX-A: a\rb\r\n\r\n"
    )
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(data)
    answer = error_response(data, info.value.status_hint)
    assert answer is not None
    check_error_answer(answer, 400)


def test_error_answer_is_never_sent_to_an_ack() -> None:
    # found (bench, a million datagrams): an ACK whose From the transaction layer could not
    # read got a 400, and a malformed ACK too; RFC 3261 §17.1.1.3: an ACK gets no response
    data = (
        b"ACK sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h:5060;branch=x1\r\n"
        b"From: <sip:1+b%PE@h>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\nCall-ID: ack\r\n"
        b"CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    )
    stack = Stack()
    stack.feed(data, CALLER)  # parses; the layer's RFC 2543 key needs the From tag
    stack.feed(data.replace(b"CSeq: 1 ACK", b"CSeq: x ACK"), CALLER)  # malformed
    stack.advance(60.0)
    assert stack.sent == []
    assert stack.endpoints["external"].parse_errors == 2


def test_error_answer_for_extra_whitespace_in_the_request_line() -> None:
    # found: "INVITE  sip:..." (RFC 4475 §3.1.2.9 lwsstart) was not taken for a request and
    # dropped, where the RFC asks for a 400
    data = (TORTURE / "lwsstart.dat").read_bytes()
    answer = error_response(data, 400)
    assert answer is not None
    check_error_answer(answer, 400)


def test_layer_refusing_a_response_past_699_does_not_raise() -> None:
    # found: a "SIP/2.0 999" response whose Via the layer could not read made the endpoint
    # serialize() it to build an answer, and serialize() raised LocalProtocolError
    stack = Stack()
    data = (
        b"SIP/2.0 999 Whatever\r\nVia: SIP/2.0/UDP h:99999;branch=z9hG4bK1\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\nCall-ID: x\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    stack.feed(data, CALLER)
    assert stack.sent == []
    assert stack.endpoints["external"].parse_errors == 1


def test_b2bua_answers_a_request_whose_to_it_cannot_read() -> None:
    # found: RFC 4475 §3.3.4 unksm2 (To: isbn:...) made handle_event() raise from its own
    # error path (make_response could not tag the To): no answer, the handler crashed
    stack = Stack()
    data = (TORTURE / "unksm2.dat").read_bytes()
    stack.feed(data, CALLER)
    stack.advance(300.0)
    assert stack.errors == []
    (answer,) = [parse_message(d) for d in stack.sent_to(CALLER)]
    assert isinstance(answer, Response) and answer.status == 400
    assert answer.headers.get("To") is not None
    assert "tag=" in (answer.headers.get("To") or "")


def test_b2bua_ends_the_call_on_a_2xx_without_contact() -> None:
    # found: the PBX's 200 without Contact made Dialog.from_uac_response() raise out of
    # handle_event(): the caller's INVITE was never answered and the call (media ports
    # included) was never released
    s = Scenario(None)
    a_key = s.request(s.external, _invite_bytes("nocontact"), CALLER)
    assert a_key is not None
    ((b_key, b_invite, _),) = s.int.requests
    s.respond(b_key, b_invite, 200, b"", "")
    assert s.ext.finals[a_key] == [502]
    assert s.b2bua.active_calls() == 0
    assert s.media[0].closed


def test_b2bua_forgets_the_b_leg_invite_once_its_transaction_ends() -> None:
    # found: the ClientContext of every answered B-leg INVITE stayed in B2bua._clients for
    # ever (a 2xx does not end the client transaction for the TU): memory grew per call
    stack = Stack([200])
    invite = _invite_bytes("leak")
    stack.feed(invite, CALLER)
    stack.advance(300.0)
    assert 200 in statuses(stack.sent_to(CALLER))
    assert stack.errors == []
    assert stack.leftovers() == []


def test_in_dialog_requests_never_carry_the_contact_uri_headers() -> None:
    # found: a Contact with ?headers (legal there) became the Request-URI of the ACK / BYE
    # as it was, which RFC 3261 §19.1.1 forbids and a peer refuses with 400
    s = Scenario(None)
    data = (
        b"INVITE sip:5551234@192.0.2.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKhdr\r\nMax-Forwards: 70\r\n"
        b"From: <sip:+15145550100@203.0.113.5>;tag=a\r\nTo: <sip:5551234@192.0.2.1>\r\n"
        b"Call-ID: hdr@203.0.113.5\r\nCSeq: 1 INVITE\r\n"
        b"Contact: <sip:a@203.0.113.5;method=INVITE?Subject=hi&Priority=urgent>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    s.request(s.external, data, CALLER)
    ((b_key, b_invite, _),) = s.int.requests
    s.respond(b_key, b_invite, 200, b"", "<sip:pbx@127.0.0.1:5070;method=INVITE?X=1>")
    s.b2bua.hangup_all(s.now)
    sent = [r for _, r, _ in s.ext.requests + s.int.requests] + [
        m for m in s.ext.stateless + s.int.stateless if isinstance(m, Request)
    ]
    assert {r.method for r in sent} >= {"BYE"}
    for request in sent:
        assert request.uri.headers == {} and "method" not in request.uri.params


def _invite_bytes(call_id: str, *, contact: str = "<sip:a@203.0.113.5>") -> bytes:
    sdp = (
        b"v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0\r\n"
    )
    head = (
        "INVITE sip:5551234@192.0.2.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK{call_id}\r\nMax-Forwards: 70\r\n"
        "From: <sip:+15145550100@203.0.113.5>;tag=a\r\nTo: <sip:5551234@192.0.2.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: {contact}\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n"
    )
    return head.encode() + sdp


def test_b2bua_gives_up_on_a_pbx_silent_after_100_trying() -> None:
    # found: a 100 stops timer B and only a 180/183 armed the ring timeout, so a PBX that
    # said "Trying" and nothing more held the caller, the call and its media for ever
    stack = Stack([100])
    stack.feed(_invite_bytes("trying"), CALLER)
    stack.advance(3600.0)
    assert statuses(stack.sent_to(CALLER))[:2] == [100, 408]
    assert stack.errors == []
    assert stack.leftovers() == []


def test_b2bua_refuses_a_reinvite_while_the_pbx_still_rings() -> None:
    # found: an INVITE from the caller in the early dialog (after our 180) made the B2BUA
    # build a second INVITE on the B leg: Dialog.create_request() raised LocalProtocolError
    # out of the handler and the caller's INVITE was never answered
    s = Scenario(None)
    a_key = s.request(s.external, _invite_bytes("early"), CALLER)
    ((b_key, b_invite, _),) = s.int.requests
    s.respond(b_key, b_invite, 180, b"", "<sip:pbx@127.0.0.1:5070>")
    (call,) = s.b2bua.calls.values()
    reinvite = _in_dialog_request("INVITE", call.a_invite, call.a.local_tag, 2, b"", None)
    key = s.request(s.external, reinvite, CALLER)
    assert key is not None and s.ext.finals[key] == [491]
    assert a_key is not None and s.ext.finals[a_key] == []  # the call goes on ringing


def test_b2bua_refuses_an_in_dialog_body_without_content_type() -> None:
    # found: an INFO with a body and no Content-Type made Dialog.create_request() raise
    # ("a body needs a Content-Type") out of the handler: no answer, a handler failure
    s = Scenario(None)
    s.request(s.external, _invite_bytes("noctype"), CALLER)
    ((b_key, b_invite, _),) = s.int.requests
    s.respond(b_key, b_invite, 200, b"", "<sip:pbx@127.0.0.1:5070>")
    (call,) = s.b2bua.calls.values()
    info = _in_dialog_request("INFO", call.a_invite, call.a.local_tag, 2, b"Signal=9\r\n", None)
    key = s.request(s.external, info, CALLER)
    assert key is not None and s.ext.finals[key] == [400]


def test_endpoint_counters_do_not_grow_with_the_methods_peers_invent() -> None:
    # found (bench, RSS over a million datagrams): every new extension method a peer sent
    # added keys to SipEndpoint.messages, and series to /metrics, without end
    stack = Stack()
    for n in range(300):
        data = (
            f"FUZZ{n}~ sip:a@192.0.2.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKm{n}\r\n"
            f"From: <sip:b@203.0.113.5>;tag=1\r\nTo: <sip:a@192.0.2.1>\r\nCall-ID: m{n}\r\n"
            f"CSeq: 1 FUZZ{n}~\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        stack.feed(data, CALLER)
    assert statuses(stack.sent_to(CALLER)) == [501] * 300
    assert set(stack.endpoints["external"].messages) == {("in", "other", 0), ("out", "other", 501)}


def test_stream_framing_reads_a_folded_content_length() -> None:
    # found: "Content-Length:\r\n 0" (LWS after HCOLON folded onto the next line, RFC 3261
    # §7.3.1) broke a TCP connection's framing: a valid message refused
    data = (
        b"OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n"
        b"From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: fold\r\n"
        b"CSeq: 1 OPTIONS\r\nl:\r\n 4\r\n\r\nbody"
    )
    parser = StreamParser()
    (msg,) = parser.feed(data)
    assert msg.body == b"body" and not parser.broken


# ============================================================================================
# RFC 4475 on the wire: what goes back for each torture message (the parser's side of each
# is in tests/sip/test_torture.py)
# ============================================================================================

# name -> statuses acceptable as the service's final answer; () : nothing goes back.
RFC4475_ON_THE_WIRE: dict[str, tuple[int, ...]] = {
    # §3.1.1 valid messages
    "wsinv": (481,),  # To tag of a dialog we do not have
    "intmeth": (501,),  # unknown method
    "esc01": (488,),  # its SDP says "a=rtpmap:31 LPC" (no clock rate, RFC 4566 §6)
    "escnull": (405,),  # REGISTER: we are no registrar
    "esc02": (501,),  # RE%47IST%45R is no REGISTER
    "lwsdisp": (200,),
    "longreq": (488,),  # the same SDP as esc01
    "dblreq": (405,),  # the REGISTER; the INVITE behind it in the datagram is dropped
    "semiuri": (200,),
    "transports": (200,),
    "mpart01": (405,),
    "unreason": (),  # responses: nothing to answer, no transaction of ours
    "noreason": (),
    # §3.1.2 invalid messages: the parser's status, statelessly (RFC 3261 §8.2.6)
    "badinv01": (400,),
    "clerr": (400,),
    "ncl": (400,),
    "scalar02": (400,),
    "scalarlg": (),  # a response: dropped
    "quotbal": (400,),
    "ltgtruri": (400,),
    "lwsruri": (400,),
    "lwsstart": (400,),
    "trws": (400,),
    "escruri": (400,),
    "baddate": (400,),
    "regbadct": (400,),
    "badaspec": (400,),
    "baddn": (400,),
    "badvers": (505,),
    "mismatch01": (400,),
    "mismatch02": (501,),
    "bigcode": (),  # a response: dropped
    # §3.2, §3.3
    "badbranch": (200, 400),  # OPTIONS; the B2BUA does not check the bare cookie
    "insuf": (),  # no Call-ID, From, To: no answer can be built (§8.2.6), dropped
    "unkscm": (416,),
    "novelsc": (416,),
    "unksm2": (400,),
    "bext01": (200, 420),  # OPTIONS; Require is checked on INVITEs only (see the report)
    "invut": (408, 415),  # placed as a call (unknown body type) until the PBX is silent
    "regaut01": (405,),
    "multi01": (400,),
    "mcl01": (400,),
    "bcast": (),  # a response: dropped
    "zeromf": (200,),  # we are an endpoint for OPTIONS: Max-Forwards 0 is fine
    "cparam01": (405,),
    "cparam02": (405,),
    "regescrt": (405,),
    "sdp01": (406, 488),  # an SDP body we cannot take either (LPC rtpmap)
    "inv2543": (400,),  # no Contact: no dialog can be made (RFC 3261 §8.1.1.8)
    "test": (),  # no SIP version, Via or CSeq: no request to answer
}


def test_rfc4475_table_covers_every_torture_message() -> None:
    assert set(RFC4475_ON_THE_WIRE) == {p.stem for p in TORTURE.glob("*.dat")}


@pytest.mark.parametrize(
    ("name", "allowed"),
    [pytest.param(name, allowed, id=name) for name, allowed in sorted(RFC4475_ON_THE_WIRE.items())],
)
def test_rfc4475_on_the_wire(name: str, allowed: tuple[int, ...]) -> None:
    data = (TORTURE / f"{name}.dat").read_bytes()
    stack = Stack()
    stack.feed(data, CALLER)
    stack.advance(300.0)
    finals = [s for s in statuses(stack.sent_to(CALLER)) if s >= 200]
    if allowed:
        assert finals and set(finals) <= set(allowed), finals
    else:
        assert stack.sent_to(CALLER) == []
    assert stack.errors == []
    assert stack.leftovers() == []


# ============================================================================================
# RFC 5118: IPv6 torture messages (the Content-Length values of §4.6, §4.8 and §4.9 do not
# match their bodies as printed in the RFC; they are computed here)
# ============================================================================================


def rfc5118(head: str, body: str = "") -> bytes:
    lines = head.strip("\n").split("\n")
    raw_body = body.strip("\n").replace("\n", "\r\n").encode() + (b"\r\n" if body else b"")
    lines.append(f"Content-Length: {len(raw_body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + raw_body


REGISTER_HEAD = """\
To: sip:user@example.com
From: sip:user@example.com;tag=81x2
Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111
Call-ID: SSG9559905523997077@hlau_4100
Max-Forwards: 70
Contact: "Caller" <sip:caller@[2001:db8::1]>
CSeq: 98176 REGISTER
"""

IPV6_GOOD = rfc5118("REGISTER sip:[2001:db8::10] SIP/2.0\n" + REGISTER_HEAD)
IPV6_BAD = rfc5118("REGISTER sip:2001:db8::10 SIP/2.0\n" + REGISTER_HEAD)
PORT_AMBIGUOUS = rfc5118("REGISTER sip:[2001:db8::10:5070] SIP/2.0\n" + REGISTER_HEAD)
PORT_UNAMBIGUOUS = rfc5118("REGISTER sip:[2001:db8::10]:5070 SIP/2.0\n" + REGISTER_HEAD)
VIA_RECEIVED_WITH_DELIM = rfc5118("""
BYE sip:[2001:db8::10] SIP/2.0
To: sip:user@example.com;tag=bd76ya
From: sip:user@example.com;tag=81x2
Via: SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3-111
Call-ID: SSG9559905523997077@hlau_4100
Max-Forwards: 70
CSeq: 321 BYE
""")
VIA_RECEIVED_NO_DELIM = rfc5118("""
OPTIONS sip:[2001:db8::10] SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=81x2
Via: SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3
Call-ID: SSG95523997077@hlau_4100
Max-Forwards: 70
Contact: "Caller" <sip:caller@[2001:db8::9:1]>
CSeq: 921 OPTIONS
""")
IPV6_IN_SDP = rfc5118(
    """
INVITE sip:user@[2001:db8::10] SIP/2.0
To: sip:user@[2001:db8::10]
From: sip:user@example.com;tag=81x2
Via: SIP/2.0/UDP [2001:db8::20];branch=z9hG4bKas3-111
Call-ID: SSG9559905523997077@hlau_4100
Contact: "Caller" <sip:caller@[2001:db8::20]>
CSeq: 8612 INVITE
Max-Forwards: 70
Content-Type: application/sdp
""",
    """
v=0
o=assistant 971731711378798081 0 IN IP6 2001:db8::20
s=Live video feed for today's meeting
c=IN IP6 2001:db8::20
t=3338481189 3370017201
m=audio 6000 RTP/AVP 2
a=rtpmap:2 G726-32/8000
m=video 6024 RTP/AVP 107
a=rtpmap:107 H263-1998/90000
""",
)
MULT_IP_IN_HEADER = rfc5118("""
BYE sip:user@host.example.net SIP/2.0
Via: SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3-111
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKjhja8781hjuaij65144
Via: SIP/2.0/TCP [2001:db8::9:255];branch=z9hG4bK451jj;received=192.0.2.200
Call-ID: 997077@lau_4100
Max-Forwards: 70
CSeq: 89187 BYE
To: sip:user@example.net;tag=9817--94
From: sip:user@example.com;tag=81x2
""")
MULT_IP_IN_SDP = rfc5118(
    """
INVITE sip:user@[2001:db8::10] SIP/2.0
To: sip:user@[2001:db8::10]
From: sip:user@example.com;tag=81x2
Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111
Call-ID: SSG9559905523997077@hlau_4100
Contact: "Caller" <sip:caller@[2001:db8::9:1]>
Max-Forwards: 70
CSeq: 8912 INVITE
Content-Type: application/sdp
""",
    """
v=0
o=bob 280744730 28977631 IN IP4 host.example.com
s=
t=0 0
m=audio 22334 RTP/AVP 0
c=IN IP4 192.0.2.1
m=video 6024 RTP/AVP 107
c=IN IP6 2001:db8::1
a=rtpmap:107 H263-1998/90000
""",
)
IPV4_MAPPED_IPV6 = rfc5118(
    """
INVITE sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:user@east.example.com;tag=81x2
Via: SIP/2.0/UDP [::ffff:192.0.2.10]:19823;branch=z9hG4bKbh19
Via: SIP/2.0/UDP [::ffff:192.0.2.2];branch=z9hG4bKas3-111
Call-ID: SSG9559905523997077@hlau_4100
Contact: "T. desk phone" <sip:ted@[::ffff:192.0.2.2]>
CSeq: 612 INVITE
Max-Forwards: 70
Content-Type: application/sdp
""",
    """
v=0
o=assistant 971731711378798081 0 IN IP6 ::ffff:192.0.2.2
s=Call me soon, please!
c=IN IP6 ::ffff:192.0.2.2
t=3338481189 3370017201
m=audio 6000 RTP/AVP 2
a=rtpmap:2 G726-32/8000
m=video 6024 RTP/AVP 107
a=rtpmap:107 H263-1998/90000
""",
)
OPTIONS_ABNF = """
OPTIONS sip:user@[{host}] SIP/2.0
To: sip:user@[{host}]
From: sip:user@example.com;tag=810x2
Via: SIP/2.0/UDP lab1.east.example.com;branch=z9hG4bKas3-111
Call-ID: G9559905523997077@hlau_4100
CSeq: 689 OPTIONS
Max-Forwards: 70
"""
IPV6_BUG_ABNF_3_COLONS = rfc5118(OPTIONS_ABNF.format(host="2001:db8:::192.0.2.1"))
IPV6_CORRECT_ABNF_2_COLONS = rfc5118(OPTIONS_ABNF.format(host="2001:db8::192.0.2.1"))


def request_of(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def wire_finals(data: bytes) -> list[int]:
    stack = Stack()
    stack.feed(data, CALLER)
    stack.advance(300.0)
    assert stack.errors == [] and stack.leftovers() == []
    # the distinct finals, retransmissions left out
    return list(dict.fromkeys(s for s in statuses(stack.sent_to(CALLER)) if s >= 200))


def test_rfc5118_4_1_ipv6_good() -> None:
    req = request_of(IPV6_GOOD)
    assert (req.uri.host, req.uri.port) == ("[2001:db8::10]", None)
    assert req.uri.host_port == ("2001:db8::10", 5060)
    assert req.via[0].sent_by == ("2001:db8::9:1", 5060)
    assert req.contact[0].uri.host == "[2001:db8::1]"
    assert wire_finals(IPV6_GOOD) == [405]  # a REGISTER, and we are no registrar


def test_rfc5118_4_2_ipv6_bad() -> None:
    # "should respond with a 400 Bad Request"
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(IPV6_BAD)
    assert info.value.status_hint == 400
    assert wire_finals(IPV6_BAD) == [400]


def test_rfc5118_4_3_port_ambiguous() -> None:
    # well-formed; everything inside the brackets is the address: no port
    req = request_of(PORT_AMBIGUOUS)
    assert (req.uri.host, req.uri.port) == ("[2001:db8::10:5070]", None)
    assert req.uri.host_port == ("2001:db8::10:5070", 5060)
    assert wire_finals(PORT_AMBIGUOUS) == [405]


def test_rfc5118_4_4_port_unambiguous() -> None:
    req = request_of(PORT_UNAMBIGUOUS)
    assert (req.uri.host, req.uri.port) == ("[2001:db8::10]", 5070)
    assert req.uri.host_port == ("2001:db8::10", 5070)
    assert str(req.uri) == "sip:[2001:db8::10]:5070"
    assert wire_finals(PORT_UNAMBIGUOUS) == [405]


def test_rfc5118_4_5_via_received_param_with_delim() -> None:
    # not valid by a strict reading of RFC 3261, but the top Via must still be read
    req = request_of(VIA_RECEIVED_WITH_DELIM)
    (via,) = req.via
    assert via.received == "[2001:db8::9:255]" and via.branch == "z9hG4bKas3-111"
    assert wire_finals(VIA_RECEIVED_WITH_DELIM) == [481]  # a BYE for no dialog of ours


def test_rfc5118_4_5_via_received_param_no_delim() -> None:
    req = request_of(VIA_RECEIVED_NO_DELIM)
    (via,) = req.via
    assert via.received == "2001:db8::9:255" and via.sent_by == ("2001:db8::9:1", 5060)
    assert wire_finals(VIA_RECEIVED_NO_DELIM) == [200]


def test_rfc5118_4_6_ipv6_in_sdp() -> None:
    from sip.sdp import SessionDescription

    req = request_of(IPV6_IN_SDP)
    sdp = SessionDescription.parse(req.body)
    assert sdp.connection is not None and sdp.connection.address == "2001:db8::20"
    assert [m.media_type for m in sdp.media] == ["audio", "video"]
    stack = Stack()
    stack.feed(IPV6_IN_SDP, CALLER)
    # the call is placed; the B leg's offer is anchored on our (IPv4) media address
    (b_invite,) = [
        parse_message(d) for side, d, dest, _ in stack.sent if side == "internal" and dest == PBX
    ]
    assert b"c=IN IP4 192.0.2.1" in b_invite.body and b"2001:db8::20" not in b_invite.body
    stack.advance(300.0)
    assert statuses(stack.sent_to(CALLER))[-1] == 408  # the PBX (silent here) never answered
    assert stack.errors == [] and stack.leftovers() == []


def test_rfc5118_4_7_mult_ip_in_header() -> None:
    req = request_of(MULT_IP_IN_HEADER)
    vias = req.via
    assert [(v.transport, v.sent_by) for v in vias] == [
        ("UDP", ("2001:db8::9:1", 6050)),
        ("UDP", ("192.0.2.1", 5060)),
        ("TCP", ("2001:db8::9:255", 5060)),
    ]
    assert vias[2].received == "192.0.2.200"
    stack = Stack()
    stack.feed(MULT_IP_IN_HEADER, CALLER)
    (answer,) = [parse_message(d) for d in stack.sent_to(CALLER)]
    assert isinstance(answer, Response) and answer.status == 481
    # every Via comes back in order; the top one says where the request came from
    assert [v.sent_by for v in answer.via] == [v.sent_by for v in vias]
    assert answer.via[0].received == CALLER[0]


def test_rfc5118_4_8_mult_ip_in_sdp() -> None:
    from sip.sdp import SessionDescription

    sdp = SessionDescription.parse(request_of(MULT_IP_IN_SDP).body)
    assert [m.connection_address for m in sdp.media] == ["192.0.2.1", "2001:db8::1"]
    assert wire_finals(MULT_IP_IN_SDP) == [408]  # placed, the PBX (silent here) never answered


def test_rfc5118_4_9_ipv4_mapped_ipv6() -> None:
    req = request_of(IPV4_MAPPED_IPV6)
    assert [v.sent_by for v in req.via] == [
        ("::ffff:192.0.2.10", 19823),
        ("::ffff:192.0.2.2", 5060),
    ]
    assert req.contact[0].uri.host_port == ("::ffff:192.0.2.2", 5060)
    assert wire_finals(IPV4_MAPPED_IPV6) == [408]


def test_rfc5118_4_10_ipv6_bug_abnf_3_colons() -> None:
    # "may exhibit robustness by successfully parsing": we do, and keep the host as sent
    req = request_of(IPV6_BUG_ABNF_3_COLONS)
    assert req.uri.host == "[2001:db8:::192.0.2.1]"
    assert wire_finals(IPV6_BUG_ABNF_3_COLONS) == [200]


def test_rfc5118_4_10_ipv6_correct_abnf_2_colons() -> None:
    req = request_of(IPV6_CORRECT_ABNF_2_COLONS)
    assert req.uri.host_port == ("2001:db8::192.0.2.1", 5060)
    assert req.to.uri.host == "[2001:db8::192.0.2.1]"
    assert wire_finals(IPV6_CORRECT_ABNF_2_COLONS) == [200]


# --- what the fuzzer found, kept as plain cases ------------------------------------------------

BAD_SDP_INVITE = (
    b"INVITE sip:4711@192.0.2.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-found-1\r\n"
    b"From: <sip:+15145550100@203.0.113.5>;tag=caller\r\n"
    b"To: <sip:4711@192.0.2.1>\r\n"
    b"Call-ID: found-1@203.0.113.5\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Max-Forwards: 70\r\n"
    b"Contact: <sip:caller@203.0.113.5:5060>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 91\r\n\r\n"
    b"v=0\r\no=- 0 0 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\n"
)


def test_a_302_carrying_a_broken_sdp_still_gives_the_caller_its_480() -> None:
    """An error final's body describes no session: a PBX's 302 with an SDP that does not
    parse once left the caller with no final at all (the B2BUA tried to anchor it)."""
    s = Scenario(None)
    run_step(s, "invite", (BAD_SDP_INVITE, CALLER))
    assert s.pending_clients(s.int), "the INVITE must reach the PBX"
    run_step(s, "pbx_response", (0, 302, b"\x00", "<sip:pbx@127.0.0.1:5070>"))
    s.time_out_everything()
    assert s.ext.violations == [] and s.int.violations == []
    assert s.ext.unanswered() == [] and s.int.unanswered() == []


def test_an_invite_retransmitted_after_its_transaction_ended_is_a_new_one_that_ends() -> None:
    """RFC 3261 §17.2.1: a retransmission that arrives after timer H ended the transaction
    (no ACK came for the 500) goes to the TU as a new request; answered, it ends too."""
    layer = TransactionLayer(TimerConfig(), local_sent_by=ME)
    invite = (
        b"INVITE sip:4711@192.0.2.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.2:5070;branch=z9hG4bK-late\r\n"
        b"From: <sip:peer@192.0.2.2>;tag=peer\r\nTo: <sip:4711@192.0.2.1>\r\n"
        b"Call-ID: late@192.0.2.2\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    received: list[str] = []
    now = 0.0

    def on_event(event: TransactionEvent) -> None:
        if isinstance(event, RequestReceived) and event.key is not None:
            received.append(event.key)
            answer = make_response(event.request, 500, to_tag="tu")
            layer.send_response(event.key, answer, now)

    for now in (40.0, 80.0):
        run_layer(layer, now, on_event)
        layer.receive(parse_message(invite), PEER, "UDP", now)
        for event in layer.events():
            on_event(event)
    run_layer(layer, now + 400.0, on_event)
    assert len(received) == 2 and received[0] == received[1]
    assert len(layer) == 0
