"""Header repair of `.part` files as libsndfile leaves them before closing."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from recorder.recording.repair import parse_layout, repair_all, repair_part


def unclosed_part(path: Path, subtype: str, frames: int) -> np.ndarray:
    """Write like the writer does, then leave the file as a SIGKILL would: never closed."""
    rng = np.random.default_rng(frames)
    audio = rng.integers(-8000, 8000, (frames, 2)).astype(np.int16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    handle = sf.SoundFile(fd, "w", 8000, 2, subtype, format="WAV", closefd=False)
    handle.write(audio)
    os.close(fd)  # the SoundFile object is abandoned, as in a dead process
    return audio


@pytest.mark.parametrize("subtype", ["PCM_16", "ULAW", "ALAW"])
def test_repair_sizes_header_and_fact_to_the_data_present(tmp_path: Path, subtype: str) -> None:
    part = tmp_path / "a.wav.part"
    audio = unclosed_part(part, subtype, 12345)
    with open(part, "ab") as f:
        f.write(b"\x07")  # half a frame
    repaired = repair_part(part)
    assert repaired.path == tmp_path / "a.wav"
    assert repaired.frames == 12345 and repaired.duration_s == pytest.approx(12345 / 8000)
    assert repaired.format == {"PCM_16": "pcm16", "ULAW": "ulaw", "ALAW": "alaw"}[subtype]
    data = repaired.path.read_bytes()
    layout = parse_layout(data[:4096])
    assert struct.unpack_from("<I", data, 4) == (len(data) - 8,)
    assert struct.unpack_from("<I", data, layout.data_offset - 4) == (12345 * layout.block_align,)
    if layout.fact_offset is not None:
        assert struct.unpack_from("<I", data, layout.fact_offset) == (12345,)
    back, _ = sf.read(repaired.path, dtype="int16")
    assert back.shape == (12345, 2)
    if subtype == "PCM_16":
        np.testing.assert_array_equal(back, audio)
    assert oct(repaired.path.stat().st_mode & 0o777) == oct(0o640)


def test_part_killed_before_its_header_becomes_an_empty_wav(tmp_path: Path) -> None:
    part = tmp_path / "b.wav.part"
    part.write_bytes(b"RIFF\x00")
    repaired = repair_part(part)
    assert repaired.frames == 0
    assert sf.info(str(repaired.path)).frames == 0


def test_repair_all_reports_what_it_cannot_fix_and_leaves_it(tmp_path: Path) -> None:
    day = tmp_path / "2026" / "11" / "23"
    day.mkdir(parents=True)
    unclosed_part(day / "good.wav.part", "PCM_16", 800)
    (day / "good.wav").write_bytes(b"an older recording of the same name")
    (day / "junk.wav.part").write_bytes(b"x" * 1000)
    report = repair_all(tmp_path)
    assert [r.path.name for r in report.repaired] == ["good-2.wav"]
    assert (day / "good.wav").read_bytes() == b"an older recording of the same name"
    [(path, reason)] = report.errors
    assert path == day / "junk.wav.part" and "RIFF" in reason
    assert path.exists()
