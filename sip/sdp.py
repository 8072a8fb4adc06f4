"""SDP (RFC 4566) parse/serialize and the offer/answer edits (RFC 3264) a media anchor needs.

`SessionDescription.parse()` reads a body once into plain mutable objects; the B2BUA edits
them (connection address, ports, codecs, direction, rtcp) and calls `serialize()`. Lines this
module does not interpret (b=, t=, k=, unknown types, any a=) are kept with their order, so
a well-formed CRLF body round-trips byte for byte. Line order is normalised to the RFC 4566
order (fields, then c= at its place, then attributes), which only changes non-conforming
input.

Attribute values that this module interprets (rtpmap, fmtp, rtcp, ptime) are validated by
`parse()`, so the accessors on a parsed description do not raise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from sip.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DIRECTIONS",
    "STATIC_PAYLOAD_TYPES",
    "Attribute",
    "Connection",
    "Direction",
    "MediaDescription",
    "Origin",
    "RtpMap",
    "SessionDescription",
    "reverse_direction",
]

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
DIRECTIONS: frozenset[str] = frozenset(("sendrecv", "sendonly", "recvonly", "inactive"))
_DIRECTION_BY_NAME: dict[str, Direction] = {
    "sendrecv": "sendrecv",
    "sendonly": "sendonly",
    "recvonly": "recvonly",
    "inactive": "inactive",
}
_REVERSED: dict[Direction, Direction] = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


def reverse_direction(direction: Direction) -> Direction:
    """The direction an answer takes for an offered one (RFC 3264 §6.1): send <-> recv."""
    return _REVERSED[direction]


class RtpMap(NamedTuple):
    encoding: str
    clock_rate: int
    channels: int = 1


# RFC 3551 tables 4 and 5: these payload types may appear without an a=rtpmap line.
STATIC_PAYLOAD_TYPES: dict[str, RtpMap] = {
    "0": RtpMap("PCMU", 8000),
    "3": RtpMap("GSM", 8000),
    "4": RtpMap("G723", 8000),
    "5": RtpMap("DVI4", 8000),
    "6": RtpMap("DVI4", 16000),
    "7": RtpMap("LPC", 8000),
    "8": RtpMap("PCMA", 8000),
    "9": RtpMap("G722", 8000),
    "10": RtpMap("L16", 44100, 2),
    "11": RtpMap("L16", 44100),
    "12": RtpMap("QCELP", 8000),
    "13": RtpMap("CN", 8000),
    "14": RtpMap("MPA", 90000),
    "15": RtpMap("G728", 8000),
    "16": RtpMap("DVI4", 11025),
    "17": RtpMap("DVI4", 22050),
    "18": RtpMap("G729", 8000),
    "25": RtpMap("CelB", 90000),
    "26": RtpMap("JPEG", 90000),
    "28": RtpMap("nv", 90000),
    "31": RtpMap("H261", 90000),
    "32": RtpMap("MPV", 90000),
    "33": RtpMap("MP2T", 90000),
    "34": RtpMap("H263", 90000),
}

# Attributes whose value starts with a payload type: dropped together with the format.
_PT_ATTRIBUTES = frozenset(("rtpmap", "fmtp", "rtcp-fb"))
# Field types that RFC 4566 places before c= in each section.
_SESSION_BEFORE_C = frozenset("iuep")
_MEDIA_BEFORE_C = frozenset("i")
_LINE_TYPES = frozenset("abcdefghijklmnopqrstuvwxyz")


def _error(msg: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed SDP: {msg}", status_hint=400)


def _addrtype_for(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _parse_port(text: str, what: str) -> int:
    if not text.isdigit() or len(text) > 5:
        raise _error(f"bad {what} port {text!r}")
    port = int(text)
    if port > 65535:
        raise _error(f"bad {what} port {text!r}")
    return port


@dataclass(slots=True)
class Attribute:
    """One a= line: `a=name:value`, or a property attribute `a=name` (value None)."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(slots=True)
