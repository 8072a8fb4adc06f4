from __future__ import annotations

import pytest

from sip.errors import LocalProtocolError, RemoteProtocolError
from sip.message import (
    MAX_HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    Headers,
    Request,
    Response,
    StreamParser,
    generate_branch,
    generate_call_id,
    generate_tag,
    is_keepalive,
    make_response,
    parse_message,
)
from sip.uri import SipUri

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\n"
)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/TCP proxy.example.com:5070;branch=z9hG4bKfirst,"
    b" SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKzero\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice, A." <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b'Contact: <sip:alice@pc33.atlanta.example.com>, "x,y" <sip:x@y;a=b>;q=0.5\r\n'
    b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"Allow: INVITE, ACK, BYE\r\n"
    b"X-Custom-Thing: keep, me, whole\r\n"
    b"Timestamp: 54\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)

OK_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1\r\n"
    b"From: <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"To: <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def _request(raw: bytes = INVITE) -> Request:
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    return msg


def _reject(raw: bytes, status: int = 400) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(raw)
    assert info.value.status_hint == status


# --- Headers -----------------------------------------------------------------------------------


def test_headers_canonical_names_and_compact_forms() -> None:
    h = Headers([("v", "SIP/2.0/UDP a"), ("call-id", "x"), ("CSEQ", "1 INVITE"), ("i", "y")])
    assert list(h) == [
        ("Via", "SIP/2.0/UDP a"),
        ("Call-ID", "x"),
        ("CSeq", "1 INVITE"),
        ("Call-ID", "y"),
    ]
    h.add("www-authenticate", 'Digest realm="r"')
    h.add("X-Mine", "1")
    assert ("WWW-Authenticate", 'Digest realm="r"') in list(h)
    assert h.get("x-mine") == "1" and "X-MINE" in h
    assert list(h)[-1] == ("X-Mine", "1")  # unknown names keep their spelling
    assert h.get("Call-ID") == "x" and h.get("i") == "x"
    assert h.get_all("call-id") == ["x", "y"]
    assert h.get("Nope") is None and "Nope" not in h


def test_get_all_splits_list_headers_only() -> None:
    h = Headers(
        [
            ("Via", "SIP/2.0/UDP a;branch=1, SIP/2.0/UDP b;branch=2"),
            ("Via", "SIP/2.0/UDP c, SIP/2.0/UDP d"),
            ("Contact", '"Doe, John" <sip:j@x;p=1,2>;q=1, <sip:k@y>'),
            ("Supported", "timer, ,replaces,"),
            ("Subject", "hello, world"),
            ("WWW-Authenticate", 'Digest realm="a", nonce="b"'),
        ]
    )
    assert len(h.get_all("Via")) == 4
    assert h.get_all("Contact") == ['"Doe, John" <sip:j@x;p=1,2>;q=1', "<sip:k@y>"]
    assert h.get_all("k") == ["timer", "replaces"]
    assert h.get_all("Subject") == ["hello, world"]
    assert h.get_all("WWW-Authenticate") == ['Digest realm="a", nonce="b"']


def test_headers_add_first_set_remove_copy() -> None:
    h = Headers([("To", "<sip:b@x>"), ("Via", "SIP/2.0/UDP a"), ("Route", "<sip:r1>")])
    h.add("Via", "SIP/2.0/UDP top", first=True)
    assert [v for n, v in h if n == "Via"] == ["SIP/2.0/UDP top", "SIP/2.0/UDP a"]
    h.add("Record-Route", "<sip:rr>", first=True)  # none yet: goes to the very top
    assert next(iter(h)) == ("Record-Route", "<sip:rr>")
    h.add("Route", "<sip:r2>")
    h.set("Via", "SIP/2.0/UDP only")
    assert [n for n, _ in h] == ["Record-Route", "To", "Via", "Route", "Route"]
    assert h.get_all("Via") == ["SIP/2.0/UDP only"]
    h.set("Max-Forwards", "70")
    assert list(h)[-1] == ("Max-Forwards", "70")
    other = h.copy()
    other.remove("route")
    assert "Route" in h and "Route" not in other
    assert len(other) == len(h) - 2
    assert other != h and h.copy() == h


