"""SIP over TLS through the running `recorder serve` (sipp here has no TLS: Python clients).

The recorder's external side accepts TLS with client certificates required; its internal side
talks TLS to a PBX (a SipEndpoint of ours) whose certificate it verifies.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sip.asyncio.endpoint import SipEndpoint
from sip.asyncio.tls import TlsSettings, tls_settings
from sip.message import Request, Response, make_response
from sip.transaction import RequestReceived, ResponseReceived, TransactionEvent
from tests.sip.pair import make_ack_for_2xx, make_request
from tests.tlscerts import CertFiles, make_ca, make_cert

from . import peers
from .conftest import RecorderFactory
from .recorder_proc import RecorderProcess

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"
TIMEOUT = 10.0


def _sdp(port: int) -> bytes:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


class Pki:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = make_ca(directory)
        self.recorder = make_cert(self.ca, directory, "recorder")

    def cert(self, name: str) -> CertFiles:
        return make_cert(self.ca, self.dir, name)

    def keys(self, tls_port: int, extra: str = "") -> str:
        """The `tls_*` keys of one recorder side."""
        return (
            f'tls_cert = "{self.recorder.cert}"\ntls_key = "{self.recorder.key}"\n'
            f'tls_ca = "{self.ca.cert_path}"\ntls_listen = "127.0.0.1:{tls_port}"\n{extra}'
        )


def _start(start_recorder: RecorderFactory, pki: Pki, pbx_port: int) -> tuple[RecorderProcess, int]:
    external_tls = peers.free_port_block(1, tcp=True)
    recorder = start_recorder(
        pbx_port=pbx_port,
        external_extra=pki.keys(external_tls, "tls_verify_client = true"),
        internal_extra=pki.keys(peers.free_port_block(1, tcp=True), 'transport = "tls"'),
    )
    return recorder, external_tls


def _options(port: int) -> bytes:
    return (
        f"OPTIONS sip:recorder@127.0.0.1:{port};transport=tls SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKtlsopt1;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:probe@127.0.0.1>;tag=probe\r\n"
        "To: <sip:recorder@127.0.0.1>\r\n"
        "Call-ID: tls-options-1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_options_over_tls_with_client_certificate(
    interop_dir: Path, start_recorder: RecorderFactory
) -> None:
    pki = Pki(interop_dir)
    recorder, tls_port = _start(start_recorder, pki, peers.free_port_block(1, tcp=True))
    started = recorder.wait_event("service.started")[0]
    assert started["external"].endswith(f"(UDP, TCP, TLS on 127.0.0.1:{tls_port})")

    client = pki.cert("probe")
    context = ssl.create_default_context(cafile=str(pki.ca.cert_path))
    context.load_cert_chain(str(client.cert), str(client.key))
    with (
        socket.create_connection((HOST, tls_port), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        # The recorder's certificate verified (server_hostname 127.0.0.1, the IP SAN).
        tls.sendall(_options(tls_port))
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = tls.recv(65535)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"SIP/2.0 200 "), answer
    assert b"Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKtlsopt1" in answer

    # Without a client certificate: refused at the handshake, in one line, and the
    # service goes on.
    anonymous = ssl.create_default_context(cafile=str(pki.ca.cert_path))
    refused: bytes | OSError
    with socket.create_connection((HOST, tls_port), timeout=TIMEOUT) as raw:
        try:
            with anonymous.wrap_socket(raw, server_hostname=HOST) as tls:
                tls.sendall(_options(tls_port))
                refused = tls.recv(65535)
        except (ssl.SSLError, ConnectionResetError) as exc:
            refused = exc  # TLS 1.2 fails the handshake itself; 1.3 the first read
    assert refused == b"" or isinstance(refused, OSError), refused  # no SIP answer
    # With TLS 1.3 the client is done before the recorder has checked its (missing)
    # certificate: the line comes a moment later.
    deadline = time.monotonic() + TIMEOUT
    lines: list[str] = []
    while not lines and time.monotonic() < deadline:
        lines = [line for line in recorder.log_text().splitlines() if "TLS handshake with" in line]
        if not lines:
            time.sleep(0.05)
    assert len(lines) == 1 and "certificate" in lines[0], lines
    assert "Traceback" not in recorder.log_text()


class Party:
    """A SipEndpoint over TLS: the caller, or the PBX (answering INVITE and BYE with 200)."""

    def __init__(self, contact: str) -> None:
        self.contact = contact
        self.events: list[TransactionEvent] = []
        self.changed = asyncio.Event()
        self.endpoint = SipEndpoint(self.on_event)

    def on_event(self, endpoint: SipEndpoint, event: TransactionEvent) -> None:
        self.events.append(event)
        self.changed.set()
        if not isinstance(event, RequestReceived) or event.key is None:
            return
        request = event.request
        if request.method == "INVITE":
            response = make_response(request, 200, to_tag="pbx")
            response.headers.add("Contact", self.contact)
            response.headers.add("Content-Type", "application/sdp")
            response.body = _sdp(40002)
            endpoint.send_response(event.key, response)
        elif request.method == "BYE":
            endpoint.send_response(event.key, make_response(request, 200, to_tag="pbx"))

    async def wait_for(self, predicate: Callable[[TransactionEvent], bool]) -> TransactionEvent:
        async def wait() -> TransactionEvent:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(wait(), TIMEOUT)


def _final(key: str) -> Callable[[TransactionEvent], bool]:
    return lambda e: isinstance(e, ResponseReceived) and e.key == key and e.response.status >= 200


def _request(method: str) -> Callable[[TransactionEvent], bool]:
    return lambda e: isinstance(e, RequestReceived) and e.request.method == method


async def test_call_over_tls_on_both_sides(
    interop_dir: Path, start_recorder: RecorderFactory
) -> None:
    pki = Pki(interop_dir)
    pbx_port = peers.free_port_block(1, tcp=True)

    def settings(name: str, listen: tuple[str, int] | None) -> TlsSettings:
        files = pki.cert(name)
        return tls_settings(cert=files.cert, key=files.key, listen=listen, ca=pki.ca.cert_path)

    pbx = Party(f"<sip:pbx@127.0.0.1:{pbx_port};transport=tls>")
    caller = Party("<sip:caller@127.0.0.1;transport=tls>")
    await pbx.endpoint.start(HOST, 0, tls=settings("pbx", (HOST, pbx_port)))
    await caller.endpoint.start(HOST, 0, tls=settings("caller", (HOST, 0)))
    try:
        recorder, tls_port = _start(start_recorder, pki, pbx_port)

        invite = make_request(
            "INVITE",
            call_id="tls-call-1",
            uri=f"sips:5551234@127.0.0.1:{tls_port}",
            body=_sdp(40000),
        )
        invite.headers.set("From", "<sip:+15145550100@127.0.0.1>;tag=caller")
        invite.headers.set("Contact", caller.contact)
        invite.headers.add("Content-Type", "application/sdp")
        key = caller.endpoint.send_request(invite, (HOST, tls_port), "TLS")
        ok = await caller.wait_for(_final(key))
        assert isinstance(ok, ResponseReceived) and ok.response.status == 200, ok
        assert ok.response.headers.get("Contact") == (
            f"<sip:recorder@127.0.0.1:{tls_port};transport=tls>"
        )
        caller.endpoint.send_stateless(
            make_ack_for_2xx(invite, ok.response), (HOST, tls_port), "TLS"
        )

        # The PBX got it over TLS, from the recorder's internal TLS port.
        b_invite = await pbx.wait_for(_request("INVITE"))
        assert isinstance(b_invite, RequestReceived) and b_invite.transport == "TLS"
        b_request: Request = b_invite.request
        assert b_request.via[0].transport == "TLS"
        assert (b_request.headers.get("Contact") or "").endswith(";transport=tls>")
        await pbx.wait_for(_request("ACK"))

        response: Response = ok.response
        bye = make_request(
            "BYE",
            call_id="tls-call-1",
            cseq=2,
            from_tag="caller",
            to_tag=response.to.tag,
            uri=f"sip:recorder@127.0.0.1:{tls_port};transport=tls",
        )
        bye.headers.set("From", "<sip:+15145550100@127.0.0.1>;tag=caller")
        key = caller.endpoint.send_request(bye, (HOST, tls_port), "TLS")
        done = await caller.wait_for(_final(key))
        assert isinstance(done, ResponseReceived) and done.response.status == 200
        await pbx.wait_for(_request("BYE"))
        ended = (await asyncio.to_thread(recorder.wait_event, "call.ended"))[0]
        assert ended["reason"] == "bye from a"
        assert "TLS handshake" not in recorder.log_text()
    finally:
        for party in (caller, pbx):
            party.endpoint.close()
            await party.endpoint.wait_closed()
