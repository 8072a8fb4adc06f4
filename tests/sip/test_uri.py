from __future__ import annotations

import pytest

from sip.errors import RemoteProtocolError
from sip.uri import CSeq, NameAddr, SipUri, Via

# --- SipUri -----------------------------------------------------------------------------------


def test_sip_uri_all_parts() -> None:
    uri = SipUri.parse("sip:alice:secret@atlanta.example.com:5070;transport=TCP;lr?subject=hi&x=1")
    assert uri.scheme == "sip"
    assert (uri.user, uri.password) == ("alice", "secret")
    assert (uri.host, uri.port) == ("atlanta.example.com", 5070)
    assert uri.params == {"transport": "TCP", "lr": None}
    assert uri.headers == {"subject": "hi", "x": "1"}
    assert str(uri) == "sip:alice:secret@atlanta.example.com:5070;transport=TCP;lr?subject=hi&x=1"
    assert uri.host_port == ("atlanta.example.com", 5070)


def test_scheme_and_param_names_are_case_insensitive() -> None:
    uri = SipUri.parse("SIPS:Bob@Biloxi.example.com;Transport=tls;LR")
    assert uri.scheme == "sips"
    assert uri.user == "Bob"  # user part is case-sensitive
    assert uri.params == {"transport": "tls", "lr": None}
    assert uri.host_port == ("Biloxi.example.com", 5061)


def test_host_only_and_default_port() -> None:
    uri = SipUri.parse("sip:192.0.2.4")
    assert (uri.user, uri.host, uri.port) == (None, "192.0.2.4", None)
    assert uri.host_port == ("192.0.2.4", 5060)
    assert str(uri) == "sip:192.0.2.4"


@pytest.mark.parametrize(
    ("text", "host", "port", "bare"),
    [
        ("sip:[2001:db8::10]", "[2001:db8::10]", None, "2001:db8::10"),
        (
            "sip:alice@[2001:db8::10]:5070;maddr=[2001:db8::1]",
            "[2001:db8::10]",
            5070,
            "2001:db8::10",
        ),
        ("sip:[::ffff:192.0.2.1]:5060", "[::ffff:192.0.2.1]", 5060, "::ffff:192.0.2.1"),
    ],
)
def test_ipv6_references(text: str, host: str, port: int | None, bare: str) -> None:
    uri = SipUri.parse(text)
    assert (uri.host, uri.port) == (host, port)
    assert uri.host_port[0] == bare
    assert str(uri) == text


def test_escaping_round_trip() -> None:
    uri = SipUri.parse("sip:I%20have%20spaces;x%3Dy@example.net;n%61me=v%61lue%25%34%31")
    assert uri.user == "I have spaces;x=y"
    assert uri.params == {"name": "value%41"}
    text = str(uri)
    assert text == "sip:I%20have%20spaces;x=y@example.net;name=value%2541"
    assert SipUri.parse(text) == uri


def test_non_utf8_escape_survives() -> None:
    uri = SipUri.parse("sip:%FF%00x@example.com")
    assert str(uri) == "sip:%FF%00x@example.com"


def test_user_with_reserved_characters() -> None:
    uri = SipUri.parse("sip:user;par=u%40example.net@example.com")
    assert uri.user == "user;par=u@example.net"
    assert uri.params == {}
    assert SipUri.parse(str(uri)) == uri


def test_tel_uri() -> None:
    uri = SipUri.parse("tel:+1-201-555-0123;phone-context=example.com")
    assert (uri.scheme, uri.user, uri.host) == ("tel", "+1-201-555-0123", "")
    assert uri.params == {"phone-context": "example.com"}
    assert str(uri) == "tel:+1-201-555-0123;phone-context=example.com"


