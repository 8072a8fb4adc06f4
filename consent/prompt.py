"""Recording notices: load once, convert to 8 kHz mono, encode to G.711, cut into 20 ms frames.

Resampling is a polyphase windowed-sinc filter (Kaiser window, 16 zero crossings
each side at the output rate's band edge) evaluated with numpy: for a rational
ratio L/M each output sample uses one of L precomputed phases, so a 22.05 or
44.1 kHz espeak/studio prompt becomes telephone audio without the aliasing that
linear interpolation lets through (a 6 kHz hiss folds onto 2 kHz otherwise).
It runs once per prompt file, not per call: `PromptCache` keeps the frames.
"""

from __future__ import annotations

import enum
import importlib
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from consent.g711 import PCMA_SILENCE, PCMU_SILENCE, alaw_encode, ulaw_encode

SAMPLE_RATE: Final = 8000
FRAME_SAMPLES: Final = 160  # 20 ms at 8 kHz, one byte per sample in G.711

FloatArray = npt.NDArray[np.float64]
Int16Array = npt.NDArray[np.int16]

_ZERO_CROSSINGS = 16
_KAISER_BETA = 8.6  # ~ -90 dB sidelobes, well below G.711's own noise floor
_PASSBAND = 0.92  # cutoff as a fraction of the lower Nyquist: 3.68 kHz at 8 kHz out
_CHUNK = 8192  # output samples per vectorised block, bounds memory to ~CHUNK x taps


class Codec(enum.StrEnum):
    """The two static G.711 payloads (RFC 3551) a notice can be sent in."""

    PCMU = "PCMU"
    PCMA = "PCMA"

    @property
    def payload_type(self) -> int:
        return 0 if self is Codec.PCMU else 8

    @property
    def silence(self) -> int:
        return PCMU_SILENCE if self is Codec.PCMU else PCMA_SILENCE


