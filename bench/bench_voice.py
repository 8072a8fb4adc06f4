"""Voice refusal: detection and false-alarm rates, CPU and latency of the keyword spotter.

Run: python bench/bench_voice.py [--thresholds 1e-20,1e-30,1e-40,1e-50] [--no-sweep]
Needs pocketsphinx (pip), flite, espeak-ng and sox (apt); pocketsphinx-testdata (apt)
for the cepstral-mean measurement.

Corpus (tests/consent/voice_corpus.py, cached in tests/consent/.cache/): the two
default phrases, each in four carrier sentences, said by 17 voices (flite slt, rms, awb,
kal16 at three speeds; five espeak-ng voices); and the English sentences of the
talk-off corpus plus near misses ("the recording studio", "do not hang up"), each by
four voices. All at 8 kHz through G.711 (PCMU/PCMA alternately), with 0.5 s lead-in
and 1 s tail of low noise. Every clip gets a fresh spotter, as every call does, fed in
20 ms packets.

Reports, per threshold: detection rate per phrase (its own phrase spotted), refusal
rate (any phrase spotted: the decision is the same), false alarms per phrase on other
talk (clips and per hour); then for the default phrases: the same, by voice,
latency from the end of speech to the report on clips of the bare phrase, CPU per
second of audio, decoder start-up cost and memory.
"""

from __future__ import annotations

import argparse
import glob
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # plain `python bench/...`

import numpy as np

from consent.g711 import ulaw_decode, ulaw_encode
from consent.voice import (
    DEFAULT_PHRASES,
    TELEPHONE_CMNINIT,
    Upsampler8to16,
    VoiceRefusalSpotter,
    _import_pocketsphinx,
)
from tests.consent import voice_corpus as vc

FS = 8000
CHUNK = 160
RAW_PCM16 = ("-c", "1", "-b", "16", "-e", "signed-integer", "-t", "raw")
LIBRIVOX = "/usr/share/pocketsphinx/test/data/librivox/*.wav"


@dataclass
class Run:
    heard: list[list[tuple[str, float]]] = field(default_factory=list)  # per clip
    init_cpu: float = 0.0
    feed_cpu: float = 0.0
    audio_s: float = 0.0


def evaluate(
    clips: Sequence[vc.Clip], phrases: Mapping[str, float], cmninit: str | None = None
) -> Run:
    run = Run()
    for clip in clips:
        start = time.process_time()
        spotter = VoiceRefusalSpotter(phrases, cmninit=cmninit)
        run.init_cpu += time.process_time() - start
        heard: list[tuple[str, float]] = []
        start = time.process_time()
        for i in range(0, clip.pcm.size, CHUNK):
            end = min(i + CHUNK, clip.pcm.size) / FS
            heard += [(e.phrase, end) for e in spotter.feed(clip.pcm[i : i + CHUNK], end)]
        run.feed_cpu += time.process_time() - start
        run.audio_s += clip.pcm.size / FS
        spotter.close()
        run.heard.append(heard)
    return run


def rates(clips: Sequence[vc.Clip], run: Run, label: str) -> None:
    other_s = sum(c.pcm.size for c in clips if c.phrase is None) / FS
    n_other = sum(c.phrase is None for c in clips)
    for phrase in vc.REFUSAL_PHRASES:
        own = [h for c, h in zip(clips, run.heard, strict=True) if c.phrase == phrase]
        spotted = sum(any(p == phrase for p, _ in h) for h in own)
        refused = sum(bool(h) for h in own)
        fa = sum(
            any(p == phrase for p, _ in h)
            for c, h in zip(clips, run.heard, strict=True)
            if c.phrase is None
        )
        per_hour = f"{fa / (other_s / 3600):.1f}/h of talk" if other_s else "n/a"
        print(
            f"  {label:<22} {phrase!r:<17} detected {spotted:3}/{len(own)} "
            f"({100 * spotted / len(own):5.1f}%), refused {100 * refused / len(own):5.1f}%; "
            f"false alarms {fa}/{n_other} clips ({per_hour})"
        )


def false_alarms(clips: Sequence[vc.Clip], run: Run) -> None:
    for clip, heard in zip(clips, run.heard, strict=True):
        if clip.phrase is None and heard:
            print(f"  false alarm {heard[0][0]!r} at {heard[0][1]:.2f} s: {clip.label}")


def by_voice(clips: Sequence[vc.Clip], run: Run) -> None:
    hit: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for clip, heard in zip(clips, run.heard, strict=True):
        if clip.phrase is None:
            continue
        voice = clip.label.split(":", 2)[0] + ":" + clip.label.split(":", 2)[1].split("@")[0]
        total[voice] += 1
        hit[voice] += bool(heard)
    print("  refusal rate by voice: " + ", ".join(f"{v} {hit[v]}/{total[v]}" for v in total))


