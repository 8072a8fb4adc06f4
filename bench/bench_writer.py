"""Load test of the recording path: N calls of G.711 20 ms audio both ways, for T seconds.

The event loop plays the relay's part: every 20 ms it makes one packet per
party per call and hands it to the recording tap, exactly as
`MediaLeg.on_packet` would. Reported:

- loop side: tap cost per packet, batch (pickle + pipe write) cost per
  packet and per batch, event-loop lag p50/p99/max from a 10 ms probe timer;
- writer process: CPU (user+system, from /proc) as a fraction of one core;
- finalize: time for all calls' close (fsync, rename, SHA-256) to resolve.

    .venv/bin/python bench/bench_writer.py --calls 100 500 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recorder.recording.writer import PacketTap, RecordingWriterClient

HEADER = struct.Struct("!BBHII")
PAYLOAD = bytes(range(0x10, 0x10 + 160))
INTERVAL = 0.020


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def run(calls: int, seconds: float, batch_interval: float, directory: Path) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    client = RecordingWriterClient(batch_interval=batch_interval)
    await client.start()
    assert client.pid is not None
    handles = [
        client.open(f"call-{i}", directory=directory, stem=f"bench-{i}") for i in range(calls)
    ]
    await asyncio.gather(*(h.opened for h in handles))
    taps: list[tuple[PacketTap, int]] = []
    for i, handle in enumerate(handles):
        taps.append((handle.tap(0), 1000 + 2 * i))
        taps.append((handle.tap(1), 1001 + 2 * i))

    batch_times: list[float] = []
    batch_packets: list[int] = []
    send_batch = client._send_batch

    def timed_send_batch() -> None:
        count = sum(h.count for h in handles)
        started = time.perf_counter()
        send_batch()
        if not done.done():
            batch_times.append(time.perf_counter() - started)
            batch_packets.append(count)

    client._send_batch = timed_send_batch  # type: ignore[method-assign]

    lags: list[float] = []
    tap_seconds = 0.0
    tap_packets = 0
    done = loop.create_future()
    start = loop.time()
    cpu_start = _cpu_seconds(client.pid)

    def probe(expected: float) -> None:
        lags.append(loop.time() - expected)
        if not done.done():
            loop.call_at(expected + 0.010, probe, expected + 0.010)

    def tick(k: int) -> None:
        nonlocal tap_seconds, tap_packets
        if k * INTERVAL >= seconds:
            done.set_result(None)
            return
        seq = k & 0xFFFF
        ts = (k * 160) & 0xFFFFFFFF
        packets = [HEADER.pack(0x80, 0, seq, ts, ssrc) + PAYLOAD for _, ssrc in taps]
        arrival = time.monotonic()
        started = time.perf_counter()
        for (tap, _), packet in zip(taps, packets, strict=True):
            tap(packet, arrival)
        tap_seconds += time.perf_counter() - started
        tap_packets += len(packets)
        loop.call_at(start + (k + 1) * INTERVAL, tick, k + 1)

    loop.call_at(start, tick, 0)
    # Half a packet out of phase with the generator, so the probe does not
    # always queue behind it.
    loop.call_at(start + 0.005, probe, start + 0.005)
    await done
    elapsed = loop.time() - start
    cpu = _cpu_seconds(client.pid) - cpu_start
    closing = time.perf_counter()
    results = await asyncio.gather(*(h.close(time.monotonic()) for h in handles))
    finalize = time.perf_counter() - closing
    stats = client.stats()
    await client.aclose()
    durations = [r.files[0].duration_s for r in results if r.files]
    sent_per_batch = [t / max(1, n) for t, n in zip(batch_times, batch_packets, strict=True)]
    return {
        "calls": calls,
        "seconds": round(elapsed, 2),
        "packets_per_s": round(tap_packets / elapsed),
        "tap_us_per_packet": round(1e6 * tap_seconds / max(1, tap_packets), 3),
        "batch_us_per_packet": round(1e6 * statistics.median(sent_per_batch), 3),
        "batches": len(batch_times),
        "batch_ms_p50": round(1e3 * _percentile(batch_times, 0.5), 3),
        "batch_ms_max": round(1e3 * max(batch_times), 3),
        "loop_lag_ms_p50": round(1e3 * _percentile(lags, 0.5), 3),
        "loop_lag_ms_p99": round(1e3 * _percentile(lags, 0.99), 3),
        "loop_lag_ms_max": round(1e3 * max(lags), 3),
        "writer_cpu_cores": round(cpu / elapsed, 4),
        "finalize_all_s": round(finalize, 3),
        "complete_files": sum(1 for r in results if r.complete),
        "duration_s_min": round(min(durations), 3) if durations else None,
        "dropped_packets": stats["dropped_packets"],
        "max_buffered_bytes": stats["max_buffered_bytes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch-interval", type=float, default=0.15)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the tmp output dir")
    args = parser.parse_args()
    for calls in args.calls:
        directory = Path(tempfile.mkdtemp(prefix="bench-writer-", dir=args.dir))
        try:
            report = asyncio.run(run(calls, args.seconds, args.batch_interval, directory))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
