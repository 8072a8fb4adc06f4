"""Contacts over TLS (RFC 5630: sip: with ;transport=tls at the TLS port) and the B2BUA's
legs staying on the transport they came in on or were configured with."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from recorder.call.b2bua import B2bua, SipSideRuntime
from recorder.call.contact import contact_uri, uri_target
from recorder.config import SipSide, SipTls
from sip.message import Request, make_response, parse_message
from sip.transaction import RequestReceived, ResponseReceived
from sip.uri import SipUri
from tests.recorder.test_b2bua import CALLER, PBX, TRUNK, FakeMedia, FakePort, invite, sdp

Address = tuple[str, int]


def tls_side(
    name: str, allow: str, next_hop: Address, listen: Address, tls_listen: Address, transport: str
) -> SipSide:
    tls = SipTls(Path("cert.pem"), Path("key.pem"), tls_listen)
    return SipSide(name, listen, (ipaddress.ip_network(allow),), next_hop, transport, tls)


def test_contact_uri() -> None:
    side = tls_side("internal", "127.0.0.1/32", PBX, ("0.0.0.0", 5062), ("0.0.0.0", 5063), "tls")
    assert str(contact_uri("rec", side, ("10.0.0.1", 5062), "TLS")) == (
        "sip:rec@10.0.0.1:5063;transport=tls"
    )
    assert str(contact_uri("rec", side, ("10.0.0.1", 5062), "UDP")) == "sip:rec@10.0.0.1:5062"
    # TLS on an address of its own is the one to give.
    own = tls_side("internal", "127.0.0.1/32", PBX, ("0.0.0.0", 5062), ("10.0.0.9", 5061), "tls")
    assert str(contact_uri("rec", own, ("10.0.0.1", 5062), "tls")).endswith(
        "@10.0.0.9:5061;transport=tls"
    )
    plain = SipSide("internal", ("10.0.0.1", 5062), (), PBX)
    assert str(contact_uri("rec", plain, ("10.0.0.1", 5062), "TCP")) == "sip:rec@10.0.0.1:5062"


def test_uri_target() -> None:
    def target(text: str) -> tuple[Address, str]:
        return uri_target(SipUri.parse(text))

    assert target("sips:bob@pbx.example") == (("pbx.example", 5061), "TLS")
    assert target("sips:bob@10.0.0.2:5071") == (("10.0.0.2", 5071), "TLS")
    assert target("sip:bob@10.0.0.2;transport=tls") == (("10.0.0.2", 5061), "TLS")
    assert target("sip:bob@10.0.0.2;transport=TLS") == (("10.0.0.2", 5061), "TLS")
    assert target("sip:bob@[2001:db8::1]:5070;transport=tcp") == (("2001:db8::1", 5070), "TCP")
    assert target("sip:bob@10.0.0.2") == (("10.0.0.2", 5060), "UDP")


@dataclass
class TransportPort(FakePort):
    """A FakePort that keeps the transport of what is sent."""

    transports: list[str] = field(default_factory=list)

    def send_request(self, request: Request, destination: Address, transport: str = "UDP") -> str:
        self.transports.append(transport)
        return super().send_request(request, destination, transport)


def test_legs_over_tls_advertise_tls_contacts_and_stay_on_tls() -> None:
    ext_port, int_port = TransportPort("ext"), TransportPort("int")
    external = SipSideRuntime(
        tls_side(
            "external", "203.0.113.0/24", TRUNK, ("192.0.2.1", 5060), ("192.0.2.1", 5061), "udp"
        ),
        ext_port,
        ("192.0.2.1", 5060),
    )
    internal = SipSideRuntime(
        tls_side("internal", "127.0.0.1/32", PBX, ("127.0.0.1", 5062), ("127.0.0.1", 5063), "tls"),
        int_port,
        ("127.0.0.1", 5062),
    )
    media: list[FakeMedia] = []

    def new_media(_call_id: str, _side: str) -> FakeMedia:
        media.append(FakeMedia({"a": 20000, "b": 20002}))
        return media[-1]

    b2bua = B2bua(external, internal, new_media, media_address="192.0.2.1", ring_timeout=60)
    # The caller comes over TLS with a sips: Request-URI.
    request = parse_message(invite().replace(b"INVITE sip:", b"INVITE sips:", 1))
    assert isinstance(request, Request)
    b2bua.handle_event(external, RequestReceived(request, CALLER, "TLS", "s1"), 100.0)

    b_key, b_invite, destination = int_port.requests[-1]
    assert (destination, int_port.transports[-1]) == (PBX, "TLS")  # transport = "tls"
    assert b_invite.headers.get("Contact") == "<sip:+15145550100@127.0.0.1:5063;transport=tls>"

    answer = make_response(b_invite, 200, to_tag="pbxtag")
    answer.headers.add("Contact", "<sip:pbx@127.0.0.1:5070;transport=tls>")
    answer.headers.add("Content-Type", "application/sdp")
    answer.body = sdp("127.0.0.1", 16000)
    b2bua.handle_event(internal, ResponseReceived(answer, b_key), 100.0)
    final = next(r for k, r in ext_port.responses if k == "s1" and r.status == 200)
    assert final.headers.get("Contact") == "<sip:recorder@192.0.2.1:5061;transport=tls>"

    # The PBX hangs up: the BYE to the caller goes back over TLS.
    bye = (
        "BYE sip:recorder@127.0.0.1:5063;transport=tls SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 127.0.0.1:5070;branch=z9hG4bKpbxbye\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:5551234@127.0.0.1>;tag=pbxtag\r\n"
        f"To: {b_invite.headers.get('From')}\r\n"
        f"Call-ID: {b_invite.call_id}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    bye_request = parse_message(bye)
    assert isinstance(bye_request, Request)
    b2bua.handle_event(internal, RequestReceived(bye_request, PBX, "TLS", "s2"), 101.0)
    assert int_port.statuses("s2") == [200]
    _key, bye_a, to = ext_port.requests[-1]
    assert (bye_a.method, to, ext_port.transports[-1]) == ("BYE", CALLER, "TLS")
