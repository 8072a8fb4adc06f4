from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile

from consent.events import DigitDetected
from consent.inband import COLUMNS, KEYPAD, ROWS, InbandDtmfDetector
from tests.consent import speech

FS = 8000
Int16Array = npt.NDArray[np.int16]
KEYS = [(KEYPAD[r][c], ROWS[r], COLUMNS[c]) for r in range(4) for c in range(4)]


def dual_tone(
    low: float,
    high: float,
    seconds: float,
    *,
    amp_low: float = 6000.0,
    amp_high: float | None = None,
    deviation: float = 0.0,
) -> npt.NDArray[np.float64]:
    t = np.arange(round(seconds * FS)) / FS
    amp_high = amp_low if amp_high is None else amp_high
    return amp_low * np.sin(2 * np.pi * low * (1 + deviation) * t + 0.3) + amp_high * np.sin(
        2 * np.pi * high * (1 + deviation) * t + 1.1
    )


def signal(*parts: npt.NDArray[np.float64] | float, codec: str = "PCMU") -> Int16Array:
    """Concatenate tone arrays and silences (a float is seconds of silence), through G.711."""
    pieces = [np.zeros(round(p * FS)) if isinstance(p, float) else p for p in parts]
    pcm = np.clip(np.rint(np.concatenate(pieces)), -32768, 32767).astype(np.int16)
    return speech.through_g711(pcm, codec)


def run(pcm: Int16Array, chunk: int = 160) -> list[DigitDetected]:
    det = InbandDtmfDetector()
    events: list[DigitDetected] = []
    for start in range(0, pcm.size, chunk):
        part = pcm[start : start + chunk]
        events += det.feed(part, (start + part.size) / FS)
    return events


def digits(pcm: Int16Array) -> str:
    return "".join(e.digit for e in run(pcm))


@pytest.mark.parametrize(("key", "low", "high"), KEYS)
@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_every_key_is_detected_once(key: str, low: float, high: float, codec: str) -> None:
    assert digits(signal(0.1, dual_tone(low, high, 0.1), 0.2, codec=codec)) == key


@pytest.mark.parametrize("key", ["0", "1", "5", "9", "*", "#"])
def test_sox_synthesised_keys(key: str, tmp_path: Path) -> None:
    speech.require_tools()
    r, c = next((r, c) for r in range(4) for c in range(4) if KEYPAD[r][c] == key)
    out = tmp_path / "key.wav"
    # PEERS.md recipe, padded with silence on both sides.
    cmd = [
        "sox",
        "-n",
        "-r",
        "8000",
        "-c",
        "1",
        "-b",
        "16",
        "-e",
        "signed-integer",
        str(out),
        "synth",
        "0.2",
        "sine",
        f"{ROWS[r]:g}",
        "synth",
        "0.2",
        "sine",
        "mix",
        f"{COLUMNS[c]:g}",
        "gain",
        "-6",
        "pad",
        "0.3",
        "0.3",
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)
    pcm, rate = soundfile.read(str(out), dtype="int16")
    assert rate == FS
    assert digits(speech.through_g711(pcm, "PCMA")) == key


@pytest.mark.parametrize("offset", range(0, 160, 13))
def test_40_ms_is_accepted_at_any_alignment(offset: int) -> None:
    lead = 0.1 + offset / FS
    assert digits(signal(lead, dual_tone(852, 1477, 0.040), 0.2)) == "9"


@pytest.mark.parametrize("offset", range(0, 160, 13))
def test_30_ms_is_rejected_at_any_alignment(offset: int) -> None:
    lead = 0.1 + offset / FS
    assert digits(signal(lead, dual_tone(852, 1477, 0.030), 0.2)) == ""


@pytest.mark.parametrize("seconds", [0.05, 0.1, 0.2, 1.5])
def test_a_long_press_is_one_digit(seconds: float) -> None:
    assert digits(signal(0.1, dual_tone(941, 1336, seconds), 0.2)) == "0"


@pytest.mark.parametrize("deviation", [-0.015, 0.015])
def test_q24_accepts_1_5_percent_off(deviation: float) -> None:
    for key, low, high in KEYS:
        assert digits(signal(0.1, dual_tone(low, high, 0.1, deviation=deviation), 0.2)) == key


@pytest.mark.parametrize("deviation", [-0.04, -0.035, 0.035, 0.04])
def test_q24_rejects_beyond_3_5_percent(deviation: float) -> None:
    for _, low, high in KEYS:
        assert digits(signal(0.1, dual_tone(low, high, 0.1, deviation=deviation), 0.2)) == ""


def test_one_tone_off_frequency_is_enough_to_reject() -> None:
    t = np.arange(800) / FS
    pair = 6000 * np.sin(2 * np.pi * 852 * t) + 6000 * np.sin(2 * np.pi * 1477 * 1.04 * t)
    assert digits(signal(0.1, pair, 0.2)) == ""


