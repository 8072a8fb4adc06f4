"""Soak benchmark (issue 20): half the rated load through `recorder serve` for 30 minutes.

    .venv/bin/python bench/bench_soak.py [--minutes 30] [--calls 125] [--call-length 60]
        [--sample 10] [--out-stem soak-YYYYMMDD]

The rated figure (bench/results/scale-20261203.md) is ~250 concurrent recorded calls on
this kind of box, so the default is 125. A sipp UAC (bench/bench_scale.py's uac_load:
a PCMU pcap per call from its own [auto_media_port]) places calls at `calls /
call-length` per second with `-l calls`, each `--call-length` s, towards a sipp UAS that
echoes RTP, through `recorder serve` recording every call (bench_scale's record-all
policy). Calls keep turning over: `calls + rate * minutes * 60` of them in all, so that
concurrency sits at `calls` for `--minutes` after the first call length of ramp.

Every `--sample` s: the recorder's RSS (VmRSS) and PSS, open fds, threads and CPU, the
same summed over its children (the writer process); event-loop lag from /metrics
(`recorder_event_loop_lag_seconds`, a cumulative histogram measured every 0.5 s: the
interval's mean from the sum/count deltas, the bound of the highest bucket that moved,
and `recorder_event_loop_lag_last_seconds`); concurrent, completed and failed calls
(sipp's -trace_stat csv, both sides, and the recorder's counters); recordings written
(/metrics and the .wav files on disk).

At the end: least-squares slopes per hour of RSS, fds, threads and loop lag over the
steady span (from the end of the `--warmup`, 2 minutes, to the last new call, before
the ramp down); the recorder's figures idle before the load and after it drained; then,
with the recorder stopped, `recorder catalog verify`, and the recordings (files on disk,
catalogued) against the calls sipp completed. Exit 1 on a failed call, a verify problem,
a recording count off, an unclean recorder exit or a process it left behind.

Writes bench/results/STEM.json (all samples and the summary), STEM.md and STEM.png.
Ports: the peers' allocator (RECORDER_TEST_PORTS moves it) for SIP, the recorder's media
range and the UAS; the UAC's [auto_media_port] walks a 10,000-port window of its own
(sipp: base + (4 * (n - 1)) % 10000; its pcap player sends from a raw socket and binds
nothing there), below both the allocator's range and the ephemeral range.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # plain `python bench/...`

from bench import bench_callpath as cp  # noqa: E402
from bench import bench_scale as sc  # noqa: E402
from tests.interop import peers  # noqa: E402
from tests.interop.recorder_proc import RecorderProcess, policy_template_text  # noqa: E402

UAC_MEDIA_BASE = 2000  # [auto_media_port] window: 2000-12003 (see the docstring)
UAC_MEDIA_WINDOW = 10000 + 4
WARMUP_S = 120.0
DRAIN_TIMEOUT_S = 90.0
# What "flat" means in the report (not in the exit code: a 30-minute slope is noisy).
FLAT_LIMITS: dict[str, float] = {
    "rss_mib": 10.0,  # MiB/h
    "fds": 10.0,  # fds/h (the fds after the drain must also equal the idle ones)
    "lag_mean_ms": 1.0,  # ms/h
}
LEFT_BEHIND_GRACE_S = 10.0  # after the recorder's exit, for its children to leave
FD_SLACK_AFTER = 2  # fds after the drain vs idle before: a scrape's socket may be open


# --------------------------------------------------------------------------- the recorder


@contextmanager
def recorder_service(
    work: Path, uas_port: int, media_first: int, media_last: int
) -> Iterator[tuple[RecorderProcess, int]]:
    """`recorder serve` with bench_scale's record-all policy and /metrics: (process, port).

    Not bench_scale.recorder_with_policy: POLICY_TEMPLATE has taken more keys since
    (recordings, database, service_extra, storage_extra) and it fails with KeyError.
    """
    work.mkdir(parents=True, exist_ok=True)
    external = peers.free_port_block(1, tcp=True)
    internal = peers.free_port_block(1, tcp=True)
    metrics_port = peers.free_port_block(1, tcp=True)
    policy = work / "policy.toml"
    policy.write_text(
        policy_template_text(
            external_port=external,
            internal_port=internal,
            pbx_port=uas_port,
            trunk_port=peers.free_udp_port(),
            media_first=media_first,
            media_last=media_last,
            recordings=work / "recordings",
            database=f"sqlite:///{work}/recorder.db",
            storage_extra="",
            service_extra="",
            external_allow='"127.0.0.0/8"',
            ring_timeout=180,
            drain_seconds=2,
        )
        + sc.RECORD_ALL_POLICY
        + f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
    )
    log_path = work / "recorder.log"
    cmd = [sys.executable, "-m", "recorder.cli", "serve", "--config", str(policy)]
    cmd += ["--log-format", "json", "--log-level", "info"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=work, env=env
        )
    rec = RecorderProcess(proc, log_path, external, internal, media_first, media_last, policy)
    try:
        cp.wait_tcp_listening(external, proc, log_path)
        cp.wait_tcp_listening(internal, proc, log_path)
        rec.wait_event("service.started", timeout=30)
        cp.wait_tcp_listening(metrics_port, proc, log_path)
        yield rec, metrics_port
    finally:
        cp.stop(proc, grace=60.0)


def catalog_verify(policy: Path, work: Path) -> dict[str, Any]:
    """`recorder catalog verify --json` (the recorder stopped): its report and exit code."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "recorder.cli", "catalog", "verify", "--json", "--config", policy],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        timeout=600,
        check=False,
    )
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        report = {"ok": False, "unparsed_output": (done.stdout + done.stderr)[-2000:]}
    report["exit_code"] = done.returncode
    return report


