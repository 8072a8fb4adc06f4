"""StereoTimeline, driven by hand: synthetic RTP, explicit arrival times, no clock."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from consent.g711 import ALAW_DECODE, ULAW_DECODE
from recorder.media.rtp import build_packet
from recorder.recording.timeline import RECORD, StereoTimeline

T0 = 1000.0  # monotonic seconds of the first packet
FRAME = 160  # samples per 20 ms packet


def payload(rng: np.random.Generator, size: int = FRAME) -> bytes:
    # Codes 0x00-0x7E only: never a mu-law "zero", so that silence is distinguishable.
    return bytes(rng.integers(0, 0x7F, size, dtype=np.uint8))


class Sender:
    def __init__(self, ssrc: int, ts: int = 12345, seq: int = 100, pt: int = 0) -> None:
        self.ssrc = ssrc
        self.ts = ts
        self.seq = seq
        self.pt = pt

    def next(self, data: bytes, *, pt: int | None = None) -> bytes:
        packet = build_packet(
            self.pt if pt is None else pt, self.seq & 0xFFFF, self.ts & 0xFFFFFFFF, self.ssrc, data
        )
        self.seq += 1
        self.ts += FRAME
        return packet


def collect(timeline: StereoTimeline, events: list[tuple[float, int, bytes]]) -> np.ndarray:
    """Feed (arrival, channel, packet) in the order given, flushing every 100 ms."""
    blocks = []
    next_flush = T0
    for arrival, channel, packet in events:
        while arrival >= next_flush:
            blocks.append(timeline.flush(next_flush))
            next_flush += 0.1
        timeline.add(channel, packet, arrival)
    last = events[-1][0] if events else T0
    blocks.append(timeline.flush(last))
    blocks.append(timeline.finish(last))
    for block in blocks:
        assert block.dtype == np.int16 and block.ndim == 2 and block.shape[1] == 2
    return np.concatenate(blocks)


def place(expected: npt.NDArray[np.int16], pos: int, data: bytes, table: np.ndarray) -> None:
    expected[pos : pos + len(data)] = table[np.frombuffer(data, dtype=np.uint8)]


def test_in_order_packets_are_decoded_in_place_on_their_channel() -> None:
    rng = np.random.default_rng(1)
    left, right = Sender(1), Sender(2, ts=999, pt=8)
    events = []
    expected = np.zeros((50 * FRAME + 8, 2), dtype=np.int16)
    for k in range(50):
        a, b = payload(rng), payload(rng)
        events.append((T0 + k * 0.02, 0, left.next(a)))
        events.append((T0 + k * 0.02 + 0.001, 1, right.next(b)))
        place(expected[:, 0], k * FRAME, a, ULAW_DECODE)
        place(expected[:, 1], k * FRAME + 8, b, ALAW_DECODE)  # 1 ms later = 8 samples
    out = collect(StereoTimeline(), events)
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)


def test_lost_packets_leave_silence_of_their_length_and_the_rest_stays_in_place() -> None:
    rng = np.random.default_rng(2)
    sender = Sender(7)
    events = []
    expected = np.zeros(40 * FRAME, dtype=np.int16)
    for k in range(40):
        data = payload(rng)
        packet = sender.next(data)
        if k in (3, 4, 17):
            continue
        events.append((T0 + k * 0.02, 0, packet))
        place(expected, k * FRAME, data, ULAW_DECODE)
    timeline = StereoTimeline()
    out = collect(timeline, events)
    np.testing.assert_array_equal(out[:, 0], expected)
    assert not out[3 * FRAME : 5 * FRAME, 0].any()
    assert timeline.stats.late == 0


def test_reordered_packets_within_the_window_land_in_place() -> None:
    rng = np.random.default_rng(3)
    sender = Sender(7)
    packets = [(k, sender.next(d), d) for k, d in ((k, payload(rng)) for k in range(30))]
    expected = np.zeros(30 * FRAME, dtype=np.int16)
    for k, _, data in packets:
        place(expected, k * FRAME, data, ULAW_DECODE)
    # 11 overtakes 10, 21 arrives 60 ms late (behind 22, 23, 24).
    order = list(range(30))
    order[10], order[11] = 11, 10
    order.remove(21)
    order.insert(24, 21)
    events = [(T0 + i * 0.02 + 0.002 * (k != i), 0, packets[k][1]) for i, k in enumerate(order)]
    # Arrival times must not go backwards in the feed; make them follow the new order.
    events = [(T0 + i * 0.02, 0, p) for i, (_, _, p) in enumerate(events)]
    timeline = StereoTimeline(jitter_window=0.1)
    out = collect(timeline, events)
    np.testing.assert_array_equal(out[:, 0], expected)
    assert timeline.stats.late == 0


def test_packet_later_than_the_window_is_dropped_and_counted() -> None:
    rng = np.random.default_rng(4)
    sender = Sender(7)
    packets = [sender.next(payload(rng)) for _ in range(60)]
    events = [(T0 + k * 0.02, 0, p) for k, p in enumerate(packets) if k != 5]
    events.append((T0 + 60 * 0.02, 0, packets[5]))  # 1.1 s late
    timeline = StereoTimeline(jitter_window=0.06)
    out = collect(timeline, events)
    assert timeline.stats.late == 1
    assert not out[5 * FRAME : 6 * FRAME, 0].any()
    assert len(out) == 60 * FRAME


def _two_channels(
    change: str,
) -> tuple[np.ndarray, np.ndarray, StereoTimeline]:
    """Left changes stream after 50 packets; right runs steadily. Returns out, right's expected."""
    rng = np.random.default_rng(5)
    left, right = Sender(1), Sender(2)
    events = []
    right_expected = np.zeros(150 * FRAME + 40, dtype=np.int16)
    for k in range(150):
        t = T0 + k * 0.02
        if k == 50:
            if change == "ssrc":
                left = Sender(99, ts=4_000_000_000, seq=65530)
            elif change == "jump":
                left.ts += 3_000_000
            elif change == "back":
                left.ts -= 40_000
            elif change == "small-back":  # 230 ms back: only the sequence number tells
                left.ts -= 2_000
        if k < 50 or k >= 75:  # left pauses for 0.5 s around the change
            events.append((t, 0, left.next(payload(rng))))
        data = payload(rng)
        events.append((t + 0.005, 1, right.next(data)))
        place(right_expected, k * FRAME + 40, data, ULAW_DECODE)
    timeline = StereoTimeline()
    return collect(timeline, events), right_expected, timeline


