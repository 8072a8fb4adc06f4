"""SipEndpoint over real sockets on 127.0.0.1 (the only socket test module of tests/sip)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

import pytest

from sip.asyncio.endpoint import SipEndpoint
from sip.message import Response, make_response, parse_message
from sip.transaction import (
    DEFAULT_TIMERS,
    RequestReceived,
    ResponseReceived,
    TimerConfig,
    TransactionEvent,
)
from tests.sip.pair import make_ack_for_2xx, make_request

HOST = "127.0.0.1"
TIMEOUT = 5.0


class Peer:
    """An endpoint and what it saw; as UAS it answers INVITE and OPTIONS with 200."""

    def __init__(self, timers: TimerConfig = DEFAULT_TIMERS) -> None:
        self.events: list[TransactionEvent] = []
        self._changed = asyncio.Event()
        self.endpoint = SipEndpoint(self.on_event, timers)

    def on_event(self, endpoint: SipEndpoint, event: TransactionEvent) -> None:
        self.events.append(event)
        self._changed.set()
        if isinstance(event, RequestReceived) and event.key is not None:
            request = event.request
            if request.method in ("INVITE", "OPTIONS"):
                endpoint.send_response(event.key, make_response(request, 200, to_tag="uas"))

    async def wait_for(self, predicate: Callable[[TransactionEvent], bool]) -> TransactionEvent:
        async def wait() -> TransactionEvent:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(wait(), TIMEOUT)


async def start(peer: Peer) -> None:
    # Random ports in the range reserved for these tests, in case a run is parallel.
    for port in random.sample(range(13000, 14000), 20):
        try:
            await peer.endpoint.start(HOST, port)
            return
        except OSError:
            continue
    raise RuntimeError("no free port in 13000-13999")


@pytest.fixture
async def peers() -> AsyncIterator[tuple[Peer, Peer]]:
    a, b = Peer(), Peer()
    await start(a)
    await start(b)
    yield a, b
    for p in (a, b):
        p.endpoint.close()
        await p.endpoint.wait_closed()


def is_request(method: str) -> Callable[[TransactionEvent], bool]:
    return lambda e: isinstance(e, RequestReceived) and e.request.method == method


def is_final(key: str) -> Callable[[TransactionEvent], bool]:
    return lambda e: isinstance(e, ResponseReceived) and e.key == key and e.response.status >= 200


async def invite_200_ack(a: Peer, b: Peer, transport: str, body: bytes = b"") -> RequestReceived:
    invite = make_request("INVITE", uri=f"sip:bob@{HOST}:{b.endpoint.local_address[1]}", body=body)
    key = a.endpoint.send_request(invite, b.endpoint.local_address, transport)
    got = await b.wait_for(is_request("INVITE"))
    final = await a.wait_for(is_final(key))
    assert isinstance(final, ResponseReceived) and final.response.status == 200
    a.endpoint.send_stateless(
        make_ack_for_2xx(invite, final.response), b.endpoint.local_address, transport
    )
    ack = await b.wait_for(is_request("ACK"))
    assert isinstance(ack, RequestReceived) and ack.key is None
    assert isinstance(got, RequestReceived)
    return got


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
async def test_invite_200_ack(peers: tuple[Peer, Peer], transport: str) -> None:
    a, b = peers
    got = await invite_200_ack(a, b, transport)
    assert got.transport == transport
    assert got.source[0] == HOST
    if transport == "UDP":
        assert got.source == a.endpoint.local_address
    # The ACK stopped the 2xx retransmission: no timer of the endpoint is left for it.
    assert b.endpoint._pending_2xx == {}


async def test_large_request_goes_over_tcp(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    body = b"v=0\r\n" + b"a=x-pad:" + b"x" * 1500 + b"\r\n"
    got = await invite_200_ack(a, b, "UDP", body=body)
    assert got.transport == "TCP"
    assert got.request.body == body
    assert got.request.via[0].transport == "TCP"


class RawUdp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.put_nowait(data)


MALFORMED = (
    b"OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKbad\r\n"
    b"From: <sip:alice@example.com>;tag=a\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: broken-1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 500\r\n"  # more than there is: malformed
    b"\r\nshort"
)


async def test_malformed_datagram_gets_400_and_endpoint_keeps_serving(
    peers: tuple[Peer, Peer],
) -> None:
    a, b = peers
    loop = asyncio.get_running_loop()
    transport, raw = await loop.create_datagram_endpoint(RawUdp, local_addr=(HOST, 0))
    try:
        transport.sendto(MALFORMED, b.endpoint.local_address)
        answer = parse_message(await asyncio.wait_for(raw.received.get(), TIMEOUT))
        assert isinstance(answer, Response) and answer.status == 400
        assert answer.call_id == "broken-1" and answer.cseq.method == "OPTIONS"
        assert answer.to.tag is not None
        # Garbage with no usable header is dropped without an answer.
        transport.sendto(b"\x00\x01garbage\r\n\r\n", b.endpoint.local_address)
        # A well-formed request afterwards is still served.
        key = a.endpoint.send_request(make_request("OPTIONS"), b.endpoint.local_address, "UDP")
        final = await a.wait_for(is_final(key))
        assert isinstance(final, ResponseReceived) and final.response.status == 200
        assert raw.received.empty()
    finally:
        transport.close()
    assert not [
        e for e in b.events if isinstance(e, RequestReceived) and e.request.call_id == "broken-1"
    ]


async def test_malformed_tcp_stream_gets_400(peers: tuple[Peer, Peer]) -> None:
    _, b = peers
    reader, writer = await asyncio.open_connection(*b.endpoint.local_address)
    try:
        writer.write(MALFORMED.replace(b"Content-Length: 500", b"Content-Length: nope"))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(65536), TIMEOUT)
        answer = parse_message(data)
        assert isinstance(answer, Response) and answer.status == 400
        assert answer.call_id == "broken-1"
    finally:
        writer.close()


async def test_handler_exception_does_not_break_the_endpoint(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    calls: list[TransactionEvent] = []

    def failing(endpoint: SipEndpoint, event: TransactionEvent) -> None:
        calls.append(event)
        if len(calls) == 1:
            raise ValueError("TU bug")
        b.on_event(endpoint, event)

    b.endpoint._on_event = failing
    first = a.endpoint.send_request(make_request("OPTIONS"), b.endpoint.local_address, "UDP")
    second = a.endpoint.send_request(
        make_request("OPTIONS", call_id="other"), b.endpoint.local_address, "UDP"
    )
    final = await a.wait_for(is_final(second))
    assert isinstance(final, ResponseReceived) and final.response.status == 200
    assert not [e for e in a.events if isinstance(e, ResponseReceived) and e.key == first]


async def test_malformed_tcp_message_with_intact_framing_keeps_the_connection(
    peers: tuple[Peer, Peer],
) -> None:
    _, b = peers
    bad = MALFORMED.replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE").replace(
        b"Content-Length: 500\r\n\r\nshort", b"Content-Length: 0\r\n\r\n"
    )
    good = make_request("OPTIONS", call_id="good-1")
    good.headers.add("Via", "SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKgood", first=True)
    reader, writer = await asyncio.open_connection(*b.endpoint.local_address)
    try:
        # Both in one write: the error behind nothing, the good one behind the error.
        writer.write(bad + good.serialize())
        await writer.drain()
        answers: dict[str, int] = {}
        buffer = b""
        while len(answers) < 2:
            buffer += await asyncio.wait_for(reader.read(65536), TIMEOUT)
            while b"\r\n\r\n" in buffer:
                head, _, rest = buffer.partition(b"\r\n\r\n")
                msg = parse_message(head + b"\r\n\r\n")
                buffer = rest
                assert isinstance(msg, Response)
                answers[msg.call_id] = msg.status
        assert answers == {"broken-1": 400, "good-1": 200}
    finally:
        writer.close()
