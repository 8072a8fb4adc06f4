"""SIP fuzzing at volume (issue 20): N grammar-made datagrams into a real `recorder serve`.

The same batch as tests/interop/test_sip_fuzz.py (tests/sip/sip_grammar.py: valid messages,
mutants, garbage; seeded), sent over UDP from 127.0.0.1 as fast as the recorder takes them
(a bounded window in flight), a valid OPTIONS after every 500. A busy PBX (486 to every
INVITE) stands behind it, so that every valid INVITE runs the whole call path.

    .venv/bin/python bench/bench_fuzz.py [--messages 1000000] [--seed 20]
        [--window 128] [--log-level info] [--out bench/results/fuzz-YYYYMMDD.json]

Figures: messages sent (bytes), distinct answers by status, malformed requests sent vs
answered with the parser's status (400 mostly), valid requests answered, answers missing or
wrong, OPTIONS checks passed, exceptions out of the parser (must be 0), the recorder's CPU
seconds and RSS before and after (from /proc), alive at the end, crash signs in its log
(exceptions logged, error events), wall time and messages/s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # plain `python bench/...`

from tests.interop import peers  # noqa: E402
from tests.interop.test_sip_fuzz import (  # noqa: E402
    CRASH_EVENTS,
    KNOWN_CATALOG_ERRORS,
    LOAD_ERRORS,
    BusyPbx,
    FuzzRun,
    Prediction,
    datagrams,
    predict,
)
from tests.sip.sip_grammar import MAX_UDP_PAYLOAD  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
# The deployment part only: no [recording] table, so the policy's defaults decide each call.
POLICY = """\
[service]
timezone = "America/Montreal"
drain_seconds = 2

[sip.external]
listen = "127.0.0.1:{external}"
allow = ["127.0.0.0/8"]
next_hop = "127.0.0.1:{trunk}"

[sip.internal]
listen = "127.0.0.1:{internal}"
allow = ["127.0.0.1/32"]
next_hop = "127.0.0.1:{pbx}"

[media]
address = "127.0.0.1"
ports = "{media_first}-{media_last}"

[storage]
dir = "{storage}/recordings"
database = "sqlite:///{storage}/recorder.db"
"""


def process_figures(pid: int) -> dict[str, float]:
    """CPU seconds (utime + stime), RSS and peak RSS of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    out = {"cpu_seconds": round((int(fields[11]) + int(fields[12])) / CLK_TCK, 2)}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key = "rss_mib" if line.startswith("VmRSS") else "peak_rss_mib"
                out[key] = round(int(line.split()[1]) / 1024, 1)
    return out


CHUNK = 2000
Item = tuple[bytes, Prediction | None, str | None]


def _generate(seed: int, count: int, queue: mp.Queue[list[Item] | None]) -> None:
    """Child process: the datagrams and their predictions, in chunks (the sender's CPU goes
    to the socket, so the rate is the recorder's)."""
    chunk: list[Item] = []
    for data in datagrams(seed, count):
        data = data[:MAX_UDP_PAYLOAD]
        try:
            chunk.append((data, predict(data), None))
        except Exception as exc:  # anything but RemoteProtocolError out of the parser
            chunk.append((data, None, repr(exc)))
        if len(chunk) == CHUNK:
            queue.put(chunk)
            chunk = []
    if chunk:
        queue.put(chunk)
    queue.put(None)


def produced(seed: int, count: int) -> Iterator[Item]:
    queue: mp.Queue[list[Item] | None] = mp.Queue(maxsize=8)
    child = mp.Process(target=_generate, args=(seed, count, queue), daemon=True)
    child.start()
    try:
        while (chunk := queue.get()) is not None:
            yield from chunk
    finally:
        child.kill()
        child.join()