@pytest.mark.parametrize("change", ["ssrc", "jump", "back", "small-back"])
def test_stream_change_reanchors_one_channel_by_arrival_and_never_moves_the_other(
    change: str,
) -> None:
    out, right_expected, timeline = _two_channels(change)
    np.testing.assert_array_equal(out[:, 1], right_expected)
    left = out[:, 0]
    # The new stream starts where its first packet arrived (packet 75 = 1.5 s).
    assert left[: 50 * FRAME].all()
    assert not left[50 * FRAME : 75 * FRAME].any()
    assert left[75 * FRAME : 150 * FRAME].all()
    assert timeline.stats.reanchors == (0 if change == "ssrc" else 1)
    assert len(out) == 150 * FRAME + 40


def test_silence_suppression_gap_with_consistent_timestamps_is_not_a_jump() -> None:
    rng = np.random.default_rng(6)
    sender = Sender(3)
    expected = np.zeros(400 * FRAME, dtype=np.int16)
    events = []
    for k in range(400):
        data = payload(rng)
        packet = sender.next(data)
        if 100 <= k < 300:  # 4 s of DTX: timestamps still advance
            continue
        events.append((T0 + k * 0.02, 0, packet))
        place(expected, k * FRAME, data, ULAW_DECODE)
    timeline = StereoTimeline()
    out = collect(timeline, events)
    np.testing.assert_array_equal(out[:, 0], expected)
    assert timeline.stats.reanchors == 0


def test_comfort_noise_and_telephone_events_are_not_audio() -> None:
    rng = np.random.default_rng(7)
    sender = Sender(3)
    events = []
    for k in range(20):
        if 5 <= k < 8:
            pkt = sender.next(b"\x40", pt=13)
        elif 10 <= k < 13:
            pkt = sender.next(b"\x05\x0a\x00\xa0", pt=101)
        else:
            pkt = sender.next(payload(rng))
        events.append((T0 + k * 0.02, 0, pkt))
    timeline = StereoTimeline()
    out = collect(timeline, events)
    assert timeline.stats.skipped_non_audio == 6
    assert not out[5 * FRAME : 8 * FRAME].any()
    assert not out[10 * FRAME : 13 * FRAME].any()
    assert out[13 * FRAME : 14 * FRAME, 0].any()
    assert len(out) == 20 * FRAME