@pytest.mark.parametrize(
    ("name", "value"),
    [("Bad Name", "x"), ("", "x"), ("X:Y", "x"), ("X-Ok", "a\r\nInjected: 1"), ("X-Ok", "a\nb")],
)
def test_headers_refuse_bad_names_and_injection(name: str, value: str) -> None:
    h = Headers()
    with pytest.raises(LocalProtocolError):
        h.add(name, value)
    with pytest.raises(LocalProtocolError):
        h.set(name, value)


# --- parsing ----------------------------------------------------------------------------------


def test_parse_request_fields() -> None:
    req = _request()
    assert req.method == "INVITE" and req.version == "SIP/2.0"
    assert req.uri == SipUri.parse("sip:bob@biloxi.example.com")
    assert [v.host for v in req.via] == [
        "pc33.atlanta.example.com",
        "proxy.example.com",
        "10.0.0.1",
    ]
    assert req.via[0].has_rport
    assert req.from_.display == "Alice, A." and req.from_.tag == "1928301774"
    assert req.to.display == "Bob" and req.to.tag is None
    assert req.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert (req.cseq.seq, req.cseq.method) == (314159, "INVITE")
    assert [c.uri.user for c in req.contact] == ["alice", "x"]
    assert req.contact[1].params == {"q": "0.5"}
    assert req.max_forwards == 70
    assert req.headers.get_all("Record-Route") == [
        "<sip:p1.example.com;lr>",
        "<sip:p2.example.com;lr>",
    ]
    assert req.body == SDP


def test_parse_response_fields() -> None:
    resp = parse_message(OK_200)
    assert isinstance(resp, Response)
    assert (resp.status, resp.reason) == (200, "OK")
    assert resp.to.tag == "a6c85cf"
    assert resp.via[0].received == "192.0.2.1"
    assert resp.max_forwards is None and resp.contact == []


def test_round_trip_is_byte_exact() -> None:
    assert _request().serialize() == INVITE
    assert parse_message(OK_200).serialize() == OK_200


def test_serialize_rewrites_content_length_only() -> None:
    req = _request()
    req.body = b"hello"
    out = req.serialize()
    assert b"\r\nContent-Length: 5\r\n\r\nhello" in out
    assert (
        out.replace(b"Content-Length: 5", b"Content-Length: %d" % len(SDP)).replace(b"hello", SDP)
        == INVITE
    )
    req.headers.remove("Content-Length")
    assert req.serialize().endswith(b"Content-Length: 5\r\n\r\nhello")


def test_compact_and_folded_headers() -> None:
    raw = (
        b"OPTIONS sip:x@y SIP/2.0\r\n"
        b"v: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"f: <sip:a@b>;tag=1\r\n"
        b"t:\r\n  <sip:x@y>\r\n"
        b"i: cid\r\n"
        b"CSeq: 1\r\n\tOPTIONS\r\n"
        b"Subject: a\r\n   folded\r\n\tvalue\r\n"
        b"l: 0\r\n\r\n"
    )
    req = _request(raw)
    assert req.to.uri.user == "x" and req.cseq.method == "OPTIONS"
    assert req.headers.get("Subject") == "a folded value"
    assert [n for n, _ in req.headers] == [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Subject",
        "Content-Length",
    ]
    again = _request(req.serialize())
    assert list(again.headers) == list(req.headers)


def test_body_without_content_length_is_rest_of_datagram() -> None:
    raw = INVITE.replace(b"Content-Length: %d\r\n" % len(SDP), b"")
    assert _request(raw).body == SDP


def test_extra_bytes_after_content_length_are_dropped() -> None:
    assert _request(INVITE + b"garbage").body == SDP


