"""Calls through Kamailio + 2 recorder nodes vs Kamailio + 1 node, in one run (issue 19).

sipp UAC (uac_load, a PCMU pcap per call, a media port per call) -> kamailio
(examples/kamailio/kamailio.cfg, dispatcher round-robin) -> 1 or 2 `recorder serve` nodes
(one PostgreSQL catalog, one storage root, every call recorded) -> sipp UAS (uas_echo, RTP
echo). For each level N (concurrent calls), each setup runs `sipp -r RATE -l N -m N -d
CALL_LENGTH`: N calls started at RATE calls/s, each CALL_LENGTH s long, so concurrency
climbs to N and holds until the first calls end.

Figures per run: INVITE -> 200 as the caller sees it (sipp's per-call response times:
mean, median, p95, max), calls successful / failed, the peak of concurrent calls (sipp's
CurrentCall, sampled each second), CPU of each node (service and writer process) and of
Kamailio over the run, each node's calls (its log's `call.received`) and the recordings
catalogued complete per node.

    RECORDER_TEST_PORTS=50000-54999 .venv/bin/python bench/bench_nodes.py \\
        [--rate 20] [--levels 100 200] [--call-length 60] [--out bench/results/nodes-DATE]

Needs sipp, kamailio, PostgreSQL (Debian's), sox and espeak-ng, as the interop tests do.
Every port comes from the tests' allocator (RECORDER_TEST_PORTS). Every process it starts
is stopped by it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # plain `python bench/...`
sys.path.insert(0, str(ROOT / "bench"))

from bench_callpath import (  # noqa: E402
    child,
    cpu_model,
    cpu_seconds,
    loadavg,
    make_pcap,
    read_stat_rows,
    sipp_cmd,
)
from sqlalchemy import create_engine, text  # noqa: E402

from tests.interop import peers  # noqa: E402
from tests.interop.kamailio import start_kamailio  # noqa: E402
from tests.interop.recorder_proc import RecorderProcess, running_recorder  # noqa: E402
from tests.pg import PgServer  # noqa: E402

POLICY = """
[policy]
name = "BENCH"

[recording]
directions = ["inbound"]
extensions = "all"
mode = "automatic"

[notice]
play = false

[retention]
recordings = "8 days"
"""
SAMPLE_EVERY = 1.0


@dataclass
class NodeFigures:
    name: str
    calls_received: int = 0
    recordings_complete: int = 0
    cpu_s: float = 0.0
    cores: float = 0.0


@dataclass
class RunFigures:
    setup: str  # "1 node" / "2 nodes"
    level: int
    rate: float
    call_length_s: float
    wall_s: float = 0.0
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    peak_concurrent: int = 0
    setup_ms_mean: float | None = None
    setup_ms_median: float | None = None
    setup_ms_p95: float | None = None
    setup_ms_max: float | None = None
    kamailio_cores: float = 0.0
    nodes: list[NodeFigures] = field(default_factory=list)
    host_probe_ms: float = 0.0
    loadavg_start: list[float] = field(default_factory=list)
    loadavg_end: list[float] = field(default_factory=list)


def host_probe() -> float:
    """A fixed Python loop, timed: how fast the shared host is right now (lower is faster)."""
    start = time.perf_counter()
    total = 0
    for i in range(2_000_000):
        total += i % 7
    return round((time.perf_counter() - start) * 1000, 1)


def family_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its direct children (the writer process, kamailio's)."""
    total = cpu_seconds(pid) or 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            total += cpu_seconds(int(entry.name)) or 0.0
    return total


