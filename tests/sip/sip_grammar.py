"""SIP messages generated from the RFC 3261 grammar (§25.1), with RFC 5118 IPv6 references,
and mutations of them: the fuzzer's input.

One grammar, two sources of choices:

* `DrawChoices` (hypothesis): `valid_messages()`, `mutated_messages()`, `any_datagrams()`
  and `requests_to_recorder()` are strategies that shrink to small counter-examples;
* `RandomChoices` (`random.Random`): the same grammar, seeded and fast, for the interop batch
  and the bench (a million messages).

A generated message (`Generated`) carries its wire form and a `Model` of what the parser must
read from it: start line, every header line as (canonical name, unfolded value), Via / From /
To / Call-ID / CSeq / Max-Forwards / Contact values and the body. A `Mutant` is a valid
message after one or more mutations; when a single mutation was applied, `oracle` says what
the parser must do with it (the status of its RemoteProtocolError, or "valid").
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, TypeVar

from hypothesis import strategies as st

T = TypeVar("T")

# --- character classes (RFC 3261 §25.1) ----------------------------------------------------
ALPHA = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGIT = "0123456789"
ALNUM = ALPHA + DIGIT
HEX = "0123456789abcdefABCDEF"
TOKEN_CHARS = ALNUM + "-.!%*_+`'~"
MARK = "-_.!~*'()"
UNRESERVED = ALNUM + MARK
USER_SAFE = UNRESERVED + "&=+$,;?/"  # unreserved / user-unreserved
PASSWORD_SAFE = UNRESERVED + "&=+$,"
PARAM_SAFE = UNRESERVED + "[]/:&+$"  # paramchar without escaped
HNV_SAFE = UNRESERVED + "[]/?:+$"  # hnv-unreserved / unreserved
WORD_CHARS = ALNUM + "-.!%*_+`'~()<>:\\\"/[]?{}"  # Call-ID word
# Characters that must be %-escaped in a URI component, to mix into plain values.
NEEDS_ESCAPE = ' @:%"<>#\x00é日\x7f'
UTF8_TEXT = "aZ09 !#$%&'()*+,-./:;<=>?@[]^_`{|}~éàü日本語Жж€\u2028"

KNOWN_METHODS = (
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
    "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
)  # fmt: skip
# Compact forms (RFC 3261 §7.3.3 and the extension RFCs), long name -> letter.
COMPACT = {
    "Call-ID": "i", "From": "f", "To": "t", "Contact": "m", "Content-Length": "l",
    "Content-Type": "c", "Via": "v", "Supported": "k", "Subject": "s",
    "Content-Encoding": "e", "Event": "o", "Allow-Events": "u", "Session-Expires": "x",
}  # fmt: skip
MANDATORY = ("via", "from", "to", "call-id", "cseq")
SINGLE = ("from", "to", "call-id", "cseq", "max-forwards", "content-length")
REASONS = ("OK", "Trying", "Ringing", "Not Found", "Busy Here", "Server Internal Error", "")

MAX_UDP_PAYLOAD = 65507


# --- sources of choices ----------------------------------------------------------------------


class Choices(Protocol):
    def integer(self, lo: int, hi: int) -> int: ...
    def choice(self, options: Sequence[T]) -> T: ...
    def chance(self, p: float) -> bool: ...
    def string(self, alphabet: str, lo: int, hi: int) -> str: ...
    def binary(self, lo: int, hi: int) -> bytes: ...


class RandomChoices:
    """The grammar driven by a seeded `random.Random` (fast; for batches and the bench)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def string(self, alphabet: str, lo: int, hi: int) -> str:
        return "".join(self.rng.choices(alphabet, k=self.rng.randint(lo, hi)))

    def binary(self, lo: int, hi: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(lo, hi))


