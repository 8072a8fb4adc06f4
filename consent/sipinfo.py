"""DTMF carried in SIP INFO bodies: `application/dtmf-relay` and `application/dtmf`.

Neither format has an RFC; what phones send varies (`Signal=9`, `Signal= 9`,
`signal=10` for `*`, a bare `9`, trailing CRLF, an LF-only body), so the parser
is lenient about layout and strict about the value. It never raises: an INFO
body comes from the network, and a body that does not carry one key is simply
not a key press (the adapter still answers 200, RFC 6086).
"""

from __future__ import annotations

from typing import Final

from consent.events import DTMF_DIGITS, DigitDetected
from sip.message import Request

DTMF_RELAY: Final = "application/dtmf-relay"
DTMF: Final = "application/dtmf"
_MAX_BODY: Final = 1024  # a key press is a dozen bytes; anything larger is not one


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _digit(value: str) -> str | None:
    """A key from `9`, `*`, `a`, or its RFC 4733 event number `10`/`11`/..."""
    value = value.strip()
    if len(value) == 1 and value.upper() in DTMF_DIGITS:
        return value.upper()
    if value.isascii() and value.isdigit() and len(value) <= 2:
        code = int(value)
        if code < len(DTMF_DIGITS):
            return DTMF_DIGITS[code]
    return None


def parse_dtmf_body(content_type: str | None, body: bytes | str) -> str | None:
    """The key carried by an INFO body, or None for any other or malformed body."""
    if content_type is None or len(body) > _MAX_BODY:
        return None
    media = _media_type(content_type)
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if media == DTMF:
        return _digit(text)
    if media != DTMF_RELAY:
        return None
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip().lower() == "signal":
            return _digit(value)
    return None


def digit_from_info(request: Request, now: float) -> DigitDetected | None:
    """The key press an INFO request carries, as an event for the consent machine."""
    if request.method != "INFO":
        return None
    digit = parse_dtmf_body(request.headers.get("Content-Type"), request.body)
    if digit is None:
        return None
    return DigitDetected(digit=digit, method="sip-info", at=now)