def response_times(log_dir: Path) -> list[float]:
    """Each call's INVITE -> 200 (ms) from sipp's -trace_rtt file."""
    out: list[float] = []
    for path in log_dir.glob("*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                try:
                    out.append(float(parts[1]))
                except ValueError:
                    continue
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


@contextmanager
def recorder_nodes(
    work: Path, count: int, database: str, pbx_port: int, ports_per_node: int
) -> Iterator[list[tuple[str, RecorderProcess]]]:
    storage = work / "shared" / "recordings"
    with ExitStack() as stack:
        nodes: list[tuple[str, RecorderProcess]] = []
        for index in range(1, count + 1):
            name = f"rec-{index}"
            first = peers.free_port_block(ports_per_node)
            proc = stack.enter_context(
                running_recorder(
                    work / name,
                    external_port=peers.free_port_block(1, tcp=True),
                    internal_port=peers.free_port_block(1, tcp=True),
                    pbx_port=pbx_port,
                    trunk_port=peers.free_udp_port(),
                    media_first=first,
                    media_last=first + ports_per_node - 1,
                    drain_seconds=5,
                    policy_extra=POLICY,
                    database=database,
                    storage_dir=storage,
                    storage_extra=f'journal = "{work / name / "catalog-journal.jsonl"}"',
                    service_extra=f'node = "{name}"',
                    env={"RUNTIME_DIRECTORY": str(work / name / "run")},
                )
            )
            nodes.append((name, proc))
        yield nodes


def count_complete(database: str, timeout: float) -> dict[str, int]:
    """Recordings catalogued complete per node, once the count stops moving."""
    engine = create_engine(database)
    try:
        last: dict[str, int] = {}
        deadline = time.monotonic() + timeout
        while True:
            with engine.connect() as connection:
                rows = connection.execute(
                    text(
                        "SELECT node, count(*) FROM recordings WHERE state = 'complete'"
                        " GROUP BY node"
                    )
                )
                now = {str(node): int(count) for node, count in rows}
            if (now == last and now) or time.monotonic() > deadline:
                return now
            last = now
            time.sleep(2.0)
    finally:
        engine.dispose()


def run_one(
    work: Path,
    pg: PgServer,
    nodes_count: int,
    level: int,
    args: argparse.Namespace,
    pcap: Path,
    pbx_port: int,
) -> RunFigures:
    fig = RunFigures(
        f"{nodes_count} node" + ("s" if nodes_count > 1 else ""),
        level,
        args.rate,
        args.call_length,
    )
    fig.host_probe_ms = host_probe()
    name = pg.create_database()
    database = pg.database_url(name)
    run_dir = work / f"run-{level}-{nodes_count}"
    try:
        with (
            recorder_nodes(run_dir, nodes_count, database, pbx_port, 4 * level + 8) as nodes,
            start_kamailio(
                run_dir / "kamailio", nodes=[n.external_target for _, n in nodes], ping_interval=5
            ) as kam,
        ):
            log_dir = run_dir / "sipp-uac"
            log_dir.mkdir(parents=True, exist_ok=True)
            expected = level / args.rate + args.call_length
            cmd = sipp_cmd(
                log_dir,
                scenario="uac_load",
                target=kam.target,
                port=peers.free_udp_port(),
                media_port=peers.free_port_block(4 * level + 4),
                calls=level,
                rate=args.rate,
                limit=level,
                call_length_ms=int(args.call_length * 1000),
                service="service",
                keys={"pcap": str(pcap.resolve())},
                timeout_s=expected * 1.5 + 30,
                extra_args=["-trace_rtt", "-rtt_freq", "1"],
            )
            cpu_before = {n: family_cpu(p.proc.pid) for n, p in nodes}
            kam_before = family_cpu(kam.proc.pid)
            fig.loadavg_start = loadavg()
            start = time.monotonic()
            peak = 0
            with child(cmd, log_dir) as uac:
                while uac.poll() is None:
                    if time.monotonic() - start > expected * 1.5 + 60:
                        break
                    rows = read_stat_rows(log_dir / "stat.csv")
                    value = rows[-1].get("CurrentCall", "") if rows else ""
                    peak = max(peak, int(value) if value.isdigit() else 0)
                    time.sleep(SAMPLE_EVERY)
            fig.wall_s = round(time.monotonic() - start, 1)
            fig.loadavg_end = loadavg()
            for node_name, proc in nodes:
                used = family_cpu(proc.proc.pid) - cpu_before[node_name]
                fig.nodes.append(
                    NodeFigures(
                        node_name,
                        calls_received=len(proc.events("call.received")),
                        cpu_s=round(used, 1),
                        cores=round(used / fig.wall_s, 3),
                    )
                )
            fig.kamailio_cores = round((family_cpu(kam.proc.pid) - kam_before) / fig.wall_s, 3)
            rows = read_stat_rows(log_dir / "stat.csv")
            stats = rows[-1] if rows else {}
            result = peers.SippResult("uac_load", cmd, uac.returncode, log_dir, False, stats)
            fig.successful, fig.failed = result.successful, result.failed
            fig.retransmissions = result.retransmissions
            fig.peak_concurrent = max([peak, *(int(r.get("CurrentCall", "0") or 0) for r in rows)])
            times = response_times(log_dir)
            if times:
                fig.setup_ms_mean = round(statistics.fmean(times), 1)
                fig.setup_ms_median = round(statistics.median(times), 1)
                fig.setup_ms_p95 = round(percentile(times, 0.95), 1)
                fig.setup_ms_max = round(max(times), 1)
            complete = count_complete(database, timeout=60)
            for node in fig.nodes:
                node.recordings_complete = complete.get(node.name, 0)
    finally:
        pg.drop_database(name)
        peers.PORTS.release_test_ports()
    return fig


def markdown(figs: list[RunFigures], meta: dict[str, Any]) -> str:
    lines = [
        f"# Kamailio + 2 recorder nodes vs + 1 node ({meta['date']})",
        "",
        f"`bench/bench_nodes.py --rate {meta['rate']:g} --levels"
        f" {' '.join(str(x) for x in meta['levels'])} --call-length {meta['call_length']:g}`"
        f" on {meta['cpus']} cores ({meta['cpu']}), one PostgreSQL catalog, one storage root,"
        " every call recorded; sipp UAC and UAS, Kamailio, PostgreSQL and the nodes share"
        " the host.",
        "",
        "| N | setup | calls ok / failed | peak concurrent | INVITE->200 mean / p50 / p95 / max ms"
        " | node CPU (cores) | calls per node | recordings complete | kamailio cores"
        " | host probe ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in figs:
        cpu = " + ".join(f"{n.cores:.2f}" for n in f.nodes)
        calls = " / ".join(str(n.calls_received) for n in f.nodes)
        recs = " / ".join(str(n.recordings_complete) for n in f.nodes)
        setup = f"{f.setup_ms_mean} / {f.setup_ms_median} / {f.setup_ms_p95} / {f.setup_ms_max}"
        lines.append(
            f"| {f.level} | {f.setup} | {f.successful} / {f.failed} | {f.peak_concurrent} |"
            f" {setup} | {cpu} | {calls} | {recs} | {f.kamailio_cores:.3f} | {f.host_probe_ms} |"
        )
    lines += [
        "",
        "Node CPU counts each node's service and its writer process over the whole run (ramp,"
        " plateau and the calls' end). Figures on this shared VM move by up to 2x within an"
        " hour: compare rows of one run, and read the host probe column (a fixed Python loop"
        " timed before each run; lower is faster).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--levels", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--call-length", type=float, default=60.0)
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    pcap, _packets, _seconds = make_pcap(work, args.call_length)
    figs: list[RunFigures] = []
    pg = PgServer.start()
    try:
        uas_dir = work / "sipp-uas"
        uas_dir.mkdir()
        uas_port = peers.free_udp_port()
        uas_cmd = sipp_cmd(
            uas_dir,
            scenario="uas_echo",
            port=uas_port,
            media_port=peers.free_port_block(4),
            rtp_echo=True,
        )
        with child(uas_cmd, uas_dir):
            for level in args.levels:
                for count in (1, 2):
                    fig = run_one(work, pg, count, level, args, pcap, uas_port)
                    print(json.dumps(asdict(fig)), flush=True)
                    figs.append(fig)
    finally:
        pg.stop()
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "rate": args.rate,
        "levels": args.levels,
        "call_length": args.call_length,
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "work": str(work),
    }
    report = markdown(figs, meta)
    print(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"meta": meta, "runs": [asdict(f) for f in figs]}
        args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(report)


if __name__ == "__main__":
    main()
