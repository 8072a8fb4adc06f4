from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent.events import DigitDetected
from consent.sipinfo import digit_from_info, parse_dtmf_body
from sip.message import Request, parse_message


@pytest.mark.parametrize(
    ("content_type", "body", "digit"),
    [
        ("application/dtmf-relay", b"Signal=9\r\nDuration=160\r\n", "9"),
        ("application/dtmf-relay", b"Signal=9\r\nDuration=160", "9"),
        ("Application/DTMF-Relay; charset=utf-8", b"signal= 5\nduration=250\n", "5"),
        ("application/dtmf-relay", b"Duration=100\r\nSignal=*\r\n", "*"),
        ("application/dtmf-relay", b"Signal=#", "#"),
        ("application/dtmf-relay", b"Signal=10", "*"),  # RFC 4733 event numbers
        ("application/dtmf-relay", b"Signal=11", "#"),
        ("application/dtmf-relay", b"Signal=a", "A"),
        ("application/dtmf", b"9", "9"),
        ("application/dtmf", b"9\r\n", "9"),
        ("application/dtmf", "0", "0"),
    ],
)
def test_valid_bodies(content_type: str, body: bytes | str, digit: str) -> None:
    assert parse_dtmf_body(content_type, body) == digit


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/dtmf-relay", b""),
        ("application/dtmf-relay", b"Duration=160"),
        ("application/dtmf-relay", b"Signal=\r\n"),
        ("application/dtmf-relay", b"Signal=99"),
        ("application/dtmf-relay", b"Signal=12345"),
        ("application/dtmf-relay", b"Signal=E"),
        ("application/dtmf-relay", b"Signal=\xff\xfe"),
        ("application/dtmf", b"99"),
        ("application/dtmf", b""),
        ("application/sdp", b"Signal=9"),
        ("text/plain", b"9"),
        (None, b"Signal=9"),
        ("application/dtmf-relay", b"Signal=9\r\n" + b"x" * 2000),
    ],
)
def test_invalid_bodies_give_none(content_type: str | None, body: bytes) -> None:
    assert parse_dtmf_body(content_type, body) is None


@given(st.text(max_size=40), st.binary(max_size=300))
def test_garbage_never_raises(content_type: str, body: bytes) -> None:
    result = parse_dtmf_body(content_type, body)
    assert result is None or result in "0123456789*#ABCD"


@given(st.binary(max_size=300))
def test_garbage_relay_bodies_never_raise(body: bytes) -> None:
    result = parse_dtmf_body("application/dtmf-relay", body)
    assert result is None or result in "0123456789*#ABCD"


def _info(content_type: str, body: bytes, method: str = "INFO") -> Request:
    raw = (
        f"{method} sip:recorder@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK776asdhds\r\n"
        "Max-Forwards: 70\r\n"
        "To: <sip:recorder@127.0.0.1>;tag=a\r\n"
        "From: <sip:caller@127.0.0.1>;tag=b\r\n"
        "Call-ID: info-test@127.0.0.1\r\n"
        f"CSeq: 2 {method}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    return msg


def test_digit_from_a_parsed_info_request() -> None:
    request = _info("application/dtmf-relay", b"Signal=9\r\nDuration=160\r\n")
    assert digit_from_info(request, 7.25) == DigitDetected(digit="9", method="sip-info", at=7.25)


def test_requests_that_are_not_key_presses() -> None:
    assert digit_from_info(_info("application/dtmf-relay", b"Signal=Z"), 0.0) is None
    assert digit_from_info(_info("application/dtmf", b"9", method="MESSAGE"), 0.0) is None
