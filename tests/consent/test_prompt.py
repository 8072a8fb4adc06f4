from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile

from consent.g711 import alaw_decode, ulaw_decode
from consent.prompt import (
    FRAME_SAMPLES,
    Codec,
    PromptCache,
    PromptError,
    encode_frames,
    load_prompt,
    resample,
)


def _level_db(x: np.ndarray, skip: int = 300) -> float:
    core = x[skip:-skip]
    return float(10 * np.log10(2 * np.mean(core**2)))


@pytest.mark.parametrize("rate", [44100, 22050, 16000, 48000, 11025])
def test_resample_keeps_the_telephone_band(rate: int) -> None:
    t = np.arange(rate) / rate
    for freq in (300.0, 1000.0, 3000.0):
        y = resample(np.sin(2 * np.pi * freq * t), rate)
        assert y.size == 8000
        assert abs(_level_db(y)) < 0.1  # flat passband
        spectrum = np.abs(np.fft.rfft(y[:8000]))
        assert abs(int(np.argmax(spectrum)) - freq) <= 1  # 1 Hz bins


@pytest.mark.parametrize("rate", [44100, 22050, 16000])
def test_resample_removes_what_would_alias(rate: int) -> None:
    t = np.arange(rate) / rate
    y = resample(np.sin(2 * np.pi * 6000.0 * t), rate)
    assert _level_db(y) < -60  # linear interpolation would fold this onto 2 kHz


def test_resample_upsamples_and_passes_through() -> None:
    x = np.sin(2 * np.pi * 500 * np.arange(4000) / 4000)
    y = resample(x, 4000)
    assert y.size == 8000
    assert np.allclose(
        y[400:-400], np.sin(2 * np.pi * 500 * np.arange(8000) / 8000)[400:-400], atol=1e-3
    )
    same = np.arange(10.0)
    assert (resample(same, 8000) == same).all()
    with pytest.raises(ValueError):
        resample(np.zeros((2, 10)), 16000)


def test_load_prompt_averages_channels_and_resamples(tmp_path: Path) -> None:
    rate = 16000
    t = np.arange(rate // 2) / rate
    left = 0.5 * np.sin(2 * np.pi * 1000 * t)
    stereo = np.stack([left, left], axis=1)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, stereo, rate, subtype="FLOAT")
    pcm = load_prompt(path)
    assert pcm.dtype == np.int16
    assert pcm.size == 4000
    assert abs(np.max(np.abs(pcm[100:-100])) - 16384) < 200


def test_unknown_format_without_ffmpeg_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notice.mp3"
    path.write_bytes(b"ID3 certainly not audio" * 10)
    monkeypatch.setattr("consent.prompt.shutil.which", lambda name: None)
    with pytest.raises(PromptError, match="ffmpeg is not installed"):
        load_prompt(path)


def test_unknown_format_without_pydub_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notice.mp3"
    path.write_bytes(b"ID3 certainly not audio" * 10)
    monkeypatch.setattr("consent.prompt.shutil.which", lambda name: "/usr/bin/" + name)
    monkeypatch.setitem(sys.modules, "pydub", None)  # makes `import pydub` fail
    with pytest.raises(PromptError, match="pydub"):
        load_prompt(path)


class _FakeSegment:
    """What pydub.AudioSegment.from_file gives: interleaved little-endian PCM."""

    def __init__(self, pcm: np.ndarray, rate: int, channels: int) -> None:
        self.raw_data = pcm.astype("<i2").tobytes()
        self.frame_rate = rate
        self.channels = channels
        self.widths: list[int] = []

    def set_sample_width(self, width: int) -> _FakeSegment:
        self.widths.append(width)
        return self


def test_other_formats_go_through_pydub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notice.mp3"
    path.write_bytes(b"ID3 not for libsndfile" * 10)
    t = np.arange(16000) / 16000
    left = np.rint(8000 * np.sin(2 * np.pi * 500 * t))
    segment = _FakeSegment(np.stack([left, -left], axis=1), 16000, 2)
    fake = types.SimpleNamespace(AudioSegment=types.SimpleNamespace(from_file=lambda name: segment))
    monkeypatch.setattr("consent.prompt.shutil.which", lambda name: "/usr/bin/" + name)
    monkeypatch.setitem(sys.modules, "pydub", fake)
    pcm = load_prompt(path)
    assert segment.widths == [2]
    assert pcm.size == 8000
    assert np.max(np.abs(pcm)) <= 2  # opposite channels cancel: they were averaged
    segment_mono = _FakeSegment(left, 16000, 1)
    monkeypatch.setitem(
        sys.modules,
        "pydub",
        types.SimpleNamespace(AudioSegment=types.SimpleNamespace(from_file=lambda n: segment_mono)),
    )
    mono = load_prompt(path)
    assert abs(int(np.max(np.abs(mono[100:-100]))) - 8000) < 100


def test_missing_prompt_is_a_prompt_error(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="not found"):
        load_prompt(tmp_path / "nope.wav")
    with pytest.raises(PromptError, match="not found"):
        PromptCache().get(tmp_path / "nope.wav", "PCMU")


@pytest.mark.parametrize("codec", [Codec.PCMU, Codec.PCMA])
def test_encode_frames_pads_the_last_frame_with_silence(codec: Codec) -> None:
    pcm = np.rint(8000 * np.sin(np.arange(400) / 5)).astype(np.int16)
    frames = encode_frames(pcm, codec)
    assert len(frames) == 3
    assert all(len(f) == FRAME_SAMPLES for f in frames)
    assert frames[-1][80:] == bytes([codec.silence]) * 80
    decode = ulaw_decode if codec is Codec.PCMU else alaw_decode
    back = decode(b"".join(frames))[:400].astype(np.int64)
    assert np.max(np.abs(back - pcm)) <= 0.032 * 8000 + 8
    assert codec.payload_type == (0 if codec is Codec.PCMU else 8)


def test_cache_reencodes_only_on_change(tmp_path: Path) -> None:
    path = tmp_path / "notice.wav"
    soundfile.write(path, np.full(800, 0.25), 8000, subtype="PCM_16")
    cache = PromptCache()
    first = cache.get(path, "PCMU")
    assert cache.get(str(path), Codec.PCMU) is first
    alaw = cache.get(path, Codec.PCMA)
    assert alaw.codec is Codec.PCMA and alaw.frames != first.frames
    assert cache.loads == 1  # PCMA reused the decoded audio
    assert first.duration == pytest.approx(0.1)

    soundfile.write(path, np.full(1600, -0.25), 8000, subtype="PCM_16")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = cache.get(path, "PCMU")
    assert second is not first
    assert len(second.frames) == 10
    assert cache.loads == 2
    assert cache.get(path, "PCMU") is second
