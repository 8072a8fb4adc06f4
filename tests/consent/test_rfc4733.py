from __future__ import annotations

import struct
from pathlib import Path

import pytest

from consent.events import DigitDetected
from consent.rfc4733 import Rfc4733Detector, TelephoneEvent

PT = 101
SSRC = 0x1234ABCD


def tev(
    event: int,
    duration: int,
    *,
    ts: int = 8000,
    seq: int = 1,
    end: bool = False,
    marker: bool = False,
    ssrc: int = SSRC,
    pt: int = PT,
) -> bytes:
    header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts, ssrc)
    return header + struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)


def press(event: int, ts: int, packets: int = 6, ends: int = 3, seq: int = 1) -> list[bytes]:
    """What a phone sends: marker, growing durations, then the end packet `ends` times."""
    out = [tev(event, 160 * (i + 1), ts=ts, seq=seq + i, marker=i == 0) for i in range(packets)]
    out += [tev(event, 160 * (packets + 1), ts=ts, seq=seq + packets, end=True)] * ends
    return out


def feed(det: Rfc4733Detector, packets: list[bytes], t0: float = 0.0) -> list[DigitDetected]:
    events: list[DigitDetected] = []
    for i, packet in enumerate(packets):
        events += det.handle_packet(packet, t0 + i * 0.02)
    return events


def test_a_press_with_its_end_sent_three_times_is_one_digit() -> None:
    events = feed(Rfc4733Detector(PT), press(9, ts=8000))
    assert events == [DigitDetected(digit="9", method="dtmf-rfc4733", at=0.0)]


def test_digit_is_reported_on_the_first_packet() -> None:
    det = Rfc4733Detector(PT)
    assert det.handle_packet(press(5, ts=100)[0], 3.5) == [
        DigitDetected(digit="5", method="dtmf-rfc4733", at=3.5)
    ]


def test_lost_end_packets_still_yield_the_digit() -> None:
    assert [e.digit for e in feed(Rfc4733Detector(PT), press(9, 8000, ends=0))] == ["9"]


def test_lost_start_packets_still_yield_the_digit() -> None:
    only_ends = press(9, 8000)[-3:]
    assert [e.digit for e in feed(Rfc4733Detector(PT), only_ends)] == ["9"]


def test_duplicated_and_reordered_packets_count_once() -> None:
    first, second = press(1, 1000), press(2, 5000, seq=20)
    # every packet twice, and the first press's end arriving after the second began
    stream = [p for p in first[:-3] for _ in range(2)] + second[:2] + first[-3:] + second[2:]
    assert [e.digit for e in feed(Rfc4733Detector(PT), stream)] == ["1", "2"]


def test_long_press_is_one_digit() -> None:
    packets = press(9, ts=8000, packets=150)  # 3 s held down
    assert len(feed(Rfc4733Detector(PT), packets)) == 1


def test_segmented_very_long_press_is_one_digit() -> None:
    # RFC 4733 §2.5.1.3: past 0xFFFF the sender starts a new segment, new timestamp.
    first = [tev(9, d, ts=1000) for d in range(160, 0xFFFF, 160)] + [tev(9, 0xFFFF, ts=1000)]
    second = press(9, ts=1000 + 0xFFFF)
    assert len(feed(Rfc4733Detector(PT), first + second)) == 1


def test_same_key_twice_is_two_digits_even_with_lost_ends() -> None:
    stream = press(9, 8000, ends=0) + press(9, 8000 + 160 * 12, ends=0, seq=30)
    assert [e.digit for e in feed(Rfc4733Detector(PT), stream)] == ["9", "9"]


def test_same_timestamp_from_another_ssrc_is_another_event() -> None:
    det = Rfc4733Detector(PT)
    assert len(det.handle_packet(tev(9, 160, ts=500), 0.0)) == 1
    assert len(det.handle_packet(tev(9, 160, ts=500, ssrc=99), 0.0)) == 1
    assert det.handle_packet(tev(9, 320, ts=500, ssrc=99), 0.0) == []


def test_every_key_code_and_non_keys() -> None:
    det = Rfc4733Detector(PT)
    digits = [det.handle_packet(tev(code, 160, ts=code * 1000), 0.0) for code in range(16)]
    assert "".join(d[0].digit for d in digits) == "0123456789*#ABCD"
    assert det.handle_packet(tev(16, 160, ts=99_000), 0.0) == []  # flash is not a key


def test_other_payload_types_and_garbage_are_ignored() -> None:
    det = Rfc4733Detector(PT)
    assert det.handle_packet(tev(9, 160, pt=0), 0.0) == []  # audio
    assert det.handle_packet(b"\x80\x65\x00", 0.0) == []  # short
    assert det.handle_packet(b"\x40" + tev(9, 160)[1:], 0.0) == []  # RTP version 1
    assert det.handle_packet(tev(9, 160)[:14], 0.0) == []  # truncated event
    assert det.malformed == 3
    with pytest.raises(ValueError):
        TelephoneEvent.parse(b"\x09")
    with pytest.raises(ValueError):
        Rfc4733Detector(128)


def test_header_extension_and_csrcs_are_skipped() -> None:
    base = tev(7, 160)
    csrc = bytes([0x81]) + base[1:12] + b"\x00\x00\x00\x01" + base[12:]
    ext = bytes([0x90]) + base[1:12] + b"\xbe\xde\x00\x01" + b"\x00" * 4 + base[12:]
    det = Rfc4733Detector(PT)
    assert [e.digit for e in det.handle_packet(csrc, 0.0)] == ["7"]
    assert [e.digit for e in Rfc4733Detector(PT).handle_packet(ext, 0.0)] == ["7"]


def _pcap_udp_payloads(path: Path) -> list[bytes]:
    """Payloads of a little-endian Ethernet/IPv4/UDP pcap (what sipp ships)."""
    data = path.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1"
    out, offset = [], 24
    while offset < len(data):
        length = struct.unpack_from("<I", data, offset + 8)[0]
        frame = data[offset + 16 : offset + 16 + length]
        offset += 16 + length
        ihl = (frame[14] & 0x0F) * 4
        out.append(frame[14 + ihl + 8 :])
    return out


SIPP_PCAPS = Path("/usr/share/sip-tester")


@pytest.mark.parametrize(
    ("name", "digit"),
    [(f"dtmf_2833_{k}.pcap", k) for k in "0123456789"],
)
def test_sipp_pcaps_give_one_digit_each(name: str, digit: str) -> None:
    path = SIPP_PCAPS / name
    if not path.exists():
        pytest.skip("sipp's pcaps are not installed (Debian package sip-tester)")
    det = Rfc4733Detector(101)
    assert [e.digit for e in feed(det, _pcap_udp_payloads(path))] == [digit]
