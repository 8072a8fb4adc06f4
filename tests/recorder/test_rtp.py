"""RTP header helpers and per-leg counters: pure, no sockets, no clock."""

from __future__ import annotations

import pytest

from recorder.media.rtp import build_packet, parse_header, payload_bounds, seq_diff, ts_diff
from recorder.media.stats import LegStats, format_address

# Hand-assembled packets, byte by byte from RFC 3550 §5.1.
# V=2 P=0 X=0 CC=0 | M=1 PT=0 | seq 0x1234 | ts 0xDEADBEEF | SSRC 0x01020304 | 4 bytes PCMU
PCMU_MARKED = bytes.fromhex("80 80 1234 DEADBEEF 01020304 FF7F0080")
# V=2 | M=0 PT=8 | seq 65535 | ts 160 | SSRC 0xCAFEBABE | 2 bytes PCMA
PCMA_LAST_SEQ = bytes.fromhex("80 08 FFFF 000000A0 CAFEBABE D5D5")
# V=2 | M=1 PT=101 | seq 7 | ts 0 | SSRC 0xFFFFFFFF | RFC 4733 event '5', end bit, duration 800
EVENT_END = bytes.fromhex("80 E5 0007 00000000 FFFFFFFF 05 8A 0320")


def test_parse_header_reads_fixed_fields() -> None:
    assert parse_header(PCMU_MARKED) == (0, True, 0x1234, 0xDEADBEEF, 0x01020304)
    assert parse_header(PCMA_LAST_SEQ) == (8, False, 65535, 160, 0xCAFEBABE)
    assert parse_header(EVENT_END) == (101, True, 7, 0, 0xFFFFFFFF)


def test_build_packet_is_byte_exact() -> None:
    assert (
        build_packet(0, 0x1234, 0xDEADBEEF, 0x01020304, bytes.fromhex("FF7F0080"), marker=True)
        == PCMU_MARKED
    )
    assert build_packet(8, 65535, 160, 0xCAFEBABE, b"\xd5\xd5") == PCMA_LAST_SEQ
    assert build_packet(101, 7, 0, 0xFFFFFFFF, bytes.fromhex("058A0320"), True) == EVENT_END


def test_build_then_parse_round_trips() -> None:
    packet = build_packet(127, 0, 0xFFFFFFFF, 0, b"")
    assert len(packet) == 12
    assert parse_header(packet) == (127, False, 0, 0xFFFFFFFF, 0)


@pytest.mark.parametrize(
    ("pt", "seq", "ts", "ssrc"),
    [(128, 0, 0, 0), (-1, 0, 0, 0), (0, 65536, 0, 0), (0, 0, 1 << 32, 0), (0, 0, 0, 1 << 32)],
)
def test_build_packet_rejects_out_of_range_fields(pt: int, seq: int, ts: int, ssrc: int) -> None:
    with pytest.raises(ValueError):
        build_packet(pt, seq, ts, ssrc, b"")


@pytest.mark.parametrize(
    "data",
    [b"", PCMU_MARKED[:11], b"\x00" + PCMU_MARKED[1:], b"\x40" + PCMU_MARKED[1:]],
    ids=["empty", "11-bytes", "version-0", "version-1"],
)
def test_parse_header_rejects_malformed(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_header(data)


def test_payload_bounds_plain_csrc_extension_padding() -> None:
    assert payload_bounds(PCMU_MARKED) == (12, 16)
    # CC=2: two CSRCs after the fixed header.
    with_csrc = bytes.fromhex("82 00 0001 00000000 00000001 00000002 00000003 AABB")
    assert payload_bounds(with_csrc) == (20, 22)
    # X=1: profile 0xBEDE, length 1 word, then payload.
    with_extension = bytes.fromhex("90 00 0001 00000000 00000001 BEDE0001 11223344 AABBCC")
    assert payload_bounds(with_extension) == (20, 23)
    # P=1: last byte says 3 bytes of padding, the count included.
    with_padding = bytes.fromhex("A0 00 0001 00000000 00000001 AABB 0000 03")
    assert payload_bounds(with_padding) == (12, 14)


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("82 00 0001 00000000 00000001 00000002"),  # CC=2, one CSRC present
        bytes.fromhex("90 00 0001 00000000 00000001 BEDE"),  # extension header cut
        bytes.fromhex("A0 00 0001 00000000 00000001 AA 00"),  # padding count 0
        bytes.fromhex("A0 00 0001 00000000 00000001 AA 09"),  # padding past the header
    ],
)
def test_payload_bounds_rejects_inconsistent_lengths(data: bytes) -> None:
    with pytest.raises(ValueError):
        payload_bounds(data)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(5, 3, 2), (3, 5, -2), (0, 65535, 1), (65535, 0, -1), (2, 65534, 4), (32767, 0, 32767)],
)
def test_seq_diff_wraps_at_16_bits(a: int, b: int, expected: int) -> None:
    assert seq_diff(a, b) == expected


def test_ts_diff_wraps_at_32_bits() -> None:
    assert ts_diff(80, 0xFFFFFFB0) == 160
    assert ts_diff(0xFFFFFFB0, 80) == -160


# --- LegStats --------------------------------------------------------------


