"""SIP URIs and the structured header values built on them (RFC 3261 §19.1, §20, §25).

Every class is a mutable `dataclass(slots=True)` so that a B2BUA can rewrite values;
`.copy()` returns a deep copy. `parse()` raises `RemoteProtocolError` on malformed input
and `__str__()` serializes (re-escaping where needed).

Conventions worth knowing:

* `SipUri.user`, `.password`, parameter names/values and URI headers are stored
  %-unescaped (``sip:%75ser@h`` has user ``"user"``; bytes that are not UTF-8 survive as
  surrogate escapes so nothing is lost). Parameter names are lower-cased.
* Header-field parameters (`NameAddr.params`, `Via.params`) keep a quoted-string value
  with its quotes, exactly as received; names are lower-cased.
* `.host` keeps an IPv6 reference in brackets (``"[2001:db8::1]"``); the `host_port` /
  `sent_by` tuples give the bare address, ready for a socket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from sip.errors import RemoteProtocolError

__all__ = [
    "CSeq",
    "NameAddr",
    "SipUri",
    "Via",
    "parse_params",
    "quote_string",
    "unquote_string",
]

# --- grammar pieces (RFC 3261 §25.1) -----------------------------------------------------
# Possessive quantifiers (Python 3.11+) keep every pattern linear on hostile input.
TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]++"
SWS = r"[ \t]*+"
LWS = r"[ \t]++"
QUOTED_STRING = r'"(?:[^"\\\r\n]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*+"'
# gen-value = token / host / quoted-string; host may be an IPv6 address (received=...)
_PVALUE = rf"(?:{QUOTED_STRING}|[^\s;,\"<>]++)"
PARAM = rf"{SWS};{SWS}{TOKEN}(?:{SWS}={SWS}{_PVALUE})?"
_HOST = r"(?:[A-Za-z0-9\-._]++|\[[0-9A-Fa-f:.]++\])"
_SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*+"
_DISPLAY = rf"(?:{QUOTED_STRING}|{TOKEN}(?:{LWS}{TOKEN})*+)"

_PARAM_ITER_RE = re.compile(rf"{SWS};{SWS}({TOKEN})(?:{SWS}={SWS}({_PVALUE}))?")
# name-addr: [display] "<" absoluteURI ">" *params ; addr-spec form: the URI may not hold
# ',', ';' or '?' (RFC 3261 §20), so the first ';' starts the header parameters.
NAME_ADDR_RE = re.compile(
    rf"{SWS}(?:(?P<display>{_DISPLAY})?{SWS}<(?P<uri>{_SCHEME}:[^\s<>\"]++)>"
    rf"|(?P<spec>{_SCHEME}:[^\s<>\",;?]++))(?P<params>(?:{PARAM})*+){SWS}"
)
VIA_RE = re.compile(
    rf"{SWS}SIP{SWS}/{SWS}2\.0{SWS}/{SWS}(?P<transport>{TOKEN}){LWS}(?P<host>{_HOST})"
    rf"(?:{SWS}:{SWS}(?P<port>[0-9]{{1,5}}))?(?P<params>(?:{PARAM})*+){SWS}",
    re.IGNORECASE,
)
CSEQ_RE = re.compile(rf"{SWS}([0-9]{{1,10}}){LWS}({TOKEN}){SWS}")
_TOKEN_RE = re.compile(TOKEN)
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9\-._]++")
_IPV6_RE = re.compile(r"\[[0-9A-Fa-f:.]++\]")
_SCHEME_RE = re.compile(_SCHEME)
_ESC = r"%[0-9A-Fa-f]{2}"
# user = 1*( unreserved / escaped / user-unreserved )
_USER_RE = re.compile(rf"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|{_ESC})++")
_PASSWORD_RE = re.compile(rf"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|{_ESC})*+")
# pname / pvalue = 1*paramchar ; paramchar = param-unreserved / unreserved / escaped
_PARAMCHARS_RE = re.compile(rf"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|{_ESC})++")
# hname / hvalue = *( hnv-unreserved / unreserved / escaped )
_HNV_RE = re.compile(rf"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|{_ESC})*+")
_TEL_RE = re.compile(rf"(?:[0-9A-Fa-f*#+\-.()pPwW]|{_ESC})++")
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
_NEEDS_QUOTE_RE = re.compile(r'["\\]')

# The `safe` sets for re-escaping (quote() always keeps alphanumerics and "_.-~").
_USER_SAFE = "!*'()&=+$,;?/"
_PASSWORD_SAFE = "!*'()&=+$,"
_PARAM_SAFE = "!*'()[]/:&+$"
_HNV_SAFE = "!*'()[]/?:+$"
_TEL_SAFE = "*#+-.()pPwW"
_PLAIN_USER_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/]*+")
_PLAIN_PARAM_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$]*+")

SUPPORTED_SCHEMES = frozenset({"sip", "sips", "tel"})


def _unescape(text: str) -> str:
    if "%" not in text:
        return text
    return unquote(text, errors="surrogateescape")


def _escape(text: str, safe: str, plain: re.Pattern[str] | None = None) -> str:
    if plain is not None and plain.fullmatch(text):
        return text
    return quote(text, safe=safe, errors="surrogateescape")


def unquote_string(text: str) -> str:
    """The content of a quoted-string (with the quotes), quoted-pairs resolved."""
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    return _QUOTED_PAIR_RE.sub(r"\1", inner)


def quote_string(text: str) -> str:
    """`text` as a quoted-string."""
    if _NEEDS_QUOTE_RE.search(text):
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def parse_params(text: str) -> dict[str, str | None]:
    """Header-field parameters (``;a=b ; c``) that matched `PARAM` already, names lower-cased."""
    params: dict[str, str | None] = {}
    for m in _PARAM_ITER_RE.finditer(text):
        params[m.group(1).lower()] = m.group(2)
    return params


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _bad(what: str, text: str, status: int = 400) -> RemoteProtocolError:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return RemoteProtocolError(f"malformed {what}: {shown!r}", status)


@dataclass(slots=True)
class SipUri:
    """sip:, sips: or tel: URI. A tel: URI has its number in `user` and host ``""``."""

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a URI; an unsupported (but well-formed) scheme raises with status 416."""
        colon = text.find(":")
        if colon <= 0 or not _SCHEME_RE.fullmatch(text, 0, colon):
            raise _bad("URI", text)
        scheme = text[:colon].lower()
        rest = text[colon + 1 :]
        if scheme == "sip" or scheme == "sips":
            return cls._parse_sip(scheme, rest, text)
        if scheme == "tel":
            return cls._parse_tel(rest, text)
        raise RemoteProtocolError(f"unsupported URI scheme {scheme[:20]!r}", 416)

    @classmethod
    def _parse_sip(cls, scheme: str, rest: str, text: str) -> SipUri:
        user: str | None = None
        password: str | None = None
        at = rest.find("@")
        if at >= 0:
            userinfo = rest[:at]
            rest = rest[at + 1 :]
            ucolon = userinfo.find(":")
            if ucolon >= 0:
                raw_pw = userinfo[ucolon + 1 :]
                userinfo = userinfo[:ucolon]
                if not _PASSWORD_RE.fullmatch(raw_pw):
                    raise _bad("URI password", text)
                password = _unescape(raw_pw)
            if not _USER_RE.fullmatch(userinfo):
                raise _bad("URI user", text)
            user = _unescape(userinfo)
        headers: dict[str, str] = {}
        q = rest.find("?")
        if q >= 0:
            for item in rest[q + 1 :].split("&"):
                hname, eq, hvalue = item.partition("=")
                if not eq or not hname or not _HNV_RE.fullmatch(hname):
                    raise _bad("URI header", text)
                if not _HNV_RE.fullmatch(hvalue):
                    raise _bad("URI header", text)
                headers[_unescape(hname)] = _unescape(hvalue)
            rest = rest[:q]
        params: dict[str, str | None] = {}
        semi = rest.find(";")
        if semi >= 0:
            for item in rest[semi + 1 :].split(";"):
                pname, eq, pvalue = item.partition("=")
                if not _PARAMCHARS_RE.fullmatch(pname):
                    raise _bad("URI parameter", text)
                if eq:
                    if not _PARAMCHARS_RE.fullmatch(pvalue):
                        raise _bad("URI parameter", text)
                    params[_unescape(pname).lower()] = _unescape(pvalue)
                else:
                    params[_unescape(pname).lower()] = None
            rest = rest[:semi]
        port: int | None = None
        if rest.startswith("["):
            close = rest.find("]")
            if close < 0:
                raise _bad("URI host", text)
            host = rest[: close + 1]
            tail = rest[close + 1 :]
            if not _IPV6_RE.fullmatch(host):
                raise _bad("URI host", text)
        else:
            colon = rest.find(":")
            if colon >= 0:
                host, tail = rest[:colon], rest[colon:]
            else:
                host, tail = rest, ""
            if not _HOSTNAME_RE.fullmatch(host):
                raise _bad("URI host", text)
        if tail:
            digits = tail[1:]
            if tail[0] != ":" or not (
                0 < len(digits) <= 5 and digits.isascii() and digits.isdigit()
            ):
                raise _bad("URI port", text)
            port = int(digits)
            if port > 65535:
                raise _bad("URI port", text)
        return cls(scheme, user, password, host, port, params, headers)

    @classmethod
    def _parse_tel(cls, rest: str, text: str) -> SipUri:
        number, _, ptext = rest.partition(";")
        if not _TEL_RE.fullmatch(number):
            raise _bad("tel URI", text)
        params: dict[str, str | None] = {}
        if ptext or rest.endswith(";"):
            for item in ptext.split(";"):
                pname, eq, pvalue = item.partition("=")
                if not _PARAMCHARS_RE.fullmatch(pname):
                    raise _bad("tel URI parameter", text)
                if eq and not _PARAMCHARS_RE.fullmatch(pvalue):
                    raise _bad("tel URI parameter", text)
                params[_unescape(pname).lower()] = _unescape(pvalue) if eq else None
        return cls("tel", _unescape(number), None, "", None, params)

    def __str__(self) -> str:
        if self.scheme == "tel":
            out = "tel:" + _escape(self.user or "", _TEL_SAFE)
        else:
            out = self.scheme + ":"
            if self.user is not None:
                out += _escape(self.user, _USER_SAFE, _PLAIN_USER_RE)
                if self.password is not None:
                    out += ":" + _escape(self.password, _PASSWORD_SAFE)
                out += "@"
            out += self.host
            if self.port is not None:
                out += f":{self.port}"
        for k, v in self.params.items():
            out += ";" + _escape(k, _PARAM_SAFE, _PLAIN_PARAM_RE)
            if v is not None:
                out += "=" + _escape(v, _PARAM_SAFE, _PLAIN_PARAM_RE)
        if self.headers:
            out += "?" + "&".join(
                f"{_escape(k, _HNV_SAFE)}={_escape(v, _HNV_SAFE)}" for k, v in self.headers.items()
            )
        return out

    @property
    def host_port(self) -> tuple[str, int]:
        """(bare host, port); the port defaults to 5061 for sips:, 5060 otherwise."""
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        if self.port is not None:
            return host, self.port
        return host, 5061 if self.scheme == "sips" else 5060

    def copy(self) -> SipUri:
        return SipUri(
            self.scheme,
            self.user,
            self.password,
            self.host,
            self.port,
            dict(self.params),
            dict(self.headers),
        )


