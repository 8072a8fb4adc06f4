"""Property tests: whatever the bytes, the parsers raise nothing but RemoteProtocolError,
and whatever they accept serializes and parses again to the same thing."""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.errors import RemoteProtocolError
from sip.message import Message, Request, StreamParser, parse_message
from sip.uri import CSeq, NameAddr, SipUri, Via

TORTURE = Path(__file__).parent / "torture"
SEEDS = [p.read_bytes() for p in sorted(TORTURE.glob("*.dat"))] + [
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1, SIP/2.0/TCP [2001:db8::1]:5070;rport\r\n"
    b'From: "A, B" <sip:a@example.com>;tag=1\r\n'
    b"To: sip:bob@example.com\r\nCall-ID: c@h\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
    b"Contact: <sip:a@192.0.2.1>, *\r\nRoute: <sip:p;lr>\r\nDate: Sat, 13 Nov 2010 23:29:00 GMT\r\n"
    b"Content-Length: 4\r\n\r\nbody"
]
FRAGMENTS = [
    b"\r\n", b"\r\n\r\n", b" ", b"\t", b":", b";", b",", b"<", b">", b'"', b"\\", b"%", b"@",
    b"[", b"]", b"=", b"?", b"&", b"\x00", b"\xff", b"\xc3\xa9", b"SIP/2.0", b"sip:", b"tel:",
    b"Via: ", b"l: ", b"Content-Length: 9999", b";branch=", b"\r\n ", b"z9hG4bK",
]  # fmt: skip

SETTINGS = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup", "fragment"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 20))]
        elif op == "truncate":
            del data[pos:]
        elif op == "dup":
            end = data.find(b"\r\n", pos)
            if end > 0:
                data[end:end] = data[pos:end] + b"\r\n"
        else:
            data[pos:pos] = draw(st.sampled_from(FRAGMENTS))
    return bytes(data)


def _exercise(msg: Message) -> None:
    """Every accessor raises RemoteProtocolError or works; serialize() round-trips."""
    for attr in ("via", "call_id", "cseq", "from_", "to", "contact", "max_forwards"):
        try:
            getattr(msg, attr)
        except RemoteProtocolError as exc:
            assert 400 <= exc.status_hint <= 599
    raw = msg.serialize()
    again = parse_message(raw)
    assert type(again) is type(msg)
    assert again.body == msg.body
    assert [h for h in again.headers if h[0] != "Content-Length"] == [
        h for h in msg.headers if h[0] != "Content-Length"
    ]
    if isinstance(msg, Request) and isinstance(again, Request):
        assert (again.method, again.uri) == (msg.method, msg.uri)


def _parse(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except RemoteProtocolError as exc:
        assert 400 <= exc.status_hint <= 599
        return
    _exercise(msg)


def _stream(data: bytes, cuts: list[int]) -> None:
    parser = StreamParser()
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for start, end in itertools.pairwise(bounds):
        try:
            for msg in parser.feed(data[start:end]):
                _exercise(msg)
        except RemoteProtocolError:
            if parser.broken:
                return
    for _ in range(4):  # drain messages left behind a reported error
        try:
            for msg in parser.feed(b""):
                _exercise(msg)
        except RemoteProtocolError as exc:
            assert 400 <= exc.status_hint <= 599


@SETTINGS
@given(st.binary(max_size=3000))
def test_random_bytes_datagram(data: bytes) -> None:
    _parse(data)


@SETTINGS
@given(mutated())
def test_mutated_messages_datagram(data: bytes) -> None:
    _parse(data)


@SETTINGS
@given(st.lists(mutated(), min_size=1, max_size=4), st.lists(st.integers(0, 10_000), max_size=8))
def test_mutated_messages_stream(messages: list[bytes], cuts: list[int]) -> None:
    _stream(b"".join(messages), cuts)


@SETTINGS
@given(st.binary(max_size=2000), st.lists(st.integers(0, 10_000), max_size=8))
def test_random_bytes_stream(data: bytes, cuts: list[int]) -> None:
    _stream(data, cuts)


_TEXT = st.text(
    alphabet=st.sampled_from(list("sip:tel@[]<>\";,?&=%/ \t.:-_!~*'()+$#0123456789abcAZ\\\x00é")),
    max_size=80,
)


@SETTINGS
@given(_TEXT)
def test_value_parsers_only_raise_remote_protocol_error(text: str) -> None:
    for parse in (SipUri.parse, NameAddr.parse, Via.parse, CSeq.parse):
        try:
            value = parse(text)
        except RemoteProtocolError:
            continue
        again = type(value).parse(str(value))
        assert again == value