def feed(stats: LegStats, seqs: list[int], ssrc: int = 0x1111, pt: int = 0) -> None:
    """Packets 20 ms apart with matching timestamps: zero jitter by construction."""
    for index, seq in enumerate(seqs):
        assert stats.on_rtp(build_packet(pt, seq, 160 * index, ssrc, b"\xff" * 160), 0.02 * index)


def test_counts_packets_and_bytes() -> None:
    stats = LegStats()
    feed(stats, [10, 11, 12])
    assert (stats.rtp_packets, stats.rtp_bytes, stats.lost) == (3, 3 * 172, 0)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_gaps_are_lost_packets() -> None:
    stats = LegStats()
    feed(stats, [0, 1, 2, 5, 6, 9])
    assert stats.lost == 4


def test_gap_across_sequence_wrap() -> None:
    stats = LegStats()
    feed(stats, [65533, 65534, 65535, 1, 2])
    assert stats.lost == 1


def test_loss_counted_after_many_wraps() -> None:
    stats = LegStats()
    sequence = [seq & 0xFFFF for seq in range(65000, 65000 + 3 * 65536)]
    del sequence[150_000]  # one packet missing in the third cycle
    feed(stats, sequence)
    assert stats.lost == 1
    assert stats.out_of_order == 0


def test_reordered_packet_fills_its_gap() -> None:
    stats = LegStats()
    feed(stats, [1, 3, 2, 4])
    assert (stats.lost, stats.out_of_order) == (0, 1)


def test_duplicates_do_not_make_loss_negative() -> None:
    stats = LegStats()
    feed(stats, [1, 2, 2, 2, 3])
    assert (stats.lost, stats.out_of_order) == (0, 2)


def test_new_ssrc_starts_a_new_sequence_keeping_earlier_loss() -> None:
    stats = LegStats()
    feed(stats, [10, 11, 13], ssrc=1)
    feed(stats, [5000, 5001, 5003], ssrc=2)
    assert (stats.lost, stats.ssrc_changes) == (2, 1)


def test_huge_jump_in_one_ssrc_is_a_restart_not_a_loss() -> None:
    stats = LegStats()
    feed(stats, [1, 2, 20000, 20001, 20003])
    assert stats.lost == 1


def test_malformed_packets_are_counted_not_accounted() -> None:
    stats = LegStats()
    assert not stats.on_rtp(b"\x80\x00\x00", 0.0)
    assert not stats.on_rtp(b"\x00" * 20, 0.0)
    assert (stats.rtp_packets, stats.dropped_malformed) == (0, 2)


def test_jitter_follows_rfc3550_a8() -> None:
    stats = LegStats(clock_rate=8000)
    # On time, on time, 5 ms late (D = 40), then on time again (D = 40).
    for ts, arrival in [(0, 0.0), (160, 0.02), (320, 0.045), (480, 0.06)]:
        stats.on_rtp(build_packet(0, ts // 160, ts, 7, b""), arrival)
    expected = 40 / 16
    expected += (40 - expected) / 16
    assert stats.jitter == pytest.approx(expected)
    assert stats.jitter_ms == pytest.approx(expected / 8)


def test_jitter_survives_timestamp_wrap() -> None:
    stats = LegStats(clock_rate=8000)
    start = 0xFFFFFFFF - 200
    for index in range(4):
        ts = (start + 160 * index) & 0xFFFFFFFF
        stats.on_rtp(build_packet(0, index, ts, 7, b""), 0.02 * index)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_jitter_uses_the_clock_rate() -> None:
    stats = LegStats(clock_rate=16000)
    for ts, arrival in [(0, 0.0), (320, 0.025)]:  # 5 ms late at 16 kHz: D = 80
        stats.on_rtp(build_packet(9, ts // 320, ts, 7, b""), arrival)
    assert stats.jitter == pytest.approx(80 / 16)
    assert stats.jitter_ms == pytest.approx(80 / 16 / 16)


def test_telephone_events_are_left_out_of_jitter() -> None:
    stats = LegStats(clock_rate=8000, telephone_event_pt=101)
    feed(stats, [1, 2, 3])
    # An event keeps its start timestamp for its whole duration.
    for index in range(5):
        stats.on_rtp(build_packet(101, 4 + index, 320, 0x1111, b"\x05\x0a\x00\xa0"), 0.06 + index)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)
    assert stats.rtp_packets == 8
    assert stats.lost == 0


def test_rtcp_validation() -> None:
    stats = LegStats()
    assert stats.on_rtcp(bytes.fromhex("81C9 0007 00000001") + b"\x00" * 24)
    assert not stats.on_rtcp(b"\x81\xc9\x00")
    assert not stats.on_rtcp(b"\x01" * 8)
    assert (stats.rtcp_packets, stats.rtcp_bytes, stats.dropped_malformed) == (1, 32, 2)


def test_as_dict_and_addresses() -> None:
    stats = LegStats()
    feed(stats, [1, 3])
    info = stats.as_dict()
    assert info["rtp_packets"] == 2
    assert info["rtp_lost"] == 1
    assert format_address(("192.0.2.1", 4000)) == "192.0.2.1:4000"
    assert format_address(("2001:db8::1", 4000, 0, 0)) == "[2001:db8::1]:4000"
    assert format_address(None) is None


def test_clock_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LegStats(clock_rate=0)
