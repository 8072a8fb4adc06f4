"""De-identified training copies (P5): caller's spans zeroed, no metadata, month-only name."""

from __future__ import annotations

from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from recorder.access.deidentify import (
    deidentified_wav,
    month_name,
    parse_ranges,
    riff_chunks,
)

RATE = 8000
SECONDS = 4.0


def _stereo() -> npt.NDArray[np.int16]:
    t = np.arange(int(RATE * SECONDS)) / RATE
    left = 12000 * np.sin(2 * np.pi * 440 * t)
    right = 9000 * np.sin(2 * np.pi * 660 * t + 0.3)
    return np.stack([left, right], axis=1).round().astype(np.int16)


@pytest.fixture
def original() -> npt.NDArray[np.int16]:
    return _stereo()


@pytest.fixture
def source(tmp_path: Path, original: npt.NDArray[np.int16]) -> Path:
    """A recording as the project writes it, plus the metadata a copy must not keep."""
    path = tmp_path / "inbound_+15145550100_2026-12-03_0931.wav"
    with sf.SoundFile(path, "w", RATE, 2, subtype="PCM_16", format="WAV") as f:
        f.title = "call +15145550100"
        f.date = "2026-12-03T09:31:00"
        f.comment = "caller Jeanne Tremblay"
        f.write(original)
    assert b"LIST" in path.read_bytes()  # the source does carry an INFO list
    return path


def _read(wav: bytes) -> npt.NDArray[np.int16]:
    data, rate = sf.read(BytesIO(wav), dtype="int16", always_2d=True)
    assert rate == RATE
    assert sf.info(BytesIO(wav)).subtype == "PCM_16"
    out: npt.NDArray[np.int16] = data
    return out


def test_P5_left_range_zeroed_rest_untouched(source: Path, original: npt.NDArray[np.int16]) -> None:
    out = _read(deidentified_wav(source, [(1.0, 2.0)]))
    assert out.shape == original.shape
    assert not out[8000:16000, 0].any()
    np.testing.assert_array_equal(out[:8000, 0], original[:8000, 0])
    np.testing.assert_array_equal(out[16000:, 0], original[16000:, 0])
    np.testing.assert_array_equal(out[:, 1], original[:, 1])
    assert original[8000:16000, 0].any()  # there was something to mute


def test_P5_both_channels(source: Path, original: npt.NDArray[np.int16]) -> None:
    out = _read(deidentified_wav(source, [(1.0, 2.0), (3.5, 3.75)], channels="both"))
    expected = original.copy()
    expected[8000:16000] = 0
    expected[28000:30000] = 0
    np.testing.assert_array_equal(out, expected)


def test_P5_ranges_overlap_and_clamp(source: Path, original: npt.NDArray[np.int16]) -> None:
    out = _read(deidentified_wav(source, [(0.0, 0.5), (0.25, 1.0), (3.0, 99.0), (50.0, 60.0)]))
    expected = original.copy()
    expected[:8000, 0] = 0
    expected[24000:, 0] = 0
    np.testing.assert_array_equal(out, expected)


def test_P5_fractional_bounds_widen_to_whole_samples(
    source: Path, original: npt.NDArray[np.int16]
) -> None:
    # 1.00001 s is sample 8000.08 and 1.00019 s is 8001.52: samples 8000 and 8001 are muted.
    out = _read(deidentified_wav(source, [(1.00001, 1.00019)]))
    expected = original.copy()
    expected[8000:8002, 0] = 0
    np.testing.assert_array_equal(out, expected)


def test_P5_no_metadata_in_output(source: Path) -> None:
    wav = deidentified_wav(source, [(1.0, 2.0)])
    assert riff_chunks(wav) == [b"fmt ", b"data"]
    assert b"LIST" not in wav and b"INFO" not in wav
    for leak in (b"5550100", b"2026", b"Tremblay", b"ICRD", b"INAM"):
        assert leak not in wav
    assert deidentified_wav(source, []) == deidentified_wav(source, [])  # no clock inside


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        ([(2.0, 1.0)], "end must be after start"),
        ([(1.0, 1.0)], "end must be after start"),
        ([(-0.5, 1.0)], "start is negative"),
        ([(0.0, 1.0), (float("nan"), 2.0)], "mute range 2 .*finite"),
        ([(0.0, float("inf"))], "finite"),
    ],
)
def test_P5_bad_ranges_refused(
    source: Path, ranges: list[tuple[float, float]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        deidentified_wav(source, ranges)


def test_P5_mono_source_refused(tmp_path: Path) -> None:
    path = tmp_path / "mono.wav"
    sf.write(path, np.zeros(800, dtype=np.int16), RATE, subtype="PCM_16")
    with pytest.raises(ValueError, match="expected stereo"):
        deidentified_wav(path, [(0.0, 0.05)])


def test_P5_bad_channels_refused(source: Path) -> None:
    with pytest.raises(ValueError, match="channels must be"):
        deidentified_wav(source, [(0.0, 1.0)], channels="right")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0-15,62.5-70", [(0.0, 15.0), (62.5, 70.0)]),
        ("0:00-0:15,1:02-1:10", [(0.0, 15.0), (62.0, 70.0)]),
        (" 1:02.5 - 1:03 , 5-6 ", [(62.5, 63.0), (5.0, 6.0)]),
        ("1:00:00-1:00:30.25", [(3600.0, 3630.25)]),
        ("0:05-70", [(5.0, 70.0)]),
        (".5-1.", [(0.5, 1.0)]),
        ("10-20,15-25", [(10.0, 20.0), (15.0, 25.0)]),
    ],
)
def test_P5_parse_ranges(text: str, expected: list[tuple[float, float]]) -> None:
    assert parse_ranges(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no mute ranges given"),
        ("0-15,abc", "mute range 2 'abc'"),
        ("0-15,,20-30", "mute range 2 ''"),
        ("15", "mute range 1 '15'"),
        ("-5-3", "mute range 1 '-5-3'"),
        ("1:75-2:00", "mute range 1 '1:75-2:00'"),
        ("0-1-2", "mute range 1 '0-1-2'"),
        ("20-10", "mute range 1 '20-10': end must be after start"),
        ("1:10-1:02", "end must be after start"),
        ("5-5", "end must be after start"),
    ],
)
def test_P5_parse_ranges_errors_name_the_part(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_ranges(text)


def test_P5_parse_ranges_does_not_echo_long_input() -> None:
    with pytest.raises(ValueError) as caught:
        parse_ranges("x" * 500)
    assert "x" * 41 not in str(caught.value)


def test_P5_month_name() -> None:
    at = datetime(2026, 12, 3, 9, 31, 7, tzinfo=UTC)
    assert month_name(at, 7) == "training_2026-12_007.wav"
    assert month_name(datetime(2027, 1, 31, 23, 59), 0) == "training_2027-01_000.wav"
    assert month_name(at, 1234) == "training_2026-12_1234.wav"
    for bad in (-1, True):
        with pytest.raises(ValueError, match="non-negative integer"):
            month_name(at, bad)
