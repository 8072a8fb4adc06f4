"""SipEndpoint over TLS on 127.0.0.1: transactions, Via, and handshakes that fail in one line."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sip.asyncio.tls import TlsSettings, client_context, tls_settings
from sip.transaction import (
    RequestReceived,
    ResponseReceived,
    TimerConfig,
    TransactionEvent,
    TransactionTimedOut,
)
from tests.interop.peers import free_port_block
from tests.sip.pair import make_ack_for_2xx, make_request
from tests.sip.test_asyncio_transport import Peer as PlainPeer
from tests.tlscerts import Ca, CertFiles, make_ca, make_cert

HOST = "127.0.0.1"
TIMEOUT = 5.0
# Timer F / B are 64*T1 on every transport: short, for the transactions meant to time out.
QUICK = TimerConfig(t1=0.02, t2=0.2, t4=0.2)


class Peer(PlainPeer):
    """test_asyncio_transport's peer (answers INVITE and OPTIONS with 200), started with TLS."""

    def __init__(self, timers: TimerConfig = QUICK) -> None:
        super().__init__(timers)

    async def start(self, tls: TlsSettings | None) -> None:
        port = free_port_block(2, tcp=True)
        if tls is not None and tls.listen is not None:
            tls = TlsSettings(
                tls.client_context,
                tls.server_context,
                (HOST, port + 1),
                tls.server_name,
                tls.sent_by,
                tls.handshake_timeout,
            )
        await self.endpoint.start(HOST, port, tls=tls)

    @property
    def tls_address(self) -> tuple[str, int]:
        address = self.endpoint.tls_address
        assert address is not None
        return address


def is_request(method: str) -> Callable[[TransactionEvent], bool]:
    return lambda e: isinstance(e, RequestReceived) and e.request.method == method


def is_final(key: str) -> Callable[[TransactionEvent], bool]:
    return lambda e: isinstance(e, ResponseReceived) and e.key == key and e.response.status >= 200


def is_timeout(key: str) -> Callable[[TransactionEvent], bool]:
    return lambda e: isinstance(e, TransactionTimedOut) and e.key == key


class Pki:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca: Ca = make_ca(directory)
        self.rogue: Ca = make_ca(directory, "rogue")

    def cert(self, name: str, ca: Ca | None = None) -> CertFiles:
        return make_cert(ca or self.ca, self.dir, name)

    def settings(
        self, name: str, *, verify_client: bool = False, ca: Ca | None = None
    ) -> TlsSettings:
        files = self.cert(name, ca)
        return tls_settings(
            cert=files.cert,
            key=files.key,
            listen=(HOST, 0),
            ca=self.ca.cert_path,
            verify_client=verify_client,
        )


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
async def stop() -> AsyncIterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.endpoint.close()
        await peer.endpoint.wait_closed()


async def peer(stop: list[Peer], tls: TlsSettings | None) -> Peer:
    p = Peer()
    stop.append(p)
    await p.start(tls)
    return p


def tls_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def no_asyncio_noise(caplog: pytest.LogCaptureFixture) -> None:
    """A failed handshake is the endpoint's one line, never asyncio's traceback."""
    assert [r for r in caplog.records if r.name == "asyncio"] == []
    assert all(r.exc_info is None for r in caplog.records)


