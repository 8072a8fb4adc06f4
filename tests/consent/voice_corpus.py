"""Synthetic telephone speech for the voice-refusal spotter: refusal phrases and other talk.

Speech comes from Debian's flite voices (slt, rms, awb, kal16: recognised far better
by pocketsphinx's model than espeak-ng's) at several speeds, plus a few espeak-ng
voices, resampled to 8 kHz by sox and passed through G.711 (PCMU and PCMA
alternately). Each clip gets a little background noise and silence around it, as a
caller's leg has, never digital zero. Generated audio is cached under
tests/consent/.cache/ (git-ignored), keyed by a hash of what made it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pytest
import soundfile

from tests.consent.speech import CACHE, ENGLISH, SAMPLE_RATE, speak, through_g711

Int16Array = npt.NDArray[np.int16]

REFUSAL_PHRASES: Final = ("stop recording", "do not record")

# Sentences that carry each phrase; {p} is the phrase.
CARRIERS: Final = (
    "{P}.",
    "No, {p} this call.",
    "Please {p}, thank you.",
    "I want you to {p} right now.",
)

# Ordinary talk with words close to the phrases, to tempt the spotter.
NEAR_MISSES: Final = (
    "The recording studio on the third floor is closed for renovations until May.",
    "Please do not hang up, an agent will be with you shortly.",
    "I need to stop by the store on my way home to get some milk.",
    "Do you record the serial number when the parcel arrives?",
    "We set a new sales record last quarter, which nobody expected.",
    "Do not forget to bring your passport and two pieces of identification.",
    "The bus stop is right across the street from the library.",
    "Could you note that the meter reading was recorded on Monday?",
)


@dataclass(frozen=True, slots=True)
class Voice:
    engine: str  # "flite" or "espeak-ng"
    name: str
    rate: float  # flite: duration stretch (>1 slower); espeak-ng: words per minute
    pitch: int = 50  # espeak-ng only

    @property
    def label(self) -> str:
        return f"{self.engine}:{self.name}@{self.rate:g}"


FLITE_VOICES: Final = tuple(
    Voice("flite", name, stretch)
    for name in ("slt", "rms", "awb", "kal16")
    for stretch in (0.85, 1.0, 1.2)
)
ESPEAK_VOICES: Final = (
    Voice("espeak-ng", "en-us", 160, 50),
    Voice("espeak-ng", "en+f3", 175, 70),
    Voice("espeak-ng", "en-gb+m3", 140, 40),
    Voice("espeak-ng", "en-us+f2", 190, 60),
    Voice("espeak-ng", "en-us+m3", 150, 50),
)
VOICES: Final = FLITE_VOICES + ESPEAK_VOICES


@dataclass(frozen=True, slots=True)
class Clip:
    label: str
    phrase: str | None  # the refusal phrase spoken, None for other talk
    pcm: Int16Array  # 8 kHz, through G.711, with lead-in and tail
    speech_end: float  # seconds from the start of `pcm` to the end of the speech


LEAD_IN: Final = 0.5
TAIL: Final = 1.0


def require_tools() -> None:
    missing = [t for t in ("flite", "espeak-ng", "sox") if shutil.which(t) is None]
    if not missing:
        return
    reason = f"{', '.join(missing)} not installed (apt-get install flite espeak-ng sox)"
    if os.environ.get("CI"):
        pytest.fail(f"voice refusal tests need speech: {reason}")
    pytest.skip(reason)


def _flite(text: str, voice: str, stretch: float) -> Int16Array:
    CACHE.mkdir(exist_ok=True)
    tag = hashlib.sha256(f"flite|{voice}|{stretch}|{text}".encode()).hexdigest()[:16]
    out = CACHE / f"flite-{tag}.wav"
    if not out.exists():
        raw = CACHE / f"flite-{tag}.raw.wav"
        tmp = CACHE / f"flite-{tag}.tmp.wav"
        subprocess.run(
            [
                "flite",
                "-voice",
                voice,
                "--setf",
                f"duration_stretch={stretch}",
                "-t",
                text,
                "-o",
                str(raw),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        subprocess.run(
            [
                "sox",
                str(raw),
                "-r",
                str(SAMPLE_RATE),
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed-integer",
                str(tmp),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        raw.unlink()
        tmp.replace(out)  # atomic: an interrupted run never leaves a truncated cache file
    data, rate = soundfile.read(str(out), dtype="int16")
    assert rate == SAMPLE_RATE
    return np.asarray(data, dtype=np.int16)


def synthesise(text: str, voice: Voice) -> Int16Array:
    """Clean 8 kHz speech, leading and trailing silence trimmed."""
    if voice.engine == "flite":
        pcm = _flite(text, voice.name, voice.rate)
    else:
        pcm = speak(text, voice.name, int(voice.rate), voice.pitch)
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 300)
    return pcm if loud.size == 0 else pcm[loud[0] : loud[-1] + 1]


def telephone(speech: Int16Array, codec: str, seed: int) -> Int16Array:
    """Lead-in, speech, tail, over low background noise, through G.711."""
    rng = np.random.default_rng(seed)
    pad_in, pad_out = int(LEAD_IN * SAMPLE_RATE), int(TAIL * SAMPLE_RATE)
    signal = np.concatenate(
        (np.zeros(pad_in), speech.astype(np.float64), np.zeros(pad_out))
    ) + rng.normal(0.0, 20.0, pad_in + speech.size + pad_out)
    return through_g711(np.clip(np.rint(signal), -32768, 32767).astype(np.int16), codec)


def sentences() -> list[str]:
    """The talk-off corpus's English paragraphs, one sentence each, plus the near misses."""
    split = [s.strip() for text in ENGLISH for s in re.split(r"(?<=[.?!;])\s+", text)]
    return [s for s in split if len(s.split()) >= 4] + list(NEAR_MISSES)


def _clip(text: str, voice: Voice, phrase: str | None, n: int) -> Clip:
    speech = synthesise(text, voice)
    pcm = telephone(speech, "PCMU" if n % 2 == 0 else "PCMA", seed=n)
    return Clip(f"{voice.label}: {text}", phrase, pcm, LEAD_IN + speech.size / SAMPLE_RATE)


def refusal_clips(voices: tuple[Voice, ...] = VOICES) -> list[Clip]:
    """Every phrase in every carrier by every voice."""
    clips: list[Clip] = []
    for phrase in REFUSAL_PHRASES:
        for carrier in CARRIERS:
            text = carrier.format(p=phrase, P=phrase.capitalize())
            clips.extend(_clip(text, v, phrase, len(clips)) for v in voices)
    return clips


def other_clips(voices_per_sentence: int = 4) -> list[Clip]:
    """Ordinary English sentences, each by several voices, rotating through all voices."""
    clips: list[Clip] = []
    for i, text in enumerate(sentences()):
        for k in range(voices_per_sentence):
            voice = VOICES[(i * voices_per_sentence + k) % len(VOICES)]
            clips.append(_clip(text, voice, None, len(clips)))
    return clips