def test_leading_crlf_ignored() -> None:
    assert _request(b"\r\n\r\n" + INVITE).method == "INVITE"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (INVITE.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), 505),
        (OK_200.replace(b"SIP/2.0 200", b"SIP/2.1 200"), 505),
        (INVITE.replace(b"INVITE sip:bob", b"INVITE mailto:bob", 1), 416),
        (INVITE.replace(b"INVITE sip:bob", b"INVITE http://bob", 1), 416),
        (INVITE.replace(b"Content-Length: ", b"Content-Length: 9"), 400),
        (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"), 400),
        (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159"), 400),
        (INVITE.replace(b"Call-ID: ", b"X-Call-ID: "), 400),
        (INVITE.replace(b"Via:", b"X-Via:"), 400),
        (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 256"), 400),
        (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: many"), 400),
        (INVITE.replace(b"Allow: INVITE", b"Allow INVITE"), 400),
        (INVITE.replace(b"Allow: INVITE", b"Al low: INVITE"), 400),
        (INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\nX: y\r\n"), 400),
        (INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\rX: y\r\n"), 400),
        (INVITE.replace(b"\r\nVia:", b"\r\n Via:", 1), 400),
        (INVITE.replace(b"Record-Route: <sip:p1.example.com;lr>", b"Record-Route: sip:p1"), 400),
        (INVITE.replace(b"\r\n\r\n", b"\r\n"), 400),
        (b"", 400),
        (b"\r\n\r\n", 400),
        (OK_200.replace(b"200 OK", b"2000 OK"), 400),
        (OK_200.replace(b"200 OK", b"099 Low"), 400),
        (OK_200.replace(b"200 OK", b"abc OK"), 400),
    ],
)
def test_malformed_messages(raw: bytes, status: int) -> None:
    _reject(raw, status)


def test_message_over_64k_is_413() -> None:
    big = INVITE.replace(b"Timestamp: 54", b"X-Pad: " + b"a" * 4000) * 1
    pad = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(70))
    raw = big.replace(b"Timestamp", b"X-T").replace(b"Allow:", pad + b"Allow:")
    assert len(raw) > MAX_MESSAGE_SIZE
    _reject(raw, 413)


def test_header_over_8k_is_513() -> None:
    raw = INVITE.replace(b"Timestamp: 54", b"X-Long: " + b"a" * (MAX_HEADER_SIZE + 1))
    _reject(raw, 513)
    ok = INVITE.replace(b"Timestamp: 54", b"X-Long: " + b"a" * MAX_HEADER_SIZE)
    assert _request(ok).headers.get("X-Long") == "a" * MAX_HEADER_SIZE


def test_non_utf8_header_bytes_survive_round_trip() -> None:
    raw = INVITE.replace(b"To: Bob", b'To: "B\xe9b"')
    req = _request(raw)
    assert req.serialize() == raw


def test_tel_request_uri() -> None:
    req = _request(INVITE.replace(b"INVITE sip:bob@biloxi.example.com", b"INVITE tel:+15145550100"))
    assert (req.uri.scheme, req.uri.user) == ("tel", "+15145550100")
    assert req.serialize().startswith(b"INVITE tel:+15145550100 SIP/2.0\r\n")


def test_accessors_raise_remote_protocol_error_when_headers_go_missing() -> None:
    req = _request()
    req.headers.remove("Call-ID")
    req.headers.set("CSeq", "oops")
    with pytest.raises(RemoteProtocolError):
        _ = req.call_id
    with pytest.raises(RemoteProtocolError):
        _ = req.cseq


def test_serialize_refuses_injection_in_start_line() -> None:
    req = _request()
    req.method = "INVITE sip:evil SIP/2.0\r\nX:"
    with pytest.raises(LocalProtocolError):
        req.serialize()
    resp = parse_message(OK_200)
    assert isinstance(resp, Response)
    resp.reason = "OK\r\nX: y"
    with pytest.raises(LocalProtocolError):
        resp.serialize()


def test_build_a_request_from_scratch() -> None:
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={generate_branch()}"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:rec@192.0.2.1>;tag={generate_tag()}"),
            ("To", "<sip:bob@example.com>"),
            ("Call-ID", generate_call_id()),
            ("CSeq", "1 OPTIONS"),
        ]
    )
    req = Request("OPTIONS", SipUri(user="bob", host="example.com"), headers)
    again = _request(req.serialize())
    assert again.headers.get("Content-Length") == "0"
    assert again.uri == req.uri and again.cseq.method == "OPTIONS"


# --- StreamParser -----------------------------------------------------------------------------


def test_stream_byte_by_byte() -> None:
    parser = StreamParser()
    got = []
    for i in range(len(INVITE)):
        got += parser.feed(INVITE[i : i + 1])
        if i < len(INVITE) - 1:
            assert got == []
    assert len(got) == 1 and got[0].body == SDP


