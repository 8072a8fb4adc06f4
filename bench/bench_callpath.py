"""Load benchmark of the whole call path: sipp UAC -> recorder -> sipp UAS (RTP echo).

Two runs with the same load, one after the other:

1. direct: sipp UAC -> sipp UAS (-rtp_echo), the baseline of what the peers cost;
2. recorder: sipp UAC -> `recorder serve` (external side) -> sipp UAS.

Each call plays a PCMU pcap (an espeak-ng prompt padded with silence to just under
the call length, so RTP flows for the whole call, 50 packets/s each way) from its
own [auto_media_port]. `-r RATE -l LIMIT -m CALLS`: with rate * call length >= limit,
concurrency sits at LIMIT on a plateau. By default CALLS gives ~60 s of plateau.

    .venv/bin/python bench/bench_callpath.py [--rate 50] [--limit 300] [--calls N]
        [--call-length 10] [--plateau 60] [--skip-direct] [--out bench/results/X.json]

Figures: sipp's -trace_stat counters (successful, failed, retransmissions), CPU of
every process from /proc/PID/stat (utime + stime; the UAC's exact figure from
wait4), the recorder's RSS (idle before the run, VmHWM after), RTP loss from the
recorder's per-call `call.ended` log lines, and the kernel's UDP error counters
(/proc/net/snmp, machine-wide) as a loss indicator for the direct run too.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # plain `python bench/...`

from tests.interop import audio, peers  # noqa: E402
from tests.interop.recorder_proc import RecorderProcess, policy_template_text  # noqa: E402

PROMPT_TEXT = "This call may be recorded. To refuse, press nine."
CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY = 1.0  # seconds between /proc samples
# Media ports outside both the peers' allocator (35000-39999) and the ephemeral
# range (32768-60999): the UAC's [auto_media_port] steps 4 per call up from its base
# (sipp wraps it at base + 10000), the recorder takes 4 per call from its own range.
UAC_MEDIA_BASE = 24000  # outside the test allocator (15000-19999) and the ephemeral range
RECORDER_MEDIA_FIRST = 20000  # likewise
UDP_COUNTERS = (
    "InDatagrams",
    "NoPorts",
    "InErrors",
    "OutDatagrams",
    "RcvbufErrors",
    "SndbufErrors",
)


# --------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process, in seconds; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kib(pid: int, key: str) -> int | None:
    """A `kB` line of /proc/PID/status (VmRSS, VmHWM), in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def udp_counters() -> dict[str, int]:
    """The machine-wide `Udp:` counters of /proc/net/snmp."""
    lines = [
        ln.split()
        for ln in Path("/proc/net/snmp").read_text().splitlines()
        if ln.startswith("Udp:")
    ]
    names, values = lines[0][1:], lines[1][1:]
    table = dict(zip(names, (int(v) for v in values), strict=True))
    return {k: table.get(k, 0) for k in UDP_COUNTERS}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------- audio