def test_malformed_packets_are_counted_not_raised() -> None:
    timeline = StereoTimeline()
    timeline.add(0, b"\x80\x00", T0)
    timeline.add(0, b"\x00" * 20, T0)  # version 0
    timeline.add(0, bytes([0xA0]) + b"\x00" * 10 + b"\x00" * 9 + b"\x00", T0)  # padding count 0
    assert timeline.stats.malformed == 3
    assert timeline.finish(T0).shape == (0, 2)


def test_paused_interval_is_silent_reported_and_not_kept() -> None:
    rng = np.random.default_rng(8)
    left, right = Sender(1), Sender(2)
    timeline = StereoTimeline()
    events = []
    for k in range(100):
        t = T0 + k * 0.02
        events.append((t, 0, left.next(payload(rng))))
        events.append((t, 1, right.next(payload(rng))))
    blocks = []
    for t, channel, packet in events:
        if t == T0 + 30 * 0.02 and channel == 0:
            timeline.pause(t - 0.001)
        if t == T0 + 70 * 0.02 and channel == 0:
            timeline.resume(t - 0.001)
        timeline.add(channel, packet, t)
        blocks.append(timeline.flush(t))
    blocks.append(timeline.finish(events[-1][0]))
    out = np.concatenate(blocks)
    assert len(out) == 100 * FRAME
    assert timeline.stats.dropped_paused == 80
    assert not out[30 * FRAME - 8 : 70 * FRAME - 8].any()
    assert out[29 * FRAME : 30 * FRAME - 8].all(axis=0).any()
    assert out[70 * FRAME : 71 * FRAME].any()
    [(start, end)] = timeline.pauses()
    assert start == pytest.approx(0.599, abs=1 / 8000)
    assert end == pytest.approx(1.399, abs=1 / 8000)


def test_pause_open_at_finish_is_closed_and_clipped() -> None:
    rng = np.random.default_rng(9)
    sender = Sender(1)
    timeline = StereoTimeline()
    for k in range(10):
        timeline.add(0, sender.next(payload(rng)), T0 + k * 0.02)
    timeline.pause(T0 + 0.1)
    out = np.concatenate([timeline.flush(T0 + 0.5), timeline.finish(T0 + 5.0)])
    assert len(out) == 10 * FRAME
    assert timeline.pauses() == [(0.1, 0.2)]
    assert not out[800:].any()


def test_flush_never_writes_past_the_horizon_or_the_last_audio() -> None:
    rng = np.random.default_rng(10)
    sender = Sender(1)
    timeline = StereoTimeline(jitter_window=0.1)
    for k in range(10):
        timeline.add(0, sender.next(payload(rng)), T0 + k * 0.02)
    assert len(timeline.flush(T0 + 0.15)) == round(0.05 * 8000)
    assert len(timeline.flush(T0 + 10.0)) == 10 * FRAME - 400
    assert len(timeline.flush(T0 + 20.0)) == 0
    assert timeline.duration == 10 * FRAME / 8000


def _marker_positions(channel: np.ndarray) -> dict[int, int]:
    """Second number -> sample index of the one loud sample sent at that real second."""
    loud = np.flatnonzero(np.abs(channel.astype(np.int32)) > 20000)
    return {round(int(i) / 8000): int(i) for i in loud}