def latency(clips: Sequence[vc.Clip], run: Run) -> None:
    delays = [
        heard[0][1] - clip.speech_end
        for clip, heard in zip(clips, run.heard, strict=True)
        if clip.phrase is not None and clip.label.endswith(f": {clip.phrase.capitalize()}.")
        if heard
    ]
    if delays:
        q = statistics.quantiles(delays, n=10)
        print(
            f"  latency end of speech -> report (bare phrase, {len(delays)} clips): "
            f"median {statistics.median(delays):.2f} s, p90 {q[-1]:.2f} s, max {max(delays):.2f} s"
        )


def cpu(run: Run) -> None:
    per_s = run.feed_cpu / run.audio_s
    print(
        f"  CPU {per_s * 1e3:.1f} ms per s of audio ({per_s * 100:.1f}% of a core per "
        f"listening caller, ~{1 / per_s:.0f} per core); decoder start "
        f"{run.init_cpu / len(run.heard) * 1e3:.0f} ms CPU per call"
    )


def memory() -> None:
    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096

    base = rss()
    spotters = [VoiceRefusalSpotter(DEFAULT_PHRASES) for _ in range(8)]
    print(f"  memory ~{(rss() - base) / len(spotters) / 2**20:.0f} MB per spotter (8 alive)")
    for s in spotters:
        s.close()


def measure_cmninit() -> None:
    """Cepstral mean after decoding read English through G.711 and the upsampler."""
    files = sorted(glob.glob(LIBRIVOX))
    if not files:
        print("cmninit: pocketsphinx-testdata not installed, skipped")
        return
    pcm = np.concatenate(
        [
            np.frombuffer(
                subprocess.run(
                    [
                        "sox",
                        f,
                        "-r",
                        str(FS),
                        "-c",
                        "1",
                        "-b",
                        "16",
                        "-e",
                        "signed-integer",
                        "-t",
                        "raw",
                        "-",
                    ],
                    check=True,
                    capture_output=True,
                ).stdout,
                dtype=np.int16,
            )
            for f in files
        ]
    )
    pcm16 = Upsampler8to16().process(ulaw_decode(ulaw_encode(pcm)))
    ps = _import_pocketsphinx()
    decoder = ps.Decoder(lm=None, keyphrase="stop recording", loglevel="FATAL")
    decoder.start_utt()
    for i in range(0, pcm16.size, 2 * CHUNK):
        decoder.process_raw(pcm16[i : i + 2 * CHUNK].tobytes(), False, False)
    decoder.end_utt()
    mean = ",".join(f"{float(v):.2f}" for v in decoder.get_cmn().split(","))
    print(f"cmninit measured on {pcm.size / FS:.0f} s of librivox read English via PCMU:")
    print(f"  {mean}\n  in use: {TELEPHONE_CMNINIT}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thresholds", default="1e-20,1e-30,1e-40,1e-50")
    parser.add_argument("--no-sweep", action="store_true", help="only the default phrases")
    args = parser.parse_args()
    vc.require_tools()
    print(f"pocketsphinx {version('pocketsphinx')}")
    measure_cmninit()

    start = time.monotonic()
    refusals, others = vc.refusal_clips(), vc.other_clips()
    clips = refusals + others
    print(
        f"corpus: {len(refusals)} refusal clips ({sum(c.pcm.size for c in refusals) / FS:.0f} s), "
        f"{len(others)} other clips ({sum(c.pcm.size for c in others) / FS:.0f} s), "
        f"{len(vc.VOICES)} voices; ready in {time.monotonic() - start:.0f} s"
    )

    if not args.no_sweep:
        print("threshold sweep (both phrases at the same threshold):")
    for threshold in (float(t) for t in args.thresholds.split(",") if not args.no_sweep):
        run = evaluate(clips, dict.fromkeys(vc.REFUSAL_PHRASES, threshold))
        rates(clips, run, f"{threshold:g}")

    print(f"defaults {dict(DEFAULT_PHRASES)}:")
    run = evaluate(clips, DEFAULT_PHRASES)
    rates(clips, run, "default")
    false_alarms(clips, run)
    by_voice(clips, run)
    latency(clips, run)
    cpu(run)
    memory()

    print("cold start with the model's own cmninit (40,3,-1) instead, refusal clips only:")
    cold = evaluate(refusals, DEFAULT_PHRASES, cmninit="40,3,-1")
    rates(refusals, cold, "cmninit 40,3,-1")


if __name__ == "__main__":
    main()
