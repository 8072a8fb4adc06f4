"""Voice refusal (C4): spot the policy's refusal phrases in the caller's 8 kHz audio.

pocketsphinx's PyPI wheel ships a 16 kHz US-English acoustic model only, so the
telephone audio is upsampled 8 -> 16 kHz first (`Upsampler8to16`), with a low-pass
filter that removes the spectral image zero-stuffing creates between 4 and 8 kHz:
left in, the image looks like energetic fricatives to a 16 kHz model.

The spotter runs pocketsphinx in keyword-spotting mode, one decoder per call,
streaming (one `feed` per RTP packet). pocketsphinx is imported lazily: a host
without it (or without the model) gets `VoiceUnavailable` at construction, which the
service logs loudly while key refusal keeps working (voice is never the only way).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from consent.events import VoiceRefusal

Int16Array = npt.NDArray[np.int16]
Float64Array = npt.NDArray[np.float64]

# Default phrases and thresholds (pocketsphinx keyword-spotting thresholds: lower is
# more sensitive). Chosen with bench/bench_voice.py on synthetic speech through G.711:
# "stop recording" never fired on other English talk down to 1e-50, so 1e-30 keeps two
# decades of margin; "do not record" fired on other talk from 1e-30 on, hence 1e-20.
DEFAULT_PHRASES: Final[Mapping[str, float]] = {
    "stop recording": 1e-30,
    "do not record": 1e-20,
}

# Initial cepstral mean for the live CMN. The model's default (40,3,-1) is far from
# what telephone-band speech looks like once upsampled, so a fresh decoder (every call
# starts one) missed most phrases in the first seconds until the mean adapted.
# Measured by bench/bench_voice.py: the mean after decoding read English
# (pocketsphinx-testdata's librivox clips) through G.711 and this upsampler.
TELEPHONE_CMNINIT: Final = (
    "47.35,25.64,-29.74,45.10,-31.56,10.57,-4.09,-16.59,13.90,-14.81,9.72,-4.51,-1.88"
)

# The decoder's input: 16 kHz, 16-bit mono.
MODEL_RATE: Final = 16000
_FRAMES_PER_SECOND: Final = 100


class VoiceUnavailable(RuntimeError):
    """Voice refusal cannot run here (no pocketsphinx, no model, unspottable phrase)."""


def _lowpass_taps(taps: int, cutoff_hz: float, rate_hz: float, beta: float) -> Float64Array:
    """Kaiser-windowed sinc, unit DC gain."""
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(2 * cutoff_hz / rate_hz * n) * np.kaiser(taps, beta)
    result: Float64Array = h / h.sum()
    return result


class Upsampler8to16:
    """8 kHz -> 16 kHz int16, streaming: chunked output equals one-shot output.

    Polyphase form of zero-stuffing followed by a 64-tap low-pass FIR at 16 kHz:
    the even and odd output samples are each one convolution of the input with
    half of the taps, so no zero is ever multiplied. Telephone speech stops at
    3.4 kHz, whose image lands at 4.6 kHz: cutoff 4 kHz, Kaiser beta 8 gives
    a flat passband to 3.4 kHz and > 60 dB image rejection from 4.6 kHz. The
    group delay is 31.5 samples at 16 kHz (2 ms).
    """

    TAPS: Final = 64

    def __init__(self) -> None:
        # x2: zero-stuffing halves the amplitude; each phase sums half of a unit-gain filter.
        h = 2.0 * _lowpass_taps(self.TAPS, 4000.0, 16000.0, 8.0)
        self._even = h[0::2]
        self._odd = h[1::2]
        self._history = np.zeros(self.TAPS // 2 - 1, dtype=np.float64)

    def process(self, pcm8k: Int16Array) -> Int16Array:
        if len(pcm8k) == 0:
            # np.convolve's "valid" swaps its operands when the signal is the shorter.
            return np.zeros(0, dtype=np.int16)
        x = np.concatenate((self._history, np.asarray(pcm8k, dtype=np.float64)))
        self._history = x[x.size - self._history.size :]
        out = np.empty(2 * (x.size - self._history.size), dtype=np.float64)
        out[0::2] = np.convolve(x, self._even, mode="valid")
        out[1::2] = np.convolve(x, self._odd, mode="valid")
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)

    def reset(self) -> None:
        self._history[:] = 0.0


def _import_pocketsphinx() -> Any:
    # import_module: pocketsphinx ships no type information, so its API is Any here.
    try:
        return importlib.import_module("pocketsphinx")
    except ImportError as exc:
        raise VoiceUnavailable(
            "voice refusal needs the Python package 'pocketsphinx' (pip install pocketsphinx), "
            f"which is not installed: {exc}"
        ) from exc


def _model_files(pocketsphinx: Any, model_dir: str | None) -> tuple[Path, Path]:
    """(acoustic model directory, pronunciation dictionary) or VoiceUnavailable naming the gap.

    A model directory is laid out like the wheel's: an acoustic model directory (the
    one holding `mdef`) and a `*.dict` file, at most two levels down.
    """
    root = Path(model_dir) if model_dir is not None else Path(pocketsphinx.get_model_path("en-us"))
    if not root.is_dir():
        raise VoiceUnavailable(f"speech model directory {root} does not exist")
    levels = ("", "*/", "*/*/")
    acoustic = [p.parent for level in levels for p in sorted(root.glob(f"{level}mdef"))]
    dictionaries = [p for level in levels for p in sorted(root.glob(f"{level}*.dict"))]
    missing = []
    if not acoustic:
        missing.append("an acoustic model (a directory with 'mdef')")
    if not dictionaries:
        missing.append("a pronunciation dictionary ('*.dict')")
    if missing:
        raise VoiceUnavailable(f"speech model directory {root} lacks {' and '.join(missing)}")
    return acoustic[0], dictionaries[0]


def _normalise(phrase: str) -> str:
    return " ".join(phrase.lower().split())


class VoiceRefusalSpotter:
    """Keyword spotter for one caller: feed 8 kHz audio, get `VoiceRefusal` events.

    `phrases` maps each refusal phrase to its threshold (the policy's
    `consent.voice.phrases`); each occurrence of a phrase is reported once. About 23 MB
    and 2.5% of a core per listening caller; `close()` frees the decoder.
    """

    def __init__(
        self,
        phrases: Mapping[str, float],
        *,
        model_dir: str | None = None,
        cmninit: str | None = None,
    ) -> None:
        if not phrases:
            raise ValueError("no refusal phrase to spot")
        self._phrases = {_normalise(p): float(t) for p, t in phrases.items()}
        for phrase, threshold in self._phrases.items():
            if not re.fullmatch(r"[a-z' -]+", phrase):
                # pocketsphinx's keyword file has no quoting: '/' or digits would corrupt it.
                raise ValueError(f"refusal phrase {phrase!r}: letters, apostrophes, spaces only")
            if not 0.0 < threshold < 1.0:
                raise ValueError(f"refusal phrase {phrase!r}: threshold must be within (0, 1)")
        pocketsphinx = _import_pocketsphinx()
        hmm, dictionary = _model_files(pocketsphinx, model_dir)
        self._upsampler = Upsampler8to16()
        self._decoder: Any = None
        fd, name = tempfile.mkstemp(prefix="recorder-kws-", suffix=".txt")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as kws:
                for phrase, threshold in self._phrases.items():
                    kws.write(f"{phrase} /{threshold:.6g}/\n")
            config = pocketsphinx.Config(
                hmm=str(hmm),
                dict=str(dictionary),
                lm=None,
                kws=name,
                cmninit=cmninit if cmninit is not None else TELEPHONE_CMNINIT,
                loglevel="FATAL",
            )
            decoder = pocketsphinx.Decoder(config)
            unknown = sorted(
                {w for p in self._phrases for w in p.split() if decoder.lookup_word(w) is None}
            )
            if unknown:
                raise VoiceUnavailable(
                    f"refusal phrase word(s) {', '.join(unknown)} not in the speech model's "
                    f"dictionary {dictionary}"
                )
        except RuntimeError as exc:
            if isinstance(exc, VoiceUnavailable):
                raise
            raise VoiceUnavailable(f"pocketsphinx could not load the model {hmm}: {exc}") from exc
        finally:
            # The decoder has read the keyword file: nothing to leave behind in /tmp.
            with contextlib.suppress(OSError):
                os.unlink(name)
        decoder.start_utt()
        self._decoder = decoder

    @property
    def phrases(self) -> Mapping[str, float]:
        return dict(self._phrases)

    def feed(self, pcm8k: Int16Array, now: float) -> list[VoiceRefusal]:
        """Decode one chunk (any length, typically a 20 ms packet); phrases heard, at `now`."""
        if self._decoder is None:
            raise RuntimeError("spotter is closed")
        pcm16k = self._upsampler.process(pcm8k)
        if pcm16k.size == 0:
            return []
        self._decoder.process_raw(pcm16k.tobytes(), False, False)
        hyp = self._decoder.hyp()
        if hyp is None:
            return []
        found = [seg.word for seg in self._decoder.seg()]
        # Restarting the utterance forgets the search state, so the same occurrence
        # cannot be reported again from the next packets; CMN carries over.
        self._decoder.end_utt()
        self._decoder.start_utt()
        events: list[VoiceRefusal] = []
        for word in found or [hyp.hypstr]:
            phrase = _normalise(word)
            if phrase in self._phrases and all(e.phrase != phrase for e in events):
                events.append(VoiceRefusal(phrase=phrase, at=now))
        return events

    def close(self) -> None:
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            with contextlib.suppress(RuntimeError):
                decoder.end_utt()

    def __enter__(self) -> VoiceRefusalSpotter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