def test_one_hour_with_drift_jitter_and_loss_keeps_channels_aligned_within_a_packet() -> None:
    """Two senders whose clocks run +60 and -60 ppm off ours, 0-40 ms jitter, 3% loss.

    Each sender puts one loud sample at every whole second of real time; in
    the output, those markers must sit within one packet (160 samples) of
    each other and of the recorder's clock, for the whole hour. Without drift
    correction they would end 0.43 s apart.
    """
    seconds = 3600
    rng = np.random.default_rng(11)
    timeline = StereoTimeline(jitter_window=0.1)
    quiet = 0x7E  # a small non-zero mu-law value
    feeds = []
    for channel, ppm in ((0, 60e-6), (1, -60e-6)):
        rate = 8000 * (1 + ppm)  # the sender's samples per real second
        count = int(seconds * rate) // FRAME
        send_times = np.arange(count) * FRAME / rate + 0.003 * channel
        arrivals = send_times + rng.uniform(0.0, 0.04, count)
        kept = rng.random(count) >= 0.03
        marker_sample = np.round(np.arange(1, seconds) * rate).astype(np.int64)
        feeds.append((channel, count, arrivals, kept, marker_sample))
    packets: list[tuple[float, int, bytes]] = []
    for channel, count, arrivals, kept, marker_sample in feeds:
        base = np.full(count * FRAME, quiet, dtype=np.uint8)
        base[marker_sample[marker_sample < count * FRAME]] = 0x00  # mu-law full scale
        ssrc, ts0, seq0 = 1000 + channel, 77777 * (channel + 1), 500 * channel
        for k in np.flatnonzero(kept).tolist():
            header = build_packet(0, (seq0 + k) & 0xFFFF, (ts0 + k * FRAME) & 0xFFFFFFFF, ssrc, b"")
            chunk = base[k * FRAME : (k + 1) * FRAME].tobytes()
            packets.append((T0 + float(arrivals[k]), channel, header + chunk))
    packets.sort(key=lambda item: item[0])
    blocks = []
    next_flush = T0
    for arrival, channel, packet in packets:
        if arrival >= next_flush:
            blocks.append(timeline.flush(arrival))
            next_flush = arrival + 0.2
        timeline.add(channel, packet, arrival)
    blocks.append(timeline.finish(packets[-1][0]))
    out = np.concatenate(blocks)
    left, right = _marker_positions(out[:, 0]), _marker_positions(out[:, 1])
    common = sorted(set(left) & set(right))
    assert len(common) > 0.9 * seconds
    origin = packets[0][0] - T0
    worst_pair = max(abs(left[s] - right[s]) for s in common)
    worst_clock = max(
        abs(pos - round((s - origin) * 8000))
        for markers in (left, right)
        for s, pos in markers.items()
    )
    assert worst_pair <= FRAME, worst_pair
    assert worst_clock <= FRAME + 0.04 * 8000, worst_clock
    assert timeline.stats.drift_corrections > 10
    assert abs(len(out) / 8000 - seconds) < 0.1


def test_a_late_first_packet_costs_no_audio() -> None:
    """A loaded sender delivered its first packets 96 ms late, the rest on time: only a
    clock-sized step per window is taken back, so at most a few ms of a minute are lost
    (the recording's duration stays within 20 ms of the media's)."""
    rng = np.random.default_rng(21)
    sender = Sender(7)
    frames = 3000  # one minute
    events = []
    for k in range(frames):
        # The first five packets leave together 96 ms late; the sender then keeps time.
        arrival = T0 + 0.096 + k * 0.0001 if k < 5 else T0 + k * 0.02
        events.append((arrival, 0, sender.next(payload(rng))))
    events.sort(key=lambda item: item[0])
    out = collect(StereoTimeline(), events)
    written = np.count_nonzero(out[:, 0])
    assert frames * FRAME - written <= 0.02 * 8000, frames * FRAME - written


def test_flushes_cutting_packets_of_mixed_sizes_and_holes_keep_every_sample_in_place() -> None:
    # Packets of 80, 160 and 240 samples, back to back apart from the lost ones, flushed
    # every 7 ms: horizons fall inside packets and inside the runs copied as one block.
    rng = np.random.default_rng(11)
    sizes = [int(s) for s in rng.choice([80, 160, 240], 120)]
    lost = {5, 6, 40, 77, 119}
    sender = Sender(3)
    expected = np.zeros(sum(sizes), dtype=np.int16)
    events = []
    position = 0
    for k, size in enumerate(sizes):
        data = payload(rng, size)
        packet = build_packet(0, sender.seq & 0xFFFF, sender.ts & 0xFFFFFFFF, sender.ssrc, data)
        sender.seq += 1
        sender.ts += size
        if k not in lost:
            events.append((T0 + position / 8000, 0, packet))
            place(expected, position, data, ULAW_DECODE)
        position += size
    timeline = StereoTimeline(jitter_window=0.02)
    blocks = []
    now = T0
    for arrival, channel, packet in events:
        while now + 0.007 <= arrival:
            now += 0.007
            blocks.append(timeline.flush(now))
        timeline.add(channel, packet, arrival)
    blocks.append(timeline.finish(events[-1][0]))
    out = np.concatenate(blocks)
    np.testing.assert_array_equal(out[:, 0], expected[: len(out)])
    assert len(out) == len(expected) - sizes[-1]  # the lost last packet is not padded
    assert timeline.stats.late == 0 and not out[:, 1].any()