# --------------------------------------------------------------------------- /proc


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def running(pid: int, started: int) -> bool:
    """`pid` is still the process that started at `started`, and not a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0] != "Z" and int(fields[19]) == started


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: tells a PID apart from a later one that reuses it."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[19])


def process_figures(pid: int) -> dict[str, Any]:
    return {
        "rss_kib": cp.status_kib(pid, "VmRSS"),
        "pss_kib": sc.pss_kib(pid),
        "fds": fd_count(pid),
        "threads": cp.status_kib(pid, "Threads"),  # a plain number, read the same way
        "cpu_s": cp.cpu_seconds(pid),
    }


def children_figures(pid: int) -> dict[str, Any]:
    """The recorder's descendants (the writer process) summed."""
    kids = [p for p in sc.children_of([pid]) if p != pid]
    out: dict[str, Any] = {"pids": kids, "rss_kib": 0, "pss_kib": 0, "fds": 0, "threads": 0}
    for kid in kids:
        fig = process_figures(kid)
        for key in ("rss_kib", "pss_kib", "fds", "threads"):
            out[key] += fig[key] or 0
    return out


def bound_udp_ports(first: int, last: int) -> list[int]:
    """UDP ports in [first, last] that some socket holds (/proc/net/udp and udp6)."""
    ports: set[int] = set()
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        with suppress(OSError):
            for line in Path(name).read_text().splitlines()[1:]:
                port = int(line.split()[1].rsplit(":", 1)[1], 16)
                if first <= port <= last:
                    ports.add(port)
    return sorted(ports)