class Origin:
    """The o= line. `sess_version` must grow on every change (RFC 3264 §8)."""

    username: str
    sess_id: str
    sess_version: int
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "127.0.0.1"

    @classmethod
    def parse(cls, value: str) -> Origin:
        parts = value.split()
        if len(parts) != 6:
            raise _error(f"o= needs 6 fields: {value!r}")
        if not parts[2].isdigit():
            raise _error(f"o= sess-version is not a number: {parts[2]!r}")
        return cls(parts[0], parts[1], int(parts[2]), parts[3], parts[4], parts[5])

    def bump_version(self) -> int:
        self.sess_version += 1
        return self.sess_version

    def __str__(self) -> str:
        return (
            f"{self.username} {self.sess_id} {self.sess_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(slots=True)
class Connection:
    """A c= line. `address` is the connection-address token, with any multicast /ttl/count."""

    nettype: str
    addrtype: str
    address: str

    @classmethod
    def parse(cls, value: str) -> Connection:
        parts = value.split()
        if len(parts) != 3:
            raise _error(f"c= needs 3 fields: {value!r}")
        return cls(parts[0], parts[1], parts[2])

    @property
    def host(self) -> str:
        """The address without multicast /ttl/count suffixes."""
        return self.address.partition("/")[0]

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


class _Attributes:
    """Attribute list helpers shared by session and media sections (names are case-sensitive)."""

    __slots__ = ()
    attributes: list[Attribute]

    def has_attribute(self, name: str) -> bool:
        return any(a.name == name for a in self.attributes)

    def get_attribute(self, name: str) -> str | None:
        """Value of the first `a=name`; "" for a property attribute, None when absent."""
        for a in self.attributes:
            if a.name == name:
                return "" if a.value is None else a.value
        return None

    def get_attributes(self, name: str) -> list[str]:
        return ["" if a.value is None else a.value for a in self.attributes if a.name == name]

    def add_attribute(self, name: str, value: str | None = None) -> None:
        self.attributes.append(Attribute(name, value))

    def set_attribute(self, name: str, value: str | None = None) -> None:
        """Replace every `a=name` by one line at the first one's position (append if absent)."""
        new = Attribute(name, value)
        out: list[Attribute] = []
        placed = False
        for a in self.attributes:
            if a.name == name:
                if not placed:
                    out.append(new)
                    placed = True
            else:
                out.append(a)
        if not placed:
            out.append(new)
        self.attributes[:] = out

    def remove_attribute(self, name: str) -> int:
        """Remove every `a=name`; returns how many were removed."""
        before = len(self.attributes)
        self.attributes[:] = [a for a in self.attributes if a.name != name]
        return before - len(self.attributes)

    def _own_direction(self) -> Direction | None:
        for a in self.attributes:
            if a.value is None:
                d = _DIRECTION_BY_NAME.get(a.name)
                if d is not None:
                    return d
        return None

    def _set_direction(self, direction: Direction) -> None:
        if direction not in DIRECTIONS:
            raise LocalProtocolError(f"not an SDP direction: {direction!r}")
        new = Attribute(direction)
        out: list[Attribute] = []
        placed = False
        for a in self.attributes:
            if a.value is None and a.name in DIRECTIONS:
                if not placed:
                    out.append(new)
                    placed = True
            else:
                out.append(a)
        if not placed:
            out.append(new)
        self.attributes[:] = out


def _serialize_fields(
    out: list[str],
    fields: list[tuple[str, str]],
    connection: Connection | None,
    before_c: frozenset[str],
) -> None:
    pending = connection
    for kind, value in fields:
        if pending is not None and kind not in before_c:
            out.append(f"c={pending}")
            pending = None
        out.append(f"{kind}={value}")
    if pending is not None:
        out.append(f"c={pending}")


def _codec_patterns(names: Iterable[str]) -> list[tuple[str, int | None]]:
    """'PCMU' matches any clock rate; 'telephone-event/8000' only that rate."""
    patterns: list[tuple[str, int | None]] = []
    for name in names:
        enc, _, rate = name.partition("/")
        if rate and not rate.isdigit():
            raise LocalProtocolError(f"bad codec name {name!r}")
        patterns.append((enc.lower(), int(rate) if rate else None))
    return patterns


def _matches(codec: RtpMap, patterns: list[tuple[str, int | None]]) -> bool:
    enc = codec.encoding.lower()
    return any(enc == p and (r is None or r == codec.clock_rate) for p, r in patterns)


def _parse_rtpmap(value: str) -> tuple[str, RtpMap]:
    pt, _, rest = value.strip().partition(" ")
    parts = rest.strip().split("/")
    if not pt or len(parts) not in (2, 3) or not parts[0]:
        raise _error(f"bad rtpmap {value!r}")
    rate, channels = parts[1], parts[2] if len(parts) == 3 else "1"
    if not rate.isdigit() or not channels.isdigit():
        raise _error(f"bad rtpmap {value!r}")
    return pt, RtpMap(parts[0], int(rate), int(channels))


def _parse_rtcp(value: str) -> tuple[int, str | None]:
    parts = value.split()
    if len(parts) not in (1, 4):
        raise _error(f"bad rtcp attribute {value!r}")
    port = _parse_port(parts[0], "rtcp")
    return port, (parts[3] if len(parts) == 4 else None)


def _parse_ptime(value: str) -> int:
    try:
        ptime = float(value.strip())
    except ValueError:
        raise _error(f"bad ptime {value!r}") from None
    if not 0 < ptime < 100000:
        raise _error(f"bad ptime {value!r}")
    return round(ptime)


def _first_token(value: str | None) -> str:
    if value is None:
        return ""
    return value.lstrip().partition(" ")[0]


def _validate_attributes(attributes: list[Attribute]) -> None:
    for a in attributes:
        name = a.name
        if name == "rtpmap":
            _parse_rtpmap(a.value or "")
        elif name == "fmtp":
            if not (a.value or "").partition(" ")[0]:
                raise _error(f"bad fmtp {a.value!r}")
        elif name == "rtcp":
            _parse_rtcp(a.value or "")
        elif name == "ptime":
            _parse_ptime(a.value or "")


@dataclass(slots=True)
class MediaDescription(_Attributes):
    """One m= section. `formats` are payload types (strings) for RTP profiles.

    Port 0 means a rejected or disabled stream (RFC 3264 §6, §8.2).
    """

    media_type: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None  # this section's own c=, see connection_address
    attributes: list[Attribute] = field(default_factory=list)
    # Other lines (i=, b=, k=, unknown) in order, as (type, value).
    fields: list[tuple[str, str]] = field(default_factory=list)
    # The owning session, for c= and attribute inheritance; set by parse()/add_media().
    session: SessionDescription | None = field(default=None, repr=False, compare=False)

    @classmethod
    def parse_m_line(cls, value: str) -> MediaDescription:
        parts = value.split()
        if len(parts) < 3:
            raise _error(f"m= needs media, port and proto: {value!r}")
        port_text, _, count_text = parts[1].partition("/")
        port = _parse_port(port_text, "media")
        count: int | None = None
        if count_text:
            if not count_text.isdigit() or int(count_text) == 0:
                raise _error(f"bad port count in {value!r}")
            count = int(count_text)
        formats = parts[3:]
        if not formats and port != 0:
            raise _error(f"m= without formats: {value!r}")
        return cls(parts[0], port, parts[2], formats, count)

    # -- connection ------------------------------------------------------------------------

    @property
    def effective_connection(self) -> Connection | None:
        if self.connection is not None:
            return self.connection
        return self.session.connection if self.session is not None else None

    @property
    def connection_address(self) -> str | None:
        """The address RTP goes to: this section's c=, else the session's."""
        conn = self.effective_connection
        return conn.host if conn is not None else None

    @connection_address.setter
    def connection_address(self, address: str) -> None:
        """Set on this section; adds a media-level c= unless the session c= already says it."""
        addrtype = _addrtype_for(address)
        if self.connection is not None:
            self.connection.addrtype = addrtype
            self.connection.address = address
            return
        inherited = self.session.connection if self.session is not None else None
        if inherited is not None and inherited.address == address:
            return
        nettype = inherited.nettype if inherited is not None else "IN"
        self.connection = Connection(nettype, addrtype, address)

    @property
    def is_disabled(self) -> bool:
        return self.port == 0

    def disable(self) -> None:
        """Reject / disable the stream: port 0, formats kept so the m= line stays valid."""
        self.port = 0
        self.port_count = None

    @property
    def is_rtp(self) -> bool:
        return "RTP/" in self.proto

    # -- codecs ----------------------------------------------------------------------------

    @property
    def rtpmap(self) -> dict[str, RtpMap]:
        """pt -> codec for every format of the m= line that is known.

        a=rtpmap wins; static payload types (RFC 3551) are known without one; a dynamic
        payload type without rtpmap is left out.
        """
        explicit: dict[str, RtpMap] = {}
        for a in self.attributes:
            if a.name == "rtpmap" and a.value is not None:
                pt, codec = _parse_rtpmap(a.value)
                explicit.setdefault(pt, codec)
        table: dict[str, RtpMap] = {}
        for pt in self.formats:
            known = explicit.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)
            if known is not None:
                table[pt] = known
        return table

    @property
    def fmtp(self) -> dict[str, str]:
        """pt -> format parameters (the text after the payload type) of each a=fmtp."""
        table: dict[str, str] = {}
        for a in self.attributes:
            if a.name == "fmtp" and a.value is not None:
                pt, _, params = a.value.strip().partition(" ")
                table.setdefault(pt, params.strip())
        return table

    def codec_names(self) -> list[str]:
        """Encoding names of the formats, in preference order (unknown ones left out)."""
        return [c.encoding for c in self.rtpmap.values()]

    @property
    def telephone_event_pt(self) -> str | None:
        """The payload type of telephone-event/8000 (RFC 4733), or None."""
        for pt, codec in self.rtpmap.items():
            if codec.clock_rate == 8000 and codec.encoding.lower() == "telephone-event":
                return pt
        return None

    def keep_codecs(self, names: Iterable[str]) -> list[str]:
        """Keep only the formats whose encoding name is in `names` (case-insensitive).

        A name may carry a clock rate ("telephone-event/8000"). telephone-event and CN are
        codecs like any other: list them to keep them. The rtpmap/fmtp/rtcp-fb lines of the
        dropped formats go too. Returns the remaining formats; when none remains, the stream
        is disabled (`disable()`) and left otherwise untouched.
        """
        patterns = _codec_patterns(names)
        table = self.rtpmap
        keep = [pt for pt in self.formats if pt in table and _matches(table[pt], patterns)]
        return self._restrict(keep)

    def remove_codecs(self, names: Iterable[str]) -> list[str]:
        """Drop the formats whose encoding name is in `names`; same rules as keep_codecs."""
        patterns = _codec_patterns(names)
        table = self.rtpmap
        keep = [pt for pt in self.formats if not (pt in table and _matches(table[pt], patterns))]
        return self._restrict(keep)

    def _restrict(self, keep: list[str]) -> list[str]:
        if not keep:
            self.disable()
            return []
        if len(keep) == len(self.formats):
            return keep
        gone = set(self.formats).difference(keep)
        self.formats = keep
        self.attributes = [
            a
            for a in self.attributes
            if not (a.name in _PT_ATTRIBUTES and _first_token(a.value) in gone)
        ]
        return keep

    # -- direction, ptime, rtcp -------------------------------------------------------------

    @property
    def direction(self) -> Direction:
        """This section's direction attribute, else the session's, else sendrecv."""
        d = self._own_direction()
        if d is None and self.session is not None:
            d = self.session._own_direction()
        return d or "sendrecv"

    @direction.setter
    def direction(self, value: Direction) -> None:
        self._set_direction(value)

    def is_hold(self) -> bool:
        """sendonly/inactive, or the RFC 2543 hold c=0.0.0.0; a disabled stream is not held."""
        if self.port == 0:
            return False
        return self.direction in ("sendonly", "inactive") or self.connection_address == "0.0.0.0"

    @property
    def ptime(self) -> int | None:
        """a=ptime in ms (rounded), from this section or else the session."""
        value = self.get_attribute("ptime")
        if value is None and self.session is not None:
            value = self.session.get_attribute("ptime")
        return _parse_ptime(value) if value is not None else None

    @ptime.setter
    def ptime(self, value: int | None) -> None:
        if value is None:
            self.remove_attribute("ptime")
        elif value <= 0:
            raise LocalProtocolError(f"bad ptime {value}")
        else:
            self.set_attribute("ptime", str(value))

    @property
    def rtcp(self) -> tuple[int, str | None] | None:
        """RFC 3605 a=rtcp as (port, address or None), or None when absent."""
        value = self.get_attribute("rtcp")
        return _parse_rtcp(value) if value is not None else None

    def set_rtcp(self, port: int, address: str | None = None) -> None:
        if not 0 < port <= 65535:
            raise LocalProtocolError(f"bad rtcp port {port}")
        value = str(port) if address is None else f"{port} IN {_addrtype_for(address)} {address}"
        self.set_attribute("rtcp", value)

    def remove_rtcp(self) -> None:
        self.remove_attribute("rtcp")

    # -- serialization ---------------------------------------------------------------------

    def m_line(self) -> str:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        head = f"{self.media_type} {port} {self.proto}"
        return f"{head} {' '.join(self.formats)}" if self.formats else head

    def _serialize(self, out: list[str]) -> None:
        out.append(f"m={self.m_line()}")
        _serialize_fields(out, self.fields, self.connection, _MEDIA_BEFORE_C)
        out.extend(f"a={a}" for a in self.attributes)

    def copy(self, session: SessionDescription | None = None) -> MediaDescription:
        conn = self.connection
        return MediaDescription(
            self.media_type,
            self.port,
            self.proto,
            list(self.formats),
            self.port_count,
            Connection(conn.nettype, conn.addrtype, conn.address) if conn is not None else None,
            [Attribute(a.name, a.value) for a in self.attributes],
            list(self.fields),
            session,
        )