def make_pcap(work: Path, call_length: float) -> tuple[Path, int, float]:
    """The prompt padded or cut to (call length - 1 s), as PCMU RTP: (pcap, packets, s).

    The pcap ends before the caller's BYE, so every call sends every packet.
    """
    wav = audio.make_prompt(PROMPT_TEXT, work / "prompt.wav")
    length = max(1.0, call_length - 1.0)
    padded = audio.pad(wav, work / "prompt_padded.wav", 0.3, length)
    fitted = work / "prompt_fitted.wav"
    subprocess.run(
        ["sox", str(padded), str(fitted), "trim", "0", f"{length:g}"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    pcap = audio.wav_to_pcap(fitted, work / "prompt_pcmu.pcap", "pcmu")
    return pcap, pcap_packets(pcap), peers.pcap_duration(pcap)


def pcap_packets(path: Path) -> int:
    data = path.read_bytes()
    off, count = 24, 0
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        off += 16 + incl
        count += 1
    return count


# --------------------------------------------------------------------------- processes


def sipp_cmd(log_dir: Path, **kwargs: Any) -> list[str]:
    """peers.sipp_command without -trace_msg: a message log per call costs CPU and disk."""
    cmd = peers.sipp_command(log_dir=log_dir, **kwargs)
    out: list[str] = []
    skip = 0
    for arg in cmd:
        if skip:
            skip -= 1
            continue
        if arg == "-trace_msg":
            continue
        if arg == "-message_file":
            skip = 1
            continue
        out.append(arg)
    return out


@contextmanager
def child(
    cmd: Sequence[str],
    log_dir: Path,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Our own child process, logs in `log_dir`, stopped (TERM, then KILL) on exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "command.txt").write_text(" ".join(cmd) + "\n")
    with open(log_dir / "stdout.log", "wb") as out, open(log_dir / "stderr.log", "wb") as err:
        proc = subprocess.Popen(
            list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=log_dir, env=env
        )
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> int | None:
    if proc.returncode is None and proc.poll() is None:
        with suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                proc.kill()
            proc.wait(5)
    return proc.returncode


def wait_udp_bound(port: int, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before binding UDP {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((peers.LOCALHOST, port))
            except OSError:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing bound UDP {port} within {timeout} s")


def wait_tcp_listening(
    port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"recorder exited early:\n{log.read_text(errors='replace')}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.2)
            if probe.connect_ex((peers.LOCALHOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"recorder did not listen on {port}:\n{log.read_text(errors='replace')}")


@contextmanager
def uas_echo(work: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """sipp uas_echo with -rtp_echo: (process, SIP port, log dir)."""
    log_dir = work / "sipp-uas"
    port = peers.free_udp_port()
    cmd = sipp_cmd(
        log_dir, scenario="uas_echo", port=port, media_port=peers.free_port_block(4), rtp_echo=True
    )
    with child(cmd, log_dir) as proc:
        wait_udp_bound(port, proc)
        yield proc, port, log_dir


@contextmanager
def recorder(
    work: Path, *, pbx_port: int, media_first: int, media_last: int, log_level: str = "info"
) -> Iterator[RecorderProcess]:
    """`recorder serve` (recorder_proc.running_recorder, with a chosen log level)."""
    work.mkdir(parents=True, exist_ok=True)
    external = peers.free_port_block(1, tcp=True)
    internal = peers.free_port_block(1, tcp=True)
    policy = work / "policy.toml"
    policy.write_text(
        policy_template_text(
            external_port=external,
            internal_port=internal,
            pbx_port=pbx_port,
            trunk_port=peers.free_udp_port(),
            media_first=media_first,
            media_last=media_last,
            storage=work,
            external_allow='"127.0.0.0/8"',
            ring_timeout=180,
            drain_seconds=2,
        )
    )
    log_path = work / "recorder.log"
    cmd = [
        sys.executable,
        "-m",
        "recorder.cli",
        "serve",
        "--config",
        str(policy),
        "--log-format",
        "json",
        "--log-level",
        log_level,
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=work, env=env
        )
    rec = RecorderProcess(proc, log_path, external, internal, media_first, media_last, policy)
    try:
        wait_tcp_listening(external, proc, log_path)
        wait_tcp_listening(internal, proc, log_path)
        yield rec
    finally:
        stop(proc)


# --------------------------------------------------------------------------- one run


@dataclass
class Sample:
    t: float  # seconds since the UAC started
    current_calls: int  # the UAC's CurrentCall
    recorder_cpu_s: float | None = None
    recorder_rss_kib: int | None = None


@dataclass
class RunFigures:
    name: str
    wall_s: float = 0.0
    uac_returncode: int | None = None
    uac_timed_out: bool = False
    calls_created: int = 0
    successful: int = 0
    failed: int = 0
    retransmissions_uac: int = 0
    retransmissions_uas: int = 0
    uas_successful: int = 0
    uas_failed: int = 0
    peak_concurrent_calls: int = 0
    plateau_s: float = 0.0
    response_time_avg_ms: float | None = None
    uac_cpu_s: float = 0.0
    uas_cpu_s: float = 0.0
    sipp_cpu_cores: float = 0.0
    udp_counters_delta: dict[str, int] = field(default_factory=dict)
    rtp_round_trip: dict[str, Any] = field(default_factory=dict)
    loadavg_start: list[float] = field(default_factory=list)
    loadavg_end: list[float] = field(default_factory=list)
    recorder: dict[str, Any] | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    log_dir: str = ""


def read_stat_rows(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except OSError:
        return []
    if len(rows) < 2:
        return []
    return [dict(zip(rows[0], row, strict=False)) for row in rows[1:]]


def last_int(rows: list[dict[str, str]], key: str) -> int:
    value = rows[-1].get(key, "") if rows else ""
    return int(value) if value.isdigit() else 0


def sipp_time_ms(value: str) -> float | None:
    """sipp's 'HH:MM:SS:uuuuuu' response time."""
    parts = value.split(":")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return None
    h, m, s, us = (int(p) for p in parts)
    return ((h * 60 + m) * 60 + s) * 1000 + us / 1000


def run_load(
    name: str,
    work: Path,
    target: str,
    uas: subprocess.Popen[bytes],
    uas_log: Path,
    args: argparse.Namespace,
    pcap: Path,
    rec: RecorderProcess | None,
) -> RunFigures:
    """Run the UAC to completion against `target`, sampling CPU and concurrency."""
    fig = RunFigures(name)
    log_dir = work / f"sipp-uac-{name}"
    log_dir.mkdir(parents=True, exist_ok=True)
    fig.log_dir = str(work)
    throughput = min(args.rate, args.limit / args.call_length)
    expected_s = args.limit / args.rate + args.calls / throughput + args.call_length
    sipp_timeout = expected_s * 1.5 + 30
    cmd = sipp_cmd(
        log_dir,
        scenario="uac_load",
        target=target,
        port=peers.free_udp_port(),
        media_port=UAC_MEDIA_BASE,
        calls=args.calls,
        rate=args.rate,
        limit=args.limit,
        call_length_ms=int(args.call_length * 1000),
        service="service",
        keys={"pcap": str(pcap.resolve())},
        timeout_s=sipp_timeout,
    )
    stat_csv = log_dir / "stat.csv"
    fig.loadavg_start = loadavg()
    udp_before = udp_counters()
    uas_cpu_before = cpu_seconds(uas.pid) or 0.0
    rec_cpu_before = cpu_seconds(rec.proc.pid) if rec is not None else None
    samples: list[Sample] = []
    with child(cmd, log_dir) as proc:
        start = time.monotonic()
        rusage = None
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            now = time.monotonic() - start
            if now > sipp_timeout + 10:
                fig.uac_timed_out = True
                break
            rows = read_stat_rows(stat_csv)
            sample = Sample(round(now, 2), last_int(rows, "CurrentCall"))
            if rec is not None:
                sample.recorder_cpu_s = cpu_seconds(rec.proc.pid)
                sample.recorder_rss_kib = status_kib(rec.proc.pid, "VmRSS")
            samples.append(sample)
            time.sleep(SAMPLE_EVERY)
        fig.wall_s = round(time.monotonic() - start, 2)
        fig.uac_returncode = proc.returncode
        if rusage is not None and not fig.uac_timed_out:
            fig.uac_cpu_s = round(rusage.ru_utime + rusage.ru_stime, 2)
    rec_cpu_after = cpu_seconds(rec.proc.pid) if rec is not None else None
    fig.uas_cpu_s = round((cpu_seconds(uas.pid) or 0.0) - uas_cpu_before, 2)
    fig.sipp_cpu_cores = round((fig.uac_cpu_s + fig.uas_cpu_s) / fig.wall_s, 3)
    udp_after = udp_counters()
    fig.udp_counters_delta = {k: udp_after[k] - udp_before[k] for k in UDP_COUNTERS}
    fig.loadavg_end = loadavg()

    rows = read_stat_rows(stat_csv)
    stats = rows[-1] if rows else {}
    result = peers.SippResult(
        "uac_load", cmd, fig.uac_returncode, log_dir, fig.uac_timed_out, stats
    )
    fig.calls_created = result.created
    fig.successful = result.successful
    fig.failed = result.failed
    fig.retransmissions_uac = result.retransmissions
    fig.rtp_round_trip = round_trip(fig, args.pcap_packets, args.calls)
    fig.response_time_avg_ms = sipp_time_ms(stats.get("ResponseTime1(C)", ""))
    fig.peak_concurrent_calls = max((s.current_calls for s in samples), default=0)
    on_plateau = [s for s in samples if s.current_calls >= 0.95 * args.limit]
    fig.plateau_s = round(on_plateau[-1].t - on_plateau[0].t, 1) if on_plateau else 0.0
    fig.samples = [asdict(s) for s in samples]

    # The UAS's counters: it keeps running (and writing stat.csv every second).
    time.sleep(1.5)
    uas_rows = read_stat_rows(uas_log / "stat.csv")
    fig.uas_successful = last_int(uas_rows, "SuccessfulCall(C)")
    fig.uas_failed = last_int(uas_rows, "FailedCall(C)")
    fig.retransmissions_uas = last_int(uas_rows, "Retransmissions(C)")

    if rec is not None and rec_cpu_before is not None and rec_cpu_after is not None:
        fig.recorder = recorder_figures(
            rec, args, samples, on_plateau, rec_cpu_after - rec_cpu_before, fig.wall_s
        )
    return fig


def round_trip(fig: RunFigures, pcap_packets: int, calls: int) -> dict[str, Any]:
    """RTP that came back to the caller's ports, from the kernel's UDP NoPorts counter.

    sipp's pcap player sends from each call's [auto_media_port] without listening
    on it, so every echoed packet that makes it back ends as a NoPorts datagram;
    except call 1's (and call 2501's...), whose port is sipp's own bound -mp base.
    Machine-wide: anything else hitting closed UDP ports during the run counts too.
    """
    on_base = min(fig.successful, -(-calls // 2500))
    expected = pcap_packets * max(0, fig.successful - on_base)
    arrived = fig.udp_counters_delta.get("NoPorts", 0)
    missing = max(0, expected - arrived)
    return {
        "expected": expected,
        "arrived": arrived,
        "missing": missing,
        "loss_pct": pct(missing, expected),
    }


def plateau_cores(on_plateau: list[Sample]) -> float | None:
    with_cpu = [s for s in on_plateau if s.recorder_cpu_s is not None]
    if len(with_cpu) < 2:
        return None
    first, last = with_cpu[0], with_cpu[-1]
    assert first.recorder_cpu_s is not None and last.recorder_cpu_s is not None
    return round((last.recorder_cpu_s - first.recorder_cpu_s) / (last.t - first.t), 3)


def recorder_figures(
    rec: RecorderProcess,
    args: argparse.Namespace,
    samples: list[Sample],
    on_plateau: list[Sample],
    cpu_s: float,
    wall_s: float,
) -> dict[str, Any]:
    """CPU, memory, per-call RTP counters and the port pool of the recorder run."""
    out: dict[str, Any] = {
        "cpu_s": round(cpu_s, 2),
        "cpu_cores_avg": round(cpu_s / wall_s, 3),
        "cpu_cores_plateau": plateau_cores(on_plateau),
        "rss_peak_kib_sampled": max((s.recorder_rss_kib or 0 for s in samples), default=0),
    }
    ended = wait_call_ended(rec, args.calls, timeout=30.0)
    out["call_ended_events"] = len(ended)
    out["rtp"] = rtp_figures(ended, args.pcap_packets)
    out["media_ports_in_use_after"] = rec.media_ports_in_use()
    out["media_pool_whole"] = out["media_ports_in_use_after"] == []
    out["rss_peak_kib"] = status_kib(rec.proc.pid, "VmHWM")
    out["rss_after_kib"] = status_kib(rec.proc.pid, "VmRSS")
    out["errors_logged"] = sum(1 for e in rec.events() if e.get("level") in ("error", "critical"))
    return out


def wait_call_ended(rec: RecorderProcess, count: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        ended = rec.events("call.ended")
        if len(ended) >= count or time.monotonic() > deadline or rec.proc.poll() is not None:
            return ended
        time.sleep(0.5)


def rtp_figures(ended: list[dict[str, Any]], pcap_packets: int) -> dict[str, Any]:
    """Per-call RTP counters summed over calls.

    Caller -> recorder: leg A received (`a.rtp_packets`) vs the pcap's packet count.
    Recorder -> UAS -> recorder (echo): leg B received (`b.rtp_packets`) vs what leg A
    forwarded to the UAS (`a.rtp_forwarded`); a loss here may be in the UAS's echo.
    """
    sums: dict[str, int] = {}
    caller_missing = echo_missing = 0
    calls_with_caller_loss = calls_with_echo_loss = 0
    jitter_a: list[float] = []
    jitter_b: list[float] = []
    for event in ended:
        media = event.get("media") or {}
        a, b = media.get("a") or {}, media.get("b") or {}
        for leg_name, leg in (("a", a), ("b", b)):
            for key, value in leg.items():
                if (
                    isinstance(value, int)
                    and not isinstance(value, bool)
                    and (
                        key.startswith(("rtp_", "rtcp_", "dropped_"))
                        or key in ("socket_errors", "ssrc_changes", "injected_rtp")
                    )
                ):
                    sums[f"{leg_name}.{key}"] = sums.get(f"{leg_name}.{key}", 0) + value
        miss = max(0, pcap_packets - int(a.get("rtp_packets", 0)))
        caller_missing += miss
        calls_with_caller_loss += miss > 0
        echo = max(0, int(a.get("rtp_forwarded", 0)) - int(b.get("rtp_packets", 0)))
        echo_missing += echo
        calls_with_echo_loss += echo > 0
        if "jitter_ms" in a:
            jitter_a.append(float(a["jitter_ms"]))
        if "jitter_ms" in b:
            jitter_b.append(float(b["jitter_ms"]))
    expected_caller = pcap_packets * len(ended)
    forwarded_to_uas = sums.get("a.rtp_forwarded", 0)
    dropped = {k: v for k, v in sums.items() if ".dropped_" in k or k.endswith("socket_errors")}
    return {
        "calls": len(ended),
        "pcap_packets_per_call": pcap_packets,
        "caller_expected": expected_caller,
        "caller_received": sums.get("a.rtp_packets", 0),
        "caller_missing": caller_missing,
        "caller_loss_pct": pct(caller_missing, expected_caller),
        "calls_with_caller_loss": calls_with_caller_loss,
        "forwarded_to_uas": forwarded_to_uas,
        "echo_received": sums.get("b.rtp_packets", 0),
        "echo_missing": echo_missing,
        "echo_loss_pct": pct(echo_missing, forwarded_to_uas),
        "calls_with_echo_loss": calls_with_echo_loss,
        "forwarded_to_caller": sums.get("b.rtp_forwarded", 0),
        "seq_gap_lost": {"a": sums.get("a.rtp_lost", 0), "b": sums.get("b.rtp_lost", 0)},
        "dropped": dropped,
        "dropped_total": sum(dropped.values()),
        "jitter_ms_a": distribution(jitter_a),
        "jitter_ms_b": distribution(jitter_b),
        "sums": sums,
    }


def pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 4) if whole else None


def distribution(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1], 3)}


# --------------------------------------------------------------------------- report


def fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def spread(dist: Any) -> str | None:
    return f"{dist['p50']} / {dist['p99']}" if isinstance(dist, dict) else None


def markdown_table(runs: list[RunFigures]) -> str:
    def rec(fig: RunFigures, *keys: str) -> Any:
        node: Any = fig.recorder
        for key in keys:
            if not isinstance(node, dict):
                return None
            node = node.get(key)
        return node

    def mib(kib: Any) -> Any:
        return round(kib / 1024, 1) if isinstance(kib, int) else None

    rows: list[tuple[str, Any]] = [
        ("load average at start (1/5/15 min)", lambda f: "/".join(map(str, f.loadavg_start))),
        ("wall time (s)", lambda f: f.wall_s),
        (
            "calls created / successful / failed",
            lambda f: f"{f.calls_created} / {f.successful} / {f.failed}",
        ),
        ("UAS successful / failed", lambda f: f"{f.uas_successful} / {f.uas_failed}"),
        (
            "retransmissions UAC / UAS",
            lambda f: f"{f.retransmissions_uac} / {f.retransmissions_uas}",
        ),
        ("INVITE->200 avg (ms)", lambda f: f.response_time_avg_ms),
        ("peak concurrent calls", lambda f: f.peak_concurrent_calls),
        ("time at >=95% of limit (s)", lambda f: f.plateau_s),
        ("sipp CPU UAC + UAS (s)", lambda f: f"{f.uac_cpu_s} + {f.uas_cpu_s}"),
        ("sipp cores (avg)", lambda f: f.sipp_cpu_cores),
        ("recorder cores (avg over run)", lambda f: rec(f, "cpu_cores_avg")),
        ("recorder cores (plateau)", lambda f: rec(f, "cpu_cores_plateau")),
        (
            "recorder RSS idle / peak (MiB)",
            lambda f: (
                None
                if f.recorder is None
                else f"{mib(f.recorder.get('rss_idle_kib'))} / {mib(rec(f, 'rss_peak_kib'))}"
            ),
        ),
        (
            "RTP caller->recorder lost / expected",
            lambda f: (
                None
                if f.recorder is None
                else f"{rec(f, 'rtp', 'caller_missing')} / {rec(f, 'rtp', 'caller_expected')}"
                f" ({fmt(rec(f, 'rtp', 'caller_loss_pct'))}%)"
            ),
        ),
        (
            "RTP echo (recorder->UAS->recorder) lost / sent",
            lambda f: (
                None
                if f.recorder is None
                else f"{rec(f, 'rtp', 'echo_missing')} / {rec(f, 'rtp', 'forwarded_to_uas')}"
                f" ({fmt(rec(f, 'rtp', 'echo_loss_pct'))}%)"
            ),
        ),
        ("RTP forwarded to caller", lambda f: rec(f, "rtp", "forwarded_to_caller")),
        ("recorder dropped_* + socket_errors", lambda f: rec(f, "rtp", "dropped_total")),
        ("jitter A p50/p99 (ms)", lambda f: spread(rec(f, "rtp", "jitter_ms_a"))),
        ("jitter B p50/p99 (ms)", lambda f: spread(rec(f, "rtp", "jitter_ms_b"))),
        ("call.ended events", lambda f: rec(f, "call_ended_events")),
        ("media pool whole after", lambda f: rec(f, "media_pool_whole")),
        (
            "kernel UDP RcvbufErrors / InErrors",
            lambda f: (
                f"{f.udp_counters_delta.get('RcvbufErrors')} / "
                f"{f.udp_counters_delta.get('InErrors')}"
            ),
        ),
        (
            "RTP round trip back at caller's ports lost / expected (NoPorts)",
            lambda f: (
                f"{f.rtp_round_trip.get('missing')} / {f.rtp_round_trip.get('expected')}"
                f" ({fmt(f.rtp_round_trip.get('loss_pct'))}%)"
            ),
        ),
    ]
    header = "| figure | " + " | ".join(f.name for f in runs) + " |"
    lines = [header, "|---" * (len(runs) + 1) + "|"]
    for label, getter in rows:
        lines.append(f"| {label} | " + " | ".join(fmt(getter(f)) for f in runs) + " |")
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    uvloop_spec = importlib.util.find_spec("uvloop")
    uvloop_version = importlib.metadata.version("uvloop") if uvloop_spec is not None else None
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        # recorder.service.run_service uses uvloop whenever it imports (same interpreter).
        "uvloop_used": uvloop_spec is not None,
        "uvloop_version": uvloop_version,
        "sipp": first_line(["sipp", "-v"]),
        "loadavg_at_start": loadavg(),
    }


def uvloop_loaded(pid: int) -> bool | None:
    """Whether the running recorder has uvloop's extension module mapped."""
    try:
        return "uvloop" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None


def first_line(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    text = (out.stdout + out.stderr).strip()
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), None)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rate", type=float, default=50.0, help="new calls per second (-r)")
    p.add_argument("--limit", type=int, default=300, help="concurrent calls cap (-l)")
    p.add_argument(
        "--calls",
        type=int,
        default=None,
        help="total calls (-m); default: enough for --plateau seconds at the limit",
    )
    p.add_argument("--call-length", type=float, default=10.0, help="seconds per call (-d)")
    p.add_argument(
        "--plateau",
        type=float,
        default=60.0,
        help="seconds at the limit, used when --calls is not given",
    )
    p.add_argument("--skip-direct", action="store_true", help="no sipp->sipp baseline")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON output (default bench/results/callpath-YYYYMMDD.json)",
    )
    args = p.parse_args(argv)
    if args.calls is None:
        throughput = min(args.rate, args.limit / args.call_length)
        args.calls = int(args.limit + args.plateau * throughput)
    if args.out is None:
        stamp = dt.date.today().strftime("%Y%m%d")
        args.out = ROOT / "bench" / "results" / f"callpath-{stamp}.json"
    if args.rate * args.call_length < args.limit:
        print(
            f"note: rate * call length = {args.rate * args.call_length:g} < limit "
            f"{args.limit}: concurrency will not reach the limit",
            file=sys.stderr,
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment()
    print(
        f"load average at start: {env['loadavg_at_start']}; nproc {env['nproc']}; "
        f"calls {args.calls} at {args.rate:g}/s, limit {args.limit}, "
        f"{args.call_length:g} s each",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="bench-callpath-"))
    pcap, args.pcap_packets, pcap_s = make_pcap(work, args.call_length)
    print(f"pcap: {args.pcap_packets} packets, {pcap_s:.2f} s; logs in {work}", flush=True)
    media_ports = args.limit * 4 + max(200, args.limit)
    media_first = RECORDER_MEDIA_FIRST
    media_last = media_first + media_ports - 1
    if 4 * args.calls + 4 > 10000:
        print("note: [auto_media_port] wraps after 2500 calls (ports are reused)", file=sys.stderr)

    runs: list[RunFigures] = []
    if not args.skip_direct:
        with uas_echo(work / "direct") as (uas, uas_port, uas_log):
            print("direct: sipp UAC -> sipp UAS ...", flush=True)
            runs.append(
                run_load(
                    "direct",
                    work / "direct",
                    f"{peers.LOCALHOST}:{uas_port}",
                    uas,
                    uas_log,
                    args,
                    pcap,
                    None,
                )
            )
        time.sleep(3.0)  # let the last calls' sockets close before the next run

    with (
        uas_echo(work / "recorder") as (uas, uas_port, uas_log),
        recorder(
            work / "recorder", pbx_port=uas_port, media_first=media_first, media_last=media_last
        ) as rec,
    ):
        time.sleep(2.0)
        idle_rss = status_kib(rec.proc.pid, "VmRSS")
        env["uvloop_loaded_in_recorder"] = uvloop_loaded(rec.proc.pid)
        print("through the recorder: sipp UAC -> recorder -> sipp UAS ...", flush=True)
        fig = run_load(
            "recorder", work / "recorder", rec.external_target, uas, uas_log, args, pcap, rec
        )
        assert fig.recorder is not None
        fig.recorder["rss_idle_kib"] = idle_rss
        fig.recorder["media_ports"] = f"{media_first}-{media_last}"
        runs.append(fig)
        rec_proc = rec.proc
    fig.recorder["exit_code"] = rec_proc.returncode

    table = markdown_table(runs)
    print()
    print(table)
    report = {
        "environment": env,
        "parameters": {
            "rate": args.rate,
            "limit": args.limit,
            "calls": args.calls,
            "call_length_s": args.call_length,
            "pcap_packets": args.pcap_packets,
            "pcap_seconds": round(pcap_s, 3),
            "rtp": "PCMU 20 ms, both ways (UAS echoes)",
        },
        "runs": {f.name: asdict(f) for f in runs},
        "table_markdown": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out} (peer and recorder logs in {work})")
    ok = all(f.failed == 0 and f.successful == args.calls for f in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