def test_stream_several_messages_and_keepalives_in_one_read() -> None:
    parser = StreamParser()
    data = b"\r\n\r\n" + INVITE + b"\r\n" + OK_200 + INVITE[:100]
    msgs = parser.feed(data)
    assert [type(m) for m in msgs] == [Request, Response]
    assert parser.feed(INVITE[100:]) != []
    assert parser.feed(b"\r\n\r\n") == []  # ping between messages


def test_stream_requires_content_length() -> None:
    parser = StreamParser()
    with pytest.raises(RemoteProtocolError):
        parser.feed(INVITE.replace(b"Content-Length: %d\r\n" % len(SDP), b""))
    assert parser.broken
    with pytest.raises(RemoteProtocolError):
        parser.feed(OK_200)  # a broken stream stays broken: close the connection


def test_stream_recovers_from_a_malformed_but_framed_message() -> None:
    bad = OK_200.replace(b"CSeq: 314159 INVITE", b"CSeq: many INVITE")
    parser = StreamParser()
    with pytest.raises(RemoteProtocolError):
        parser.feed(bad)
    assert not parser.broken
    assert len(parser.feed(OK_200)) == 1


def test_stream_error_after_good_messages_is_reported_next_call() -> None:
    bad = OK_200.replace(b"CSeq: 314159 INVITE", b"CSeq: many INVITE")
    parser = StreamParser()
    msgs = parser.feed(OK_200 + bad + OK_200)
    assert len(msgs) == 1
    with pytest.raises(RemoteProtocolError):
        parser.feed(b"")
    assert len(parser.feed(b"")) == 1  # the message after the bad one


def test_stream_oversized_header_block_is_413() -> None:
    parser = StreamParser()
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(70):
            parser.feed(b"X-Pad: " + b"a" * 1000 + b"\r\n")
    assert info.value.status_hint == 413
    assert parser.broken


def test_stream_oversized_body_is_413() -> None:
    parser = StreamParser()
    with pytest.raises(RemoteProtocolError) as info:
        parser.feed(OK_200.replace(b"Content-Length: 0", b"Content-Length: 70000"))
    assert info.value.status_hint == 413


def test_is_keepalive() -> None:
    assert is_keepalive(b"\r\n\r\n") and is_keepalive(b"\r\n")
    assert not is_keepalive(b"") and not is_keepalive(OK_200) and not is_keepalive(b"\r\n\n")


# --- make_response / generators -------------------------------------------------------------


def test_make_response_copies_rfc3261_headers() -> None:
    req = _request()
    resp = make_response(req, 180, to_tag="abc")
    assert (resp.status, resp.reason) == (180, "Ringing")
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    assert [n for n, _ in resp.headers] == ["Via", "Via", "From", "To", "Call-ID", "CSeq"]
    assert resp.to.tag == "abc" and resp.to.display == "Bob"
    assert resp.from_ == req.from_ and resp.call_id == req.call_id and resp.cseq == req.cseq
    assert resp.body == b""
    again = parse_message(resp.serialize())
    assert isinstance(again, Response) and again.to.tag == "abc"


def test_make_response_keeps_an_existing_to_tag_and_echoes_timestamp_in_100() -> None:
    req = _request(
        INVITE.replace(
            b"To: Bob <sip:bob@biloxi.example.com>", b"To: sip:bob@b.example.com;tag=old"
        )
    )
    resp = make_response(req, 100, to_tag="new")
    assert resp.to.tag == "old"
    assert resp.reason == "Trying"
    assert resp.headers.get("Timestamp") == "54"
    assert "Timestamp" not in make_response(req, 486).headers
    assert make_response(req, 486).reason == "Busy Here"
    assert make_response(req, 499).reason == "Client Error"
    assert make_response(req, 603, "Go away").reason == "Go away"
    with pytest.raises(LocalProtocolError):
        make_response(req, 99)


def test_generators() -> None:
    branches = {generate_branch() for _ in range(100)}
    assert len(branches) == 100
    assert all(b.startswith("z9hG4bK") and len(b) == 23 for b in branches)
    assert generate_tag() != generate_tag()
    assert len(generate_call_id()) == 32