def _random_events(seed: int) -> list[tuple[float, int, bytes]]:
    """Two channels with loss, reordering, duplicates, a stream change, a jump, PCMA,
    comfort noise, a header extension and malformed packets, arrival times in order."""
    rng = np.random.default_rng(seed)
    senders = [Sender(1), Sender(2, ts=7, pt=8)]
    events: list[tuple[float, int, bytes]] = []
    for k in range(400):
        for channel, sender in enumerate(senders):
            if k == 150 and channel == 0:
                senders[0] = sender = Sender(77, ts=4_294_960_000, seq=65_500)
            if k == 250 and channel == 1:
                sender.ts += 80_000
            roll = rng.random()
            packet = sender.next(payload(rng))
            if roll < 0.05:
                continue  # lost
            if roll < 0.07:
                packet = packet[:9]
            elif roll < 0.09:
                packet = build_packet(13, 1, 1, sender.ssrc, b"\x40")
            elif roll < 0.11:
                packet = bytes([0x90]) + packet[1:12] + b"\xbe\xde\x00\x01abcd" + packet[12:]
            arrival = T0 + k * 0.02 + channel * 0.003 + float(rng.uniform(0, 0.004))
            events.append((arrival, channel, packet))
            if roll > 0.97:
                events.append((arrival + 0.001, channel, packet))  # duplicate
    # Reordering: swap neighbours now and then, then keep arrival times non-decreasing.
    for i in range(0, len(events) - 1, 13):
        events[i], events[i + 1] = events[i + 1], events[i]
    times = sorted(t for t, _, _ in events)
    return [(t, c, p) for t, (_, c, p) in zip(times, events, strict=True)]


@pytest.mark.parametrize("seed", range(8))
def test_add_records_in_batches_gives_the_same_audio_and_counts_as_add_one_by_one(
    seed: int,
) -> None:
    # The writer feeds whole batches (RECORD + packet, as the relay's tap packs them).
    events = _random_events(seed)
    rng = np.random.default_rng(100 + seed)
    one, batched = StereoTimeline(), StereoTimeline()
    out_one: list[np.ndarray] = []
    out_batched: list[np.ndarray] = []
    batch = bytearray()
    next_flush = T0 + 0.05
    for arrival, channel, packet in events:
        while arrival >= next_flush:
            batched.add_records(batch)
            batch.clear()
            out_one.append(one.flush(next_flush))
            out_batched.append(batched.flush(next_flush))
            next_flush += float(rng.uniform(0.005, 0.3))
        one.add(channel, packet, arrival)
        batch += RECORD.pack(channel, arrival, len(packet)) + packet
    batched.add_records(batch)
    end = events[-1][0]
    out_one.append(one.finish(end))
    out_batched.append(batched.finish(end))
    np.testing.assert_array_equal(np.concatenate(out_one), np.concatenate(out_batched))
    assert one.stats == batched.stats
    assert one.stats.malformed > 0 and one.stats.skipped_non_audio > 0
    assert one.stats.reanchors + one.stats.late > 0


def test_channel_spans_are_each_party_s_media_while_the_file_also_holds_the_later_start() -> None:
    # The agent side answers 150 ms after the caller's first packet (an echo's delay):
    # the file is 150 ms longer than either party's media, each span is that media's own.
    rng = np.random.default_rng(7)
    left, right = Sender(1), Sender(2)
    events = []
    for k in range(250):  # 5 s each
        events.append((T0 + k * 0.02, 0, left.next(payload(rng))))
        events.append((T0 + 0.15 + k * 0.02, 1, right.next(payload(rng))))
    events.sort(key=lambda e: e[0])
    timeline = StereoTimeline()
    assert timeline.channel_spans() == (0.0, 0.0)
    out = collect(timeline, events)
    assert len(out) == 250 * FRAME + round(0.15 * 8000)
    assert timeline.channel_spans() == (5.0, 5.0)
    assert timeline.duration == pytest.approx(5.15)


