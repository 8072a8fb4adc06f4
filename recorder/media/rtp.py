"""RTP header helpers (RFC 3550 §5.1), cheap enough for the per-packet path.

Only the fixed 12-byte header is read with one `struct.unpack_from`; a full
object parser (aiortc style) costs ~15x more and the relay does not need one.
"""

from __future__ import annotations

import struct

RTP_VERSION = 2
RTP_HEADER_SIZE = 12

# byte 0 (V/P/X/CC), byte 1 (M/PT), sequence, timestamp, SSRC.
RTP_HEADER = struct.Struct("!BBHII")

RtpHeaderFields = tuple[int, bool, int, int, int]

# A recorded packet, as the recording writer takes them in batches (and a media worker packs
# them): channel (0 = the external party, 1 = the agent side), monotonic arrival, length;
# then the packet.
RECORD = struct.Struct("=BdH")


def parse_header(data: bytes) -> RtpHeaderFields:
    """Return (payload_type, marker, sequence, timestamp, ssrc) of an RTP packet.

    Raises ValueError on a datagram shorter than the fixed header or of another
    version (the relay counts those as malformed).
    """
    if len(data) < RTP_HEADER_SIZE:
        raise ValueError(f"RTP packet too short: {len(data)} bytes")
    first, second, seq, ts, ssrc = RTP_HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise ValueError(f"RTP version {first >> 6}, expected 2")
    return second & 0x7F, bool(second & 0x80), seq, ts, ssrc


def payload_bounds(data: bytes | bytearray) -> tuple[int, int]:
    """Return (start, end) of the payload, past CSRCs and header extension, before padding.

    Offsets rather than a slice, so that a recording tap can decode in place.
    Raises ValueError when the header's lengths do not fit in the datagram.
    """
    if len(data) < RTP_HEADER_SIZE:
        raise ValueError(f"RTP packet too short: {len(data)} bytes")
    first = data[0]
    if first >> 6 != RTP_VERSION:
        raise ValueError(f"RTP version {first >> 6}, expected 2")
    start = RTP_HEADER_SIZE + 4 * (first & 0x0F)
    if first & 0x10:
        if len(data) < start + 4:
            raise ValueError("RTP header extension truncated")
        (extension_words,) = struct.unpack_from("!H", data, start + 2)
        start += 4 + 4 * extension_words
    end = len(data)
    if first & 0x20:
        if data[-1] == 0:
            raise ValueError("RTP padding count is zero")
        end -= data[-1]
    if start > end:
        raise ValueError("RTP header and padding longer than the packet")
    return start, end


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b between 16-bit sequence numbers, in [-32768, 32767].

    Positive when `a` comes after `b`, across the 65535 -> 0 wrap.
    """
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def ts_diff(a: int, b: int) -> int:
    """Signed distance a - b between 32-bit RTP timestamps, across the wrap."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def build_packet(
    pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False
) -> bytes:
    """Serialize an RTP packet with no CSRC, extension or padding.

    Out-of-range fields raise ValueError instead of being masked, so that a
    sender that forgot to wrap its counters is caught rather than silently
    emitting a different sequence.
    """
    if not 0 <= pt <= 0x7F:
        raise ValueError(f"payload type out of range: {pt}")
    if not 0 <= seq <= 0xFFFF:
        raise ValueError(f"sequence number out of range: {seq}")
    if not 0 <= ts <= 0xFFFFFFFF:
        raise ValueError(f"timestamp out of range: {ts}")
    if not 0 <= ssrc <= 0xFFFFFFFF:
        raise ValueError(f"SSRC out of range: {ssrc}")
    second = pt | 0x80 if marker else pt
    return RTP_HEADER.pack(RTP_VERSION << 6, second, seq, ts, ssrc) + payload
