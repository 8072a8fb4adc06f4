"""SRTP relay cost next to plain RTP (issue 21): bench_relay with and without --srtp, side by side.

Each level runs plain then SRTP, `--rounds` times, alternating, so that both see the same
machine; the figures kept are each mode's median relay CPU per relayed packet.

    .venv/bin/python bench/bench_srtp.py --calls 100 250 --seconds 20 --rounds 3 \\
        --out bench/results/srtp-20261206
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_relay import run_relay


def _run(calls: int, seconds: float, srtp: bool) -> dict[str, Any]:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run_relay(calls, seconds, 20000, srtp))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[100, 250])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    for calls in args.calls:
        for round_ in range(args.rounds):
            for srtp in (False, True):
                result = _run(calls, args.seconds, srtp)
                result["round"] = round_
                runs.append(result)
                print(
                    f"calls={calls} srtp={srtp!s:5} round={round_}: "
                    f"{result['relay_us_per_packet']:.1f} us/packet, "
                    f"{result['relay_cpu_cores']:.3f} core, loss {result['loss_percent']:.3f}%, "
                    f"latency p99 {result['latency_p99_ms']:.2f} ms, "
                    f"auth drops {result['relay_dropped_srtp_auth']}, strays {result['strays']}",
                    flush=True,
                )
    summary = []
    for calls in args.calls:
        row: dict[str, Any] = {"calls": calls}
        for srtp in (False, True):
            mine = [r for r in runs if r["calls"] == calls and r["srtp"] == srtp]
            name = "srtp" if srtp else "plain"
            row[f"{name}_us_per_packet"] = statistics.median(r["relay_us_per_packet"] for r in mine)
            row[f"{name}_cores"] = statistics.median(r["relay_cpu_cores"] for r in mine)
            row[f"{name}_loss_percent_max"] = max(r["loss_percent"] for r in mine)
            row[f"{name}_latency_p99_ms"] = statistics.median(r["latency_p99_ms"] for r in mine)
        row["srtp_extra_us_per_packet"] = row["srtp_us_per_packet"] - row["plain_us_per_packet"]
        row["srtp_ratio"] = row["srtp_us_per_packet"] / row["plain_us_per_packet"]
        summary.append(row)
    for row in summary:
        print(json.dumps(row))
    if args.out is None:
        return
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, Python "
        f"{platform.python_version()}, uvloop",
        "seconds": args.seconds,
        "rounds": args.rounds,
    }
    args.out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1)
    )
    lines = [
        f"# SRTP relay cost next to plain RTP ({meta['date']})",
        "",
        f"{meta['machine']}; {args.seconds:g} s per run, {args.rounds} rounds alternating plain"
        " and SRTP, medians. Command: `.venv/bin/python bench/bench_srtp.py`.",
        "",
        "| calls | plain us/packet | SRTP us/packet | extra | ratio | plain core | SRTP core "
        "| max loss plain / SRTP |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        lines.append(
            f"| {row['calls']} | {row['plain_us_per_packet']:.1f} | "
            f"{row['srtp_us_per_packet']:.1f} | +{row['srtp_extra_us_per_packet']:.1f} | "
            f"{row['srtp_ratio']:.2f}x | {row['plain_cores']:.3f} | {row['srtp_cores']:.3f} | "
            f"{row['plain_loss_percent_max']:.3f}% / {row['srtp_loss_percent_max']:.3f}% |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