@pytest.mark.parametrize(
    ("low_db", "high_db", "expected"),
    [
        (0.0, -7.0, "9"),  # normal twist within 8 dB
        (0.0, -10.0, ""),  # beyond
        (-3.0, 0.0, "9"),  # reverse twist within 4 dB
        (-6.0, 0.0, ""),  # beyond
    ],
)
def test_twist_limits(low_db: float, high_db: float, expected: str) -> None:
    tone = dual_tone(
        852, 1477, 0.1, amp_low=8000 * 10 ** (low_db / 20), amp_high=8000 * 10 ** (high_db / 20)
    )
    assert digits(signal(0.1, tone, 0.2)) == expected


def test_level_limits() -> None:
    assert digits(signal(0.1, dual_tone(770, 1209, 0.1, amp_low=800), 0.2)) == "4"
    assert digits(signal(0.1, dual_tone(770, 1209, 0.1, amp_low=200), 0.2)) == ""


def test_detected_through_noise() -> None:
    rng = np.random.default_rng(7)
    tone = np.concatenate([np.zeros(800), dual_tone(697, 1633, 0.08), np.zeros(1600)])
    noise = rng.normal(0.0, 6000 / np.sqrt(2) / 10, tone.size)  # 20 dB below each tone
    assert digits(signal(tone + noise)) == "A"


def test_single_tones_and_chords_are_not_keys() -> None:
    t = np.arange(1600) / FS
    assert digits(signal(0.1, 8000 * np.sin(2 * np.pi * 852 * t), 0.2)) == ""
    assert digits(signal(0.1, 8000 * np.sin(2 * np.pi * 1477 * t), 0.2)) == ""
    chord = dual_tone(852, 1477, 0.2) + 6000 * np.sin(2 * np.pi * 1100 * t)
    assert digits(signal(0.1, chord, 0.2)) == ""


def test_second_harmonic_rejects() -> None:
    t = np.arange(800) / FS
    tone = dual_tone(770, 1336, 0.1)
    harmonic = 1500 * np.sin(2 * np.pi * 1540 * t)  # -12 dB at twice the row tone
    assert digits(signal(0.1, tone, 0.2)) == "5"
    assert digits(signal(0.1, tone + harmonic, 0.2)) == ""


def test_keys_separated_by_a_pause_and_dropouts() -> None:
    nine = dual_tone(852, 1477, 0.08)
    assert digits(signal(0.1, nine, 0.05, nine, 0.05, dual_tone(697, 1209, 0.08), 0.2)) == "991"
    # a 10 ms drop-out inside one press is not a second press
    assert digits(signal(0.1, nine, 0.01, nine, 0.2)) == "9"


def test_times_and_batch_feeding_agree() -> None:
    pcm = signal(0.5, dual_tone(852, 1477, 0.1), 0.3, dual_tone(941, 1209, 0.1), 0.2)
    streamed = run(pcm)
    batched = run(pcm, chunk=pcm.size)
    odd = run(pcm, chunk=97)
    assert [e.digit for e in streamed] == ["9", "*"]
    for other in (batched, odd):
        assert [e.digit for e in other] == ["9", "*"]
        assert [e.at for e in other] == pytest.approx([e.at for e in streamed], abs=1e-9)
    # reported ~40 ms into each tone: after the minimum duration, well before its end
    assert 0.5 + 0.030 <= streamed[0].at <= 0.5 + 0.07
    assert 0.9 + 0.030 <= streamed[1].at <= 0.9 + 0.07


def test_silence_and_empty_feeds() -> None:
    det = InbandDtmfDetector()
    assert det.feed(np.zeros(0, dtype=np.int16), 0.0) == []
    assert det.feed(np.zeros(100, dtype=np.int16), 0.0) == []
    assert det.feed(np.zeros(8000, dtype=np.int16), 1.0) == []
    with pytest.raises(ValueError):
        det.feed(np.zeros((2, 160), dtype=np.int16), 1.0)


# --- talk-off ------------------------------------------------------------------------------

PROMPT_VOICES = [("fr", 150, 50), ("fr+f3", 170, 70), ("en", 150, 50), ("en-us+f3", 170, 70)]


@pytest.mark.parametrize(("voice", "speed", "pitch"), PROMPT_VOICES)
@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_talk_off_on_the_prompts(voice: str, speed: int, pitch: int, codec: str) -> None:
    speech.require_tools()
    text = speech.PROMPT_FR if voice.startswith("fr") else speech.PROMPT_EN
    pcm = speech.through_g711(speech.speak(text, voice, speed, pitch), codec)
    assert pcm.size > 2 * FS
    assert run(pcm) == []


def test_talk_off_on_ten_minutes_of_speech() -> None:
    speech.require_tools()
    clips = speech.corpus(min_seconds=600.0)
    total = sum(pcm.size for _, pcm in clips) / FS
    assert total >= 600.0
    false_keys = {label: run(pcm) for label, pcm in clips}
    assert {label: ev for label, ev in false_keys.items() if ev} == {}