async def test_options_and_invite_over_tls(pki: Pki, stop: list[Peer]) -> None:
    a = await peer(stop, pki.settings("a"))
    b = await peer(stop, pki.settings("b"))

    key = a.endpoint.send_request(make_request("OPTIONS"), b.tls_address, "TLS")
    received = await b.wait_for(is_request("OPTIONS"))
    assert isinstance(received, RequestReceived)
    assert received.transport == "TLS"
    via = received.request.via[0]
    assert via.transport == "TLS"
    # The sent-by is a's TLS port: where a response would be sent on a new connection.
    assert (via.host, via.port) == a.tls_address
    final = await a.wait_for(is_final(key))
    assert isinstance(final, ResponseReceived)
    assert final.response.status == 200

    invite = make_request("INVITE")
    key = a.endpoint.send_request(invite, b.tls_address, "TLS")
    ok = await a.wait_for(is_final(key))
    assert isinstance(ok, ResponseReceived)
    a.endpoint.send_stateless(make_ack_for_2xx(invite, ok.response), b.tls_address, "TLS")
    ack = await b.wait_for(is_request("ACK"))
    assert isinstance(ack, RequestReceived) and ack.transport == "TLS"
    # One connection carried it all, and TCP to the same peer is another one.
    assert [k for k in a.endpoint._connections if k[0] == "TLS"] == [("TLS", b.tls_address)]
    key = a.endpoint.send_request(make_request("OPTIONS"), b.endpoint.local_address, "TCP")
    await a.wait_for(is_final(key))
    tcp = [e for e in b.events if isinstance(e, RequestReceived) and e.transport == "TCP"]
    assert len(tcp) == 1 and tcp[0].request.via[0].transport == "TCP"
    assert a.endpoint.tls_failures == b.endpoint.tls_failures == 0