class DrawChoices:
    """The grammar driven by hypothesis draws (shrinks towards the first option, 'no')."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def choice(self, options: Sequence[T]) -> T:
        return self.draw(st.sampled_from(options))

    def chance(self, p: float) -> bool:
        return self.draw(st.integers(0, 999)) >= 1000 - int(p * 1000)

    def string(self, alphabet: str, lo: int, hi: int) -> str:
        return self.draw(st.text(alphabet=alphabet, min_size=lo, max_size=hi))

    def binary(self, lo: int, hi: int) -> bytes:
        return self.draw(st.binary(min_size=lo, max_size=hi))


# --- models: what the parser must read --------------------------------------------------------


@dataclass(frozen=True)
class UriModel:
    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    params: dict[str, str | None]
    headers: dict[str, str]


@dataclass(frozen=True)
class NameAddrModel:
    display: str | None
    uri: UriModel
    params: dict[str, str | None]

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


@dataclass(frozen=True)
class ViaModel:
    transport: str  # upper-cased
    host: str  # IPv6 references keep their brackets
    port: int | None
    params: dict[str, str | None]


@dataclass
class Model:
    kind: Literal["request", "response"]
    method: str  # the request method, or the CSeq method of a response
    uri: UriModel | None
    status: int
    reason: str
    headers: list[tuple[str, str]]  # every header line: (canonical name, unfolded value)
    body: bytes
    vias: list[ViaModel]
    from_: NameAddrModel
    to: NameAddrModel
    call_id: str
    cseq: int
    max_forwards: int | None
    contacts: list[NameAddrModel] | None  # None: "Contact: *"


@dataclass
class Generated:
    """A valid message: its start line, header lines (folded as sent) and body."""

    model: Model
    start: bytes
    lines: list[bytes]
    keys: list[str]  # lower-case long name of each line
    body: bytes

    @property
    def wire(self) -> bytes:
        return b"".join([self.start, b"\r\n", *(line + b"\r\n" for line in self.lines)]) + (
            b"\r\n" + self.body
        )


Oracle = int | Literal["valid"] | None


@dataclass(frozen=True)
class Mutant:
    data: bytes
    ops: tuple[str, ...]
    oracle: Oracle  # single op: the parser's status hint, or "valid"; None: unknown
    body: bytes | None = None  # oracle "valid": the body the parser must find
    source: Generated | None = None


# --- small helpers --------------------------------------------------------------------------


def _escape(c: Choices, plain: bytes, safe: str) -> str:
    """`plain` as URI text: unsafe bytes %-escaped, safe ones escaped now and then."""
    out: list[str] = []
    for byte in plain:
        ch = chr(byte)
        if byte < 0x80 and ch in safe and not c.chance(0.05):
            out.append(ch)
        else:
            out.append(("%%%02X" if c.chance(0.7) else "%%%02x") % byte)
    return "".join(out)


def _plain(c: Choices, safe: str, lo: int, hi: int) -> bytes:
    """A component value: mostly safe characters, some that need escaping, rarely raw bytes."""
    text = c.string(safe, lo, hi)
    if c.chance(0.15):
        pos = c.integer(0, len(text))
        text = text[:pos] + c.string(NEEDS_ESCAPE, 1, 3) + text[pos:]
    raw = text.encode("utf-8")
    if c.chance(0.03):
        raw += bytes([c.integer(0x80, 0xFF)])  # not UTF-8: kept as a surrogate escape
    return raw


def _decoded(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def token(c: Choices, lo: int = 1, hi: int = 12, alphabet: str = TOKEN_CHARS) -> str:
    return c.string(alphabet, lo, hi)


def _case(c: Choices, text: str) -> str:
    mode = c.integer(0, 9)
    if mode < 6:
        return text
    if mode == 6:
        return text.lower()
    if mode == 7:
        return text.upper()
    return "".join(ch.upper() if c.chance(0.5) else ch.lower() for ch in text)


def _shuffle(c: Choices, items: list[T]) -> list[T]:
    out = list(items)
    for i in range(len(out) - 1, 0, -1):
        j = c.integer(0, i)
        out[i], out[j] = out[j], out[i]
    return out


# --- hosts (RFC 3261 hostport, RFC 5118) -------------------------------------------------------


def hostname(c: Choices) -> str:
    labels = []
    for _ in range(c.integer(0, 3)):
        label = c.string(ALNUM, 1, 1)
        if c.chance(0.6):
            label += c.string(ALNUM + "-", 0, 8) + c.string(ALNUM, 1, 1)
        labels.append(label)
    top = c.string(ALPHA, 1, 1)
    if c.chance(0.7):
        top += c.string(ALNUM + "-", 0, 6) + c.string(ALNUM, 1, 1)
    name = ".".join([*labels, top])
    return name + "." if c.chance(0.05) else name


def ipv4(c: Choices) -> str:
    return ".".join(str(c.integer(0, 255)) for _ in range(4))


def ipv6(c: Choices) -> str:
    """An IPv6 address in one of its RFC 4291 §2.2 text forms (no brackets)."""
    form = c.integer(0, 6)
    if form == 0:
        return "2001:db8::" + c.choice(("1", "10", "9:1", "9:255", "20", "10:5070"))
    if form == 1:
        return c.choice(("::1", "::", "fe80::1", "2001:db8:0:0:0:0:0:1"))
    if form == 2:
        return c.choice(("::ffff:", "2001:db8::", "64:ff9b::")) + ipv4(c)  # embedded IPv4
    address = ipaddress.IPv6Address(c.integer(0, 2**128 - 1))
    text = address.exploded if form == 3 else address.compressed
    return text.upper() if c.chance(0.3) else text


def host(c: Choices) -> str:
    kind = c.integer(0, 9)
    if kind < 4:
        return hostname(c)
    if kind < 7:
        return ipv4(c)
    return f"[{ipv6(c)}]"


def port(c: Choices) -> int | None:
    if c.chance(0.5):
        return None
    return c.choice((5060, 5061, 5070, c.integer(1, 65535)))


# --- URIs -------------------------------------------------------------------------------------


def sip_uri(c: Choices, *, uri_headers: bool = False, spec: bool = False) -> tuple[str, UriModel]:
    """A sip:/sips: URI. `spec`: usable as an addr-spec (no ',', ';', '?'); `uri_headers`:
    may carry ?headers (not in a Request-URI)."""
    scheme_text = c.choice(("sip", "sip", "sip", "sips", "SIP", "Sips"))
    text = scheme_text + ":"
    user = password = None
    user_safe = UNRESERVED + "&=+$/" if spec else USER_SAFE
    pass_safe = UNRESERVED + "&=+$" if spec else PASSWORD_SAFE
    if c.chance(0.8):
        raw_user = _plain(c, user_safe, 1, 16)
        text += _escape(c, raw_user, user_safe)
        user = _decoded(raw_user)
        if c.chance(0.1):
            raw_pw = _plain(c, pass_safe, 0, 10)
            text += ":" + _escape(c, raw_pw, pass_safe)
            password = _decoded(raw_pw)
        text += "@"
    h = host(c)
    text += h
    p = port(c)
    if p is not None:
        text += f":{p}"
    params: dict[str, str | None] = {}
    headers: dict[str, str] = {}
    if not spec:
        for _ in range(c.integer(0, 4)):
            name, value = _uri_param(c)
            if name.lower() in params:
                continue
            raw_name = name.encode()
            text += ";" + _escape(c, raw_name, PARAM_SAFE)
            if value is None:
                params[name.lower()] = None
            else:
                raw_value = value.encode("utf-8")
                text += "=" + _escape(c, raw_value, PARAM_SAFE)
                params[name.lower()] = value
        if uri_headers and c.chance(0.2):
            items = []
            for _ in range(c.integer(1, 3)):
                raw_h = _plain(c, HNV_SAFE.replace("?", ""), 1, 8)
                raw_v = _plain(c, HNV_SAFE, 0, 12)
                if _decoded(raw_h) in headers:
                    continue
                items.append(_escape(c, raw_h, HNV_SAFE) + "=" + _escape(c, raw_v, HNV_SAFE))
                headers[_decoded(raw_h)] = _decoded(raw_v)
            text += "?" + "&".join(items)
    return text, UriModel(scheme_text.lower(), user, password, h, p, params, headers)


def _uri_param(c: Choices) -> tuple[str, str | None]:
    kind = c.integer(0, 7)
    if kind == 0:
        return "transport", c.choice(("udp", "tcp", "tls", "sctp", "ws", "UDP", token(c)))
    if kind == 1:
        return "user", c.choice(("phone", "ip", "dialstring"))
    if kind == 2:
        return "lr", None
    if kind == 3:
        return "maddr", host(c)
    if kind == 4:
        return "ttl", str(c.integer(0, 255))
    if kind == 5:
        return "method", c.choice(KNOWN_METHODS)
    name = c.string(ALNUM + "-_.!~*'()", 1, 10)
    return name, None if c.chance(0.3) else c.string(ALNUM + "-_.!~*'()[]/:&+$", 1, 12)


def tel_uri(c: Choices) -> tuple[str, UriModel]:
    """RFC 3966 tel: a global number with visual separators, or a local one with context."""
    if c.chance(0.6):
        number = (
            "+" + c.string(DIGIT, 1, 3) + c.string(DIGIT + "-.()", 4, 14) + c.string(DIGIT, 1, 2)
        )
        params: dict[str, str | None] = {}
    else:
        number = c.string(DIGIT + "*#", 3, 10)
        params = {"phone-context": c.choice(("+1514", "example.com", "+33"))}
    if c.chance(0.2):
        params["ext"] = c.string(DIGIT, 1, 5)
    if c.chance(0.1):
        params["isub"] = c.string(ALNUM, 1, 6)
    text = "tel:" + number + "".join(f";{k}={v}" for k, v in params.items())
    return text, UriModel("tel", number, None, "", None, params, {})


def any_uri(c: Choices, *, uri_headers: bool = False, spec: bool = False) -> tuple[str, UriModel]:
    if c.chance(0.15):
        return tel_uri(c)
    return sip_uri(c, uri_headers=uri_headers, spec=spec)


# --- header values ------------------------------------------------------------------------------


def _quoted(c: Choices, plain: str) -> str:
    """`plain` as a quoted-string; quoted-pairs where needed, and now and then where not."""
    out = ['"']
    for ch in plain:
        must = ch in '"\\' or (ord(ch) < 0x20 and ch != "\t") or ch == "\x7f"
        if must or (ord(ch) < 0x80 and ch != " " and c.chance(0.03)):
            out.append("\\" + ch)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def gen_value(c: Choices) -> str:
    kind = c.integer(0, 3)
    if kind == 0:
        return token(c)
    if kind == 1:
        return host(c)
    if kind == 2:
        return _quoted(c, c.string(UTF8_TEXT.replace("\u2028", ""), 0, 12))
    return str(c.integer(0, 99999))


def _sws(c: Choices) -> str:
    return c.choice(("", "", "", "", " ", "  ", "\t"))


def header_params(c: Choices, fixed: dict[str, str | None], extra: int) -> tuple[str, dict]:
    """`;name=value` header parameters (generic-param), `fixed` ones first."""
    params: dict[str, str | None] = {}
    items = list(fixed.items())
    for _ in range(c.integer(0, extra)):
        items.append((token(c, 1, 8), None if c.chance(0.3) else gen_value(c)))
    text = ""
    for name, value in items:
        if name.lower() in params:
            continue
        params[name.lower()] = value
        text += f"{_sws(c)};{_sws(c)}{name}"
        if value is not None:
            eq = "=" if c.chance(0.9) else f"{_sws(c)}={_sws(c)}"
            text += eq + value
    return text, params


def name_addr(
    c: Choices, *, tag: str | None = None, allow_spec: bool = True, extra_params: int = 2
) -> tuple[str, NameAddrModel]:
    """From / To / Contact / Route value: name-addr or addr-spec, with header parameters."""
    fixed: dict[str, str | None] = {} if tag is None else {"tag": tag}
    if allow_spec and c.chance(0.25):
        uri_text, uri = any_uri(c, spec=True)
        if uri.scheme == "tel" and uri.params:  # ';' would start the header parameters
            uri_text, uri = sip_uri(c, spec=True)
        ptext, params = header_params(c, fixed, extra_params)
        return uri_text + ptext, NameAddrModel(None, uri, params)
    uri_text, uri = any_uri(c, uri_headers=True)
    display: str | None = None
    head = ""
    kind = c.integer(0, 3)
    if kind == 1:
        words = [token(c, 1, 8) for _ in range(c.integer(1, 3))]
        display = " ".join(words)
        head = display + c.choice((" ", " ", "", "  "))  # LWS before '<' is no part of it
    elif kind >= 2:
        words = [c.string(UTF8_TEXT.replace("\u2028", "").replace(" ", ""), 0, 8)]
        words += [c.string(ALNUM + "\"\\'", 1, 6) for _ in range(c.integer(0, 2))]
        if c.chance(0.05):
            words.append(c.choice(("\x07", "\x00", "\x01")))
        plain = " ".join(words)
        display = plain
        head = _quoted(c, plain) + c.choice((" ", "", " "))
    ptext, params = header_params(c, fixed, extra_params)
    return f"{head}<{uri_text}>{ptext}", NameAddrModel(display, uri, params)


def via_value(c: Choices, *, branch: str | None = None) -> tuple[str, ViaModel]:
    transport_text = c.choice(("UDP", "UDP", "TCP", "TLS", "SCTP", "udp", "WS", token(c, 1, 6)))
    slash = "/" if c.chance(0.9) else f"{_sws(c)}/{_sws(c)}"
    sip = c.choice(("SIP", "SIP", "SIP", "sip"))
    text = f"{sip}{slash}2.0{slash}{transport_text} {_sws(c)}"
    h = host(c)
    text += h
    p = port(c)
    if p is not None:
        text += (":" if c.chance(0.9) else f"{_sws(c)}:{_sws(c)}") + str(p)
    fixed: dict[str, str | None] = {}
    if branch is None and c.chance(0.95):
        branch = "z9hG4bK" + token(c, 1, 16) if c.chance(0.9) else token(c, 1, 10)
    if branch is not None:
        fixed["branch"] = branch
    if c.chance(0.2):
        fixed["received"] = c.choice((ipv4(c), ipv6(c), f"[{ipv6(c)}]"))  # RFC 5118 §4.5
    if c.chance(0.3):
        fixed["rport"] = None if c.chance(0.6) else str(c.integer(1, 65535))
    if c.chance(0.05):
        fixed["maddr"] = host(c)
    if c.chance(0.05):
        fixed["ttl"] = str(c.integer(0, 255))
    ptext, params = header_params(c, dict(_shuffle(c, list(fixed.items()))), 1)
    return text + ptext, ViaModel(transport_text.upper(), h, p, params)


def call_id_value(c: Choices) -> str:
    word = c.string(WORD_CHARS, 1, 24)
    return word + "@" + c.string(WORD_CHARS, 1, 16) if c.chance(0.6) else word


def method(c: Choices) -> str:
    if c.chance(0.85):
        return c.choice(KNOWN_METHODS)
    # an extension method; '~' keeps it apart from every known one
    return token(c, 1, 8, ALPHA) + "~" + token(c, 0, 6)


def extension_header(c: Choices) -> tuple[str, str]:
    """An unknown header (its name never a known one) with a TEXT-UTF8 value."""
    name = c.choice(("X-", "P-Fz-", "Fz~", "x-")) + token(c, 1, 10)
    value = c.string(UTF8_TEXT.replace("\u2028", ""), 0, 40).strip(" ")
    return name, value


@dataclass
class _Header:
    name: str  # canonical long name (or the extension spelling)
    value: str
    compact_ok: bool = True


def _render(c: Choices, header: _Header) -> bytes:
    """One header line as sent: name spelling, HCOLON, value maybe folded at an LWS."""
    name = header.name
    short = COMPACT.get(name)
    if short is not None and header.compact_ok and c.chance(0.2):
        spelling = _case(c, short) if c.chance(0.2) else short
    elif name in _KNOWN_LONG:
        spelling = _case(c, name)
    else:
        spelling = name
    colon = c.choice((": ", ": ", ": ", ":", " : ", ":\t", "\t:  "))
    value = header.value
    if value and c.chance(0.1):
        # fold where a single SP separates two non-blank characters, or right after HCOLON
        spots = [
            i
            for i in range(1, len(value) - 1)
            if value[i] == " " and value[i - 1] not in " \t" and value[i + 1] not in " \t"
        ]
        if spots and c.chance(0.7):
            i = c.choice(spots)
            value = value[:i] + c.choice(("\r\n ", "\r\n\t", "\r\n   ")) + value[i + 1 :]
        else:
            colon = ":" + c.choice(("\r\n ", "\r\n\t"))
    return (spelling + colon + value).encode("utf-8", "surrogateescape")


_KNOWN_LONG = frozenset(
    (
        "Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Contact", "Content-Length",
        "Content-Type", "Route", "Record-Route", "Supported", "Require", "Allow", "Subject",
        "User-Agent", "Server", "Expires", "Date", "Accept", "Session-Expires", "Timestamp",
        "P-Asserted-Identity", "Content-Encoding", "Event", "Allow-Events", "Min-SE",
        "Privacy", "Organization", "Priority", "Warning", "Retry-After", "Unsupported",
    )
)  # fmt: skip


# --- bodies ----------------------------------------------------------------------------------


def sdp_body(c: Choices) -> bytes:
    """An SDP offer (RFC 4566): one or two media lines, IPv4 or IPv6 (RFC 5118 §4.6-4.9)."""
    family = c.choice(("IP4", "IP4", "IP6"))
    address = ipv4(c) if family == "IP4" else ipv6(c)
    lines = [
        "v=0",
        f"o={token(c, 1, 8, ALNUM)} {c.integer(0, 2**40)} {c.integer(0, 2**32)} IN {family} "
        f"{address}",
        "s=" + c.choice(("-", "", "Call me soon, please!", "session")),
    ]
    session_c = c.chance(0.8)
    if session_c:
        lines.append(f"c=IN {family} {address}")
    lines.append("t=0 0" if c.chance(0.8) else "t=3338481189 3370017201")
    for index in range(c.integer(1, 2)):
        media = "audio" if index == 0 or c.chance(0.3) else "video"
        formats = [c.choice(("0", "8", "9", "18", "101", "96", "13", "3"))]
        formats += [c.choice(("0", "8", "101", "97")) for _ in range(c.integer(0, 2))]
        formats = list(dict.fromkeys(formats))
        media_port = c.choice((0, c.integer(1024, 65534), 49170))
        lines.append(f"m={media} {media_port} RTP/AVP {' '.join(formats)}")
        if not session_c or c.chance(0.2):
            fam = c.choice(("IP4", "IP6"))
            lines.append(f"c=IN {fam} {ipv4(c) if fam == 'IP4' else ipv6(c)}")
        for fmt in formats:
            encoding = {"0": "PCMU", "8": "PCMA", "9": "G722", "18": "G729", "3": "GSM"}
            if fmt in encoding and c.chance(0.6):
                lines.append(f"a=rtpmap:{fmt} {encoding[fmt]}/8000")
            elif fmt in ("101", "97"):
                lines.append(f"a=rtpmap:{fmt} telephone-event/8000")
                lines.append(f"a=fmtp:{fmt} 0-15")
            elif fmt == "96":
                lines.append("a=rtpmap:96 opus/48000/2")
        if c.chance(0.3):
            lines.append("a=" + c.choice(("sendrecv", "sendonly", "recvonly", "inactive")))
        if c.chance(0.1):
            lines.append(f"a=rtcp:{c.integer(1024, 65535)}")
        if c.chance(0.1):
            lines.append("a=ptime:20")
    end = "\r\n" if c.chance(0.95) else "\n"
    return (end.join(lines) + end).encode()


def body(c: Choices) -> tuple[bytes, str | None]:
    kind = c.integer(0, 9)
    if kind < 4:
        return b"", None
    if kind < 8:
        return sdp_body(c), c.choice(("application/sdp", "application/SDP", "application/sdp"))
    if kind == 8:
        return c.binary(1, 200), c.choice(("application/octet-stream", "application/x-fz"))
    text = c.string(UTF8_TEXT, 1, 60).encode()
    return text, c.choice(("text/plain;charset=utf-8", "application/dtmf-relay", "text/plain"))


# --- messages --------------------------------------------------------------------------------


def _date(c: Choices) -> str:
    day = c.choice(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"))
    month = c.choice(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct"))
    return (
        f"{day}, {c.integer(1, 28):02d} {month} {c.integer(1970, 2099)} "
        f"{c.integer(0, 23):02d}:{c.integer(0, 59):02d}:{c.integer(0, 59):02d} GMT"
    )


def message(
    c: Choices,
    *,
    kind: Literal["request", "response"] | None = None,
    method_name: str | None = None,
    status: int | None = None,
    call_id: str | None = None,
    cseq: int | None = None,
    from_tag: str | None = None,
    to_tag: str | None = None,
    branch: str | None = None,
    content: tuple[bytes, str | None] | None = None,
    content_length: bool | None = None,
    extra: Sequence[tuple[str, str]] = (),
    optional_headers: bool = True,
) -> Generated:
    """A valid SIP message. Keyword arguments pin parts (`to_tag=""`: no To tag)."""
    if kind is None:
        kind = "request" if c.chance(0.75) else "response"
    meth = method_name or method(c)
    uri_model: UriModel | None = None
    reason = ""
    code = 0
    if kind == "request":
        uri_text, uri_model = any_uri(c)
        start = f"{meth} {uri_text} {c.choice(('SIP/2.0', 'SIP/2.0', 'SIP/2.0', 'sip/2.0'))}"
    else:
        code = status if status is not None else c.choice((100, 180, 183, 200, 486, 503, 0))
        if code == 0:
            code = c.integer(100, 699)
        reason = c.choice(REASONS) if c.chance(0.7) else c.string(UTF8_TEXT, 0, 30)
        start = f"SIP/2.0 {code} {reason}" if reason or c.chance(0.5) else f"SIP/2.0 {code}"

    groups: list[list[_Header]] = []
    vias: list[ViaModel] = []
    via_values = []
    for i in range(c.integer(1, 3) if kind == "request" else c.integer(1, 2)):
        text, via = via_value(c, branch=branch if i == 0 else None)
        via_values.append(text)
        vias.append(via)
    if len(via_values) > 1 and c.chance(0.5):
        joined = via_values[0]
        for value in via_values[1:]:
            joined += c.choice((",", ", ", " , ", ",\t")) + value
        groups.append([_Header("Via", joined)])
    else:
        groups.append([_Header("Via", v) for v in via_values])

    tag = from_tag if from_tag is not None else (token(c, 1, 12) if c.chance(0.9) else None)
    from_text, from_model = name_addr(c, tag=tag or None)
    groups.append([_Header("From", from_text)])
    if to_tag is None:
        to_tag = token(c, 1, 12) if (kind == "response" and code > 100) or c.chance(0.2) else ""
    to_text, to_model = name_addr(c, tag=to_tag or None)
    groups.append([_Header("To", to_text)])
    cid = call_id if call_id is not None else call_id_value(c)
    groups.append([_Header("Call-ID", cid)])
    seq = cseq if cseq is not None else c.choice((1, 2, 101, c.integer(0, 2**31 - 1)))
    seq_text = str(seq) if c.chance(0.95) else f"{seq:010d}"
    groups.append([_Header("CSeq", f"{seq_text}{c.choice((' ', ' ', '  ', chr(9)))}{meth}")])

    max_forwards: int | None = None
    if kind == "request" and c.chance(0.9):
        max_forwards = c.choice((70, 69, 0, 1, 255, c.integer(0, 255)))
        groups.append(
            [
                _Header(
                    "Max-Forwards", f"{max_forwards:03d}" if c.chance(0.05) else str(max_forwards)
                )
            ]
        )

    contacts: list[NameAddrModel] | None = []
    if c.chance(0.8):
        if meth == "REGISTER" and c.chance(0.2):
            groups.append([_Header("Contact", "*")])
            contacts = None
        else:
            values = []
            assert contacts is not None
            for _ in range(c.integer(1, 2)):
                fixed: dict[str, str | None] = {}
                if c.chance(0.2):
                    fixed["expires"] = str(c.integer(0, 7200))
                if c.chance(0.1):
                    fixed["q"] = c.choice(("0", "0.5", "1", "1.0", "0.333", "1.000"))
                text, contact = name_addr(c, allow_spec=True, extra_params=1)
                if fixed:
                    extra_text, _ = header_params(c, fixed, 0)
                    contact = replace(contact, params={**contact.params, **fixed})
                    text += extra_text
                values.append(text)
                contacts.append(contact)
            if len(values) > 1 and c.chance(0.5):
                groups.append([_Header("Contact", ", ".join(values))])
            else:
                groups.append([_Header("Contact", v) for v in values])

    if optional_headers:
        for _ in range(c.integer(0, 5)):
            groups.append([_optional_header(c, meth)])
    for name, value in extra:
        groups.append([_Header(name, value)])

    payload, ctype = content if content is not None else body(c)
    if ctype is not None:
        groups.append([_Header("Content-Type", ctype)])
    with_length = content_length if content_length is not None else c.chance(0.9)
    if with_length:
        groups.append([_Header("Content-Length", str(len(payload)))])

    ordered = [h for group in _shuffle(c, groups) for h in group]
    lines = [_render(c, h) for h in ordered]
    model = Model(
        kind=kind,
        method=meth,
        uri=uri_model,
        status=code,
        reason=reason,
        headers=[(h.name, h.value) for h in ordered],
        body=payload,
        vias=vias,
        from_=from_model,
        to=to_model,
        call_id=cid,
        cseq=seq,
        max_forwards=max_forwards,
        contacts=contacts,
    )
    return Generated(
        model, start.encode("utf-8"), lines, [h.name.lower() for h in ordered], payload
    )


def _optional_header(c: Choices, meth: str) -> _Header:
    kind = c.integer(0, 15)
    if kind == 0:
        routes = [name_addr(c, allow_spec=False, extra_params=1)[0] for _ in range(c.integer(1, 2))]
        return _Header(c.choice(("Route", "Record-Route")), ", ".join(routes))
    if kind == 1:
        tags = [c.choice(("timer", "replaces", "100rel", "path", token(c, 1, 8))) for _ in range(2)]
        return _Header(c.choice(("Supported", "Require")), ", ".join(tags))
    if kind == 2:
        return _Header("Allow", ", ".join(c.choice(KNOWN_METHODS) for _ in range(c.integer(1, 5))))
    if kind == 3:
        return _Header("Subject", c.string(UTF8_TEXT.replace("\u2028", ""), 0, 30).strip(" "))
    if kind == 4:
        product = f"{token(c, 1, 8)}/{c.integer(0, 9)}.{c.integer(0, 9)}"
        return _Header(c.choice(("User-Agent", "Server")), product + " (fuzz)" * c.integer(0, 1))
    if kind == 5:
        return _Header("Expires", str(c.integer(0, 2**31)))
    if kind == 6:
        return _Header("Date", _date(c))
    if kind == 7:
        return _Header(
            "Accept", c.choice(("application/sdp", "application/sdp, text/plain", "*/*"))
        )
    if kind == 8:
        refresher = c.choice(("", ";refresher=uac", ";refresher=uas"))
        return _Header("Session-Expires", f"{c.integer(90, 7200)}{refresher}")
    if kind == 9:
        return _Header("Timestamp", f"{c.integer(0, 99999)}.{c.integer(0, 999)}")
    if kind == 10:
        return _Header("P-Asserted-Identity", name_addr(c, allow_spec=False, extra_params=0)[0])
    if kind == 11:
        return _Header("Subject", "")
    return _Header(*extension_header(c))


# --- mutations -------------------------------------------------------------------------------

STRUCTURAL = (
    "truncate", "drop_mandatory", "duplicate_single", "content_length_larger",
    "content_length_smaller", "content_length_garbage", "cseq_number_huge",
    "cseq_number_garbage", "cseq_method_mismatch", "huge_header_value", "huge_message",
    "max_forwards_huge", "lf_only", "bare_cr", "no_empty_line", "line_without_colon",
    "leading_continuation", "bad_version", "unknown_scheme", "ltgt_request_uri",
    "extra_space_request_line", "uri_headers_in_request_uri", "status_code_huge",
)  # fmt: skip
BYTE_LEVEL = (
    "nul_byte", "non_utf8", "binary_garbage", "flip_byte", "insert_fragment", "delete_span",
    "duplicate_line", "crlf_to_lf_everywhere", "prepend_garbage", "append_garbage",
)  # fmt: skip
FRAGMENTS = (
    b"\r\n", b"\r\n\r\n", b" ", b"\t", b":", b";", b",", b"<", b">", b'"', b"\\", b"%", b"@",
    b"[", b"]", b"=", b"?", b"\x00", b"\xff", b"\xc3\xa9", b"\xed\xa0\x80", b"SIP/2.0",
    b"sip:", b"tel:", b"Via: ", b"l: ", b"Content-Length: 99999", b";branch=", b"\r\n ",
    b"z9hG4bK", b"[::1]", b"[2001:db8:::1]", b"%00", b"%", b"\n", b"\r",
)  # fmt: skip


@dataclass
class _Draft:
    start: bytes
    lines: list[bytes]
    keys: list[str]
    body: bytes
    blank: bytes = b"\r\n"
    sep: list[bytes] = field(default_factory=list)  # line terminators (CRLF unless mutated)

    def wire(self) -> bytes:
        seps = self.sep or [b"\r\n"] * (len(self.lines) + 1)
        out = [self.start, seps[0]]
        for line, end in zip(self.lines, seps[1:], strict=True):
            out += [line, end]
        return b"".join(out) + self.blank + self.body


class _Raw(_Draft):
    """A mutation that produced bytes directly."""

    def __init__(self, data: bytes) -> None:
        super().__init__(b"", [], [], b"")
        self.data = data

    def wire(self) -> bytes:
        return self.data


def _set_line(draft: _Draft, key: str, line: bytes) -> None:
    for i, k in enumerate(draft.keys):
        if k == key:
            draft.lines[i] = line
            return
    draft.lines.append(line)
    draft.keys.append(key)


def _structural(c: Choices, g: Generated, op: str) -> tuple[_Draft, Oracle, bytes | None] | None:
    """Apply one structural mutation to a valid message: (draft, oracle, body if valid)."""
    d = _Draft(g.start, list(g.lines), list(g.keys), g.body)
    has_length = "content-length" in d.keys
    is_request = g.model.kind == "request"
    if op == "truncate":
        wire = g.wire
        cut = c.integer(0, len(wire) - 1)
        head = wire.index(b"\r\n\r\n") + 4
        data = wire[:cut]
        if has_length or cut < head:
            return _Raw(data), 400, None
        return _Raw(data), "valid", wire[head:cut]
    if op == "drop_mandatory":
        key = c.choice(MANDATORY)
        keep = [i for i, k in enumerate(d.keys) if k != key]
        d.lines = [d.lines[i] for i in keep]
        d.keys = [d.keys[i] for i in keep]
        return d, 400, None
    if op == "duplicate_single":
        present = [i for i, k in enumerate(d.keys) if k in SINGLE]
        i = c.choice(present)
        d.lines.insert(c.integer(0, len(d.lines)), d.lines[i])
        d.keys.append(d.keys[i])  # only the count of keys matters from here on
        return d, 400, None
    if op == "content_length_larger":
        _set_line(
            d, "content-length", f"Content-Length: {len(d.body) + c.integer(1, 5000)}".encode()
        )
        return d, 400, None
    if op == "content_length_smaller":
        if not d.body:
            return None
        n = c.integer(0, len(d.body) - 1)
        _set_line(d, "content-length", f"l: {n}".encode())
        return d, "valid", d.body[:n]
    if op == "content_length_garbage":
        value = c.choice(("-1", "abc", "12a", "99999999999", "", "1 2", "0x10", "+5", "١٢"))
        _set_line(d, "content-length", f"Content-Length: {value}".encode())
        return d, 400, None
    if op in ("cseq_number_huge", "cseq_number_garbage", "cseq_method_mismatch"):
        meth = g.model.method
        if op == "cseq_number_huge":
            number = c.choice((2**31, 2**32 + 5, 9 * 10**9, 4294967296, 10**15, 2**64))
            value = f"{number} {meth}"
        elif op == "cseq_number_garbage":
            value = c.choice((f"abc {meth}", f"-1 {meth}", "1", f"1 {meth} 3", f"1.5 {meth}", ""))
        else:
            if not is_request:
                return None
            other = c.choice([m for m in (*KNOWN_METHODS, meth.lower(), "FOO~") if m != meth])
            value = f"{g.model.cseq} {other}"
            _set_line(d, "cseq", b"CSeq: " + value.encode())
            return d, 400 if meth in KNOWN_METHODS else 501, None
        _set_line(d, "cseq", b"CSeq: " + value.encode())
        return d, 400, None
    if op == "huge_header_value":
        size = c.integer(8193, 20000)
        d.lines.insert(c.integer(0, len(d.lines)), b"X-Huge: " + b"a" * size)
        d.keys.append("x-huge")
        return d, 513, None
    if op == "huge_message":
        for _ in range(9):
            d.lines.append(b"X-Big: " + b"b" * 8000)
            d.keys.append("x-big")
        return d, 413, None
    if op == "max_forwards_huge":
        value = c.choice(("256", "300", "99999999999", "1" + "0" * 30, "-1", "70a"))
        _set_line(d, "max-forwards", f"Max-Forwards: {value}".encode())
        return d, 400, None
    if op == "lf_only":
        d.sep = [b"\r\n"] * (len(d.lines) + 1)
        d.sep[c.integer(0, len(d.sep) - 1)] = b"\n"
        return d, 400, None
    if op == "bare_cr":
        if not d.lines:
            return None
        i = c.integer(0, len(d.lines) - 1)
        line = d.lines[i]
        pos = c.integer(line.index(b":") + 1, len(line)) if b":" in line else len(line)
        d.lines[i] = line[:pos] + c.choice((b"\r", b"\n")) + line[pos:]
        return d, 400, None
    if op == "no_empty_line":
        if b"\r\n\r\n" in d.body or d.body.startswith(b"\r\n"):
            return None
        d.blank = b""
        return d, 400, None
    if op == "line_without_colon":
        line = (token(c, 1, 8) + c.choice((" ", "")) + token(c, 0, 8)).encode()
        d.lines.insert(c.integer(0, len(d.lines)), line.replace(b":", b""))
        d.keys.append("junk")
        return d, 400, None
    if op == "leading_continuation":
        d.lines.insert(0, c.choice((b" ", b"\t")) + token(c, 1, 10).encode())
        d.keys.append("junk")
        return d, 400, None
    if op == "bad_version":
        version = c.choice((b"SIP/3.0", b"SIP/2.1", b"SIP/1.0", b"SIP/20.0"))
        broken = c.choice((b"SIP/2.0.0", b"SIP/", b"SIPS/2.0", b"HTTP/1.1", b"SIP/2.x"))
        use_505 = c.chance(0.5)
        new = version if use_505 else broken
        if is_request:
            meth_uri = d.start.rsplit(b" ", 1)[0]
            d.start = meth_uri + b" " + new
        else:
            d.start = new + d.start[len(b"SIP/2.0") :]
            if not use_505:
                # "SIP/2.0.0 200 OK", "HTTP/1.1 200 OK"... are no status lines
                return d, 400, None
        return d, 505 if use_505 else 400, None
    if op in ("unknown_scheme", "ltgt_request_uri", "extra_space_request_line",
              "uri_headers_in_request_uri"):  # fmt: skip
        if not is_request:
            return None
        meth_b, uri_b, version_b = d.start.split(b" ")
        if op == "unknown_scheme":
            uri_b = c.choice(
                (b"http://example.com/x", b"urn:service:sos", b"mailto:a@example.com",
                 b"im:user@example.com", b"soap.beep://x.example.com:8888", b"isbn:29837")
            )  # fmt: skip
            d.start = b" ".join((meth_b, uri_b, version_b))
            return d, 416, None
        if op == "ltgt_request_uri":
            d.start = b" ".join((meth_b, b"<" + uri_b + b">", version_b))
        elif op == "extra_space_request_line":
            where = c.integer(0, 2)
            if where == 0:
                d.start = meth_b + b"  " + uri_b + b" " + version_b
            elif where == 1:
                d.start = meth_b + b" " + uri_b + b"  " + version_b
            else:
                d.start = b" ".join((meth_b, uri_b, version_b)) + b" "
        else:
            if uri_b.startswith(b"tel:") or b"?" in uri_b:
                return None
            d.start = b" ".join((meth_b, uri_b + b"?Subject=hi", version_b))
        return d, 400, None
    if op == "status_code_huge":
        if is_request:
            return None
        code = c.choice((b"4294967301", b"99", b"1000", b"20", b"2OO", b"-200"))
        d.start = b"SIP/2.0 " + code + b" " + g.model.reason.encode()
        return d, 400, None
    raise AssertionError(op)


def _byte_level(c: Choices, data: bytes, op: str) -> bytes:
    buf = bytearray(data)
    pos = c.integer(0, max(len(buf) - 1, 0))
    if op == "nul_byte":
        buf[pos:pos] = b"\x00" * c.integer(1, 3)
    elif op == "non_utf8":
        buf[pos:pos] = c.choice((b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\x80\x80", b"\xf8\x88"))
    elif op == "binary_garbage":
        buf[pos : pos + c.integer(1, 40)] = c.binary(1, 40)
    elif op == "flip_byte":
        if buf:
            buf[pos] = c.integer(0, 255)
    elif op == "insert_fragment":
        buf[pos:pos] = c.choice(FRAGMENTS)
    elif op == "delete_span":
        del buf[pos : pos + c.integer(1, 30)]
    elif op == "duplicate_line":
        end = buf.find(b"\r\n", pos)
        begin = buf.rfind(b"\r\n", 0, pos) + 2 if pos else 0
        if end > begin:
            buf[end:end] = b"\r\n" + buf[begin:end]
    elif op == "crlf_to_lf_everywhere":
        buf = bytearray(bytes(buf).replace(b"\r\n", c.choice((b"\n", b"\r", b"\n\r"))))
    elif op == "prepend_garbage":
        buf[0:0] = c.choice((b"\r\n", b"\x00", c.binary(1, 20), b" "))
    elif op == "append_garbage":
        buf += c.binary(1, 60)
    else:
        raise AssertionError(op)
    return bytes(buf)


def mutate(c: Choices, g: Generated, max_ops: int = 3) -> Mutant:
    """A valid message after 1..max_ops mutations; an oracle when exactly one was applied."""
    count = c.integer(1, max_ops)
    ops: list[str] = []
    oracle: Oracle = None
    valid_body: bytes | None = None
    data = g.wire
    if c.chance(0.6):
        for _ in range(5):  # some structural ops do not apply to every message
            op = c.choice(STRUCTURAL)
            result = _structural(c, g, op)
            if result is not None:
                draft, oracle, valid_body = result
                data = draft.wire()
                ops.append(op)
                break
    while len(ops) < count:
        op = c.choice(BYTE_LEVEL)
        data = _byte_level(c, data, op)
        ops.append(op)
    if len(ops) != 1 or ops[0] in BYTE_LEVEL:
        oracle, valid_body = None, None
    return Mutant(data, tuple(ops), oracle, valid_body, g)


def single_mutation(c: Choices, g: Generated, op: str) -> Mutant | None:
    result = _structural(c, g, op)
    if result is None:
        return None
    draft, oracle, valid_body = result
    return Mutant(draft.wire(), (op,), oracle, valid_body, g)


def garbage(c: Choices) -> bytes:
    """Bytes with no message behind them: random, or SIP-looking fragments strung together."""
    if c.chance(0.4):
        return c.binary(0, 300)
    parts = [c.choice((*FRAGMENTS, b"INVITE ", b"SIP/2.0 200 OK", b"CSeq: 1 INVITE"))]
    for _ in range(c.integer(0, 30)):
        parts.append(c.choice(FRAGMENTS) if c.chance(0.7) else token(c).encode())
    return b"".join(parts)


def datagram(c: Choices, *, call_id: str | None = None) -> tuple[bytes, Mutant | Generated | None]:
    """What the fuzzer sends: a valid message (20%), a mutant (70%) or garbage (10%).

    With `call_id` (a token, '@host' aside) the top Via's branch is unique too, so that two
    datagrams are never taken for one transaction (RFC 3261 §17.2.3) by chance."""
    roll = c.integer(0, 9)
    if roll == 9:
        return garbage(c), None
    branch = None
    if call_id is not None:
        cookie = "z9hG4bK" if c.chance(0.9) else ""
        branch = f"{cookie}{token(c, 0, 8)}-{call_id.split('@')[0]}"
    g = message(c, call_id=call_id, branch=branch)
    if roll < 2:
        return g.wire, g
    m = mutate(c, g)
    return m.data, m


def options_ping(
    call_id: str, branch: str, local: tuple[str, int], target: tuple[str, int]
) -> bytes:
    """A plain valid OPTIONS (the liveness check between batches)."""
    return (
        f"OPTIONS sip:ping@{target[0]}:{target[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bK{branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:fuzz@{local[0]}>;tag=ping\r\n"
        f"To: <sip:ping@{target[0]}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


# --- hypothesis strategies -------------------------------------------------------------------


@st.composite
def valid_messages(
    draw: st.DrawFn, kind: Literal["request", "response"] | None = None, **pins: Any
) -> Generated:
    """A valid message; keyword arguments pin parts as `message()` takes them."""
    return message(DrawChoices(draw), kind=kind, **pins)


@st.composite
def mutated_messages(draw: st.DrawFn) -> Mutant:
    c = DrawChoices(draw)
    return mutate(c, message(c))


@st.composite
def oracle_mutants(draw: st.DrawFn) -> Mutant:
    """A valid message after exactly one structural mutation whose outcome is known."""
    c = DrawChoices(draw)
    g = message(c)
    op = c.choice(STRUCTURAL)
    mutant = single_mutation(c, g, op)
    if mutant is None:  # the op does not apply to this message: the valid one instead
        return Mutant(g.wire, (), "valid", g.body, g)
    return mutant


@st.composite
def any_datagrams(draw: st.DrawFn) -> bytes:
    """Anything a socket may bring: valid messages, mutants, garbage, random bytes."""
    c = DrawChoices(draw)
    if c.chance(0.15):
        return draw(st.binary(max_size=2000))
    return datagram(c)[0]


@st.composite
def requests_to_recorder(draw: st.DrawFn, method_name: str | None = None, **pins: Any) -> Generated:
    """A valid request for the B2BUA (method and other parts may be pinned)."""
    return message(DrawChoices(draw), kind="request", method_name=method_name, **pins)