def udp_counters() -> dict[str, int]:
    """The kernel's UDP counters (machine-wide): RcvbufErrors says datagrams were dropped."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    names, values = [row for row in lines if row[0] == "Udp:"][:2]
    return dict(zip(names[1:], map(int, values[1:]), strict=True))


def start_recorder(
    workdir: Path, pbx_port: int, log_level: str
) -> tuple[subprocess.Popen[bytes], int, Path]:
    external = peers.free_port_block(1, tcp=True)
    internal = peers.free_port_block(1, tcp=True)
    media = peers.free_port_block(64)
    policy = workdir / "policy.toml"
    policy.write_text(
        POLICY.format(
            external=external,
            internal=internal,
            pbx=pbx_port,
            trunk=peers.free_udp_port(),
            media_first=media,
            media_last=media + 63,
            storage=workdir,
        )
    )
    log_path = workdir / "recorder.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "recorder.cli", "serve", "--config", str(policy),
             "--log-format", "json", "--log-level", log_level],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT)),
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while b'"service.started"' not in log_path.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"recorder did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.1)
    return proc, external, log_path


def scan_log(path: Path) -> dict[str, Any]:
    """Crash signs in the recorder's log, streamed (it can be large)."""
    signs: Counter[str] = Counter()
    known: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    with path.open(errors="replace") as f:
        for line in f:
            for sign in CRASH_EVENTS:
                if sign in line:
                    signs[sign] += 1
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            name = str(entry.get("event", ""))
            level = str(entry.get("level", ""))
            levels[level] += 1
            if "exc_info" in entry or "exception" in entry:
                signs[f"exception logged: {name[:80]}"] += 1
            elif name in LOAD_ERRORS:
                known[name] += 1
            elif name == "catalog.write_failed" and entry.get("error") in KNOWN_CATALOG_ERRORS:
                known[f"catalog.write_failed {entry.get('what')}: {entry.get('error')}"] += 1
            elif level in ("error", "critical") or name.endswith("_failed"):
                signs[f"{level}: {name[:80]}"] += 1
    return {
        "crash_signs": dict(signs),
        "known_issues": dict(known),
        "log_lines_by_level": dict(levels),
        "log_bytes": path.stat().st_size,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--window-bytes", type=int, default=48_000)
    parser.add_argument("--check-every", type=int, default=500)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    today = dt.date.today()
    out = args.out or ROOT / "bench" / "results" / f"fuzz-{today:%Y%m%d}.json"

    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp, BusyPbx() as pbx:
        workdir = Path(tmp)
        proc, port, log_path = start_recorder(workdir, pbx.port, args.log_level)
        try:
            time.sleep(1.0)
            before = process_figures(proc.pid)
            udp_before = udp_counters()
            run = FuzzRun(("127.0.0.1", port), window=args.window, window_bytes=args.window_bytes)
            started = time.monotonic()
            checked_first = run.check()
            progress = max(args.messages // 20, 1)
            samples: list[list[float]] = []  # [sent, seconds, recorder RSS MiB]
            for n, (data, prediction, error) in enumerate(
                produced(args.seed, args.messages), start=1
            ):
                if error is not None:
                    run.stats.parser_exceptions += 1
                    run.stats.problems.append(f"parser raised {error} on {data[:80]!r}")
                    continue
                run.send(data, prediction)
                if n % args.check_every == 0:
                    run.check()
                if n % progress == 0:
                    rate = n / (time.monotonic() - started)
                    rss = process_figures(proc.pid).get("rss_mib", 0.0)
                    samples.append([n, round(time.monotonic() - started, 1), rss])
                    print(f"{n} sent, {rate:.0f}/s, {run.stats.missing} missing, {rss} MiB",
                          file=sys.stderr)  # fmt: skip
                if proc.poll() is not None:
                    break
            run.drain()
            wall = time.monotonic() - started
            alive = proc.poll() is None
            after = process_figures(proc.pid) if alive else {}
            udp_after = udp_counters()
            stats = run.stats
            run.close()
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        log = scan_log(log_path)
        pbx_invites = pbx.invites

    malformed_by_status = {
        s: n for s, n in sorted(stats.by_status.items()) if s in (400, 413, 416, 501, 505, 513)
    }
    result = {
        "date": today.isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start_and_end": [load_before, [round(x, 2) for x in os.getloadavg()]],
        },
        "seed": args.seed,
        "window": args.window,
        "window_bytes": args.window_bytes,
        "messages_sent": stats.sent,
        "bytes_sent": stats.sent_bytes,
        "wall_seconds": round(wall, 1),
        "messages_per_second": round(stats.sent / wall, 1),
        "answers_received": stats.answers,
        "responses_by_status": dict(sorted(stats.by_status.items())),
        "malformed_sent": stats.malformed,
        "malformed_requests_sent": stats.malformed_requests,
        "malformed_requests_answered": stats.malformed_answered,
        "malformed_answers_by_status": malformed_by_status,
        "answers_400": stats.by_status.get(400, 0),
        "valid_requests_sent": stats.valid_requests,
        "valid_requests_answered": stats.valid_requests_answered,
        "answers_missing": stats.missing,
        "answers_late": stats.late,
        "answers_wrong_status": stats.wrong_status,
        "answers_unexpected": stats.unexpected,
        "options_checks": stats.checks,
        "options_checks_passed": stats.checks_passed,
        "first_check_passed": checked_first,
        "parser_exceptions": stats.parser_exceptions,
        "pbx_invites": pbx_invites,
        # machine-wide counters: other processes' sockets count too
        "kernel_udp_drops": {
            k: udp_after[k] - udp_before[k] for k in ("RcvbufErrors", "SndbufErrors", "InErrors")
        },
        "recorder": {
            "alive_at_end": alive,
            "before": before,
            "after": after,
            "cpu_seconds_used": round(after.get("cpu_seconds", 0.0) - before["cpu_seconds"], 2),
            "rss_samples_sent_seconds_mib": samples,
            "cpu_us_per_message": round(
                (after.get("cpu_seconds", 0.0) - before["cpu_seconds"]) / max(stats.sent, 1) * 1e6,
                1,
            ),
            "log_level": args.log_level,
            **log,
        },
        "problems": stats.problems[:50],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = (
        alive
        and stats.parser_exceptions == 0
        and stats.malformed_answered == stats.malformed_requests
        and stats.checks_passed == stats.checks
        and not log["crash_signs"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