def _split_line(line: str) -> tuple[str, str]:
    if len(line) < 2 or line[1] != "=" or line[0] not in _LINE_TYPES:
        raise _error(f"bad line {line[:40]!r}")
    return line[0], line[2:]


def _parse_attribute(value: str) -> Attribute:
    name, colon, rest = value.partition(":")
    if not colon:
        # Some UAs pad property attributes ("a=sendonly "); the padding would hide them.
        name = name.rstrip()
    if not name:
        raise _error(f"bad attribute {value[:40]!r}")
    return Attribute(name, rest if colon else None)


@dataclass(slots=True)
class SessionDescription(_Attributes):
    """A whole SDP body: session-level lines plus the media sections in order."""

    origin: Origin
    name: str = "-"
    connection: Connection | None = None
    attributes: list[Attribute] = field(default_factory=list)
    # Other session lines (i=, u=, e=, p=, b=, t=, r=, z=, k=, unknown) in order.
    fields: list[tuple[str, str]] = field(default_factory=lambda: [("t", "0 0")])
    media: list[MediaDescription] = field(default_factory=list)
    version: int = 0

    @classmethod
    def parse(cls, body: bytes) -> SessionDescription:
        """Parse an SDP body (CRLF or bare LF line ends); RemoteProtocolError if malformed."""
        # surrogateescape: a non-UTF-8 s=/i= (a=charset) passes through unchanged.
        text = body.decode("utf-8", "surrogateescape")
        lines = text.split("\n")
        index = 0
        n = len(lines)
        head: list[tuple[str, str]] = []
        while index < n and len(head) < 3:
            line = lines[index].rstrip("\r")
            index += 1
            if line.strip():
                head.append(_split_line(line))
        if len(head) < 3 or head[0][0] != "v" or head[1][0] != "o" or head[2][0] != "s":
            raise _error("must start with v=, o=, s=")
        if head[0][1].strip() != "0":
            raise _error(f"unsupported version v={head[0][1]!r}")
        sdp = cls(Origin.parse(head[1][1]), head[2][1], fields=[])

        media: MediaDescription | None = None
        attributes = sdp.attributes
        fields = sdp.fields
        while index < n:
            line = lines[index].rstrip("\r")
            index += 1
            if not line.strip():
                continue
            kind, value = _split_line(line)
            if kind == "a":
                attributes.append(_parse_attribute(value))
            elif kind == "m":
                media = MediaDescription.parse_m_line(value)
                media.session = sdp
                sdp.media.append(media)
                attributes = media.attributes
                fields = media.fields
            elif kind == "c":
                target: SessionDescription | MediaDescription = sdp if media is None else media
                if target.connection is None:
                    target.connection = Connection.parse(value)
                else:
                    # A second c= (layered multicast) is legal only in media; kept verbatim.
                    if media is None:
                        raise _error("two session-level c= lines")
                    Connection.parse(value)
                    fields.append((kind, value))
            elif kind in "vos":
                raise _error(f"unexpected {kind}= line")
            else:
                fields.append((kind, value))

        _validate_attributes(sdp.attributes)
        for m in sdp.media:
            _validate_attributes(m.attributes)
            if m.port != 0 and m.connection is None and sdp.connection is None:
                raise _error(f"no c= for the {m.media_type} stream")
        return sdp

    def serialize(self) -> bytes:
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.name}"]
        _serialize_fields(out, self.fields, self.connection, _SESSION_BEFORE_C)
        out.extend(f"a={a}" for a in self.attributes)
        for m in self.media:
            m._serialize(out)
        out.append("")
        return "\r\n".join(out).encode("utf-8", "surrogateescape")

    def copy(self) -> SessionDescription:
        conn = self.connection
        sdp = SessionDescription(
            Origin(
                self.origin.username,
                self.origin.sess_id,
                self.origin.sess_version,
                self.origin.nettype,
                self.origin.addrtype,
                self.origin.address,
            ),
            self.name,
            Connection(conn.nettype, conn.addrtype, conn.address) if conn is not None else None,
            [Attribute(a.name, a.value) for a in self.attributes],
            list(self.fields),
            [],
            self.version,
        )
        sdp.media = [m.copy(sdp) for m in self.media]
        return sdp

    def add_media(self, media: MediaDescription) -> MediaDescription:
        media.session = self
        self.media.append(media)
        return media

    def bump_version(self) -> int:
        """Increment o= sess-version (to do once per changed offer/answer we send)."""
        return self.origin.bump_version()

    @property
    def connection_address(self) -> str | None:
        """The session-level c= address (media sections may override it)."""
        return self.connection.host if self.connection is not None else None

    @connection_address.setter
    def connection_address(self, address: str) -> None:
        """Set the session-level c= only; media-level c= lines are left alone."""
        addrtype = _addrtype_for(address)
        if self.connection is None:
            self.connection = Connection("IN", addrtype, address)
        else:
            self.connection.addrtype = addrtype
            self.connection.address = address

    @property
    def direction(self) -> Direction:
        """The session-level direction attribute (default for media), else sendrecv."""
        return self._own_direction() or "sendrecv"

    @direction.setter
    def direction(self, value: Direction) -> None:
        """Set the session-level attribute; media sections with their own keep theirs."""
        self._set_direction(value)

    def is_hold(self) -> bool:
        """True when there is an active stream and every active stream is on hold."""
        active = [m for m in self.media if m.port != 0]
        return bool(active) and all(m.is_hold() for m in active)

    def keep_codecs(self, names: Iterable[str], media_type: str | None = "audio") -> None:
        """`MediaDescription.keep_codecs` on every RTP stream of `media_type` (None: all)."""
        kept = list(names)
        for m in self.media:
            if m.port != 0 and m.is_rtp and (media_type is None or m.media_type == media_type):
                m.keep_codecs(kept)
