"""RFC 4733 telephone-event detector: RTP packets in, one `DigitDetected` per key press out.

A digit is reported on the *first* packet seen of an event (identified by SSRC +
RTP timestamp, which RFC 4733 §2.5.1.2 keeps constant for the whole event).
Why not wait for the end bit or a minimum duration:
- the end packet may be lost (all three copies), and a lost start packet is just
  as common as a lost end packet, so "first packet seen" is the one rule that
  yields the digit in every loss pattern;
- the consent machine barges in on the notice: waiting for the end of a long
  press would keep playing the prompt over a caller who has already answered;
- the sender already decided it was a key press; there is no talk-off to guard
  against in a signalled event, so a duration threshold buys nothing.
Repeats of the same event (continuation packets, the thrice-sent end packet,
late reordered packets) share the key and are dropped. A long press is one event
and so one digit. An event longer than the 16-bit duration field (~8 s at 8 kHz)
is split by the sender into segments with new timestamps (§2.5.1.3); a segment
that starts where the previous unfinished one of the same code ends is treated
as its continuation, not as a new press.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from consent.events import DTMF_DIGITS, DigitDetected

_RTP_HEADER: Final = struct.Struct("!BBHII")
_EVENT: Final = struct.Struct("!BBH")
_REMEMBERED_EVENTS: Final = 64  # per detector; far more than can be in flight at once
# A segment boundary: the previous segment reached (nearly, if its last packets were
# lost) the 16-bit duration limit, and the new timestamp is where it stopped.
_SEGMENT_FULL: Final = 0xFFFF - 1600
_SEGMENT_SLACK: Final = 1600  # 200 ms of 8 kHz timestamp units


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """The fixed part of one RFC 4733 §2.3 payload."""

    event: int
    end: bool
    volume: int
    duration: int

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        if len(payload) < 4:
            raise ValueError(f"telephone-event payload too short: {len(payload)} bytes")
        event, flags, duration = _EVENT.unpack_from(payload)
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)


def _payload_offset(packet: bytes) -> int | None:
    """Start of the RTP payload, or None when the header does not fit the packet."""
    first = packet[0]
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if len(packet) < offset + 4:
            return None
        (words,) = struct.unpack_from("!H", packet, offset + 2)
        offset += 4 + 4 * words
    return offset


def _ts_after(a: int, b: int) -> int:
    """Signed distance a - b between 32-bit RTP timestamps."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


@dataclass(slots=True)
class _Last:
    timestamp: int
    event: int
    duration: int  # longest duration seen
    ended: bool


class Rfc4733Detector:
    """Feed every RTP packet of the caller's stream; other payload types are ignored."""

    def __init__(self, payload_type: int) -> None:
        if not 0 <= payload_type <= 127:
            raise ValueError(f"payload type {payload_type} out of range 0-127")
        self.payload_type = payload_type
        self._seen: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._last: dict[int, _Last] = {}
        self.malformed = 0

    def handle_packet(self, packet: bytes, now: float) -> list[DigitDetected]:
        """One RTP datagram; returns the digit if this packet starts a new event."""
        if len(packet) < 12 or packet[0] >> 6 != 2:
            self.malformed += 1
            return []
        _, second, _, timestamp, ssrc = _RTP_HEADER.unpack_from(packet)
        if second & 0x7F != self.payload_type:
            return []
        offset = _payload_offset(packet)
        if offset is None or len(packet) < offset + 4:
            self.malformed += 1
            return []
        return self.handle_payload(ssrc, timestamp, packet[offset : offset + 4], now)

    def handle_payload(
        self, ssrc: int, timestamp: int, payload: bytes, now: float
    ) -> list[DigitDetected]:
        """An already-parsed telephone-event payload (for adapters that parse RTP themselves)."""
        try:
            tev = TelephoneEvent.parse(payload)
        except ValueError:
            self.malformed += 1
            return []
        key = (ssrc, timestamp)
        last = self._last.get(ssrc)
        if key in self._seen:
            if last is not None and last.timestamp == timestamp:
                last.duration = max(last.duration, tev.duration)
                last.ended = last.ended or tev.end
            return []
        self._remember(key)
        continuation = (
            last is not None
            and not last.ended
            and last.event == tev.event
            and last.duration >= _SEGMENT_FULL
            and 0 <= _ts_after(timestamp, last.timestamp + last.duration) <= _SEGMENT_SLACK
        )
        self._last[ssrc] = _Last(
            timestamp=timestamp,
            event=tev.event,
            duration=tev.duration,
            ended=tev.end,
        )
        if continuation or tev.event >= len(DTMF_DIGITS):
            # Events 16+ (flash, tones) are not keys.
            return []
        return [DigitDetected(digit=DTMF_DIGITS[tev.event], method="dtmf-rfc4733", at=now)]

    def _remember(self, key: tuple[int, int]) -> None:
        self._seen[key] = None
        if len(self._seen) > _REMEMBERED_EVENTS:
            self._seen.popitem(last=False)