def count_wav(directory: Path) -> int:
    """Finished recordings on disk: *.wav under storage.dir, training copies apart."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(directory):
        if Path(dirpath) == directory and "training" in dirnames:
            dirnames.remove("training")
        total += sum(1 for f in filenames if f.endswith(".wav"))
    return total


# --------------------------------------------------------------------------- sampling


def metric_sum(metrics: dict[str, float], name: str) -> float | None:
    """A metric summed over its labels (None if absent)."""
    values = [v for k, v in metrics.items() if k == name or k.startswith(name + "{")]
    return sum(values) if values else None


def metric(metrics: dict[str, float], key: str) -> float | None:
    return metrics.get(key)


@dataclass
class Sampler:
    pid: int
    metrics_port: int
    recordings_dir: Path
    uac_stat: Path
    uas_stat: Path
    t0: float = 0.0
    previous: dict[str, float] = field(default_factory=dict)

    def sample(self) -> dict[str, Any]:
        now = time.monotonic()
        m = sc.scrape(self.metrics_port)
        lag = sc.lag_figures(self.previous, m, []) if m else None
        if m:
            self.previous = m
        uac = cp.read_stat_rows(self.uac_stat)
        uas = cp.read_stat_rows(self.uas_stat)
        last = m.get("recorder_event_loop_lag_last_seconds")
        max_bucket = lag["max_bucket_ms"] if lag else None
        return {
            "t_s": round(now - self.t0, 2),
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "recorder": process_figures(self.pid),
            "children": children_figures(self.pid),
            "lag": {
                "measurements": lag["measurements"] if lag else 0,
                "mean_ms": lag["mean_ms"] if lag else None,
                "p99_bucket_ms": lag["p99_bucket_ms"] if lag else None,
                # inf (above the largest bucket, 5 s) is written as None in the JSON.
                "max_bucket_ms": max_bucket
                if max_bucket is None or math.isfinite(max_bucket)
                else None,
                "above_largest_bucket": max_bucket is not None and not math.isfinite(max_bucket),
                "last_ms": round(last * 1000, 3) if last is not None else None,
            },
            "sipp": {
                "current": cp.last_int(uac, "CurrentCall"),
                "created": cp.last_int(uac, "TotalCallCreated"),
                "successful": cp.last_int(uac, "SuccessfulCall(C)"),
                "failed": cp.last_int(uac, "FailedCall(C)"),
                "retransmissions": cp.last_int(uac, "Retransmissions(C)"),
                "uas_failed": cp.last_int(uas, "FailedCall(C)"),
            },
            "metrics": {
                "active_calls": metric(m, "recorder_active_calls"),
                "calls_received": metric(m, "recorder_calls_received_total"),
                "calls_answered": metric(m, "recorder_calls_answered_total"),
                "calls_failed": metric(m, "recorder_calls_failed_total"),
                "calls_throttled": metric(m, "recorder_calls_throttled_total"),
                "recordings_complete": metric(m, 'recorder_recordings_total{outcome="complete"}'),
                "recordings_failed": metric(m, 'recorder_recordings_total{outcome="failed"}'),
                "recordings_open": metric(m, "recorder_recordings_open"),
                "rtp_dropped": metric_sum(m, "recorder_rtp_packets_dropped_total"),
                "writer_dropped_packets": metric(m, "recorder_recording_packets_dropped_total"),
                "writer_restarts": metric(m, "recorder_writer_restarts_total"),
                "process_open_fds": metric(m, "process_open_fds"),
            },
            "wav_files": count_wav(self.recordings_dir),
            "loadavg": cp.loadavg(),
        }


def line(s: dict[str, Any]) -> str:
    r, k, lag, sipp, m = s["recorder"], s["children"], s["lag"], s["sipp"], s["metrics"]
    return (
        f"[{time.strftime('%H:%M:%S')}] t={s['t_s']:7.0f}s calls {sipp['current']:4d} "
        f"(rec {fmt(m['active_calls'])}) ok {sipp['successful']} failed {sipp['failed']}"
        f"+{sipp['uas_failed']} | RSS {mib(r['rss_kib'])} MiB (writer {mib(k['rss_kib'])}) "
        f"fds {r['fds']}+{k['fds']} thr {r['threads']} | lag mean {fmt(lag['mean_ms'])} "
        f"last {fmt(lag['last_ms'])} ms | wav {s['wav_files']} load {s['loadavg'][0]}"
    )


# --------------------------------------------------------------------------- figures


def mib(kib: Any) -> float | None:
    return round(kib / 1024, 1) if isinstance(kib, int | float) else None


def slope(points: Sequence[tuple[float, float | None]]) -> dict[str, Any] | None:
    """Least squares of value against time (s): slope per hour, its standard error, mean."""
    pts = [(t, v) for t, v in points if v is not None and math.isfinite(v)]
    n = len(pts)
    if n < 3:
        return None
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    sxx = sum((t - mt) ** 2 for t, _ in pts)
    if sxx <= 0:
        return None
    b = sum((t - mt) * (v - mv) for t, v in pts) / sxx
    a = mv - b * mt
    resid = sum((v - (a + b * t)) ** 2 for t, v in pts)
    se = math.sqrt(resid / (n - 2) / sxx) if n > 2 else float("nan")
    return {
        "per_hour": round(b * 3600, 4),
        "stderr_per_hour": round(se * 3600, 4),
        "intercept": a,
        "mean": round(mv, 3),
        "min": round(min(v for _, v in pts), 3),
        "max": round(max(v for _, v in pts), 3),
        "points": n,
        "span_s": round(pts[-1][0] - pts[0][0], 1),
    }


SERIES: dict[str, tuple[str, str]] = {
    # name: (unit of the slope, what)
    "rss_mib": ("MiB/h", "recorder RSS (VmRSS)"),
    "pss_mib": ("MiB/h", "recorder PSS"),
    "writer_rss_mib": ("MiB/h", "writer process(es) RSS"),
    "fds": ("fds/h", "recorder open fds"),
    "writer_fds": ("fds/h", "writer process(es) open fds"),
    "threads": ("threads/h", "recorder threads"),
    "lag_mean_ms": ("ms/h", "event-loop lag, mean per interval"),
    "lag_last_ms": ("ms/h", "event-loop lag, last measured"),
}


def series_value(s: dict[str, Any], name: str) -> float | None:
    r, k = s["recorder"], s["children"]
    values: dict[str, Any] = {
        "rss_mib": mib(r["rss_kib"]),
        "pss_mib": mib(r["pss_kib"]),
        "writer_rss_mib": mib(k["rss_kib"]),
        "fds": r["fds"],
        "writer_fds": k["fds"],
        "threads": r["threads"],
        "lag_mean_ms": s["lag"]["mean_ms"],
        "lag_last_ms": s["lag"]["last_ms"],
    }
    value = values[name]
    return float(value) if isinstance(value, int | float) else None


def steady(samples: list[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    return [s for s in samples if start <= s["t_s"] <= end]


def summarize(
    samples: list[dict[str, Any]], span: tuple[float, float], calls: int
) -> dict[str, Any]:
    window = steady(samples, *span)
    slopes = {name: slope([(s["t_s"], series_value(s, name)) for s in window]) for name in SERIES}
    current = [s["sipp"]["current"] for s in window]
    return {
        "steady_span_s": [round(span[0], 1), round(span[1], 1)],
        "steady_samples": len(window),
        "slopes": slopes,
        "concurrent": {
            "target": calls,
            "min": min(current, default=None),
            "mean": round(sum(current) / len(current), 1) if current else None,
            "max": max(current, default=None),
        },
        "lag_worst_bucket_ms": max(
            (s["lag"]["max_bucket_ms"] or 0.0 for s in window), default=None
        ),
        "lag_above_largest_bucket": any(s["lag"]["above_largest_bucket"] for s in window),
        "lag_mean_ms": slopes["lag_mean_ms"]["mean"] if slopes["lag_mean_ms"] else None,
    }


def flatness(
    summary: dict[str, Any], idle: dict[str, Any], after: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, limit in FLAT_LIMITS.items():
        fit = summary["slopes"].get(name)
        out[name] = None if fit is None else abs(fit["per_hour"]) <= limit
    fds_idle, fds_after = idle["recorder"]["fds"], after["recorder"]["fds"]
    out["fds_back_to_idle"] = (
        None if fds_idle is None or fds_after is None else fds_after <= fds_idle + FD_SLACK_AFTER
    )
    out["flat"] = all(v is not False for v in out.values())
    return out


# --------------------------------------------------------------------------- report


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    env, params, res = report["environment"], report["parameters"], report["result"]
    summary, calls, recs = res["summary"], res["calls"], res["recordings"]
    idle, after = res["idle_before"], res["after_drain"]
    verify = res["verify"]
    flat = res["flatness"]

    def steady_mean(name: str) -> Any:
        return (summary["slopes"].get(name) or {}).get("mean")

    lines = [
        f"# Soak benchmark, {env['date'][:10]}",
        "",
        f"`recorder serve` at {params['calls']} concurrent recorded calls (half the rated "
        f"~250, bench/results/scale-20261203.md) for {params['minutes']:g} min: sipp UAC at "
        f"{params['rate_calls_per_s']:.3g} calls/s with `-l {params['calls']}`, calls of "
        f"{params['call_length_s']:g} s (PCMU 20 ms both ways, the sipp UAS echoes), "
        f"{params['total_calls']} calls in all; every call recorded (WAV). Sampled every "
        f"{params['sample_s']:g} s; slopes are least squares over the steady span "
        f"{summary['steady_span_s'][0]:g}-{summary['steady_span_s'][1]:g} s (after "
        f"{params['warmup_s']:g} s of warm-up, before the ramp down).",
        "",
        f"Machine: `nproc` {env['nproc']} ({env['cpu_model']}), `uname -r` {env['kernel']}, "
        f"Python {env['python']}, {env['sipp']}; load average at start "
        f"{'/'.join(map(str, env['loadavg_at_start']))}.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| wall time (s) | {res['wall_s']} |",
        f"| calls created / completed / failed (UAC) | {calls['created']} / "
        f"{calls['successful']} / {calls['failed']} |",
        f"| failed at the UAS / recorder calls_failed | {calls['uas_failed']} / "
        f"{fmt(calls['recorder_calls_failed'])} |",
        f"| retransmissions UAC / UAS | {calls['retransmissions']} / "
        f"{calls['uas_retransmissions']} |",
        f"| concurrent calls on the steady span min / mean / max | "
        f"{summary['concurrent']['min']} / {summary['concurrent']['mean']} / "
        f"{summary['concurrent']['max']} |",
        f"| recordings: .wav files / catalogued live / /metrics complete / completed calls | "
        f"{recs['wav_files']} / {fmt(recs['catalog_live'])} / {fmt(recs['metrics_complete'])}"
        f" / {calls['successful']} ({'equal' if recs['equal'] else 'NOT EQUAL'}) |",
        f"| recordings failed (/metrics) / writer dropped packets | "
        f"{fmt(recs['metrics_failed'])} / {fmt(recs['writer_dropped_packets'])} |",
        f"| `recorder catalog verify` | {'ok' if verify.get('ok') else 'PROBLEMS'} "
        f"({len(verify.get('problems') or [])} problems, {len(verify.get('notes') or [])} "
        f"notes, exit {verify.get('exit_code')}) |",
        "| recorder RSS idle / steady mean / after drain (MiB) | "
        f"{mib(idle['recorder']['rss_kib'])} / {fmt(steady_mean('rss_mib'))} / "
        f"{mib(after['recorder']['rss_kib'])} |",
        f"| recorder fds idle / steady mean / after drain | {idle['recorder']['fds']} / "
        f"{fmt(steady_mean('fds'))} / {after['recorder']['fds']} |",
        f"| recorder threads idle / after drain | {idle['recorder']['threads']} / "
        f"{after['recorder']['threads']} |",
        f"| writer RSS idle / after drain (MiB), fds idle / after | "
        f"{mib(idle['children']['rss_kib'])} / {mib(after['children']['rss_kib'])}, "
        f"{idle['children']['fds']} / {after['children']['fds']} |",
        f"| event-loop lag mean on the steady span (ms) / worst bucket bound (ms) | "
        f"{fmt(summary['lag_mean_ms'])} / <= {fmt(summary['lag_worst_bucket_ms'])}"
        f"{' (and above 5 s)' if summary['lag_above_largest_bucket'] else ''} |",
        f"| recorder CPU (cores, average over the load) | {fmt(res.get('recorder_cores'))} |",
        f"| recorder exit code / processes left | {res['recorder_exit_code']} / "
        f"{len(res['left_behind'])} |",
        f"| errors logged by the recorder | {res['errors_logged']} |",
        "",
        "| slope over the steady span | per hour | ± std err | mean | min - max | flat? |",
        "|---|---|---|---|---|---|",
    ]
    for name, (unit, what) in SERIES.items():
        fit = summary["slopes"].get(name)
        verdict = flat.get(name)
        flat_s = "-" if name not in FLAT_LIMITS else ("yes" if verdict else "NO")
        if name in FLAT_LIMITS:
            flat_s += f" (limit {FLAT_LIMITS[name]:g})"
        if fit is None:
            lines.append(f"| {what} | n/a | | | | {flat_s} |")
            continue
        lines.append(
            f"| {what} | {fit['per_hour']:+.3g} {unit} | {fit['stderr_per_hour']:.2g} "
            f"| {fit['mean']:g} | {fit['min']:g} - {fit['max']:g} | {flat_s} |"
        )
    lines += [
        "",
        f"Flat: {'yes' if flat['flat'] else 'NO'} (|slope| within the limits above and the "
        f"fds back to idle after the drain: {flat['fds_back_to_idle']}). Result: "
        f"{'ok' if res['ok'] else 'FAILED: ' + '; '.join(res['failures'])}.",
        "",
        "RSS/PSS and fds: /proc/PID of the service process (the writer process apart); "
        "fds go up and down with the calls (4 RTP/RTCP sockets per call), so the slope "
        "is read with the concurrency panel. Loop lag: /metrics, measured every 0.5 s; a "
        "bucket bound is an upper bound of the interval's worst lag.",
    ]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: .venv/bin/pip install matplotlib (the bench extra)"
    samples = report["samples"]
    res = report.get("result") or {}
    summary = res.get("summary") or {}
    span = summary.get("steady_span_s") or [0.0, 0.0]
    slopes = summary.get("slopes") or {}
    t = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(10, 10), sharex=True)
    ax_rss, ax_fd, ax_lag, ax_calls = axes

    def fitted(ax: Any, name: str, color: str) -> None:
        fit = slopes.get(name)
        if not fit:
            return
        xs = [span[0], span[1]]
        ax.plot(
            [x / 60 for x in xs],
            [fit["intercept"] + fit["per_hour"] / 3600 * x for x in xs],
            color=color,
            lw=1.2,
            ls="--",
            label=f"fit {fit['per_hour']:+.3g} {SERIES[name][0]}",
        )

    ax_rss.plot(t, [series_value(s, "rss_mib") for s in samples], label="RSS", color="C0")
    ax_rss.plot(t, [series_value(s, "pss_mib") for s in samples], label="PSS", color="C1", lw=0.8)
    ax_rss.plot(
        t, [series_value(s, "writer_rss_mib") for s in samples], label="writer RSS", color="C2"
    )
    fitted(ax_rss, "rss_mib", "k")
    ax_rss.set_ylabel("MiB")
    ax_rss.set_ylim(bottom=0)
    ax_rss.set_title("recorder memory")

    ax_fd.plot(t, [series_value(s, "fds") for s in samples], label="recorder fds", color="C0")
    ax_fd.plot(t, [series_value(s, "writer_fds") for s in samples], label="writer fds", color="C2")
    fitted(ax_fd, "fds", "k")
    ax_fd.set_ylabel("open fds")
    ax_fd.set_ylim(bottom=0)
    ax_fd.set_title("open file descriptors")

    ax_lag.plot(t, [s["lag"]["mean_ms"] for s in samples], label="interval mean", color="C0")
    ax_lag.plot(
        t, [s["lag"]["last_ms"] for s in samples], ".", ms=3, label="last measured", color="C1"
    )
    ax_lag.step(
        t,
        [s["lag"]["max_bucket_ms"] for s in samples],
        where="post",
        lw=0.7,
        alpha=0.5,
        color="C3",
        label="interval max (bucket bound)",
    )
    fitted(ax_lag, "lag_mean_ms", "k")
    ax_lag.set_ylabel("ms")
    ax_lag.set_yscale("symlog", linthresh=1.0)
    ax_lag.set_ylim(bottom=0)
    ax_lag.set_title("event-loop lag")

    ax_calls.plot(t, [s["sipp"]["current"] for s in samples], label="sipp UAC CurrentCall")
    ax_calls.plot(
        t, [s["metrics"]["active_calls"] for s in samples], label="recorder active", lw=0.8
    )
    ax_calls.set_ylabel("calls")
    ax_calls.set_ylim(bottom=0)
    ax_calls.set_xlabel("minutes since the first call")
    ax_calls.set_title("concurrent calls")

    for ax in axes:
        ax.axvspan(span[0] / 60, span[1] / 60, color="0.92", zorder=0)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    params = report["parameters"]
    fig.suptitle(
        f"Soak: {params['calls']} concurrent recorded calls, {params['minutes']:g} min "
        f"({res.get('calls', {}).get('successful', '?')} calls, "
        f"{res.get('calls', {}).get('failed', '?')} failed); shaded: steady span",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


# --------------------------------------------------------------------------- the run


def wait_until(deadline: float, proc: subprocess.Popen[bytes]) -> bool:
    """Sleep until `deadline` (monotonic) or `proc` exits; True if it exited."""
    while True:
        if proc.poll() is not None:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(0.5, left))


def run(args: argparse.Namespace, work: Path, report: dict[str, Any]) -> dict[str, Any]:
    """The soak; samples go into report["samples"] as they come (kept on Ctrl-C)."""
    params = report["parameters"]
    samples: list[dict[str, Any]] = report["samples"]
    out: dict[str, Any] = {}
    failures: list[str] = []
    with ExitStack() as stack:
        _uas, uas_port, _uas_media, uas_log = stack.enter_context(sc.uas_echo(work))
        media_count = 8 * args.calls + 64
        media_first = peers.free_port_block(media_count)
        media_last = media_first + media_count - 1
        params["recorder_media_ports"] = f"{media_first}-{media_last}"
        rec, metrics_port = stack.enter_context(
            recorder_service(work / "recorder", uas_port, media_first, media_last)
        )
        pid = rec.proc.pid
        recordings_dir = work / "recorder" / "recordings"
        uac_log = work / "sipp-uac"
        uac_log.mkdir(parents=True, exist_ok=True)
        sampler = Sampler(
            pid, metrics_port, recordings_dir, uac_log / "stat.csv", uas_log / "stat.csv"
        )
        time.sleep(3.0)
        sampler.t0 = time.monotonic()
        idle = sampler.sample()
        out["idle_before"] = idle
        print("idle:  " + line(idle), flush=True)
        cpu_before = (idle["recorder"]["cpu_s"] or 0.0) + sum(
            cp.cpu_seconds(k) or 0.0 for k in idle["children"]["pids"]
        )

        create_s = params["total_calls"] / params["rate_calls_per_s"]
        timeout_s = create_s + args.call_length + 120
        cmd = cp.sipp_cmd(
            uac_log,
            scenario="uac_load",
            target=rec.external_target,
            port=peers.free_udp_port(),
            media_port=UAC_MEDIA_BASE,
            calls=params["total_calls"],
            rate=params["rate_calls_per_s"],
            limit=args.calls,
            call_length_ms=int(args.call_length * 1000),
            service="service",
            keys={"pcap": str(args.pcap.resolve())},
            timeout_s=timeout_s,
        )
        uac = stack.enter_context(cp.child(cmd, uac_log))
        start = time.monotonic()
        sampler.t0 = start
        next_at = start
        while True:
            samples.append(sampler.sample())
            print(line(samples[-1]), flush=True)
            next_at += args.sample
            if wait_until(next_at, uac):
                break
            if time.monotonic() - start > timeout_s + 30:
                failures.append("sipp UAC did not finish in time")
                break
            if rec.proc.poll() is not None:
                failures.append(f"recorder exited during the run ({rec.proc.returncode})")
                break
        out["wall_s"] = round(time.monotonic() - start, 1)
        out["uac_returncode"] = uac.poll()
        samples.append(sampler.sample())

        # The drain: no call left in the recorder, every recording closed.
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline and rec.proc.poll() is None:
            m = sc.scrape(metrics_port)
            if m.get("recorder_active_calls") == 0 and m.get("recorder_recordings_open") == 0:
                break
            time.sleep(1.0)
        time.sleep(max(5.0, args.sample))
        after = sampler.sample()
        print("after: " + line(after), flush=True)
        out["after_drain"] = after
        cpu_after = (after["recorder"]["cpu_s"] or 0.0) + sum(
            cp.cpu_seconds(k) or 0.0 for k in after["children"]["pids"]
        )
        out["recorder_cores"] = round((cpu_after - cpu_before) / (after["t_s"] or 1.0), 3)

        uac_rows = cp.read_stat_rows(uac_log / "stat.csv")
        uas_rows = cp.read_stat_rows(uas_log / "stat.csv")
        final_metrics = sc.scrape(metrics_port)
        out["calls"] = {
            "created": cp.last_int(uac_rows, "TotalCallCreated"),
            "successful": cp.last_int(uac_rows, "SuccessfulCall(C)"),
            "failed": cp.last_int(uac_rows, "FailedCall(C)"),
            "retransmissions": cp.last_int(uac_rows, "Retransmissions(C)"),
            "uas_successful": cp.last_int(uas_rows, "SuccessfulCall(C)"),
            "uas_failed": cp.last_int(uas_rows, "FailedCall(C)"),
            "uas_retransmissions": cp.last_int(uas_rows, "Retransmissions(C)"),
            "recorder_calls_received": final_metrics.get("recorder_calls_received_total"),
            "recorder_calls_failed": final_metrics.get("recorder_calls_failed_total"),
            "recorder_calls_throttled": final_metrics.get("recorder_calls_throttled_total"),
            "invite_200_avg_ms": cp.sipp_time_ms(
                uac_rows[-1].get("ResponseTime1(C)", "") if uac_rows else ""
            ),
        }
        out["metrics_after"] = {
            k: v
            for k, v in final_metrics.items()
            if k.startswith(
                ("recorder_rtp_", "recorder_recording", "recorder_writer", "recorder_c")
            )
        }

        # Stop the recorder (SIGTERM: it drains and exits), then check what it left.
        kids = {k: start_time(k) for k in after["children"]["pids"]}
        out["recorder_exit_code"] = cp.stop(rec.proc, grace=60.0)
        # multiprocessing's resource tracker (a child of the recorder beside the writer)
        # leaves when it reads EOF from the dead recorder, 1-2 s later: wait for that, as
        # systemd's stop does for the unit's last process, before calling anything left.
        deadline = time.monotonic() + LEFT_BEHIND_GRACE_S
        while True:
            left = [k for k, st in kids.items() if st is not None and running(k, st)]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        out["left_behind_after_s"] = round(LEFT_BEHIND_GRACE_S - (deadline - time.monotonic()), 1)
        out["left_behind"] = left
        for k in left:  # ours (the recorder's children): stop them by PID
            with suppress(ProcessLookupError):
                os.kill(k, signal.SIGKILL)
        out["errors_logged"] = sum(
            1 for e in rec.events() if e.get("level") in ("error", "critical")
        )
        out["error_events"] = sorted(
            {str(e.get("event")) for e in rec.events() if e.get("level") in ("error", "critical")}
        )[:20]
        verify = catalog_verify(rec.policy_path, work / "recorder")
        out["verify"] = verify
        successful = out["calls"]["successful"]
        counts = verify.get("counts") or {}
        wav = count_wav(recordings_dir)
        recs = {
            "wav_files": wav,
            "catalog_recordings": counts.get("recordings"),
            "catalog_live": counts.get("live_recordings"),
            "catalog_files": counts.get("recording_files"),
            "metrics_complete": final_metrics.get('recorder_recordings_total{outcome="complete"}'),
            "metrics_failed": final_metrics.get('recorder_recordings_total{outcome="failed"}'),
            "writer_dropped_packets": final_metrics.get("recorder_recording_packets_dropped_total"),
            "completed_calls": successful,
        }
        recs["equal"] = wav == successful and recs["catalog_live"] in (None, successful)
        out["recordings"] = recs

    # The summary and what makes the run fail.
    span_end = min(params["create_s"], out["wall_s"])
    span = (min(args.warmup, span_end), span_end)
    if span[1] - span[0] < 3 * args.sample:  # a very short run: whatever there is
        span = (0.0, out["wall_s"])
    out["summary"] = summarize(samples, span, args.calls)
    out["flatness"] = flatness(out["summary"], out["idle_before"], out["after_drain"])
    calls = out["calls"]
    if calls["failed"] or calls["uas_failed"]:
        failures.append(f"{calls['failed']} failed calls (UAC), {calls['uas_failed']} (UAS)")
    if calls["successful"] != params["total_calls"]:
        failures.append(f"{calls['successful']}/{params['total_calls']} calls completed")
    if out["uac_returncode"] != 0:
        failures.append(f"sipp UAC exit code {out['uac_returncode']}")
    if not verify.get("ok") or verify.get("exit_code") != 0:
        kinds = sorted({p.get("kind", "?") for p in verify.get("problems") or []})
        failures.append(f"catalog verify: {len(verify.get('problems') or [])} problems {kinds}")
    if not recs["equal"]:
        failures.append(
            f"recordings {wav} files / {recs['catalog_live']} catalogued "
            f"!= {successful} completed calls"
        )
    if out["recorder_exit_code"] != 0:
        failures.append(f"recorder exit code {out['recorder_exit_code']}")
    if out["left_behind"]:
        failures.append(f"the recorder left processes behind: {out['left_behind']}")
    out["failures"] = failures
    out["ok"] = not failures
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--minutes", type=float, default=30.0, help="time at --calls concurrent")
    p.add_argument("--calls", type=int, default=125, help="concurrent calls (half the rated 250)")
    p.add_argument("--call-length", type=float, default=60.0, help="seconds per call")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=WARMUP_S, help="seconds left out of the slopes")
    p.add_argument("--out-stem", default=None, help="bench/results/STEM.{json,md,png}")
    p.add_argument("--keep-files", action="store_true", help="keep the recordings afterwards")
    args = p.parse_args(argv)
    if args.calls < 1 or args.call_length < 2 or args.minutes <= 0 or args.sample <= 0:
        p.error("--calls >= 1, --call-length >= 2, --minutes > 0, --sample > 0")
    if args.out_stem is None:
        args.out_stem = f"soak-{dt.date.today().strftime('%Y%m%d')}"
    if not args.out_stem.startswith("soak-"):
        p.error("--out-stem must start with soak-")
    return args


def _interrupted(signum: int, frame: Any) -> None:
    # Once: a second Ctrl-C must not cut the cleanup short (every process is stopped).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    for tool in ("sipp", "sox", "espeak-ng"):
        if shutil.which(tool) is None:
            print(f"{tool} missing (see PEERS.md)", file=sys.stderr)
            return 2
    window = (UAC_MEDIA_BASE, UAC_MEDIA_BASE + UAC_MEDIA_WINDOW - 1)
    if peers.PORTS.low <= window[1] and window[0] <= peers.PORTS.high:
        print(f"RECORDER_TEST_PORTS overlaps the UAC's media window {window}", file=sys.stderr)
        return 2
    busy = bound_udp_ports(*window)
    if busy:
        print(
            f"UDP ports {busy[:10]} are bound in the UAC's media window {window}: "
            "the echoed RTP would reach them",
            file=sys.stderr,
        )
        return 2

    rate = args.calls / args.call_length
    total = args.calls + round(rate * args.minutes * 60)
    env = cp.environment()
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    stem = results / args.out_stem
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    args.pcap, pcap_packets, pcap_s = cp.make_pcap(work, args.call_length)
    report: dict[str, Any] = {
        "environment": env,
        "parameters": {
            "minutes": args.minutes,
            "calls": args.calls,
            "call_length_s": args.call_length,
            "rate_calls_per_s": round(rate, 6),
            "total_calls": total,
            "create_s": round(total / rate, 1),
            "sample_s": args.sample,
            "warmup_s": args.warmup,
            "pcap_packets": pcap_packets,
            "pcap_seconds": round(pcap_s, 3),
            "uac_media_window": f"{window[0]}-{window[1]}",
            "port_allocator": f"{peers.PORTS.low}-{peers.PORTS.high}",
            "flat_limits_per_hour": FLAT_LIMITS,
        },
        "samples": [],
    }
    print(
        f"soak: {args.calls} concurrent, {rate:.3g} calls/s, {total} calls of "
        f"{args.call_length:g} s, ~{(total / rate + args.call_length) / 60:.1f} min; "
        f"work dir {work}; load {cp.loadavg()}",
        flush=True,
    )
    try:
        report["result"] = run(args, work, report)
    except KeyboardInterrupt:
        report["interrupted"] = True
        stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"interrupted: every process stopped; samples in {stem}.json, logs in {work}")
        return 130
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    problem = plot(report, stem.with_suffix(".png"))
    if problem:
        print(problem, file=sys.stderr)
    if not args.keep_files:
        shutil.rmtree(work / "recorder" / "recordings", ignore_errors=True)
    print()
    print(stem.with_suffix(".md").read_text())
    print(f"wrote {stem}.json/.md/.png (logs in {work})")
    return 0 if report["result"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
