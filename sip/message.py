"""SIP messages: parsing, framing and serialization (RFC 3261 §7, §18.3, §20, §25).

Header lines are kept raw (name canonicalised, value unfolded and stripped) in `Headers`;
structured values (`Via`, `NameAddr`, `CSeq`) are built on access by the convenience
properties of `Request` / `Response`. `parse_message()` still validates the syntax of the
headers every layer depends on (Via, From, To, Call-ID, CSeq, Contact, Route,
Record-Route, Max-Forwards, Content-Length, Date) with one compiled pattern each, so a
message it returns will not fail later on those.

Limits and status hints of `RemoteProtocolError` raised by the parser:

* message (datagram, or start line + headers + body on a stream) > 64 KiB: 413;
* one header field (after unfolding) > 8 KiB: 513 "Message Too Large" (the peer can
  retry with a shorter header; 413 is kept for the size of the whole message);
* SIP version other than 2.0: 505;
* Request-URI of a well-formed but unsupported scheme (not sip, sips, tel): 416;
* unknown method whose CSeq method differs: 501 (RFC 4475 §3.1.2.18); known method: 400;
* anything else malformed, missing or duplicated: 400.

Application-level checks (Require, Content-Type, Accept, Max-Forwards at a proxy,
authorization scheme, allowed methods, RFC 3261 branch cookie without an id) are not the
parser's business: `validate_request()` does them and gives the status to answer.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

from sip.errors import BadExtensionError, LocalProtocolError, RemoteProtocolError
from sip.uri import (
    CSEQ_RE,
    NAME_ADDR_RE,
    TOKEN,
    VIA_RE,
    CSeq,
    NameAddr,
    SipUri,
    Via,
)

__all__ = [
    "MAX_HEADER_SIZE",
    "MAX_MESSAGE_SIZE",
    "REASON_PHRASES",
    "Headers",
    "Message",
    "Request",
    "Response",
    "StreamParser",
    "generate_branch",
    "generate_call_id",
    "generate_tag",
    "is_keepalive",
    "make_response",
    "parse_message",
    "validate_request",
    "validate_response",
]

MAX_MESSAGE_SIZE = 64 * 1024
MAX_HEADER_SIZE = 8 * 1024

# lower-case spelling (long and compact) -> canonical long name
_CANONICAL_NAMES = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity",
    "Identity-Info", "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires", "Min-SE",
    "Organization", "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Priority",
    "Privacy", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck",
    "Reason", "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Replaces",
    "Reply-To", "Request-Disposition", "Require", "Retry-After", "Route", "RSeq", "Server",
    "Service-Route", "Session-Expires", "Subject", "Subscription-State", "Supported",
    "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
]  # fmt: skip
_COMPACT_FORMS = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact",
    "k": "Supported", "l": "Content-Length", "m": "Contact", "n": "Identity-Info",
    "o": "Event", "r": "Refer-To", "s": "Subject", "t": "To", "u": "Allow-Events", "v": "Via",
    "x": "Session-Expires", "y": "Identity",
}  # fmt: skip
# lower-case spelling -> (key, canonical name); the key of a header is its lower-case long name
_CANON: dict[str, tuple[str, str]] = {n.lower(): (n.lower(), n) for n in _CANONICAL_NAMES}
_CANON.update({c: (n.lower(), n) for c, n in _COMPACT_FORMS.items()})
# spellings seen on the wire as-is, to skip the lower() on the hot path
_CANON_EXACT: dict[str, tuple[str, str]] = {n: (n.lower(), n) for n in _CANONICAL_NAMES}
_CANON_EXACT.update({c: (n.lower(), n) for c, n in _COMPACT_FORMS.items()})
_CANON_EXACT.update({"Call-Id": _CANON["call-id"], "Cseq": _CANON["cseq"]})

# Headers whose values are comma-separated lists (RFC 3261 §7.3.1): get_all() splits them.
_LIST_KEYS = frozenset(
    n.lower()
    for n in (
        "Via", "Route", "Record-Route", "Contact", "Allow", "Supported", "Require",
        "Proxy-Require", "Unsupported", "Accept", "Accept-Encoding", "Accept-Language",
        "Content-Encoding", "Content-Language", "In-Reply-To", "Allow-Events", "Path",
        "Service-Route", "P-Asserted-Identity", "P-Preferred-Identity", "Reason", "Warning",
        "Call-Info", "Alert-Info", "Error-Info", "Accept-Contact", "Reject-Contact",
    )
)  # fmt: skip

KNOWN_METHODS = frozenset(
    ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
     "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE")
)  # fmt: skip

REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated", 200: "OK", 202: "Accepted",
    204: "No Notification", 300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 417: "Unknown Resource-Priority", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    428: "Use Identity Header", 429: "Provide Referrer Identity", 433: "Anonymity Disallowed",
    436: "Bad Identity-Info", 437: "Unsupported Certificate", 438: "Invalid Identity Header",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    494: "Security Agreement Required", 500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}  # fmt: skip
_CLASS_REASONS = {1: "Trying", 2: "OK", 3: "Redirect", 4: "Client Error", 5: "Server Error",
                  6: "Global Failure"}  # fmt: skip

_TOKEN_RE = re.compile(TOKEN)
_VERSION_RE = re.compile(r"SIP/([0-9]+)\.([0-9]+)", re.IGNORECASE)
_SCHEME_PREFIX_RE = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):")
_DIGITS_RE = re.compile(r"[0-9]{1,10}")
_CALL_ID_RE = re.compile(r"[!-~\x80-\U0010ffff]++")
_DATE_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
_FOLD_RE = re.compile(r"[ \t]*\r\n[ \t]+")
_LINE_RE = re.compile(r"\r\n([^:\r\n]+):([^\r\n]*)")
_CHECKED_KEYS = frozenset(
    ("via", "from", "to", "call-id", "cseq", "contact", "content-length", "max-forwards",
     "route", "record-route", "date")
)  # fmt: skip
_SINGLE_KEYS = ("from", "to", "call-id", "cseq", "max-forwards", "content-length")
_MANDATORY_KEYS = ("via", "from", "to", "call-id", "cseq")
# HCOLON then SWS, which may fold onto the next line (RFC 3261 §7.3.1): "l:\r\n 12"
_CL_FRAME_RE = re.compile(
    rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(?:\r\n[ \t]+)?([^\r\n]*)", re.IGNORECASE
)


def _key_and_name(name: str) -> tuple[str, str]:
    canon = _CANON.get(name.lower())
    if canon is not None:
        return canon
    return name.lower(), name


def _split_commas(value: str) -> list[str]:
    """Split at commas outside quoted strings and <...> (elements stripped, empties kept)."""
    if "," not in value:
        return [value]
    parts: list[str] = []
    start = 0
    in_quotes = False
    depth = 0
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quotes:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            if depth:
                depth -= 1
        elif ch == "," and not depth:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    parts.append(value[start:].strip())
    return parts


class Headers:
    """Ordered multimap of header lines; names canonicalised to their long form.

    Unknown names keep their spelling and match case-insensitively. Values are stored
    unfolded and stripped, exactly as received otherwise.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = []
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _trusted(cls, items: list[tuple[str, str, str]]) -> Headers:
        h = cls.__new__(cls)
        h._items = items
        return h

    @staticmethod
    def _check(name: str, value: str) -> tuple[str, str]:
        if not _TOKEN_RE.fullmatch(name):
            raise LocalProtocolError(f"invalid header name {name!r}")
        if "\r" in value or "\n" in value:
            raise LocalProtocolError(f"CR or LF in the value of header {name!r}")
        return _key_and_name(name)

    def get(self, name: str) -> str | None:
        """The first value (whole line) of that header, or None."""
        key = _key_and_name(name)[0]
        for k, _, v in self._items:
            if k == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value; comma-list headers are split at top-level commas (empties dropped)."""
        key = _key_and_name(name)[0]
        if key in _LIST_KEYS:
            out: list[str] = []
            for k, _, v in self._items:
                if k == key:
                    if "," in v:
                        out.extend(p for p in _split_commas(v) if p)
                    else:
                        out.append(v)
            return out
        return [v for k, _, v in self._items if k == key]

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        """Append a line; with first=True insert it before the first line of that name
        (at the very top when there is none), as a proxy pushes its Via."""
        value = value.strip()
        key, canon = self._check(name, value)
        if first:
            for i, (k, _, _) in enumerate(self._items):
                if k == key:
                    self._items.insert(i, (key, canon, value))
                    return
            self._items.insert(0, (key, canon, value))
        else:
            self._items.append((key, canon, value))

    def set(self, name: str, value: str) -> None:
        """Replace every line of that name by one, at the first one's position (or append)."""
        value = value.strip()
        key, canon = self._check(name, value)
        out: list[tuple[str, str, str]] = []
        done = False
        for item in self._items:
            if item[0] == key:
                if not done:
                    out.append((key, canon, value))
                    done = True
            else:
                out.append(item)
        if not done:
            out.append((key, canon, value))
        self._items = out

    def remove(self, name: str) -> None:
        key = _key_and_name(name)[0]
        self._items = [item for item in self._items if item[0] != key]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _key_and_name(name)[0]
        return any(k == key for k, _, _ in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _, n, v in self._items:
            yield n, v

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def copy(self) -> Headers:
        return Headers._trusted(list(self._items))


class _MessageMixin:
    """Convenience accessors shared by Request and Response (parsed on each access)."""

    __slots__ = ()
    headers: Headers

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise RemoteProtocolError(f"missing {name} header")
        return value

    @property
    def via(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def call_id(self) -> str:
        return self._required("Call-ID")

    @property
    def cseq(self) -> CSeq:
        return CSeq.parse(self._required("CSeq"))

    @property
    def from_(self) -> NameAddr:
        return NameAddr.parse(self._required("From"))

    @property
    def to(self) -> NameAddr:
        return NameAddr.parse(self._required("To"))

    @property
    def contact(self) -> list[NameAddr]:
        """Contact values; a REGISTER's ``Contact: *`` gives [] (test headers.get for it)."""
        return [NameAddr.parse(v) for v in self.headers.get_all("Contact") if v != "*"]

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        if not _DIGITS_RE.fullmatch(value) or int(value) > 255:
            raise RemoteProtocolError(f"malformed Max-Forwards: {value!r}")
        return int(value)

    def _serialize(self, start: str, body: bytes) -> bytes:
        parts = [start, "\r\n"]
        have_length = False
        for k, n, v in self.headers._items:
            if k == "content-length":
                if have_length:
                    continue
                v = str(len(body))
                have_length = True
            parts += (n, ": ", v, "\r\n")
        if not have_length:
            parts += ("Content-Length: ", str(len(body)), "\r\n")
        parts.append("\r\n")
        return "".join(parts).encode("utf-8", "surrogateescape") + body


@dataclass(slots=True)
class Request(_MessageMixin):
    method: str
    uri: SipUri
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"

    def serialize(self) -> bytes:
        """Start line + headers + CRLF + body; Content-Length always set to len(body)."""
        if not _TOKEN_RE.fullmatch(self.method):
            raise LocalProtocolError(f"invalid method {self.method!r}")
        uri = str(self.uri)
        if " " in uri or "\r" in uri or "\n" in uri:
            raise LocalProtocolError(f"invalid Request-URI {uri!r}")
        return self._serialize(f"{self.method} {uri} {self.version}", self.body)


@dataclass(slots=True)
class Response(_MessageMixin):
    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"

    def serialize(self) -> bytes:
        """Start line + headers + CRLF + body; Content-Length always set to len(body)."""
        if not 100 <= self.status <= 699:
            raise LocalProtocolError(f"invalid status code {self.status!r}")
        if "\r" in self.reason or "\n" in self.reason:
            raise LocalProtocolError("CR or LF in the reason phrase")
        return self._serialize(f"{self.version} {self.status} {self.reason}", self.body)


Message = Request | Response


# --- parsing ------------------------------------------------------------------------------


def _bad(msg: str, status: int = 400) -> RemoteProtocolError:
    return RemoteProtocolError(msg, status)


def _check_version(version: str) -> None:
    if version == "SIP/2.0":
        return
    m = _VERSION_RE.fullmatch(version)
    if m is None:
        raise _bad(f"malformed SIP version {version[:20]!r}")
    if int(m.group(1)) != 2 or int(m.group(2)) != 0:
        raise _bad(f"unsupported SIP version {version[:20]!r}", 505)


def _check_name_addr_list(name: str, value: str, *, star: bool = False) -> None:
    """Contact (``*`` allowed) or, with star=False, Route / Record-Route (name-addr only)."""
    for element in _split_commas(value):
        if star and element == "*":
            continue
        m = NAME_ADDR_RE.fullmatch(element)
        if m is None or (not star and m.group("uri") is None):
            raise _bad(f"malformed {name} header")


def _parse_start_line(start: str) -> tuple[str, SipUri | None, int, str]:
    """(method, uri, 0, "") for a request, ("", None, status, reason) for a response."""
    if start[:4].upper() == "SIP/":
        parts = start.split(" ", 2)
        _check_version(parts[0])
        if len(parts) < 2 or len(parts[1]) != 3 or not parts[1].isdigit() or not parts[1].isascii():
            raise _bad("malformed status code")
        status = int(parts[1])
        if status < 100:
            raise _bad("malformed status code")
        return "", None, status, parts[2] if len(parts) == 3 else ""
    parts = start.split(" ")
    if len(parts) != 3:
        raise _bad("malformed request line")
    method, uri_text, version = parts
    if not _TOKEN_RE.fullmatch(method):
        raise _bad("malformed method")
    _check_version(version)
    if _SCHEME_PREFIX_RE.match(uri_text) is None or "<" in uri_text or ">" in uri_text:
        raise _bad("malformed Request-URI")
    uri = SipUri.parse(uri_text)  # unsupported scheme -> 416
    if uri.headers:
        raise _bad("headers in the Request-URI")  # RFC 3261 §19.1.1 table 1
    return method, uri, 0, ""


def _parse_head(head: str) -> tuple[Request | Response, int | None]:
    """Start line and headers (no body) -> message with an empty body, Content-Length."""
    crlf = head.count("\r\n")
    if head.count("\r") != crlf or head.count("\n") != crlf:
        raise _bad("bare CR or LF in the message header")
    first = head.find("\r\n")
    if first < 0:
        start, rest = head, ""
    else:
        start, rest = head[:first], head[first:]
    start_line = _parse_start_line(start)
    if "\r\n " in rest or "\r\n\t" in rest:
        if rest.startswith(("\r\n ", "\r\n\t")):
            raise _bad("header continuation line without a header")
        rest = _FOLD_RE.sub(" ", rest)  # LWS folding is one SP (RFC 3261 §7.3.1)
    pairs = _LINE_RE.findall(rest)
    if len(pairs) != rest.count("\r\n"):
        raise _bad("header line without a colon")

    items: list[tuple[str, str, str]] = []
    append = items.append
    content_length: int | None = None
    seen: dict[str, int] = {}
    for name, value in pairs:
        canon = _CANON_EXACT.get(name)
        if canon is None:
            name = name.rstrip(" \t")
            canon = _CANON.get(name.lower())
            if canon is None:
                if not _TOKEN_RE.fullmatch(name):
                    raise _bad(f"invalid header name {name[:40]!r}")
                canon = (name.lower(), name)
        key = canon[0]
        value = value.strip(" \t")
        if len(value) > MAX_HEADER_SIZE:
            raise _bad(f"header {canon[1]} larger than {MAX_HEADER_SIZE} bytes", 513)
        append((key, canon[1], value))
        if key not in _CHECKED_KEYS:
            continue
        seen[key] = seen.get(key, 0) + 1
        if key == "via":
            if "," in value:
                for element in _split_commas(value):
                    if VIA_RE.fullmatch(element) is None:
                        raise _bad("malformed Via header")
            elif VIA_RE.fullmatch(value) is None:
                raise _bad("malformed Via header")
        elif key == "from" or key == "to":
            if NAME_ADDR_RE.fullmatch(value) is None:
                raise _bad(f"malformed {canon[1]} header")
        elif key == "call-id":
            if _CALL_ID_RE.fullmatch(value) is None:
                raise _bad("malformed Call-ID header")
        elif key == "cseq":
            m = CSEQ_RE.fullmatch(value)
            if m is None or int(m.group(1)) >= 2**31:
                raise _bad("malformed CSeq header")
        elif key == "contact":
            _check_name_addr_list("Contact", value, star=True)
        elif key == "content-length":
            if not _DIGITS_RE.fullmatch(value):
                raise _bad("malformed Content-Length header")
            content_length = int(value)
        elif key == "max-forwards":
            if not _DIGITS_RE.fullmatch(value) or int(value) > 255:
                raise _bad("malformed Max-Forwards header")
        elif key == "route" or key == "record-route":
            _check_name_addr_list(canon[1], value)
        elif key == "date" and _DATE_RE.fullmatch(value) is None:
            raise _bad("malformed Date header")
    for key in _SINGLE_KEYS:
        if seen.get(key, 0) > 1:
            raise _bad(f"more than one {key} header")
    for key in _MANDATORY_KEYS:
        if key not in seen:
            raise _bad(f"missing {key} header")

    headers = Headers._trusted(items)
    method, uri, status, reason = start_line
    if uri is None:
        return Response(status, reason, headers), content_length
    cseq = CSEQ_RE.fullmatch(headers.get("CSeq") or "")
    if cseq is not None and cseq.group(2) != method:
        raise _bad("CSeq method differs from the request method",
                   400 if method in KNOWN_METHODS else 501)  # fmt: skip
    return Request(method, uri, headers), content_length


def _skip_crlf(data: bytes | bytearray, pos: int) -> int:
    while data.startswith(b"\r\n", pos):
        pos += 2
    return pos


def is_keepalive(data: bytes) -> bool:
    """A datagram holding only CRLFs (RFC 5626 keepalive): not a message, do not parse."""
    return bool(data) and not data.replace(b"\r\n", b"")


def parse_message(data: bytes) -> Message:
    """Parse one datagram (or one framed stream message).

    The body is Content-Length bytes (trailing bytes dropped, RFC 3261 §18.3); without a
    Content-Length the body is the rest of the datagram. Raises RemoteProtocolError.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise _bad(f"message larger than {MAX_MESSAGE_SIZE} bytes", 413)
    begin = _skip_crlf(data, 0)
    end = data.find(b"\r\n\r\n", begin)
    if end < 0:
        raise _bad("no empty line after the headers")
    msg, content_length = _parse_head(data[begin:end].decode("utf-8", "surrogateescape"))
    body_start = end + 4
    if content_length is None:
        msg.body = data[body_start:]
    else:
        if body_start + content_length > len(data):
            raise _bad("Content-Length larger than the message")
        msg.body = data[body_start : body_start + content_length]
    return msg


class StreamParser:
    """Content-Length framing for stream transports (TCP, TLS).

    `feed()` buffers partial messages, skips CRLF keepalives and returns the complete
    messages. Content-Length is mandatory on a stream.

    Errors: a message whose framing is intact but whose content is malformed is skipped
    and reported by RemoteProtocolError; the parser then goes on with what follows. A
    framing error (missing, repeated or invalid Content-Length, oversized message, garbage
    between messages) cannot be recovered from: `broken` becomes True, every later `feed()`
    raises, and the connection should be closed (RFC 4475 §3.3.9). Either way, messages
    that came before the error in the same `feed()` are returned first and the error is
    raised by the next call (`feed(b"")` is enough to collect it).
    """

    __slots__ = ("_buf", "_error", "_pending", "max_size")

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self._pending: RemoteProtocolError | None = None
        self._error: RemoteProtocolError | None = None
        self.max_size = max_size

    @property
    def broken(self) -> bool:
        return self._error is not None

    def feed(self, data: bytes) -> list[Message]:
        if self._error is not None:
            raise RemoteProtocolError(str(self._error), self._error.status_hint)
        buf = self._buf
        buf += data
        if self._pending is not None:
            pending, self._pending = self._pending, None
            raise pending
        out: list[Message] = []
        pos = 0
        error: RemoteProtocolError | None = None
        while True:
            pos = _skip_crlf(buf, pos)
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                if len(buf) - pos > self.max_size:
                    error = self._broken("message header larger than the limit", 413)
                break
            lengths = _CL_FRAME_RE.findall(buf, pos, end)
            if len(lengths) != 1:
                error = self._broken("stream message without exactly one Content-Length")
                break
            raw_length = lengths[0].strip(b" \t")
            if not raw_length.isdigit() or len(raw_length) > 10:
                error = self._broken("malformed Content-Length on a stream")
                break
            total = end + 4 + int(raw_length) - pos
            if total > self.max_size:
                error = self._broken(f"message larger than {self.max_size} bytes", 413)
                break
            if len(buf) - pos < total:
                break
            chunk = bytes(buf[pos : pos + total])
            pos += total
            try:
                out.append(parse_message(chunk))
            except RemoteProtocolError as exc:
                error = exc
                break
        if self._error is not None:
            buf.clear()
        else:
            del buf[:pos]
        if error is not None:
            if not out:
                raise error
            if self._error is None:
                self._pending = error
        return out

    def _broken(self, msg: str, status: int = 400) -> RemoteProtocolError:
        self._error = RemoteProtocolError(msg, status)
        return RemoteProtocolError(msg, status)


# --- building -------------------------------------------------------------------------------


def generate_branch() -> str:
    """A new RFC 3261 branch: the magic cookie and 64 random bits."""
    return "z9hG4bK" + secrets.token_hex(8)


def generate_tag() -> str:
    return secrets.token_hex(8)


def generate_call_id() -> str:
    return secrets.token_hex(16)


def make_response(
    request: Request, status: int, reason: str | None = None, *, to_tag: str | None = None
) -> Response:
    """A response per RFC 3261 §8.2.6: Via (all), From, To, Call-ID, CSeq copied.

    `to_tag` is added to To when it has none; Timestamp is echoed in a 100 (§8.2.6.1).
    Record-Route is not copied: that is the dialog layer's decision (§12.1.1).
    """
    if not 100 <= status <= 699:
        raise LocalProtocolError(f"invalid status code {status!r}")
    if reason is None:
        reason = REASON_PHRASES.get(status) or _CLASS_REASONS[status // 100]
    items: list[tuple[str, str, str]] = []
    to_value: str | None = None
    for key, name, value in request.headers._items:
        if key == "to":
            to_value = value
            if to_tag is not None and NameAddr.parse(value).tag is None:
                value = f"{value};tag={to_tag}"
            items.append((key, name, value))
        elif key in ("via", "from", "call-id", "cseq") or (key == "timestamp" and status == 100):
            items.append((key, name, value))
    if to_value is None:
        raise LocalProtocolError("request without a To header")
    return Response(status, reason, Headers._trusted(items))


# --- application-level checks ---------------------------------------------------------------


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def validate_request(
    req: Request,
    *,
    supported: Collection[str] = (),
    content_types: Collection[str] = ("application/sdp",),
    allowed_methods: Collection[str] | None = None,
    auth_schemes: Collection[str] | None = None,
    proxy: bool = False,
) -> None:
    """The checks of RFC 3261 §8.2 (UAS) / §16.3 (proxy) that follow parsing.

    Raises RemoteProtocolError whose status_hint is the response to send (BadExtensionError
    for 420, with the Unsupported option tags). In order:

    * every structured header parses (Via, From, To, CSeq, Contact, ...): 400 — this is
      where To/From/Contact URIs of schemes other than sip/sips/tel are refused;
    * `allowed_methods` given and the method not in it: 405;
    * top Via branch is the bare magic cookie ``z9hG4bK``: 400 (RFC 4475 §3.2.1);
    * `proxy` and Max-Forwards is 0: 483;
    * Require (UAS) or Proxy-Require (proxy) names an option tag not in `supported`: 420
      (not for ACK / CANCEL);
    * a body whose Content-Type is missing (400) or not in `content_types`, or has a
      Content-Encoding: 415 (not for ACK / CANCEL, which cannot be refused; not at a proxy);
    * an INVITE whose Accept does not allow application/sdp: 406;
    * `auth_schemes` given and Authorization / Proxy-Authorization uses another scheme:
      401 / 407.
    """
    vias = req.via
    _ = (req.from_, req.to, req.cseq, req.call_id, req.contact)  # parsed to be validated
    max_forwards = req.max_forwards
    method = req.method
    if allowed_methods is not None and method not in allowed_methods:
        raise RemoteProtocolError(f"method {method} not allowed", 405)
    if vias and vias[0].branch == "z9hG4bK":
        raise RemoteProtocolError("Via branch is the magic cookie without an identifier")
    if proxy and max_forwards == 0:
        raise RemoteProtocolError("Max-Forwards is 0", 483)
    if method not in ("ACK", "CANCEL"):
        required = req.headers.get_all("Proxy-Require" if proxy else "Require")
        known = {tag.lower() for tag in supported}
        unsupported = [tag for tag in required if tag.lower() not in known]
        if unsupported:
            raise BadExtensionError(
                f"unsupported extensions: {', '.join(unsupported)}", unsupported
            )
        if req.body and not proxy:
            ctype = req.headers.get("Content-Type")
            if ctype is None:
                raise RemoteProtocolError("body without Content-Type")
            allowed = {t.lower() for t in content_types}
            if _media_type(ctype) not in allowed:
                raise RemoteProtocolError(f"unsupported Content-Type {ctype!r}", 415)
            encodings = [e.lower() for e in req.headers.get_all("Content-Encoding")]
            if any(e != "identity" for e in encodings):
                raise RemoteProtocolError("unsupported Content-Encoding", 415)
    if method == "INVITE" and "Accept" in req.headers:
        accepted = {_media_type(a) for a in req.headers.get_all("Accept")}
        if not accepted & {"application/sdp", "application/*", "*/*"}:
            raise RemoteProtocolError("Accept does not allow application/sdp", 406)
    if auth_schemes is not None:
        schemes = {s.lower() for s in auth_schemes}
        for header, status in (("Authorization", 401), ("Proxy-Authorization", 407)):
            for value in req.headers.get_all(header):
                if value.split(None, 1)[0].lower() not in schemes:
                    raise RemoteProtocolError(f"unknown {header} scheme", status)


def validate_response(resp: Response) -> None:
    """The UAC's checks of RFC 3261 §8.1.3.3: structured headers parse and exactly one Via.

    A RemoteProtocolError here means: drop the response (RFC 4475 §3.3.10 ``bcast``).
    """
    vias = resp.via
    _ = (resp.from_, resp.to, resp.cseq, resp.call_id, resp.contact)  # parsed to be validated
    if len(vias) != 1:
        raise RemoteProtocolError(f"response with {len(vias)} Via values at a UAC")
