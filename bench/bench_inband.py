"""CPU cost of the in-band DTMF detector per second of audio, per listening caller.

Run: python bench/bench_inband.py [seconds-of-audio]
Audio: espeak-ng speech through G.711 (the talk-off corpus of tests/consent, cached in
tests/consent/.cache/) when espeak-ng and sox are installed, else white noise at
speech level, which exercises the same path (loud windows reach every check).
Prints CPU ms per second of audio fed in 20 ms chunks (what the relay does, one
call per packet) and in 1 s blocks (the vectorised cost without per-call overhead),
and the number of listening callers one core could serve.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # plain `python bench/...`

import numpy as np
import numpy.typing as npt

from consent.g711 import ulaw_decode, ulaw_encode
from consent.inband import InbandDtmfDetector

FS = 8000


def audio(seconds: float) -> tuple[str, npt.NDArray[np.int16]]:
    if shutil.which("espeak-ng") and shutil.which("sox"):
        from tests.consent.speech import corpus

        pcm = np.concatenate([clip for _, clip in corpus(seconds)])
        return "espeak-ng speech (G.711)", pcm[: int(seconds * FS)]
    rng = np.random.default_rng(1)
    noise = np.clip(rng.normal(0, 3000, int(seconds * FS)), -32768, 32767).astype(np.int16)
    return "white noise (G.711)", ulaw_decode(ulaw_encode(noise))


def cpu_per_second(pcm: npt.NDArray[np.int16], chunk: int) -> tuple[float, int]:
    det = InbandDtmfDetector()
    hits = 0
    start = time.process_time()
    for offset in range(0, pcm.size, chunk):
        hits += len(det.feed(pcm[offset : offset + chunk], offset / FS))
    return (time.process_time() - start) / (pcm.size / FS), hits


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 120.0
    label, pcm = audio(seconds)
    print(f"audio: {pcm.size / FS:.0f} s of {label}")
    for name, chunk in (("20 ms chunks", 160), ("1 s blocks", FS)):
        cost, hits = cpu_per_second(pcm, chunk)
        print(
            f"{name:>13}: {cost * 1e3:6.2f} ms CPU per s of audio "
            f"({cost * 100:.2f} % of a core per caller, ~{1 / cost:.0f} callers/core), "
            f"false digits: {hits}"
        )


if __name__ == "__main__":
    main()
