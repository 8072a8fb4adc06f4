"""Synthetic speech for talk-off tests, generated with espeak-ng and sox, cached on disk.

The cache (tests/consent/.cache/, git-ignored) is keyed by a hash of the texts,
voices and speeds, so editing the corpus regenerates it. Without espeak-ng or sox
the tests that need speech are skipped with the reason, unless CI is set, where a
missing tool is a failure: talk-off must be proven where it is claimed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile

from consent.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

CACHE = Path(__file__).parent / ".cache"
SAMPLE_RATE = 8000

Int16Array = npt.NDArray[np.int16]

PROMPT_FR = "Cet appel peut être enregistré. Pour refuser, appuyez sur 9."
PROMPT_EN = "This call may be recorded. To refuse, press 9."

ENGLISH = [
    "Good morning, thank you for calling the consumer protection office. All of our agents "
    "are busy helping other callers. Your call is important to us; please stay on the line "
    "and the next available agent will answer. Our offices are open from eight thirty to "
    "four thirty, Monday to Friday, except on statutory holidays.",
    "Hi, yes, I'm calling about the invoice I received on the twenty-third of March. The "
    "amount is three hundred and forty-nine dollars and ninety-nine cents, but I only "
    "ordered two items, not three. Could you check the order number for me? It's 5 7 1 9 "
    "4 2 8 0, and my postal code is H 2 X 1 Y 4.",
    "Well, honestly, I don't know what happened. The technician came on Tuesday, looked at "
    "the router for about five minutes, and left. Since then the connection drops every "
    "evening around nine o'clock. I've restarted it maybe fifteen times! Is there anything "
    "else I can try before you send someone again?",
    "The quarterly report shows a steady increase in sales across all regions, with the "
    "northern division leading at twelve percent growth. However, operating costs rose "
    "faster than expected, mostly because of fuel prices and overtime. We recommend "
    "reviewing the delivery schedule and renegotiating two of the supplier contracts.",
    "Once upon a time, in a small village by the sea, there lived an old fisherman and his "
    "wife. Every morning he rowed out beyond the rocks, cast his net, and sang a quiet song "
    "to the waves. One day the net came back heavy, and in it was a fish of pure gold, which "
    "spoke to him in a human voice.",
    "Press one for billing, two for technical support, three to report an outage, or zero "
    "to speak with an operator. To hear these options again, press the star key. Please "
    "have your account number ready; it is printed at the top of your monthly statement.",
    "Okay, so let me read it back to you: the appointment is on Thursday the fourth at "
    "eleven fifteen, at the clinic on Sherbrooke street, second floor, room two hundred "
    "and six. Bring your health card and a list of your current medication. Is that right?",
    "Weather for the region: cloudy this morning with a sixty percent chance of showers, "
    "clearing in the afternoon. Winds from the northwest at twenty kilometres per hour, "
    "gusting to forty. High of fourteen degrees. Tonight, a few clouds, low of three.",
]

FRENCH = [
    "Bonjour, vous êtes bien au service à la clientèle. Tous nos agents sont actuellement "
    "occupés. Votre appel est important pour nous; veuillez rester en ligne, le prochain "
    "agent disponible vous répondra. Nos bureaux sont ouverts de huit heures trente à "
    "seize heures trente, du lundi au vendredi.",
    "Oui, bonjour, j'appelle au sujet de la facture reçue le vingt-trois mars. Le montant "
    "est de trois cent quarante-neuf dollars et quatre-vingt-dix-neuf sous, mais je n'ai "
    "commandé que deux articles. Pouvez-vous vérifier le numéro de commande? C'est le "
    "cinq sept un neuf quatre deux huit zéro.",
    "Écoutez, je ne comprends vraiment pas. Le technicien est venu mardi, il a regardé le "
    "modem pendant cinq minutes, puis il est reparti. Depuis, la connexion coupe tous les "
    "soirs vers vingt et une heures. J'ai redémarré l'appareil au moins quinze fois!",
    "Il était une fois, dans un petit village au bord de la mer, un vieux pêcheur et sa "
    "femme. Chaque matin, il ramait au-delà des rochers, lançait son filet et chantait "
    "doucement pour les vagues. Un jour, le filet revint très lourd: un poisson d'or y "
    "était pris, et il parlait comme un homme.",
    "Pour la facturation, faites le un; pour le soutien technique, faites le deux; pour "
    "signaler une panne, faites le trois. Pour réentendre ces options, appuyez sur la "
    "touche étoile. Ayez votre numéro de compte en main, il figure sur votre relevé.",
    "Météo pour la région: nuageux ce matin avec soixante pour cent de risque d'averses, "
    "dégagement en après-midi. Vents du nord-ouest à vingt kilomètres à l'heure, avec "
    "rafales à quarante. Maximum quatorze degrés. Cette nuit, minimum trois.",
]

# (voice, speed words/min, pitch 0-99): male and female variants, slow to fast.
VOICES = [
    ("en", 150, 50),
    ("en-us+f3", 175, 70),
    ("en-gb+m3", 130, 35),
    ("en+f2", 200, 80),
    ("en-us+klatt", 160, 50),
    ("en+croak", 140, 40),
    ("en-gb-scotland+f4", 185, 60),
    ("en+m7", 220, 30),
    ("en-us+f5", 120, 90),
    ("en+klatt4", 170, 55),
]
VOICES_FR = [
    ("fr", 150, 50),
    ("fr+f3", 175, 70),
    ("fr-be+m3", 130, 35),
    ("fr+f2", 200, 85),
    ("fr-ch+klatt", 160, 50),
    ("fr+m7", 210, 30),
    ("fr+f5", 125, 90),
]


def require_tools() -> None:
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if not missing:
        return
    reason = f"{', '.join(missing)} not installed (apt-get install espeak-ng sox)"
    if os.environ.get("CI"):
        pytest.fail(f"talk-off tests need speech: {reason}")
    pytest.skip(reason)


def speak(text: str, voice: str, speed: int, pitch: int) -> Int16Array:
    """espeak-ng -> sox -> 8 kHz mono int16, as the PEERS.md recipe does."""
    CACHE.mkdir(exist_ok=True)
    tag = hashlib.sha256(f"{voice}|{speed}|{pitch}|{text}".encode()).hexdigest()[:16]
    out = CACHE / f"speech-{tag}.wav"
    if not out.exists():
        raw = CACHE / f"speech-{tag}.raw.wav"
        tmp = CACHE / f"speech-{tag}.tmp.wav"
        cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), text]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
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


def through_g711(pcm: Int16Array, codec: str) -> Int16Array:
    if codec == "PCMU":
        return ulaw_decode(ulaw_encode(pcm))
    return alaw_decode(alaw_encode(pcm))


def corpus(min_seconds: float) -> list[tuple[str, Int16Array]]:
    """Clips (label, audio through G.711) totalling at least `min_seconds` of speech.

    Every text is spoken by several voices and speeds, alternating PCMU and PCMA,
    cycling until the total is reached; deterministic, so the cache is reused.
    """
    jobs = [(t, v) for t in ENGLISH for v in VOICES] + [(t, v) for t in FRENCH for v in VOICES_FR]
    # Interleave so that a short corpus still mixes languages and voices.
    jobs = jobs[::2] + jobs[1::2]
    clips: list[tuple[str, Int16Array]] = []
    total = 0.0
    for i, (text, (voice, speed, pitch)) in enumerate(jobs):
        if total >= min_seconds:
            break
        codec = "PCMU" if i % 2 == 0 else "PCMA"
        pcm = through_g711(speak(text, voice, speed, pitch), codec)
        clips.append((f"{voice}/{speed}/{pitch}/{codec}: {text[:30]}", pcm))
        total += pcm.size / SAMPLE_RATE
    if total < min_seconds:
        raise RuntimeError(f"speech corpus only {total:.0f} s, wanted {min_seconds:.0f} s")
    return clips