class PromptError(Exception):
    """The prompt file cannot be read or decoded; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """A notice ready to send: 160-byte payloads, the last one padded with codec silence."""

    codec: Codec
    frames: tuple[bytes, ...]

    @property
    def duration(self) -> float:
        return len(self.frames) * FRAME_SAMPLES / SAMPLE_RATE


def resample(samples: npt.ArrayLike, rate_in: int, rate_out: int = SAMPLE_RATE) -> FloatArray:
    """Resample 1-D float audio from `rate_in` to `rate_out` (polyphase windowed sinc).

    Output length is ceil(len * rate_out / rate_in); the output is aligned on the
    input (output sample n sits at input time n * rate_in / rate_out).
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError("resample expects mono (1-D) audio")
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError("sample rates must be positive")
    if rate_in == rate_out or x.size == 0:
        return x.copy()
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    # Cutoff in cycles per input sample; below both Nyquists.
    cutoff = 0.5 * _PASSBAND * min(1.0, up / down)
    half = math.ceil(_ZERO_CROSSINGS / (2.0 * cutoff))  # taps each side, in input samples
    taps = np.arange(-half + 1, half + 1)
    phases = np.arange(up) / up
    # distance from the output instant to each input tap, for each of the `up` phases
    dist = taps[None, :] - phases[:, None]
    kernel = 2.0 * cutoff * np.sinc(2.0 * cutoff * dist)
    ratio = np.clip(dist / half, -1.0, 1.0)
    kernel *= np.i0(_KAISER_BETA * np.sqrt(1.0 - ratio**2)) / np.i0(_KAISER_BETA)
    kernel /= kernel.sum(axis=1, keepdims=True)  # unity gain at DC in every phase

    n_out = -(-x.size * up // down)
    padded = np.concatenate([np.zeros(half), x, np.zeros(half + 1)])
    out = np.empty(n_out)
    for start in range(0, n_out, _CHUNK):
        n = np.arange(start, min(start + _CHUNK, n_out))
        base, phase = np.divmod(n * down, up)
        idx = base[:, None] + taps[None, :] + half
        out[start : start + n.size] = np.einsum("ij,ij->i", padded[idx], kernel[phase])
    return out


def to_int16(samples: npt.ArrayLike) -> Int16Array:
    """Float audio in [-1, 1) -> int16, clipped rather than wrapped."""
    x = np.asarray(samples, dtype=np.float64)
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


def _read_soundfile(path: Path) -> tuple[FloatArray, int] | None:
    import soundfile  # libsndfile: WAV, FLAC, OGG natively

    try:
        data, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    except soundfile.LibsndfileError:
        return None
    return np.asarray(data, dtype=np.float64), int(rate)


def _read_pydub(path: Path) -> tuple[FloatArray, int]:
    if shutil.which("ffmpeg") is None and shutil.which("avconv") is None:
        raise PromptError(
            f"{path}: not a format libsndfile reads (WAV, FLAC, OGG); other formats need "
            "ffmpeg and pydub, and ffmpeg is not installed: convert the prompt to WAV "
            "or install ffmpeg"
        )
    try:
        pydub: Any = importlib.import_module("pydub")
    except ImportError as exc:
        raise PromptError(
            f"{path}: not a format libsndfile reads; other formats need the pydub package "
            "(pip install pydub): convert the prompt to WAV or install pydub"
        ) from exc
    try:
        segment = pydub.AudioSegment.from_file(str(path))
    except Exception as exc:  # pydub raises bare CouldntDecodeError/OSError subclasses
        raise PromptError(f"{path}: ffmpeg could not decode it: {exc}") from exc
    segment = segment.set_sample_width(2)  # 8/24/32-bit sources become int16 here
    raw = np.frombuffer(segment.raw_data, dtype="<i2")
    data = raw.astype(np.float64).reshape(-1, int(segment.channels)) / 32768.0
    return data, int(segment.frame_rate)


def load_prompt(path: str | os.PathLike[str]) -> Int16Array:
    """Read a prompt file and return it as 8 kHz mono int16 (channels averaged)."""
    p = Path(path)
    if not p.is_file():
        raise PromptError(f"{p}: prompt file not found")
    read = _read_soundfile(p)
    data, rate = read if read is not None else _read_pydub(p)
    if data.shape[0] == 0:
        raise PromptError(f"{p}: prompt has no audio")
    mono = data.mean(axis=1)
    return to_int16(resample(mono, rate, SAMPLE_RATE))


def encode_frames(pcm: Int16Array, codec: Codec) -> tuple[bytes, ...]:
    """Encode 8 kHz int16 audio and cut it into 160-byte payloads (last one padded)."""
    codes = ulaw_encode(pcm) if codec is Codec.PCMU else alaw_encode(pcm)
    pad = -codes.size % FRAME_SAMPLES
    if pad:
        codes = np.concatenate([codes, np.full(pad, codec.silence, dtype=np.uint8)])
    blob = codes.tobytes()
    return tuple(blob[i : i + FRAME_SAMPLES] for i in range(0, len(blob), FRAME_SAMPLES))


class PromptCache:
    """Encoded prompts keyed by (path, mtime, codec): a changed file is re-read, nothing else.

    The decoded 8 kHz audio is kept per (path, mtime) too, so a PCMA call after a
    PCMU call does not read and resample the file again. Entries of an older mtime
    of the same path are dropped when the file changes.
    """

    def __init__(self) -> None:
        self._pcm: dict[tuple[str, int], Int16Array] = {}
        self._prompts: dict[tuple[str, int, Codec], Prompt] = {}
        self.loads = 0  # files actually read: lets tests and stats see cache hits

    def get(self, path: str | os.PathLike[str], codec: Codec | str) -> Prompt:
        codec = Codec(codec)
        resolved = str(Path(path).resolve())
        try:
            mtime = os.stat(resolved).st_mtime_ns
        except OSError as exc:
            raise PromptError(f"{path}: prompt file not found") from exc
        key = (resolved, mtime, codec)
        prompt = self._prompts.get(key)
        if prompt is not None:
            return prompt
        pcm = self._pcm.get((resolved, mtime))
        if pcm is None:
            pcm = load_prompt(resolved)
            self.loads += 1
            self._forget_other_versions(resolved, mtime)
            self._pcm[(resolved, mtime)] = pcm
        prompt = Prompt(codec=codec, frames=encode_frames(pcm, codec))
        self._prompts[key] = prompt
        return prompt

    def _forget_other_versions(self, path: str, mtime: int) -> None:
        for pcm_key in [k for k in self._pcm if k[0] == path and k[1] != mtime]:
            del self._pcm[pcm_key]
        for key in [k for k in self._prompts if k[0] == path and k[1] != mtime]:
            del self._prompts[key]