@dataclass(slots=True)
class NameAddr:
    """A From / To / Contact / Route / Record-Route value: [display] <uri> *(;param)."""

    display: str | None = None
    uri: SipUri = field(default_factory=SipUri)
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """name-addr or addr-spec form. A URI of an unsupported scheme raises (status 400)."""
        m = NAME_ADDR_RE.fullmatch(text)
        if m is None:
            raise _bad("name-addr", text)
        uri_text = m.group("uri")
        display: str | None = None
        if uri_text is None:
            uri_text = m.group("spec")
        else:
            raw_display = m.group("display")
            if raw_display:
                display = unquote_string(raw_display) if raw_display[0] == '"' else raw_display
        try:
            uri = SipUri.parse(uri_text)
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(str(exc), 400) from None
        ptext = m.group("params")
        return cls(display, uri, parse_params(ptext) if ptext else {})

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @tag.setter
    def tag(self, value: str | None) -> None:
        if value is None:
            self.params.pop("tag", None)
        else:
            self.params["tag"] = value

    def __str__(self) -> str:
        head = f"<{self.uri}>"
        if self.display is not None:
            head = f"{quote_string(self.display)} {head}"
        return head + _format_params(self.params) if self.params else head

    def copy(self) -> NameAddr:
        return NameAddr(self.display, self.uri.copy(), dict(self.params))