def test_unsupported_scheme_is_416() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        SipUri.parse("mailto:alice@example.com")
    assert info.value.status_hint == 416


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip",
        ":foo",
        "sip:",
        "sip:alice@",
        "sip:alice@host:",
        "sip:alice@host:99999",
        "sip:alice@host:5x",
        "sip:al ice@host",
        "sip:alice@ho st",
        "sip:alice@[2001:db8::1",
        "sip:alice@host;;lr",
        "sip:alice@host;=x",
        "sip:alice@host?h",
        "sip:%zz@host",
        "sip:a<b@host",
        "tel:",
        "tel:abc xyz",
        "1sip:alice@host",
    ],
)
def test_malformed_uris(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        SipUri.parse(text)
    assert info.value.status_hint == 400


def test_uri_copy_is_deep() -> None:
    uri = SipUri.parse("sip:alice@example.com;lr?h=v")
    other = uri.copy()
    other.params["maddr"] = "x"
    other.headers["h"] = "w"
    assert uri.params == {"lr": None} and uri.headers == {"h": "v"}
    assert other != uri


def test_build_from_fields() -> None:
    uri = SipUri(user="a b", host="example.com", port=5080, params={"transport": "tcp"})
    assert str(uri) == "sip:a%20b@example.com:5080;transport=tcp"


# --- NameAddr ----------------------------------------------------------------------------------


def test_name_addr_with_quoted_display() -> None:
    na = NameAddr.parse('"Alice \\"A\\" Liddell" <sip:alice@example.com;lr>;tag=abc;expires=60')
    assert na.display == 'Alice "A" Liddell'
    assert na.uri.params == {"lr": None}
    assert na.params == {"tag": "abc", "expires": "60"}
    assert na.tag == "abc"
    assert str(na) == '"Alice \\"A\\" Liddell" <sip:alice@example.com;lr>;tag=abc;expires=60'
    assert NameAddr.parse(str(na)) == na


def test_name_addr_token_display_and_lws() -> None:
    na = NameAddr.parse("  Bob  Smith   <sip:bob@example.com>  ;  tag = 9 ")
    assert na.display == "Bob  Smith"
    assert na.tag == "9"


def test_addr_spec_params_belong_to_the_header() -> None:
    na = NameAddr.parse("sip:bob@example.com;tag=88;user=phone")
    assert na.display is None
    assert na.uri.params == {}
    assert na.params == {"tag": "88", "user": "phone"}
    assert str(na) == "<sip:bob@example.com>;tag=88;user=phone"


def test_tag_setter() -> None:
    na = NameAddr.parse("<sip:bob@example.com>")
    assert na.tag is None
    na.tag = "xyz"
    assert str(na) == "<sip:bob@example.com>;tag=xyz"
    na.tag = None
    assert na.params == {}


def test_quoted_param_value_kept_with_quotes() -> None:
    na = NameAddr.parse('<sip:a@b>;p="a; b, c"')
    assert na.params == {"p": '"a; b, c"'}


def test_ipv6_in_name_addr() -> None:
    na = NameAddr.parse("<sip:alice@[2001:db8::10]:5070>;tag=1")
    assert na.uri.host_port == ("2001:db8::10", 5070)


@pytest.mark.parametrize(
    "text",
    [
        '"unterminated <sip:a@b>',
        "Bell, Alexander <sip:a@b>",
        "< sip:a@b >",
        "<sip:a@b",
        "sip:a@b?x=y",
        "sip:a@b;;",
        "<sip:a@b>;",
        "<sip:a@b>;tag=",
        "no-uri-here",
        "<isbn:123>",  # parses as name-addr, but the scheme is unsupported
        "",
    ],
)
def test_malformed_name_addrs(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        NameAddr.parse(text)
    assert info.value.status_hint == 400


def test_name_addr_copy_is_deep() -> None:
    na = NameAddr.parse('"A" <sip:a@b>;tag=1')
    other = na.copy()
    other.uri.user = "z"
    other.tag = "2"
    assert na.uri.user == "a" and na.tag == "1"


# --- Via -------------------------------------------------------------------------------------


def test_via_parts_and_helpers() -> None:
    via = Via.parse(
        "SIP/2.0/udp pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;rport;received=1.2.3.4"
    )
    assert (via.transport, via.host, via.port) == ("UDP", "pc33.atlanta.com", 5066)
    assert via.branch == "z9hG4bK776asdhds"
    assert via.received == "1.2.3.4"
    assert via.has_rport and via.rport is None
    assert via.sent_by == ("pc33.atlanta.com", 5066)
    via.rport = 5066
    via.received = "192.0.2.9"
    via.branch = "z9hG4bKnew"
    assert str(via) == (
        "SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bKnew;rport=5066;received=192.0.2.9"
    )
    assert via.rport == 5066
    via.received = None
    assert "received" not in via.params


def test_via_with_lws_everywhere() -> None:
    via = Via.parse("SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239")
    assert (via.transport, via.host, via.branch) == ("UDP", "192.168.255.111", "z9hG4bK30239")


def test_via_ipv6_and_defaults() -> None:
    via = Via.parse("SIP/2.0/TCP [2001:db8::9:1];branch=z9hG4bKas3;received=2001:db8::9:255")
    assert via.host == "[2001:db8::9:1]"
    assert via.received == "2001:db8::9:255"
    assert via.sent_by == ("2001:db8::9:1", 5060)
    assert Via.parse("SIP/2.0/TLS h.example.com").sent_by == ("h.example.com", 5061)


def test_via_round_trip_and_copy() -> None:
    text = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx;ttl=16;maddr=224.2.0.1"
    via = Via.parse(text)
    assert str(via) == text
    other = via.copy()
    other.params["branch"] = "y"
    assert via.branch == "z9hG4bKx"


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP",
        "SIP/2.0 UDP host",
        "SIP/3.0/UDP host",
        "HTTP/2.0/UDP host",
        "SIP/2.0/UDP host;;",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP host:99999",
        "SIP/2.0/UDP host:",
        "SIP/2.0/UDP ho st",
        "",
    ],
)
def test_malformed_vias(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        Via.parse(text)


# --- CSeq ------------------------------------------------------------------------------------


def test_cseq() -> None:
    cseq = CSeq.parse("  0009   INVITE ")
    assert (cseq.seq, cseq.method) == (9, "INVITE")
    assert str(cseq) == "9 INVITE"
    assert cseq.copy() == cseq
    assert CSeq.parse(f"{2**31 - 1} ACK").seq == 2**31 - 1


@pytest.mark.parametrize(
    "text", ["INVITE", "1", "-1 INVITE", f"{2**31} INVITE", "1 IN VITE", "x INVITE"]
)
def test_malformed_cseq(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        CSeq.parse(text)
