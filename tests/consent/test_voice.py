"""Voice refusal: the 8 -> 16 kHz upsampler, and the pocketsphinx spotter on synthetic calls."""

from __future__ import annotations

import itertools
import os
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from consent.events import VoiceRefusal
from consent.voice import (
    DEFAULT_PHRASES,
    Upsampler8to16,
    VoiceRefusalSpotter,
    VoiceUnavailable,
    _lowpass_taps,
)
from tests.consent import voice_corpus as vc

FS = 8000
CHUNK = 160  # one 20 ms RTP packet


def _tone(freq: float, seconds: float = 1.0, amplitude: float = 10000.0) -> npt.NDArray[np.int16]:
    t = np.arange(int(seconds * FS)) / FS
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def _amplitude(signal: npt.NDArray[np.float64], freq: float, rate: int) -> float:
    """Amplitude of the `freq` component, by projection (exact for whole periods)."""
    t = np.arange(signal.size) / rate
    return float(2 * np.abs(np.mean(signal * np.exp(-2j * np.pi * freq * t))))


def _upsample_in_packets(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    up = Upsampler8to16()
    return np.concatenate([up.process(pcm[i : i + CHUNK]) for i in range(0, pcm.size, CHUNK)])


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2000.0, 3000.0, 3400.0])
def test_upsampler_passband_is_flat_and_image_is_rejected(freq: float) -> None:
    out = _upsample_in_packets(_tone(freq)).astype(np.float64)
    assert out.size == 2 * FS
    steady = out[200:-200]  # past the filter's start-up; whole periods of every tone here
    steady = steady[: (steady.size // 1600) * 1600]
    gain_db = 20 * np.log10(_amplitude(steady, freq, 2 * FS) / 10000.0)
    # Zero-stuffing mirrors `freq` to 8000 - freq: the low-pass must remove it.
    image_db = 20 * np.log10(_amplitude(steady, FS - freq, 2 * FS) / 10000.0 + 1e-12)
    assert abs(gain_db) < 0.1
    assert image_db < -55.0


def test_upsampler_is_stateful_across_packets() -> None:
    rng = np.random.default_rng(7)
    pcm = np.clip(rng.normal(0, 6000, 4000), -32768, 32767).astype(np.int16)
    one_shot = Upsampler8to16().process(pcm)
    up = Upsampler8to16()
    # Odd chunk sizes, including empty and one-sample chunks, give the same stream.
    cuts = [0, 1, 1, 161, 300, 1237, 2000, 4000]
    streamed = np.concatenate([up.process(pcm[a:b]) for a, b in itertools.pairwise(cuts)])
    np.testing.assert_array_equal(streamed, one_shot)


def test_upsampler_is_zero_stuffing_then_low_pass() -> None:
    # The polyphase form must equal the textbook definition, saturating (not wrapping)
    # where loud input overshoots int16.
    rng = np.random.default_rng(3)
    pcm = np.clip(rng.normal(0, 20000, 800), -32768, 32767).astype(np.int16)
    stuffed = np.zeros(2 * pcm.size)
    stuffed[0::2] = pcm
    taps = 2.0 * _lowpass_taps(Upsampler8to16.TAPS, 4000.0, 16000.0, 8.0)
    reference = np.clip(np.rint(np.convolve(stuffed, taps)[: stuffed.size]), -32768, 32767)
    out = _upsample_in_packets(pcm)
    assert np.count_nonzero(np.abs(reference) == 32767) > 0  # the case is exercised
    np.testing.assert_array_equal(out, reference.astype(np.int16))


# --- the spotter -------------------------------------------------------------------------


@pytest.fixture
def pocketsphinx() -> None:
    if find_spec("pocketsphinx") is not None:
        return
    if os.environ.get("CI"):
        pytest.fail("voice refusal is claimed: pocketsphinx must be installed in CI")
    pytest.skip("pocketsphinx not installed (pip install pocketsphinx)")


def test_unavailable_when_model_dir_does_not_exist(pocketsphinx: None, tmp_path: Path) -> None:
    missing = tmp_path / "models" / "fr"
    with pytest.raises(VoiceUnavailable, match=r"models/fr does not exist"):
        VoiceRefusalSpotter(DEFAULT_PHRASES, model_dir=str(missing))


def test_unavailable_when_model_dir_has_no_model(pocketsphinx: None, tmp_path: Path) -> None:
    (tmp_path / "README").write_text("the admin forgot to unpack the model\n")
    with pytest.raises(VoiceUnavailable, match=r"acoustic model.*dictionary"):
        VoiceRefusalSpotter(DEFAULT_PHRASES, model_dir=str(tmp_path))


def test_unavailable_without_pocketsphinx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # import now raises ImportError
    with pytest.raises(VoiceUnavailable, match=r"'pocketsphinx'.*not installed"):
        VoiceRefusalSpotter(DEFAULT_PHRASES)


def test_unavailable_when_phrase_word_not_in_dictionary(pocketsphinx: None) -> None:
    with pytest.raises(VoiceUnavailable, match=r"enregistrement.*dictionary"):
        VoiceRefusalSpotter({"pas d'enregistrement": 1e-20})


def test_rejects_phrase_that_would_corrupt_keyword_file(pocketsphinx: None) -> None:
    with pytest.raises(ValueError, match="letters"):
        VoiceRefusalSpotter({"stop /1e-1/ recording": 1e-20})


def _feed(spotter: VoiceRefusalSpotter, pcm: npt.NDArray[np.int16]) -> list[VoiceRefusal]:
    events: list[VoiceRefusal] = []
    for i in range(0, pcm.size, CHUNK):
        events += spotter.feed(pcm[i : i + CHUNK], 100.0 + (i + CHUNK) / FS)
    return events


@pytest.fixture
def speech(pocketsphinx: None) -> None:
    vc.require_tools()


# Voices the bench spotted at every speed and carrier (flite rms), and the espeak-ng voice
# that says "stop recording" recognisably (en-us+m3; espeak's "do not record" never is).
@pytest.mark.parametrize(
    ("voice", "phrase"),
    [
        (vc.Voice("flite", "rms", 1.0), "stop recording"),
        (vc.Voice("flite", "rms", 1.0), "do not record"),
        (vc.Voice("espeak-ng", "en-us+m3", 150), "stop recording"),
    ],
    ids=["flite-rms-stop", "flite-rms-do-not", "espeak-stop"],
)
def test_spots_a_spoken_refusal_once_per_occurrence(
    speech: None, voice: vc.Voice, phrase: str
) -> None:
    said = vc.synthesise(f"{phrase.capitalize()}.", voice)
    gap = np.zeros(FS, dtype=np.int16)
    # Said twice, a second apart, on one call: two refusals, each reported once.
    pcm = vc.telephone(np.concatenate((said, gap, said)), "PCMA", seed=1)
    first_end = vc.LEAD_IN + said.size / FS
    second_end = first_end + 1.0 + said.size / FS
    with VoiceRefusalSpotter(DEFAULT_PHRASES) as spotter:
        events = _feed(spotter, pcm)
    assert [e.phrase for e in events] == [phrase, phrase]
    # `at` is the `now` of the packet that completed the phrase: shortly after its end.
    assert 0.0 <= events[0].at - 100.0 - first_end < 0.6
    assert 0.0 <= events[1].at - 100.0 - second_end < 0.6


def test_no_refusal_in_five_minutes_of_english(speech: None) -> None:
    clips, total = [], 0.0
    for clip in vc.other_clips():
        if total >= 300.0:
            break
        clips.append(clip.pcm)
        total += clip.pcm.size / FS
    assert total >= 300.0
    # One long call: the state a spotter accumulates over minutes must not drift into firing.
    with VoiceRefusalSpotter(DEFAULT_PHRASES) as spotter:
        events = _feed(spotter, np.concatenate(clips))
    assert events == []


def test_closed_spotter_refuses_audio(pocketsphinx: None) -> None:
    spotter = VoiceRefusalSpotter(DEFAULT_PHRASES)
    spotter.close()
    spotter.close()
    with pytest.raises(RuntimeError, match="closed"):
        spotter.feed(np.zeros(CHUNK, dtype=np.int16), 0.0)
