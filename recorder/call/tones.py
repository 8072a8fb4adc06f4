"""Call-progress tones we generate ourselves (ringback while the PBX rings, after our answer)."""

from __future__ import annotations

from functools import cache

import numpy as np

from consent.prompt import Codec, encode_frames

SAMPLE_RATE = 8000


@cache
def ringback_frames(codec: Codec) -> tuple[bytes, ...]:
    """One cadence of North American ringback (440 + 480 Hz, 2 s on, 4 s off), -19 dBm0 each."""
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    amplitude = 32768 * 10 ** (-19 / 20) * np.sqrt(2) * 0.7
    tone = amplitude * (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 480 * t))
    cadence = np.concatenate([tone, np.zeros(4 * SAMPLE_RATE)])
    return encode_frames(np.clip(cadence, -32768, 32767).astype(np.int16), codec)