def test_both_parties_stalled_then_delivered_in_a_burst_land_where_their_timestamps_say() -> None:
    # The host (or the relay's loop) stalls 1.5 s: nothing arrives, the writer keeps
    # flushing; then every held packet arrives at once and time goes on (the 2026-12-03
    # scale run: 169 of 250 files 1 s long, every packet after the stall re-anchored). Nothing is
    # re-anchored, nothing is late, the file is the media sample for sample.
    rng = np.random.default_rng(31)
    left, right = Sender(1), Sender(2)
    frames, stall_from, stall = 500, 200, 1.5
    expected = np.zeros((frames * FRAME + 40, 2), dtype=np.int16)
    events = []
    for k in range(frames):
        sent = T0 + k * 0.02
        late_until = T0 + stall_from * 0.02 + stall
        arrival = late_until if stall_from <= k and sent < late_until else sent
        a, b = payload(rng), payload(rng)
        # In the burst the relay reads one packet per socket in turn: interleaved.
        held = arrival == late_until
        events.append((arrival + (k * 1e-7 if held else 0.0), 0, left.next(a)))
        events.append((arrival + (k * 1e-7 + 5e-8 if held else 0.005), 1, right.next(b)))
        place(expected[:, 0], k * FRAME, a, ULAW_DECODE)
        place(expected[:, 1], k * FRAME + 40, b, ULAW_DECODE)
    events.sort(key=lambda e: e[0])
    timeline = StereoTimeline()
    out = collect(timeline, events)
    assert timeline.stats.reanchors == 0 and timeline.stats.late == 0
    np.testing.assert_array_equal(out, expected)
    assert timeline.channel_spans() == (frames * 0.02, frames * 0.02)


def test_one_party_stalled_past_the_horizon_is_anchored_once_then_followed() -> None:
    # Only the left party stalls 1.5 s (its network) while the right goes on: its held
    # packets' places are already written, so it is anchored where it arrives, once,
    # and not again for every packet of the burst and after.
    rng = np.random.default_rng(32)
    left, right = Sender(1), Sender(2)
    frames, stall_from, stall = 500, 200, 1.5
    events = []
    for k in range(frames):
        sent = T0 + k * 0.02
        late_until = T0 + stall_from * 0.02 + stall
        arrival = late_until if stall_from <= k and sent < late_until else sent
        events.append((arrival, 0, left.next(payload(rng))))
        events.append((sent + 0.005, 1, right.next(payload(rng))))
    events.sort(key=lambda e: e[0])
    timeline = StereoTimeline()
    out = collect(timeline, events)
    assert timeline.stats.reanchors == 1
    assert timeline.stats.late == 0  # the burst is kept, after the gap
    left_span, right_span = timeline.channel_spans()
    assert right_span == frames * 0.02
    assert left_span == pytest.approx(frames * 0.02 + stall, abs=0.03)
    assert np.count_nonzero(out[:, 0]) == frames * FRAME


def test_a_party_falling_ever_further_behind_holds_the_other_at_most_max_jump() -> None:
    # A broken sender: 20 ms of audio (consistent sequence numbers and timestamps) every
    # 30 ms, so it falls 10 ms behind per packet. Waiting for it is bounded: the other
    # party's audio is written at most `max_jump` behind the clock, and the slow one is
    # re-anchored when its place has been written, not held in memory without end.
    rng = np.random.default_rng(33)
    slow, steady = Sender(1), Sender(2)
    timeline = StereoTimeline()
    events = []
    for k in range(1500):  # 30 s of the steady party
        events.append((T0 + k * 0.02, 1, steady.next(payload(rng))))
        if k % 3 != 2:
            events.append((T0 + k * 0.02 + 0.001, 0, slow.next(payload(rng))))
    events.sort(key=lambda e: e[0])
    worst_behind = 0.0
    next_flush = T0
    for arrival, channel, packet in events:
        while arrival >= next_flush:
            timeline.flush(next_flush)
            worst_behind = max(worst_behind, next_flush - T0 - timeline.duration)
            next_flush += 0.1
        timeline.add(channel, packet, arrival)
    assert worst_behind <= 1.0 + 0.1 + 0.11, worst_behind  # max_jump + jitter + one flush
    assert timeline.stats.reanchors >= 1