async def test_untrusted_server_certificate(
    pki: Pki, stop: list[Peer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    a = await peer(stop, pki.settings("a"))
    b = await peer(stop, pki.settings("b", ca=pki.rogue))  # a does not trust the rogue CA

    key = a.endpoint.send_request(make_request("OPTIONS"), b.tls_address, "TLS")
    await a.wait_for(is_timeout(key))
    host, port = b.tls_address
    lines = tls_lines(caplog, f"TLS connection to {host}:{port} failed")
    assert len(lines) == 1, lines
    assert "certificate verify failed" in lines[0] and "1 message(s) dropped" in lines[0]
    assert a.endpoint.tls_failures == 1
    # b sees a's side of it: a closed the connection once our certificate did not verify.
    assert len(tls_lines(caplog, "TLS handshake with")) == 1
    assert not any(isinstance(e, RequestReceived) for e in b.events)
    no_asyncio_noise(caplog)


async def test_server_certificate_must_name_the_host(
    pki: Pki, stop: list[Peer], caplog: pytest.LogCaptureFixture
) -> None:
    files = make_cert(pki.ca, pki.dir, "elsewhere", ip="192.0.2.1", dns=("pbx.example",))
    b = await peer(stop, tls_settings(cert=files.cert, key=files.key, listen=(HOST, 0)))
    a = await peer(stop, pki.settings("a"))

    key = a.endpoint.send_request(make_request("OPTIONS"), b.tls_address, "TLS")
    await a.wait_for(is_timeout(key))
    lines = tls_lines(caplog, "TLS connection to")
    assert len(lines) == 1 and "IP address mismatch" in lines[0], lines


async def test_client_certificate_required(
    pki: Pki, stop: list[Peer], caplog: pytest.LogCaptureFixture
) -> None:
    b = await peer(stop, pki.settings("b", verify_client=True))
    # No certificate to show: a client context only.
    anonymous = await peer(stop, TlsSettings(client_context(ca=pki.ca.cert_path)))
    key = anonymous.endpoint.send_request(make_request("OPTIONS"), b.tls_address, "TLS")
    await anonymous.wait_for(is_timeout(key))
    lines = tls_lines(caplog, "TLS handshake with 127.0.0.1:")
    assert len(lines) == 1, lines
    assert "certificate" in lines[0]
    assert b.endpoint.tls_failures == 1

    # The endpoint goes on serving those that show one.
    a = await peer(stop, pki.settings("a"))
    key = a.endpoint.send_request(make_request("OPTIONS"), b.tls_address, "TLS")
    final = await a.wait_for(is_final(key))
    assert isinstance(final, ResponseReceived) and final.response.status == 200
    no_asyncio_noise(caplog)


async def test_client_certificate_from_another_ca(
    pki: Pki, stop: list[Peer], caplog: pytest.LogCaptureFixture
) -> None:
    b = await peer(stop, pki.settings("b", verify_client=True))
    rogue = pki.cert("intruder", pki.rogue)
    context = client_context(ca=pki.ca.cert_path, cert=rogue.cert, key=rogue.key)
    intruder = await peer(stop, TlsSettings(context))
    key = intruder.endpoint.send_request(make_request("OPTIONS"), b.tls_address, "TLS")
    await intruder.wait_for(is_timeout(key))
    lines = tls_lines(caplog, "TLS handshake with 127.0.0.1:")
    assert len(lines) == 1, lines
    assert "certificate verify failed" in lines[0]
    assert not any(isinstance(e, RequestReceived) for e in b.events)


async def test_garbage_on_the_tls_port(
    pki: Pki, stop: list[Peer], caplog: pytest.LogCaptureFixture
) -> None:
    b = await peer(stop, pki.settings("b"))
    reader, writer = await asyncio.open_connection(*b.tls_address)
    writer.write(b"OPTIONS sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP x\r\n\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # closed on us
    writer.close()
    lines = tls_lines(caplog, "TLS handshake with 127.0.0.1:")
    assert len(lines) == 1, lines
    assert b.endpoint.tls_failures == 1
    assert b.endpoint.parse_errors == 0

    a = await peer(stop, pki.settings("a"))
    key = a.endpoint.send_request(make_request("OPTIONS"), b.tls_address, "TLS")
    await a.wait_for(is_final(key))
    no_asyncio_noise(caplog)


async def test_tls_not_configured_drops_in_one_line(
    stop: list[Peer], caplog: pytest.LogCaptureFixture
) -> None:
    a = await peer(stop, None)
    key = a.endpoint.send_request(make_request("OPTIONS"), (HOST, 9), "TLS")
    await a.wait_for(is_timeout(key))
    assert len(tls_lines(caplog, "transport TLS not supported")) == 1


async def test_plain_python_client(pki: Pki, stop: list[Peer]) -> None:
    """What a third-party TLS client sees: our certificate, and a framed 200 back."""
    b = await peer(stop, pki.settings("b"))
    context = ssl.create_default_context(cafile=str(pki.ca.cert_path))
    reader, writer = await asyncio.open_connection(
        *b.tls_address, ssl=context, server_hostname=HOST
    )
    options = make_request("OPTIONS")
    options.headers.set("Via", "SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK-plain;rport")
    writer.write(options.serialize())
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), TIMEOUT)
    assert status == b"SIP/2.0 200 OK\r\n"
    writer.close()


def test_handshakes_under_uvloop(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    """The service runs on uvloop: a ClientHello must never be lost between accept and
    handshake there either (start_tls() on an accepted transport did lose some)."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        started: list[Peer] = []
        try:
            b = await peer(started, pki.settings("b", verify_client=True))
            a = await peer(started, pki.settings("a"))
            anonymous = await peer(started, TlsSettings(client_context(ca=pki.ca.cert_path)))
            for n in range(5):
                # A new connection each time: the old one is closed under a's feet.
                for conn in list(a.endpoint._connections.values()):
                    conn.close()
                await asyncio.sleep(0.01)
                key = a.endpoint.send_request(
                    make_request("OPTIONS", call_id=f"uv-{n}"), b.tls_address, "TLS"
                )
                final = await a.wait_for(is_final(key))
                assert isinstance(final, ResponseReceived) and final.response.status == 200
            key = anonymous.endpoint.send_request(make_request("OPTIONS"), b.tls_address, "TLS")
            await anonymous.wait_for(is_timeout(key))
            assert b.endpoint.tls_failures == 1
        finally:
            for p in started:
                p.endpoint.close()
                await p.endpoint.wait_closed()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
    assert len(tls_lines(caplog, "TLS handshake with")) == 1
    no_asyncio_noise(caplog)
