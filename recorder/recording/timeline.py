"""Sans-IO stereo timeline: RTP packets of two parties in, aligned int16 stereo blocks out.

Placement rules (issue 6):

- A packet lands where its RTP timestamp says, relative to its channel's
  anchor; lost packets leave silence of the right length, reordered ones fall
  in place as long as they come before the commit horizon (`now` minus the
  jitter window).
- A channel is anchored by arrival time, relative to the timeline's origin
  (the first audio packet of either party): on its first packet, on an SSRC
  change, and on a timestamp jump (more than `max_jump` away from what the
  arrival time predicts, or backwards while the sequence number moves
  forward). Anchoring one channel never moves the other. A stream that goes
  on where it left off (next sequence numbers, matching timestamps) but
  arrives late in a burst, after a stalled host, loop or sender, is placed by
  its timestamps while that place is unwritten, so a stall stretches nothing.
- Sender clock drift: placing by timestamp alone would let a channel whose
  sender clock runs 50 ppm off slide 180 ms in an hour. Each channel watches
  the smallest (arrival - placement) over `drift_window`; the minimum filters
  out network jitter, which only ever delays. When it has moved by
  `drift_tolerance` or more, the channel's anchor is moved by that much
  (silence inserted, or the overlapped head of the next packets dropped), so
  both channels stay within about one packet of the recorder's clock and of
  each other. Below the tolerance nothing is touched, so a drift-free call is
  reproduced sample for sample.
- Only PCMU (PT 0) and PCMA (PT 8) are audio. Comfort noise (PT 13), RFC 4733
  telephone events and anything else is skipped (silence where it was).
- Paused intervals are silence in the output, and audio that arrives while
  paused is not even kept in memory.

Output ends at the end of the last audio received (never padded to `now`), so
the file's duration is the media's duration. Times are monotonic seconds, the
same clock as the relay's arrival times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from consent.g711 import ALAW_DECODE, ULAW_DECODE
from recorder.media.rtp import RECORD as _RECORD
from recorder.media.rtp import RTP_HEADER, payload_bounds

StereoBlock = npt.NDArray[np.int16]
# A packet's payload: sliced from the batch (a bytearray) or from one packet.
Payload = bytes | bytearray

# One packet in a batch: channel, monotonic arrival, length; then the packet.
RECORD: Final = _RECORD

PT_PCMU: Final = 0
PT_PCMA: Final = 8
CLOCK_RATE: Final = 8000

_DECODE: Final = {PT_PCMU: ULAW_DECODE, PT_PCMA: ALAW_DECODE}
_EMPTY: Final = np.zeros((0, 2), dtype=np.int16)
_EMPTY.flags.writeable = False


@dataclass(slots=True)
class TimelineStats:
    """What became of the packets given to `add`."""

    packets: int = 0
    late: int = 0  # arrived after their place had been written
    skipped_non_audio: int = 0  # CN, telephone-event, unknown PTs
    dropped_paused: int = 0
    malformed: int = 0
    reanchors: int = 0  # SSRC changes and timestamp jumps after the first anchor
    drift_corrections: int = 0


class _Channel:
    __slots__ = (
        "end",
        "heard",
        "last_pos",
        "last_seq",
        "last_ts",
        "pending",
        "ssrc",
        "start",
        "window_end",
        "window_min",
    )

    def __init__(self) -> None:
        self.ssrc: int | None = None
        self.last_ts = 0  # timestamp of the newest packet...
        self.last_pos = 0  # ...and the sample position it was placed at
        self.last_seq = 0
        self.end = 0  # end of the furthest audio placed on this channel
        self.start: int | None = None  # where its first packet was placed
        self.heard = 0  # arrival position of its newest audio packet
        self.window_min = math.inf
        self.window_end = 0
        # (position, payload type, payload) waiting for the commit horizon.
        self.pending: list[tuple[int, int, Payload]] = []


class StereoTimeline:
    """One call's two channels (0 = left = external party, 1 = right = agent side)."""

    def __init__(
        self,
        *,
        jitter_window: float = 0.1,
        max_jump: float = 1.0,
        drift_tolerance: float = 0.01,
        drift_window: float = 10.0,
        clock_rate: int = CLOCK_RATE,
    ) -> None:
        if jitter_window < 0 or max_jump <= 0 or drift_tolerance <= 0 or drift_window <= 0:
            raise ValueError("timeline windows must be positive")
        self.rate = clock_rate
        self._hold = round(jitter_window * clock_rate)
        self._jump = round(max_jump * clock_rate)
        self._drift_tolerance = round(drift_tolerance * clock_rate)
        self._drift_window = round(drift_window * clock_rate)
        # 2 ms per 10 s window follows a 200 ppm sender clock, far past real ones.
        self._drift_step = max(1, round(0.0002 * drift_window * clock_rate))
        self._channels = (_Channel(), _Channel())
        self.origin: float | None = None
        self.committed = 0  # samples written out so far
        self._audio_end = 0
        # Monotonic times; an open pause has end None.
        self._pauses: list[tuple[float, float | None]] = []
        self.finished = False
        self.stats = TimelineStats()

    # --- input --------------------------------------------------------------

    def add(self, channel: int, packet: bytes, arrival: float) -> None:
        """One packet of `channel` (0 or 1), arrived at monotonic `arrival`."""
        self.add_records(RECORD.pack(channel, arrival, len(packet)) + packet)

    def add_records(self, raw: bytes | bytearray) -> None:
        """Many packets at once: each a `RECORD` (channel, arrival, length), then the packet.

        This is what the writer process receives per call and batch; one loop
        with its state in locals costs about half of one `add` call per packet.
        """
        stats = self.stats
        channels = self._channels
        rate = self.rate
        jump = self._jump
        hold = -self._hold
        committed = self.committed
        audio_end = self._audio_end
        origin = self.origin
        unpack_record = RECORD.unpack_from
        unpack_header = RTP_HEADER.unpack_from
        record_size = RECORD.size
        packets = late = skipped = paused = malformed = reanchors = 0
        offset = 0
        total = len(raw)
        while offset < total:
            channel, arrival, size = unpack_record(raw, offset)
            offset += record_size
            at = offset
            offset += size
            packets += 1
            if size < 12 or offset > total:
                malformed += 1
                continue
            pt = raw[at + 1] & 0x7F
            if pt != PT_PCMU and pt != PT_PCMA:
                skipped += 1
                continue
            if self._pauses and self._paused_at(arrival):
                paused += 1
                continue
            if raw[at] == 0x80:  # no CSRC, extension or padding: nearly every packet
                start, stop = at + 12, offset
            else:
                try:
                    start, stop = payload_bounds(raw[at:offset])
                except ValueError:
                    malformed += 1
                    continue
                start += at
                stop += at
            if start == stop:
                continue
            _, _, seq, ts, ssrc = unpack_header(raw, at)
            if origin is None:
                origin = self.origin = arrival
            apos = round((arrival - origin) * rate)
            ch = channels[channel]
            ch.heard = apos
            if ch.ssrc != ssrc:
                pos = self._anchor(ch, ssrc, seq, ts, apos)
            else:
                delta_ts = ((ts - ch.last_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
                pos = ch.last_pos + delta_ts
                drift = apos - pos
                seq_delta = (seq - ch.last_seq) & 0xFFFF
                newer = 0 < seq_delta < 0x8000
                if (
                    newer
                    and (drift > jump or drift < -jump or delta_ts < hold)
                    and not (
                        # The stream goes on where it left off (the next sequence numbers
                        # and the timestamps they imply): it is late, or early after a
                        # burst, not new. A stalled host, loop or sender delivers what it
                        # held all at once; it goes where its timestamps say while that is
                        # still unwritten. Past that, it is a resumed stream (a hold that
                        # stopped the timestamps too) and is anchored where it arrives.
                        delta_ts == seq_delta * (stop - start)
                        and (drift < 0 or pos + stop - start > committed)
                    )
                ):
                    reanchors += 1
                    pos = self._anchor(ch, ssrc, seq, ts, apos)
                else:
                    if delta_ts > 0:
                        ch.last_ts = ts
                        ch.last_pos = pos
                    if newer:
                        ch.last_seq = seq
                    if drift < ch.window_min:
                        ch.window_min = drift
                    if apos >= ch.window_end:
                        self._end_drift_window(ch, apos)
            end = pos + stop - start
            if end <= committed:
                late += 1
                continue
            ch.pending.append((pos, pt, raw[start:stop]))
            if end > ch.end:
                ch.end = end
                if end > audio_end:
                    audio_end = end
        self._audio_end = audio_end
        stats.packets += packets
        stats.late += late
        stats.skipped_non_audio += skipped
        stats.dropped_paused += paused
        stats.malformed += malformed
        stats.reanchors += reanchors

    def _anchor(self, ch: _Channel, ssrc: int, seq: int, ts: int, apos: int) -> int:
        # Never before what this channel already holds: a new stream that
        # overlapped the old one's tail would overwrite audio.
        pos = max(apos, ch.end)
        if ch.start is None:
            ch.start = pos
        ch.ssrc = ssrc
        ch.last_ts = ts
        ch.last_pos = pos
        ch.last_seq = seq
        ch.window_min = apos - pos
        ch.window_end = apos + self._drift_window
        return pos

    def _end_drift_window(self, ch: _Channel, apos: int) -> None:
        drift = ch.window_min
        if abs(drift) >= self._drift_tolerance:
            # Real clocks drift by parts per million: at most one small step per window. A
            # larger apparent drift is a late anchor packet (a loaded sender or network),
            # and undoing it at once would drop that much of the party's audio.
            step = max(-self._drift_step, min(self._drift_step, int(drift)))
            ch.last_pos += step
            self.stats.drift_corrections += 1
        ch.window_min = math.inf
        ch.window_end = apos + self._drift_window

    def pause(self, at: float) -> None:
        if self._pauses and self._pauses[-1][1] is None:
            return
        self._pauses.append((at, None))

    def resume(self, at: float) -> None:
        if self._pauses and self._pauses[-1][1] is None:
            start = self._pauses[-1][0]
            self._pauses[-1] = (start, max(at, start))

    @property
    def paused(self) -> bool:
        return bool(self._pauses) and self._pauses[-1][1] is None

    def _paused_at(self, t: float) -> bool:
        # Arrivals are nearly ordered, so the newest interval decides almost always.
        for start, end in reversed(self._pauses):
            if t >= start and (end is None or t < end):
                return True
            if end is not None and t >= end:
                return False
        return False

    # --- output -------------------------------------------------------------

    def flush(self, now: float) -> StereoBlock:
        """Audio that can no longer change: up to `now` minus the jitter window.

        Never past the furthest audio received, so trailing silence is only
        written once audio follows it (or not at all), nor past the end of a
        party heard from within `max_jump` (waiting at most `max_jump` for it).
        """
        if self.origin is None or self.finished:
            return _EMPTY
        horizon = min(round((now - self.origin) * self.rate) - self._hold, self._audio_end)
        # Nor past the end of a party heard from lately (within `max_jump` of the
        # other): when the host stalls, what it held arrives after the flush, and
        # must still find its place unwritten. The wait is bounded by `max_jump`
        # behind the newest audio heard, so that a party falling ever further behind
        # cannot hold the other's audio in memory without end: past that it is
        # late, then re-anchored. (A stall hears nothing: there, it waits.)
        live = [ch for ch in self._channels if ch.start is not None]
        newest = max((ch.heard for ch in live), default=0)
        floor = newest - self._jump
        for ch in live:
            if ch.heard >= floor and ch.end < horizon:
                horizon = max(ch.end, min(floor, horizon))
        return self._commit(horizon)

    def finish(self, now: float) -> StereoBlock:
        """Everything still held, both channels to the same length; the timeline is then closed."""
        if self.finished:
            return _EMPTY
        block = _EMPTY if self.origin is None else self._commit(self._audio_end)
        if self._pauses and self._pauses[-1][1] is None:
            self.resume(now)
        self.finished = True
        return block

    def _commit(self, horizon: int) -> StereoBlock:
        committed = self.committed
        count = horizon - committed
        if count <= 0:
            return _EMPTY
        out = np.zeros((count, 2), dtype=np.int16)
        for index, ch in enumerate(self._channels):
            if ch.pending:
                self._place(ch, out, index, committed, horizon)
        for start, end in self._pause_spans():
            a = max(start, committed)
            b = min(end, horizon)
            if a < b:
                out[a - committed : b - committed] = 0
        self.committed = horizon
        return out

    @staticmethod
    def _place(ch: _Channel, out: StereoBlock, column: int, committed: int, horizon: int) -> None:
        ready: dict[int, list[tuple[int, Payload]]] = {}
        keep: list[tuple[int, int, Payload]] = []
        for item in ch.pending:
            pos, pt, payload = item
            if pos >= horizon:
                keep.append(item)
                continue
            group = ready.get(pt)
            if group is None:
                group = ready[pt] = []
            group.append((pos, payload))
            if pos + len(payload) > horizon:
                keep.append((horizon, pt, payload[horizon - pos :]))
        ch.pending = keep
        target = out[:, column]
        for pt, items in ready.items():
            # One table lookup for all of this channel's packets of this codec.
            decoded = _DECODE[pt][np.frombuffer(b"".join([p for _, p in items]), dtype=np.uint8)]
            # Back-to-back packets (nearly all of them) are copied as one block.
            offset = 0
            run_pos = run_end = run_offset = 0
            for pos, payload in items:
                size = len(payload)
                if pos == run_end:  # `_copy` clips the run to [committed, horizon)
                    run_end += size
                else:
                    _copy(target, decoded, run_pos, run_end, run_offset, committed, horizon)
                    run_pos, run_end, run_offset = pos, pos + size, offset
                offset += size
            _copy(target, decoded, run_pos, run_end, run_offset, committed, horizon)

    def _pause_spans(self) -> list[tuple[int, int]]:
        """Paused intervals in samples from the origin; an open one runs to the end of time."""
        origin = self.origin
        if origin is None:
            return []
        spans = []
        for start, end in self._pauses:
            a = max(0, round((start - origin) * self.rate))
            b = (1 << 62) if end is None else round((end - origin) * self.rate)
            if b > a:
                spans.append((a, b))
        return spans

    def pauses(self) -> list[tuple[float, float]]:
        """Paused intervals in seconds from the start of the output, clipped to what was written."""
        length = self.committed
        result = []
        for a, b in self._pause_spans():
            b = min(b, length)
            if a < b:
                result.append((a / self.rate, b / self.rate))
        return result

    @property
    def duration(self) -> float:
        return self.committed / self.rate

    def channel_spans(self) -> tuple[float, float]:
        """Seconds from each channel's first placed packet to the end of its audio.

        The file is longer than either when the second party's audio starts
        later (its delay); each span says whether that party's media is there
        whole, neither stretched nor cut.
        """
        left, right = self._channels
        return (
            0.0 if left.start is None else (left.end - left.start) / self.rate,
            0.0 if right.start is None else (right.end - right.start) / self.rate,
        )


def _copy(
    target: npt.NDArray[np.int16],
    decoded: npt.NDArray[np.int16],
    pos: int,
    end: int,
    offset: int,
    committed: int,
    horizon: int,
) -> None:
    """Decoded samples [offset, offset + end - pos) to positions [pos, end), clipped."""
    a = max(pos, committed)
    b = min(end, horizon)
    if a < b:
        target[a - committed : b - committed] = decoded[offset + a - pos : offset + b - pos]