@dataclass(slots=True)
class Via:
    """One via-parm (``SIP/2.0/UDP host:port;branch=...``); `transport` is upper-cased."""

    transport: str = "UDP"
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        m = VIA_RE.fullmatch(text)
        if m is None:
            raise _bad("Via", text)
        port_text = m.group("port")
        port = int(port_text) if port_text is not None else None
        if port is not None and port > 65535:
            raise _bad("Via port", text)
        ptext = m.group("params")
        return cls(
            m.group("transport").upper(),
            m.group("host"),
            port,
            parse_params(ptext) if ptext else {},
        )

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @branch.setter
    def branch(self, value: str | None) -> None:
        self._set("branch", value)

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @received.setter
    def received(self, value: str | None) -> None:
        self._set("received", value)

    @property
    def has_rport(self) -> bool:
        """The rport parameter is present (with or without a value, RFC 3581)."""
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        """The rport value; None when absent or valueless (see `has_rport`)."""
        value = self.params.get("rport")
        if value is None or not value.isdigit():
            return None
        return int(value)

    @rport.setter
    def rport(self, value: int | None) -> None:
        """Set the value; None writes a valueless ``;rport`` (a request asking for it)."""
        self.params["rport"] = None if value is None else str(value)

    @property
    def sent_by(self) -> tuple[str, int]:
        """(bare host, port); the port defaults to 5061 for TLS, 5060 otherwise."""
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        if self.port is not None:
            return host, self.port
        return host, 5061 if self.transport == "TLS" else 5060

    def _set(self, name: str, value: str | None) -> None:
        if value is None:
            self.params.pop(name, None)
        else:
            self.params[name] = value

    def __str__(self) -> str:
        out = f"SIP/2.0/{self.transport} {self.host}"
        if self.port is not None:
            out += f":{self.port}"
        return out + _format_params(self.params) if self.params else out

    def copy(self) -> Via:
        return Via(self.transport, self.host, self.port, dict(self.params))


@dataclass(slots=True)
class CSeq:
    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        m = CSEQ_RE.fullmatch(text)
        if m is None:
            raise _bad("CSeq", text)
        seq = int(m.group(1))
        if seq >= 2**31:  # RFC 3261 §8.1.1.5
            raise _bad("CSeq (number too large)", text)
        return cls(seq, m.group(2))

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"

    def copy(self) -> CSeq:
        return CSeq(self.seq, self.method)


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None
