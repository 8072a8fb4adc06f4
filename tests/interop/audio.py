"""Test audio for interop tests: spoken prompts and a "did this audio get through" metric.

Prompts are made with espeak-ng and sox (8 kHz mono 16-bit, what G.711 carries).
``peak_xcorr`` answers "does the received WAV contain the sent one?" whatever the
offset (call setup, jitter buffers) and whatever the lengths (padding, lost head).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import wave
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000
_TOOL_TIMEOUT = 30.0

FloatArray = npt.NDArray[np.float64]


def _run(cmd: list[str]) -> None:
    if shutil.which(cmd[0]) is None:
        raise FileNotFoundError(f"{cmd[0]} is not installed (scripts/install-test-deps.sh)")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_TOOL_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")


def make_prompt(text: str, out: Path, voice: str = "en", speed: int = 150) -> Path:
    """Speak ``text`` into ``out`` as an 8 kHz mono 16-bit WAV."""
    raw = out.with_name(out.stem + ".raw.wav")
    _run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text])
    try:
        to_8k_mono(raw, out)
    finally:
        raw.unlink(missing_ok=True)
    return out


def to_8k_mono(src: Path, out: Path) -> Path:
    _run(
        [
            "sox",
            str(src),
            "-r",
            str(SAMPLE_RATE),
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            str(out),
        ]
    )
    return out


def pad(src: Path, out: Path, before: float = 0.5, after: float = 1.0) -> Path:
    """Silence around a prompt: baresip hangs up when its aufile source ends."""
    _run(["sox", str(src), str(out), "pad", f"{before:g}", f"{after:g}"])
    return out


def silence(out: Path, seconds: float) -> Path:
    _run(
        [
            "sox",
            "-n",
            "-r",
            str(SAMPLE_RATE),
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            str(out),
            "trim",
            "0",
            f"{seconds:g}",
        ]
    )
    return out


def tone(out: Path, seconds: float, freq: float = 440.0, gain_db: float = -6.0) -> Path:
    _run(
        [
            "sox",
            "-n",
            "-r",
            str(SAMPLE_RATE),
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            str(out),
            "synth",
            f"{seconds:g}",
            "sine",
            f"{freq:g}",
            "gain",
            f"{gain_db:g}",
        ]
    )
    return out


@cache
def make_pcap_module() -> ModuleType:
    """scripts/make_pcap.py (a script, not a package): G.711 codecs and the pcap writer."""
    path = Path(__file__).resolve().parents[2] / "scripts" / "make_pcap.py"
    spec = importlib.util.spec_from_file_location("make_pcap", path)
    if spec is None or spec.loader is None:
        raise ImportError(path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wav_to_pcap(wav: Path, out: Path, codec: str = "pcmu") -> Path:
    """An RTP pcap of ``wav`` for sipp's play_pcap_audio (PT 0 or 8, 20 ms packets)."""
    make_pcap_module().wav_to_pcap(wav, out, codec)
    return out


def read_wav(path: Path, channel: int | None = None) -> tuple[int, FloatArray]:
    """(sample rate, samples in [-1, 1]); stereo is averaged unless ``channel`` is given."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM is supported")
        rate, nch = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    frames = data.reshape(-1, nch) / 32768.0
    if channel is not None:
        return rate, frames[:, channel].copy()
    return rate, frames.mean(axis=1)


def wav_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def rms_dbfs(samples: FloatArray) -> float:
    if len(samples) == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(samples**2)))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


@dataclass(frozen=True, slots=True)
class Correlation:
    peak: float  # normalized cross-correlation at the best lag, in [-1, 1]
    lag_s: float  # how much later the reference starts in the received signal
    overlap_s: float  # length compared at that lag


def peak_xcorr(
    reference: FloatArray | Path,
    received: FloatArray | Path,
    rate: int = SAMPLE_RATE,
    min_overlap_s: float = 1.0,
) -> Correlation:
    """Peak normalized cross-correlation of two signals over every lag.

    At each lag the numerator is the dot product of the overlapping parts and the
    denominator the product of *their* norms (not the whole signals' norms), so a
    prompt embedded in a longer recording, or a recording that lost its first
    100 ms, still scores ~1. Lags whose overlap is shorter than ``min_overlap_s``
    (or than the shorter signal, if that is less) are ignored: tiny overlaps match
    anything. Both signals are mean-removed.
    """
    a = _as_signal(reference, rate)
    b = _as_signal(received, rate)
    if len(a) == 0 or len(b) == 0:
        return Correlation(0.0, 0.0, 0.0)
    a = a - a.mean()
    b = b - b.mean()
    na, nb = len(a), len(b)
    n = 1 << int(np.ceil(np.log2(na + nb - 1)))
    # full[k + na - 1] = sum_i a[i] * b[i + k], for k in [-(na-1), nb-1]
    full = np.fft.irfft(np.conj(np.fft.rfft(a, n)) * np.fft.rfft(b, n), n)
    num = np.concatenate([full[n - (na - 1) :], full[:nb]]) if na > 1 else full[:nb]
    k = np.arange(-(na - 1), nb)
    # overlap: a[i] for i in [max(0, -k), min(na, nb - k)), b[j] with j = i + k
    a_lo = np.maximum(0, -k)
    a_hi = np.minimum(na, nb - k)
    ca = np.concatenate([[0.0], np.cumsum(a * a)])
    cb = np.concatenate([[0.0], np.cumsum(b * b)])
    ea = ca[a_hi] - ca[a_lo]
    eb = cb[a_hi + k] - cb[a_lo + k]
    overlap = a_hi - a_lo
    need = min(int(min_overlap_s * rate), na, nb)
    denom = np.sqrt(ea * eb)
    # Near-silent overlaps (e.g. only padding) would divide noise by noise.
    floor = 1e-6 * np.sqrt(ca[-1] * cb[-1])
    valid = (overlap >= need) & (denom > floor)
    if not valid.any():
        return Correlation(0.0, 0.0, 0.0)
    score = np.where(valid, num / np.where(valid, denom, 1.0), -np.inf)
    best = int(np.argmax(score))
    peak = float(np.clip(score[best], -1.0, 1.0))
    return Correlation(peak, float(k[best]) / rate, float(overlap[best]) / rate)


def _as_signal(x: FloatArray | Path, rate: int) -> FloatArray:
    if isinstance(x, Path):
        r, samples = read_wav(x)
        if r != rate:
            raise ValueError(f"{x}: {r} Hz, expected {rate} Hz")
        return samples
    return np.asarray(x, dtype=np.float64)


def trim_silence(samples: FloatArray, threshold_dbfs: float = -45.0) -> FloatArray:
    """Drop leading/trailing samples quieter than the threshold (20 ms frames)."""
    frame = SAMPLE_RATE // 50
    nframes = len(samples) // frame
    if nframes == 0:
        return samples
    frames = samples[: nframes * frame].reshape(nframes, frame)
    energy = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-20)
    loud = np.nonzero(energy > threshold_dbfs)[0]
    if len(loud) == 0:
        return samples[:0]
    return samples[loud[0] * frame : (loud[-1] + 1) * frame]
