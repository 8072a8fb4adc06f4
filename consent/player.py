"""Notice player: prompt frames -> RTP packets paced every 20 ms, sans-IO.

Packet n is due at start + n * ptime, computed from the start each time rather
than by adding ptime to the previous deadline, so float rounding and late timer
wake-ups never accumulate into drift. A late wake-up returns every overdue packet
at once (the receiver's jitter buffer absorbs a burst better than a shifted clock).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

_RTP_HEADER: Final = struct.Struct("!BBHII")
_RTP_V2: Final = 0x80


def build_rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool) -> bytes:
    """A minimal RTP packet (RFC 3550 §5.1): no CSRC, extension or padding."""
    return _RTP_HEADER.pack(_RTP_V2, (0x80 if marker else 0) | pt, seq, ts, ssrc) + payload


class NoticePlayer:
    """Paces `frames` as RTP from `start(now)`; the adapter owns the socket and the clock.

    `next_sequence` / `next_timestamp` let the relay continue the same SSRC towards
    the caller after the notice without a sequence or timestamp jump backwards.
    """

    def __init__(
        self,
        frames: Sequence[bytes],
        payload_type: int,
        ssrc: int,
        sequence: int,
        timestamp: int,
        *,
        ptime: float = 0.02,
        samples_per_frame: int = 160,
    ) -> None:
        if not 0 <= payload_type <= 127:
            raise ValueError(f"payload type {payload_type} out of range 0-127")
        if not 0 <= ssrc <= 0xFFFFFFFF:
            raise ValueError(f"SSRC {ssrc} out of 32-bit range")
        if not 0 <= sequence <= 0xFFFF:
            raise ValueError(f"sequence {sequence} out of 16-bit range")
        if not 0 <= timestamp <= 0xFFFFFFFF:
            raise ValueError(f"timestamp {timestamp} out of 32-bit range")
        if ptime <= 0:
            raise ValueError("ptime must be positive")
        self._frames = tuple(frames)
        self._pt = payload_type
        self._ssrc = ssrc
        self._seq0 = sequence
        self._ts0 = timestamp
        self._ptime = ptime
        self._step = samples_per_frame
        self._start: float | None = None
        self._sent = 0
        self._stopped = False

    @property
    def started(self) -> bool:
        return self._start is not None

    @property
    def done(self) -> bool:
        """Every frame sent, or stopped (barge-in)."""
        return self._stopped or self._sent >= len(self._frames)

    @property
    def packets_sent(self) -> int:
        return self._sent

    @property
    def next_sequence(self) -> int:
        return (self._seq0 + self._sent) & 0xFFFF

    @property
    def next_timestamp(self) -> int:
        return (self._ts0 + self._sent * self._step) & 0xFFFFFFFF

    @property
    def end_time(self) -> float | None:
        """When the last packet is due (the notice has then been fully sent)."""
        if self._start is None or not self._frames:
            return self._start
        return self._start + (len(self._frames) - 1) * self._ptime

    def start(self, now: float) -> None:
        if self._start is not None:
            raise RuntimeError("NoticePlayer already started")
        self._start = now

    def stop(self) -> None:
        """Send nothing more (barge-in); `done` becomes true."""
        self._stopped = True

    def get_timer(self) -> float | None:
        """When the next packet is due, or None when not started or done."""
        if self._start is None or self.done:
            return None
        return self._start + self._sent * self._ptime

    def handle_timer(self, now: float) -> list[bytes]:
        """Every packet due at or before `now`, in order."""
        if self._start is None or self.done:
            return []
        packets: list[bytes] = []
        while self._sent < len(self._frames) and self._start + self._sent * self._ptime <= now:
            packets.append(
                build_rtp(
                    self._pt,
                    self.next_sequence,
                    self.next_timestamp,
                    self._ssrc,
                    self._frames[self._sent],
                    marker=self._sent == 0,
                )
            )
            self._sent += 1
        return packets
