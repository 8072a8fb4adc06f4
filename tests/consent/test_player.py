from __future__ import annotations

import pytest

from consent.player import NoticePlayer
from recorder.media.rtp import parse_header, payload_bounds

FRAMES = [bytes([i]) * 160 for i in range(10)]


def make(frames: list[bytes] = FRAMES, seq: int = 1000, ts: int = 5000) -> NoticePlayer:
    return NoticePlayer(frames, payload_type=0, ssrc=0xDEADBEEF, sequence=seq, timestamp=ts)


def test_packets_are_due_every_20_ms_from_start() -> None:
    player = make()
    assert player.get_timer() is None  # not started
    assert player.handle_timer(100.0) == []
    player.start(100.0)
    sent: list[bytes] = []
    deadlines: list[float] = []
    while (deadline := player.get_timer()) is not None:
        assert player.handle_timer(deadline - 1e-6) == []  # not yet due
        deadlines.append(deadline)
        packets = player.handle_timer(deadline)
        assert len(packets) == 1
        sent += packets
    assert deadlines == [100.0 + n * 0.02 for n in range(10)]
    assert player.done
    assert player.handle_timer(200.0) == []
    for n, packet in enumerate(sent):
        pt, marker, seq, ts, ssrc = parse_header(packet)
        start, end = payload_bounds(packet)
        assert (pt, seq, ts, ssrc) == (0, 1000 + n, 5000 + 160 * n, 0xDEADBEEF)
        assert marker is (n == 0)
        assert packet[start:end] == FRAMES[n]


def test_late_wakeup_returns_every_overdue_packet() -> None:
    player = make()
    player.start(10.0)
    burst = player.handle_timer(10.1)  # packets 0..5 are due at 10.00..10.10
    assert [parse_header(p)[2] for p in burst] == [1000, 1001, 1002, 1003, 1004, 1005]
    assert player.get_timer() == pytest.approx(10.12)
    assert len(player.handle_timer(99.0)) == 4
    assert player.done


def test_no_drift_over_a_long_notice() -> None:
    frames = [b"\xff" * 160] * 30_000  # 10 minutes
    player = make(frames)
    player.start(12345.678)
    count = 0
    while (deadline := player.get_timer()) is not None:
        count += len(player.handle_timer(deadline))
    assert count == 30_000
    # The last deadline is computed from the start, not summed: exact to the float.
    assert player.end_time == 12345.678 + 29_999 * 0.02


def test_sequence_and_timestamp_wrap() -> None:
    player = make(FRAMES[:3], seq=0xFFFF, ts=0xFFFFFFFF - 159)
    player.start(0.0)
    packets = player.handle_timer(1.0)
    assert [parse_header(p)[2] for p in packets] == [0xFFFF, 0, 1]
    assert [parse_header(p)[3] for p in packets] == [0xFFFFFF60, 0, 160]
    assert (player.next_sequence, player.next_timestamp) == (2, 320)


def test_stop_is_barge_in() -> None:
    player = make()
    player.start(0.0)
    assert len(player.handle_timer(0.05)) == 3
    player.stop()
    assert player.done
    assert player.get_timer() is None
    assert player.handle_timer(1.0) == []
    assert player.packets_sent == 3


def test_start_twice_and_bad_fields_are_errors() -> None:
    player = make()
    player.start(0.0)
    with pytest.raises(RuntimeError):
        player.start(1.0)
    with pytest.raises(ValueError):
        NoticePlayer(FRAMES, payload_type=128, ssrc=1, sequence=0, timestamp=0)
    with pytest.raises(ValueError):
        NoticePlayer(FRAMES, payload_type=0, ssrc=1 << 32, sequence=0, timestamp=0)
    with pytest.raises(ValueError):
        NoticePlayer(FRAMES, payload_type=0, ssrc=1, sequence=65536, timestamp=0)


def test_empty_notice_is_done_at_once() -> None:
    player = make([])
    player.start(3.0)
    assert player.done
    assert player.get_timer() is None
    assert player.end_time == 3.0
