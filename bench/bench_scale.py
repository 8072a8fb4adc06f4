"""Scale benchmark (issues 9 and 18): how many concurrent recorded calls one machine holds.

For each level N, and each system, a fresh set of processes carries the same load: a
caller ramps at 50 calls/s to a plateau of N concurrent calls of `--call-length` s,
PCMU 20 ms both ways, towards a stand-in PBX, through

- `direct`: nothing (caller -> PBX: the harness's own ceiling, the reference that must
  pass at a level before a failure there counts against a system);
- `rtpengine`: kamailio (bench/kamailio/kamailio.cfg) + rtpengine (userspace
  forwarding, `--recording-method=pcap`, one pcap per call);
- `recorder`: `recorder serve` with `[media] workers = 0` (the in-process relay, as before
  issue 18), policy "record every inbound call, no notice";
- `recorder-workers`: the same with `[media] workers = 2` (issue 18's media worker
  processes, the default on this 2-core machine);
- `baseline`: `recorder-workers` run from another checkout (`--baseline DIR`, e.g. a
  `git worktree` of an earlier commit), so that a change is measured before and after in
  the same run, on the same host at the same hour.

`--load rtpload` (default): bench/rtpload.py is both the caller and the PBX - SIP over
UDP from one process (each party's media address learnt from the SDP it receives), RTP
from one media process per core with a socket per call per side, each party sending its
own stream and counting what arrives (sent / received / lost / late per call and per
direction), and reporting how late its own sends were (the harness's health).
`--load sipp`: the former harness, sipp UAC playing a pcap per call from its own
[auto_media_port] and sipp UAS echoing every call's RTP on one socket (which drops
packets itself at 500 calls on two cores, 2026-12-03).

    .venv/bin/python bench/bench_scale.py [--levels 250,500,750,1000]
        [--call-length 60] [--systems direct,rtpengine,recorder,recorder-workers]
        [--load rtpload|sipp] [--out-stem scale-DATE] [--stop-at-failure]
        [--profile SECONDS]

Checks (issue 9): 0 failed calls, RTP loss < 0.1% each way, every recording complete
(catalogued complete, each party's audio spanning what it sent within 20 ms), KiB per call
(PSS). CPU per call of each recorder against kamailio + rtpengine's in the same run (issue
18's aim: <= 1.5). Every level runs unless `--stop-at-failure`.

RTP is also counted by the kernel, the same way for every system: an nftables table with
four named counters (RTP version 2, PT 0 only) - packets leaving the caller's media ports,
arriving at the PBX's, leaving the PBX's and arriving back at the caller's (with sipp, then
dropped there: sipp's pcap player does not listen; with sipp the UAS socket's own drop
counter, /proc/net/udp, is read too). CPU and memory are summed over each system's process
tree (/proc, sampled every second; PSS for memory, so kamailio's forked children are not
counted several times); the plateau is the span where all N calls are up.

`--profile S`: py-spy on every process of the recorder's tree (service, writer, media
workers) for S s on each plateau: a flamegraph SVG and a speedscope JSON per process in
bench/results/STEM-profiles/, and the top functions in the JSON report. The profiled run's
CPU figures include py-spy's sampling, so profile in a run of its own.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # plain `python bench/...`

from bench import bench_callpath as cp  # noqa: E402
from bench import rtpload as rl  # noqa: E402
from tests.interop import peers  # noqa: E402
from tests.interop.recorder_proc import RecorderProcess, policy_template_text  # noqa: E402

SYSTEMS = ("direct", "rtpengine", "recorder", "recorder-workers", "baseline")
RECORDERS = ("recorder", "recorder-workers", "baseline")
# `baseline`'s checkout (--baseline): its code runs the recorder, with workers = 2.
BASELINE_ROOT: Path | None = None
LOADS = ("rtpload", "sipp")
WORKERS_MEDIA_EXTRA = "workers = 2"  # recorder-workers: [media] workers (issue 18)
RELAY_MEDIA_EXTRA = "workers = 0"  # recorder: the in-process relay, as before issue 18
UAC_MEDIA_BASE = 24000  # [auto_media_port]: 4 ports per call up from here
RELAY_MEDIA_FIRST = 10000  # the recorder's and rtpengine's media range (not at once)
RELAY_MEDIA_LAST = 14999
KAMAILIO_CFG = ROOT / "bench" / "kamailio" / "kamailio.cfg"
NFT_TABLE = "recorder_bench_scale"
RTP_PT0 = "@th,64,16 & 0xc07f == 0x8000"  # first two UDP payload bytes: V=2, PT=0
LOSS_LIMIT_PCT = 0.1
DURATION_TOLERANCE_S = 0.020
RAMP_CPS = 50.0  # new calls per second while ramping
UAS_RTP_BUFFER = 4 * 1024 * 1024  # the echo socket takes every call's RTP

RECORD_ALL_POLICY = """
[policy]
name = "BENCH"

[recording]
directions = ["inbound"]
extensions = "all"
mode = "automatic"

[notice]
play = false

[naming]
template = "{date}_{time}_ext-{extension}"

[retention]
recordings = "8 days"
"""


# --------------------------------------------------------------------------- process trees


def children_of(roots: list[int]) -> list[int]:
    """The roots and all their descendants, from /proc/*/stat."""
    parent: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        parent[int(entry.name)] = int(text[text.rindex(")") + 2 :].split()[1])
    out = [r for r in roots if r in parent]
    frontier = list(out)
    while frontier:
        frontier = [pid for pid, ppid in parent.items() if ppid in frontier]
        out += frontier
    return out


def host_cpu_seconds() -> tuple[float, float, float]:
    """(busy, of which softirq, of which steal) CPU seconds of the whole machine since boot,
    all cores (/proc/stat): what else ran on this shared host, and what the loopback's
    softirq work and the hypervisor took."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    fields += [0] * (8 - len(fields))
    idle = fields[3] + fields[4]  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / cp.CLK_TCK, fields[6] / cp.CLK_TCK, fields[7] / cp.CLK_TCK


def pss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Tree:
    """CPU (cumulative, dead processes keep their last value) and memory of a process tree."""

    name: str
    roots: list[int]
    cpu: dict[int, float] = field(default_factory=dict)
    cpu_at_start: dict[int, float] = field(default_factory=dict)

    def sample(self) -> tuple[float, int, int]:
        """(CPU seconds since `start`, PSS KiB, RSS KiB) of the tree now."""
        pss = rss = 0
        for pid in children_of(self.roots):
            cpu = cp.cpu_seconds(pid)
            if cpu is not None:
                self.cpu[pid] = cpu
            pss += pss_kib(pid) or 0
            rss += cp.status_kib(pid, "VmRSS") or 0
        used = sum(v - self.cpu_at_start.get(pid, 0.0) for pid, v in self.cpu.items())
        return used, pss, rss

    def start(self) -> None:
        self.sample()
        self.cpu_at_start = dict(self.cpu)


# --------------------------------------------------------------------------- kernel RTP counters


@contextmanager
def nft_counters(uac: str, uas: str, drop_at_caller: bool = True) -> Iterator[None]:
    """Our nftables table: counters of RTP leaving and reaching the caller's ports (`uac`,
    an nft port or range) and the callee's (`uas`); with `drop_at_caller`, a drop of what
    reaches the caller's ports (sipp's pcap player does not listen)."""
    uas_port = uas
    drop = f"udp dport {uac} drop" if drop_at_caller else ""
    ruleset = f"""
table inet {NFT_TABLE} {{
  counter caller_tx {{ }}
  counter callee_rx {{ }}
  counter callee_tx {{ }}
  counter caller_rx {{ }}
  chain out {{
    type filter hook output priority 0; policy accept;
    udp sport {uac} {RTP_PT0} counter name "caller_tx"
    udp sport {uas_port} {RTP_PT0} counter name "callee_tx"
  }}
  chain in {{
    type filter hook input priority 0; policy accept;
    udp dport {uas_port} {RTP_PT0} counter name "callee_rx"
    udp dport {uac} {RTP_PT0} counter name "caller_rx"
    {drop}
  }}
}}
"""
    with suppress(subprocess.CalledProcessError):
        subprocess.run(
            ["nft", "delete", "table", "inet", NFT_TABLE], capture_output=True, check=True
        )
    subprocess.run(["nft", "-f", "-"], input=ruleset.encode(), check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "inet", NFT_TABLE], capture_output=True)


def read_nft() -> dict[str, int]:
    out = subprocess.run(
        ["nft", "-j", "list", "counters", "table", "inet", NFT_TABLE],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    counters: dict[str, int] = {}
    for item in json.loads(out)["nftables"]:
        if "counter" in item:
            counters[item["counter"]["name"]] = int(item["counter"]["packets"])
    return counters


def udp_socket_drops(port: int) -> int:
    """The `drops` column of /proc/net/udp for sockets bound to 127.0.0.1:`port`."""
    local = f"0100007F:{port:04X}"
    total = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        cols = line.split()
        if cols[1] == local:
            total += int(cols[-1])
    return total


# --------------------------------------------------------------------------- systems


def niced(cmd: list[str], nice: int) -> list[str]:
    """sipp at another priority than the system under test (`--sipp-nice`). Its thread
    per call's pcap takes a share of the two cores per thread; but niced, its own echo
    falls behind first (2026-12-03), so the default is 0."""
    return ["nice", "-n", str(nice), *cmd] if nice else cmd


@contextmanager
def uas_echo(work: Path, nice: int = 0) -> Iterator[tuple[subprocess.Popen[bytes], int, int, Path]]:
    """sipp uas_echo (-rtp_echo, one socket for every call's RTP, 4 MiB buffer).

    (process, SIP port, media port, log dir).
    """
    log_dir = work / "sipp-uas"
    port = peers.free_udp_port()
    media = peers.free_port_block(4)
    cmd = cp.sipp_cmd(
        log_dir,
        scenario="uas_echo",
        port=port,
        media_port=media,
        rtp_echo=True,
        extra_args=["-rtp_buffsize", str(UAS_RTP_BUFFER)],
    )
    with cp.child(niced(cmd, nice), log_dir) as proc:
        cp.wait_udp_bound(port, proc)
        yield proc, port, media, log_dir


@contextmanager
def rtpengine_pair(
    work: Path, uas_port: int
) -> Iterator[tuple[str, list[Tree], Path, subprocess.Popen[bytes]]]:
    """rtpengine + kamailio: (SIP target, [trees], recording dir, rtpengine process)."""
    rec_dir = work / "rtpengine-recordings"
    rec_dir.mkdir(parents=True, exist_ok=True)
    ng = peers.free_udp_port()
    rtpe_cmd = [
        "rtpengine",
        "--config-file=none",
        "--foreground",
        "--log-stderr",
        "--log-level=5",
        "--table=-1",
        "--interface=127.0.0.1",
        f"--listen-ng=127.0.0.1:{ng}",
        f"--port-min={RELAY_MEDIA_FIRST}",
        f"--port-max={RELAY_MEDIA_LAST}",
        "--delete-delay=0",
        f"--recording-dir={rec_dir}",
        "--recording-method=pcap",
        "--pidfile=" + str(work / "rtpengine.pid"),
    ]
    sip_port = peers.free_udp_port()
    kam_cmd = [
        "kamailio",
        "-f",
        str(KAMAILIO_CFG),
        "-DD",
        "-E",
        "-m",
        "256",
        "-M",
        "16",
        "-l",
        f"udp:127.0.0.1:{sip_port}",
        "-A",
        f'NEXT_HOP="sip:127.0.0.1:{uas_port}"',
        "-A",
        f'RTPENGINE_SOCK="udp:127.0.0.1:{ng}"',
        "-P",
        str(work / "kamailio.pid"),
        "-Y",
        str(work / "kamailio-run"),
        "-w",
        str(work),
    ]
    (work / "kamailio-run").mkdir(exist_ok=True)
    with cp.child(rtpe_cmd, work / "rtpengine") as rtpe:
        cp.wait_udp_bound(ng, rtpe, timeout=10)
        with cp.child(kam_cmd, work / "kamailio") as kam:
            cp.wait_udp_bound(sip_port, kam, timeout=10)
            time.sleep(1.0)  # its children connect to rtpengine
            trees = [Tree("rtpengine", [rtpe.pid]), Tree("kamailio", [kam.pid])]
            yield f"127.0.0.1:{sip_port}", trees, rec_dir, rtpe


class NotStarted(RuntimeError):
    """The recorder refused its configuration (recorder-workers before the workers key)."""


@contextmanager
def recorder_service(
    work: Path, uas_port: int, media_extra: str = "", root: Path = ROOT
) -> Iterator[tuple[RecorderProcess, int | None, str | None]]:
    """`recorder serve` recording every call; (process, metrics port or None, note).
    `media_extra`: more [media] keys (recorder-workers: `workers = 2`); a recorder that
    exits on them raises NotStarted."""
    metrics_port: int | None = peers.free_port_block(1, tcp=True)
    extra = RECORD_ALL_POLICY + f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
    note = None
    try:
        cm = recorder_with_policy(work, uas_port, extra, media_extra, root)
        rec = cm.__enter__()
    except RuntimeError as exc:
        if media_extra and "exited early" in str(exc):
            log = [ln for ln in str(exc).splitlines()[1:] if ln.strip()]
            raise NotStarted(
                f"the recorder did not start with [media] {media_extra!r}: "
                + (log[-1][:300] if log else "no output")
            ) from exc
        if "metrics" not in str(exc):
            raise
        # An older recorder without the [metrics] table: run without, no loop lag.
        note = f"no metrics endpoint ({str(exc).strip().splitlines()[-1][:200]})"
        metrics_port = None
        cm = recorder_with_policy(work / "retry", uas_port, RECORD_ALL_POLICY, media_extra, root)
        rec = cm.__enter__()
    try:
        yield rec, metrics_port, note
    finally:
        cm.__exit__(None, None, None)


@contextmanager
def recorder_with_policy(
    work: Path, uas_port: int, extra: str, media_extra: str = "", root: Path = ROOT
) -> Iterator[RecorderProcess]:
    """bench_callpath.recorder with policy tables appended (the record-all policy) and
    `media_extra` keys in [media]."""
    work.mkdir(parents=True, exist_ok=True)
    external = peers.free_port_block(1, tcp=True)
    internal = peers.free_port_block(1, tcp=True)
    policy = work / "policy.toml"
    policy.write_text(
        policy_template_text(
            external_port=external,
            internal_port=internal,
            pbx_port=uas_port,
            trunk_port=peers.free_udp_port(),
            media_first=RELAY_MEDIA_FIRST,
            media_last=RELAY_MEDIA_LAST,
            storage=work,
            external_allow='"127.0.0.0/8"',
            ring_timeout=180,
            drain_seconds=2,
            media_extra=media_extra.strip() + "\n" if media_extra.strip() else "",
        )
        + extra
    )
    log_path = work / "recorder.log"
    cmd = [sys.executable, "-m", "recorder.cli", "serve", "--config", str(policy)]
    cmd += ["--log-format", "json", "--log-level", "info"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(root))
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=work, env=env
        )
    rec = RecorderProcess(
        proc, log_path, external, internal, RELAY_MEDIA_FIRST, RELAY_MEDIA_LAST, policy
    )
    try:
        cp.wait_tcp_listening(external, proc, log_path)
        cp.wait_tcp_listening(internal, proc, log_path)
        yield rec
    finally:
        cp.stop(proc, grace=60.0)


# --------------------------------------------------------------------------- recorder metrics

METRIC_LINE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$")


def scrape(port: int | None) -> dict[str, float]:
    """Flat `name{labels}` -> value of the recorder's /metrics (empty on failure)."""
    if port is None:
        return {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = METRIC_LINE.match(line)
        if m is None:
            continue
        key = m["name"] + (f"{{{m['labels']}}}" if m["labels"] else "")
        with suppress(ValueError):
            out[key] = float(m["value"])
    return out


def lag_figures(before: dict[str, float], after: dict[str, float], last: list[float]) -> Any:
    """Loop lag over the run: the histogram's delta, and the sampled `last` values."""
    prefix = 'recorder_event_loop_lag_seconds_bucket{le="'
    buckets = sorted(
        (float(k[len(prefix) : -2]) if k[len(prefix) : -2] != "+Inf" else float("inf"), k)
        for k in after
        if k.startswith(prefix)
    )
    if not buckets:
        return None
    delta = [(bound, after[k] - before.get(k, 0.0)) for bound, k in buckets]
    total = delta[-1][1]
    if total <= 0:
        return None
    p99 = next(bound for bound, count in delta if count >= 0.99 * total)
    below_max = [bound for (bound, count) in delta if count >= total]
    count_key = "recorder_event_loop_lag_seconds_count"
    sum_key = "recorder_event_loop_lag_seconds_sum"
    mean = (after.get(sum_key, 0) - before.get(sum_key, 0)) / max(
        1.0, after.get(count_key, 0) - before.get(count_key, 0)
    )
    return {
        "measurements": int(total),
        "mean_ms": round(mean * 1000, 2),
        "p99_bucket_ms": p99 * 1000,
        "max_bucket_ms": below_max[0] * 1000,
        "peak_sampled_ms": round(max(last, default=0.0) * 1000, 2),
        "histogram": {str(b): c for b, c in delta},
    }


# --------------------------------------------------------------------------- recordings


PCAP_LINK_OFFSET = {1: 14, 101: 0, 12: 0, 14: 0, 113: 16, 228: 0, 276: 20}  # to the IP header


def pcap_summary(path: Path) -> tuple[int, float, dict[str, float]]:
    """(records, seconds from the first to the last, {UDP source: seconds of audio from its
    first RTP timestamp to its last, 8 kHz}) of a classic pcap file (IPv4 over the common
    link types): the audio each party's packets span, whatever their jitter on arrival."""
    data = path.read_bytes()
    if len(data) < 24:
        return 0, 0.0, {}
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    link = PCAP_LINK_OFFSET.get(struct.unpack_from(endian + "I", data, 20)[0])
    off, count, first, last = 24, 0, None, 0.0
    per_source: dict[str, list[int]] = {}
    while off + 16 <= len(data):
        sec, frac, incl = struct.unpack_from(endian + "III", data, off)
        t = sec + frac / (1e9 if nano else 1e6)
        first = t if first is None else first
        last = t
        ip = off + 16 + (link if link is not None else 0)
        if link is not None and ip + 24 <= off + 16 + incl and data[ip] >> 4 == 4:
            ihl = (data[ip] & 0x0F) * 4
            src = ".".join(str(b) for b in data[ip + 12 : ip + 16])
            key = f"{src}:{struct.unpack_from('!H', data, ip + ihl)[0]}"
            rtp = ip + ihl + 8
            if rtp + 12 <= off + 16 + incl and data[rtp] >> 6 == 2:
                ts = struct.unpack_from("!I", data, rtp + 4)[0]
                span = per_source.setdefault(key, [ts, ts])
                span[1] = ts  # unwrapped below: a 60-s call's 480,000 ticks never wrap twice
        off += 16 + incl
        count += 1
    spans = {k: ((v[1] - v[0]) % (1 << 32)) / 8000 for k, v in per_source.items()}
    return count, (last - first) if first is not None else 0.0, spans


def rtpengine_recordings(
    rec_dir: Path, calls: int, pcap_packets: int, reached: int
) -> dict[str, Any]:
    """One pcap per call: present, holding every packet that reached rtpengine
    (`reached`: sent by both parties, from the kernel counters), each party's span right
    (the whole file's span when the sources cannot be told apart)."""
    files = sorted(rec_dir.rglob("*.pcap"))
    media_s = pcap_packets * 0.020
    short = off = 0
    spans: list[float] = []
    packets = 0
    for f in files:
        n, span, by_source = pcap_summary(f)
        packets += n
        # Both directions recorded: 2 x pcap_packets; span + one ptime ~ media sent.
        short += n < 2 * pcap_packets
        parties = list(by_source.values()) if len(by_source) == 2 else [span]
        spans += [p + 0.020 for p in parties]
        off += any(abs(p + 0.020 - media_s) > DURATION_TOLERANCE_S for p in parties)
    return {
        "files": len(files),
        "expected": calls,
        "packets": packets,
        "packets_sent_to_it": reached,
        "files_short": short,
        "duration_off_by_more_than_20ms": off,
        "duration_s": cp.distribution(spans),
        "bytes": sum(f.stat().st_size for f in files),
        "complete": len(files) == calls and packets >= reached and off == 0,
    }


def recorder_recordings(
    rec: RecorderProcess, calls: int, pcap_packets: int, timeout: float
) -> dict[str, Any]:
    """recording.finalized events and the catalog: all there, complete, right duration."""
    deadline = time.monotonic() + timeout
    while True:
        final = rec.events("recording.finalized")
        if len(final) >= calls or time.monotonic() > deadline or rec.proc.poll() is not None:
            break
        time.sleep(1.0)
    media_s = pcap_packets * 0.020
    durations = [float(e.get("duration", 0.0)) for e in final]
    states = collections.Counter(str(e.get("state")) for e in final)
    # Each party's span in the file against the media it sent: the file itself is
    # longer by the delay of the second party's first packet (the echo's), which is
    # the harness's, not the recording's; it is reported apart.
    tolerance_ms = round(DURATION_TOLERANCE_S * 1000)
    media_ms = round(media_s * 1000)
    spans = {
        side: [
            int(e.get(f"{side}_span_ms", round(float(e.get("duration", 0)) * 1000))) for e in final
        ]
        for side in ("left", "right")
    }
    off = [
        i
        for i in range(len(final))
        if any(abs(spans[side][i] - media_ms) > tolerance_ms for side in spans)
    ]
    rows = rec.catalog("recordings", "list", timeout=10.0)
    catalog_states = collections.Counter(str(r.get("state")) for r in rows)
    incomplete = len(rec.events("recording.incomplete"))
    dropped = sum(int(e.get("dropped") or 0) for e in final)
    return {
        "finalized": len(final),
        "expected": calls,
        "states": dict(states),
        "catalog_rows": len(rows),
        "catalog_states": dict(catalog_states),
        "incomplete_events": incomplete,
        "writer_dropped_packets": dropped,
        "media_sent_s": round(media_s, 3),
        "duration_s": cp.distribution(durations),
        "span_ms": {
            side: cp.distribution([float(v) for v in values]) for side, values in spans.items()
        },
        "span_off_by_more_than_20ms": len(off),
        "worst_span_offset_ms": max(
            (abs(v - media_ms) for values in spans.values() for v in values), default=0
        ),
        "file_longer_than_media_ms": cp.distribution([1000 * (d - media_s) for d in durations]),
        # Why a party's span is off: a stream re-anchored where it arrived (a jump, or
        # more than 1 s late when its place was already written: silence inserted);
        # late packets are holes.
        "placement": {
            key: sum(int(e.get(key) or 0) for e in final)
            for key in ("reanchors", "late", "drift_corrections")
        },
        "files_reanchored": sum(1 for e in final if int(e.get("reanchors") or 0) > 0),
        "complete": (
            len(final) == calls
            and states.get("complete", 0) == calls
            and incomplete == 0
            and not off
            and catalog_states.get("complete", 0) == calls
        ),
    }


# --------------------------------------------------------------------------- one run


def pct(part: float, whole: float) -> float | None:
    return round(100.0 * part / whole, 4) if whole else None


def speed_probe_ms() -> float:
    """Best of 5 timings of a fixed pure-Python loop, in ms: how fast this host runs now.

    These VMs share their host: the same work takes up to twice as long at
    busy times, which moves every figure here. The probe says which runs had
    the fast machine.
    """
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        total = 0
        for i in range(300_000):
            total += i & 7
        best = min(best, time.perf_counter() - start)
    return round(best * 1000, 2)


def settle(limit_s: float, best: list[float]) -> float:
    """Wait (up to `limit_s`) for the probe to come within 15% of the best seen; the probe."""
    deadline = time.monotonic() + limit_s
    while True:
        probe = speed_probe_ms()
        best[0] = min(best[0], probe)
        if probe <= 1.15 * best[0] or time.monotonic() >= deadline:
            return probe
        time.sleep(5.0)


def system_figures(
    out: dict[str, Any],
    trees: list[Tree],
    samples: list[dict[str, Any]],
    plateau: list[dict[str, Any]],
    idle: dict[str, tuple[int, int]],
    n: int,
    wall: float,
) -> None:
    """CPU (plateau cores, mcores per call) and memory (PSS per call) of each tree into `out`."""
    # CPU and memory of the system under test.
    cpu: dict[str, Any] = {}
    mem: dict[str, Any] = {}
    for t in trees:
        pts = [(s["t"], s[t.name][0]) for s in plateau if t.name in s]
        cores = (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0]) if len(pts) > 1 else None
        total = samples[-1][t.name][0] if samples else 0.0
        cpu[t.name] = {
            "plateau_cores": round(cores, 3) if cores is not None else None,
            "avg_cores": round(total / wall, 3),
            "cpu_s": round(total, 2),
        }
        pss_plateau = [s[t.name][1] for s in plateau if t.name in s]
        rss_plateau = [s[t.name][2] for s in plateau if t.name in s]
        idle_pss, idle_rss = idle[t.name]
        mean_pss = sum(pss_plateau) / len(pss_plateau) if pss_plateau else None
        mem[t.name] = {
            "idle_pss_kib": idle_pss,
            "idle_rss_kib": idle_rss,
            "plateau_pss_kib": round(mean_pss) if mean_pss is not None else None,
            "peak_pss_kib": max(pss_plateau, default=None),
            "peak_rss_kib": max(rss_plateau, default=None),
            "pss_per_call_kib": round((mean_pss - idle_pss) / n, 1)
            if mean_pss is not None
            else None,
        }
    plateau_cores = [c["plateau_cores"] for c in cpu.values()]
    sut_cores = round(sum(plateau_cores), 3) if trees and None not in plateau_cores else None
    out["cpu"] = cpu
    out["sut_cores"] = sut_cores if trees else 0.0
    out["sut_mcores_per_call"] = round(1000 * sut_cores / n, 3) if sut_cores else None
    out["memory"] = mem
    per_call = [m["pss_per_call_kib"] for m in mem.values()]
    out["sut_kib_per_call"] = round(sum(per_call), 1) if mem and None not in per_call else None


def recorder_and_recordings(
    out: dict[str, Any],
    rec: RecorderProcess | None,
    rec_dir: Path | None,
    successful: int,
    packets: int,
    reached: int,
    metrics: tuple[dict[str, float], dict[str, float], list[float]],
    n: int,
) -> None:
    """The recorder's loop lag, recordings, counters and errors, or rtpengine's pcaps, into
    `out` (`packets`: what each party sent per call; `reached`: RTP sent by both ends)."""
    metrics_before, metrics_after, lag_last = metrics
    if rec is not None:
        out["lag"] = lag_figures(metrics_before, metrics_after, lag_last)
        out["recordings"] = recorder_recordings(rec, successful, packets, timeout=60 + n / 20)
        ended = cp.wait_call_ended(rec, successful, timeout=10)
        out["recorder_counters"] = cp.rtp_figures(ended, packets)
        out["recorder_counters"].pop("sums", None)
        out["errors_logged"] = sum(
            1 for e in rec.events() if e.get("level") in ("error", "critical")
        )
        out["metrics_after"] = {
            k: v
            for k, v in metrics_after.items()
            if k.startswith(("recorder_rtp_", "recorder_recording", "recorder_writer"))
        }
    elif rec_dir is not None:
        time.sleep(2.0)  # rtpengine closes the pcaps on delete
        out["recordings"] = rtpengine_recordings(rec_dir, successful, packets, reached)


def _describe_checkout(root: Path) -> str:
    """'abc1234 (subject)' of a checkout's HEAD, '+ changes' when its tree differs."""

    def git(*a: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True)
        return done.stdout.strip()

    head = git("log", "-1", "--format=%h (%s)")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return (head or str(root)) + (" + uncommitted changes" if dirty else "")


def recorder_variant(system: str) -> tuple[str, Path]:
    """A recorder system's extra [media] keys and the checkout whose code runs it."""
    if system == "baseline":
        assert BASELINE_ROOT is not None
        return WORKERS_MEDIA_EXTRA, BASELINE_ROOT
    return (WORKERS_MEDIA_EXTRA if system == "recorder-workers" else RELAY_MEDIA_EXTRA), ROOT


def start_system(
    stack: ExitStack, system: str, work: Path, uas_port: int, notes: list[str]
) -> tuple[str, list[Tree], RecorderProcess | None, int | None, Path | None]:
    """The system under test in front of a PBX at `uas_port`: (SIP target, trees to measure,
    recorder, its metrics port, rtpengine's recording dir)."""
    if system == "direct":
        return f"127.0.0.1:{uas_port}", [], None, None, None
    if system == "rtpengine":
        target, trees, rec_dir, _ = stack.enter_context(rtpengine_pair(work, uas_port))
        return target, trees, None, None, rec_dir
    media_extra, root = recorder_variant(system)
    rec, metrics_port, note = stack.enter_context(
        recorder_service(work, uas_port, media_extra, root)
    )
    if note:
        notes.append(note)
    if metrics_port is None:
        notes.append("event-loop lag not exposed by this recorder")
    return rec.external_target, [Tree("recorder", [rec.proc.pid])], rec, metrics_port, None


def wait_file(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"rtpload exited with {proc.returncode} before {path.name}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"rtpload: no {path.name} within {timeout:g} s")
        time.sleep(0.05)


def run_one_rtpload(system: str, n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One system at one level with bench/rtpload.py as caller and PBX (fresh processes)."""
    work.mkdir(parents=True, exist_ok=True)
    ramp = max(1.0, n / RAMP_CPS)
    rate = n / ramp
    packets = args.pcap_packets
    out: dict[str, Any] = {
        "system": system,
        "n": n,
        "load": "rtpload",
        "loadavg_start": cp.loadavg(),
        "probe_ms_start": settle(args.settle, args.best_probe),
    }
    notes: list[str] = []
    with ExitStack() as stack:
        uas_port = peers.free_udp_port()
        uac_port = peers.free_udp_port()
        try:
            target, trees, rec, metrics_port, rec_dir = start_system(
                stack, system, work, uas_port, notes
            )
        except NotStarted as exc:
            out.update(ok=False, not_started=str(exc), failures=[str(exc)], rtp={}, notes=notes)
            return out
        gen_dir = work / "rtpload"
        gen_dir.mkdir(parents=True, exist_ok=True)
        go, ready = gen_dir / "go", gen_dir / "ready"
        status, result_path = gen_dir / "status.json", gen_dir / "result.json"
        cmd = [
            sys.executable,
            str(Path(rl.__file__).resolve()),
            "--target",
            target,
            "--calls",
            str(n),
            "--rate",
            f"{rate:g}",
            "--call-length",
            f"{args.call_length:g}",
            "--packets",
            str(packets),
            "--uac-port",
            str(uac_port),
            "--uas-port",
            str(uas_port),
            "--workers",
            str(args.load_workers),
            "--late-ms",
            f"{args.late_ms:g}",
            "--status",
            str(status),
            "--start-file",
            str(go),
            "--ready-file",
            str(ready),
            "--out",
            str(result_path),
        ]
        gen = stack.enter_context(cp.child(cmd, gen_dir))
        wait_file(ready, gen, 60.0)
        caller_ports = f"{rl.CALLER_BASE}-{rl.CALLER_BASE + 2 * n}"
        callee_ports = f"{rl.CALLEE_BASE}-{rl.CALLEE_BASE + 2 * n}"
        stack.enter_context(nft_counters(caller_ports, callee_ports, drop_at_caller=False))
        time.sleep(2.0)
        idle = {t.name: t.sample()[1:] for t in trees}
        for t in trees:
            t.start()
        load_tree = Tree("load", [gen.pid])
        load_tree.start()
        metrics_before = scrape(metrics_port)
        samples: list[dict[str, Any]] = []
        lag_last: list[float] = []
        profiles: list[tuple[int, str, subprocess.Popen[bytes], Path]] | None = None
        timeout = ramp + args.call_length + 150
        go.touch()
        start = time.monotonic()
        while gen.poll() is None:
            now = time.monotonic() - start
            if now > timeout:
                notes.append("rtpload timed out")
                break
            try:
                current = int(json.loads(status.read_text()).get("current", 0))
            except (OSError, ValueError):
                current = 0
            sample: dict[str, Any] = {"t": round(now, 2), "calls": current}
            for t in trees:
                cpu_s, pss, rss = t.sample()
                sample[t.name] = [round(cpu_s, 3), pss, rss]
            sample["load"] = [round(load_tree.sample()[0], 3)]
            sample["host"] = [round(v, 2) for v in host_cpu_seconds()]
            if metrics_port is not None:
                m = scrape(metrics_port)
                if "recorder_event_loop_lag_last_seconds" in m:
                    lag_last.append(m["recorder_event_loop_lag_last_seconds"])
            samples.append(sample)
            on_plateau = current >= n and now > ramp + 3
            if args.profile and rec is not None and profiles is None and on_plateau:
                profiles = start_profiles(rec.proc.pid, args.profile, args.profile_dir, n, system)
            time.sleep(1.0)
        wall = time.monotonic() - start
        if gen.poll() is None:
            cp.stop(gen)
        out["wall_s"] = round(wall, 1)
        out["load_returncode"] = gen.returncode
        time.sleep(1.0)
        counters = read_nft()
        metrics_after = scrape(metrics_port)
        try:
            result = json.loads(result_path.read_text())
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"rtpload left no result ({exc}); see {gen_dir}") from exc
        calls = result["calls"]
        out["calls"] = {
            "created": calls["created"],
            "successful": calls["successful"],
            "failed": calls["failed"],
            "failures": calls["failures"],
            "uas_failed": calls["uas_failed"],
            "retransmissions_uac": calls["retransmissions_uac"],
            "retransmissions_uas": calls["retransmissions_uas"],
            "invite_200_avg_ms": calls["invite_200_ms"]["mean"],
            "invite_200_max_ms": calls["invite_200_ms"]["max"],
        }
        plateau = [s for s in samples if s["calls"] >= n]
        out["peak_concurrent"] = max((s["calls"] for s in samples), default=0)
        out["plateau_s"] = round(plateau[-1]["t"] - plateau[0]["t"], 1) if len(plateau) > 1 else 0
        fwd, back = result["forward"], result["back"]
        caller_tx, callee_rx = counters.get("caller_tx", 0), counters.get("callee_rx", 0)
        callee_tx, caller_rx = counters.get("callee_tx", 0), counters.get("caller_rx", 0)

        def system_loss(d: dict[str, Any]) -> float | None:
            """Loss before the receiving party's socket (its own drops are the harness's);
            direct: all of it (the harness is the system)."""
            if system == "direct":
                return d["loss_pct"]
            return pct(d["lost"] - d.get("receiver_socket_drops", 0), d["sent"])

        out["rtp"] = {
            "expected_per_direction": fwd["expected"],
            # The check: sent by one party's socket, not reached the other party's socket.
            "forward_loss_pct": system_loss(fwd),
            "back_loss_pct": system_loss(back),
            # End to end, the generator's own socket drops included.
            "forward_loss_end_to_end_pct": fwd["loss_pct"],
            "back_loss_end_to_end_pct": back["loss_pct"],
            "harness_socket_drop_pct": pct(
                fwd.get("receiver_socket_drops", 0) + back.get("receiver_socket_drops", 0),
                fwd["sent"] + back["sent"],
            ),
            "forward": {k: v for k, v in fwd.items() if k != "expected"},
            "back": {k: v for k, v in back.items() if k != "expected"},
            "late_ms": args.late_ms,
            # The kernel's view, as a cross-check: left one end's ports / reached the other's.
            "nft": {
                "caller_sent": caller_tx,
                "callee_arrived": callee_rx,
                "callee_sent": callee_tx,
                "caller_arrived": caller_rx,
                "forward_loss_pct": pct(caller_tx - callee_rx, caller_tx),
                "back_loss_pct": pct(callee_tx - caller_rx, callee_tx),
            },
        }
        gen_cpu = result["ua_cpu_s"] + sum(w["cpu_s"] for w in result["workers"])
        sent_total = fwd["sent"] + back["sent"]
        late_sends = sum(w["send_lag"]["packets_sent_over_20ms_late"] for w in result["workers"])
        lpts = [(s["t"], s["load"][0]) for s in plateau]
        out["load_gen"] = {
            "workers": len(result["workers"]),
            "cpu_s": round(gen_cpu, 2),
            "cores": round(gen_cpu / max(result["wall_s"], 1e-9), 3),
            "plateau_cores": round((lpts[-1][1] - lpts[0][1]) / (lpts[-1][0] - lpts[0][0]), 3)
            if len(lpts) > 1
            else None,
            "send_lag_max_ms": max(w["send_lag"]["max_ms"] for w in result["workers"]),
            "packets_sent_over_20ms_late_pct": pct(late_sends, sent_total),
            "send_lag": [w["send_lag"] for w in result["workers"]],
        }
        out["loadgen_cores"] = out["load_gen"]["plateau_cores"]
        # The whole machine on the plateau: with the system and the generator, anything else
        # running on this shared host shows here (and softirq work of the loopback).
        hpts = [(s["t"], s["host"]) for s in plateau]
        span_t = hpts[-1][0] - hpts[0][0] if len(hpts) > 1 else 0.0
        host = [
            round((hpts[-1][1][i] - hpts[0][1][i]) / span_t, 3) if span_t else None
            for i in range(3)
        ]
        out["host_busy_cores_plateau"] = host[0]
        out["host_cores_plateau"] = {"busy": host[0], "softirq": host[1], "steal": host[2]}
        system_figures(out, trees, samples, plateau, idle, n, wall)
        if profiles is not None:
            out["profile"] = finish_profiles(profiles, args.profile)
        recorder_and_recordings(
            out,
            rec,
            rec_dir,
            calls["successful"],
            packets,
            caller_tx + callee_tx,
            (metrics_before, metrics_after, lag_last),
            n,
        )
    if (out["rtp"]["harness_socket_drop_pct"] or 0) >= LOSS_LIMIT_PCT:
        notes.append(
            f"the load generator's own sockets dropped {out['rtp']['harness_socket_drop_pct']}% "
            "of what reached them (it did not read in time): not counted as the system's loss"
        )
    if (out["load_gen"]["packets_sent_over_20ms_late_pct"] or 0) >= LOSS_LIMIT_PCT:
        notes.append(
            "the load generator sent >= 0.1% of its packets more than a ptime (20 ms) late: "
            "it (or the host) is the limit"
        )
    out["notes"] = notes
    out["failures"] = failures(out, n)
    out["ok"] = not out["failures"]
    if not args.keep_files:
        for sub in ("recordings", "rtpengine-recordings", "retry"):
            shutil.rmtree(work / sub, ignore_errors=True)
    return out


def run_one(system: str, n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One system at one level, fresh processes; the figures as a dict."""
    work.mkdir(parents=True, exist_ok=True)
    ramp = max(1.0, n / RAMP_CPS)
    rate = n / ramp
    uac_last = UAC_MEDIA_BASE + 4 * n + 3
    out: dict[str, Any] = {
        "system": system,
        "n": n,
        "loadavg_start": cp.loadavg(),
        "probe_ms_start": settle(args.settle, args.best_probe),
    }
    notes: list[str] = []
    with ExitStack() as stack:
        uas, uas_port, uas_media, uas_log = stack.enter_context(uas_echo(work, args.sipp_nice))
        trees: list[Tree] = []
        rec: RecorderProcess | None = None
        metrics_port: int | None = None
        rec_dir: Path | None = None
        if system == "direct":
            target = f"127.0.0.1:{uas_port}"
        elif system == "rtpengine":
            target, trees, rec_dir, _ = stack.enter_context(rtpengine_pair(work, uas_port))
        else:
            media_extra, root = recorder_variant(system)
            rec, metrics_port, note = stack.enter_context(
                recorder_service(work, uas_port, media_extra, root)
            )
            target = rec.external_target
            trees = [Tree("recorder", [rec.proc.pid])]
            if note:
                notes.append(note)
            if metrics_port is None:
                notes.append("event-loop lag not exposed by this recorder")
        stack.enter_context(nft_counters(f"{UAC_MEDIA_BASE}-{uac_last}", str(uas_media)))
        time.sleep(2.0)
        idle = {t.name: t.sample()[1:] for t in trees}
        for t in trees:
            t.start()
        metrics_before = scrape(metrics_port)
        drops_before = udp_socket_drops(uas_media)
        uas_cpu_before = cp.cpu_seconds(uas.pid) or 0.0

        log_dir = work / "sipp-uac"
        log_dir.mkdir(parents=True, exist_ok=True)
        sipp_timeout = ramp + args.call_length + 90
        cmd = cp.sipp_cmd(
            log_dir,
            scenario="uac_load",
            target=target,
            port=peers.free_udp_port(),
            media_port=UAC_MEDIA_BASE,
            calls=n,
            rate=rate,
            limit=n,
            call_length_ms=int(args.call_length * 1000),
            service="service",
            keys={"pcap": str(args.pcap.resolve())},
            timeout_s=sipp_timeout,
        )
        cmd = niced(cmd, args.sipp_nice)
        samples: list[dict[str, Any]] = []
        lag_last: list[float] = []
        profile: list[tuple[int, str, subprocess.Popen[bytes], Path]] | None = None
        uac_cpu = 0.0
        with cp.child(cmd, log_dir) as proc:
            start = time.monotonic()
            while True:
                pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    uac_cpu = rusage.ru_utime + rusage.ru_stime
                    break
                now = time.monotonic() - start
                if now > sipp_timeout + 15:
                    notes.append("sipp UAC timed out")
                    break
                current = cp.last_int(cp.read_stat_rows(log_dir / "stat.csv"), "CurrentCall")
                sample: dict[str, Any] = {"t": round(now, 2), "calls": current}
                for t in trees:
                    cpu_s, pss, rss = t.sample()
                    sample[t.name] = [round(cpu_s, 3), pss, rss]
                if metrics_port is not None:
                    m = scrape(metrics_port)
                    if "recorder_event_loop_lag_last_seconds" in m:
                        lag_last.append(m["recorder_event_loop_lag_last_seconds"])
                samples.append(sample)
                if (
                    args.profile
                    and rec is not None
                    and profile is None
                    and current >= n
                    and now > ramp + 3
                ):
                    profile = start_profiles(
                        rec.proc.pid, args.profile, args.profile_dir, n, system
                    )
                time.sleep(1.0)
            wall = time.monotonic() - start
        out["wall_s"] = round(wall, 1)
        out["uac_returncode"] = proc.returncode
        time.sleep(1.5)  # the last echoes, the UAS's stat row
        counters = read_nft()
        drops = udp_socket_drops(uas_media) - drops_before
        uas_cpu = (cp.cpu_seconds(uas.pid) or 0.0) - uas_cpu_before
        metrics_after = scrape(metrics_port)

        rows = cp.read_stat_rows(log_dir / "stat.csv")
        stats = rows[-1] if rows else {}
        res = peers.SippResult("uac_load", cmd, proc.returncode, log_dir, False, stats)
        uas_rows = cp.read_stat_rows(uas_log / "stat.csv")
        out["calls"] = {
            "created": res.created,
            "successful": res.successful,
            "failed": res.failed,
            "uas_failed": cp.last_int(uas_rows, "FailedCall(C)"),
            "retransmissions_uac": res.retransmissions,
            "retransmissions_uas": cp.last_int(uas_rows, "Retransmissions(C)"),
            "invite_200_avg_ms": cp.sipp_time_ms(stats.get("ResponseTime1(C)", "")),
        }
        plateau = [s for s in samples if s["calls"] >= n]
        out["peak_concurrent"] = max((s["calls"] for s in samples), default=0)
        out["plateau_s"] = round(plateau[-1]["t"] - plateau[0]["t"], 1) if len(plateau) > 1 else 0

        expected = args.pcap_packets * res.successful
        caller_tx, callee_rx = counters.get("caller_tx", 0), counters.get("callee_rx", 0)
        callee_tx, caller_rx = counters.get("callee_tx", 0), counters.get("caller_rx", 0)
        out["rtp"] = {
            "expected_per_direction": expected,
            "caller_sent": counters.get("caller_tx", 0),
            "callee_arrived": counters.get("callee_rx", 0),
            "callee_socket_drops": drops,
            "callee_sent": counters.get("callee_tx", 0),
            "caller_arrived": counters.get("caller_rx", 0),
            # In the system under test: sent by one sipp vs arrived at the other's host.
            "forward_loss_pct": pct(caller_tx - callee_rx, caller_tx),
            "back_loss_pct": pct(callee_tx - caller_rx, callee_tx),
            # The harness's own loss: the UAS's echo socket overflowing.
            "uas_socket_drop_pct": pct(drops, callee_rx),
            "forward_loss_at_uas_socket_pct": pct(caller_tx - callee_rx + drops, caller_tx),
            "caller_sent_vs_expected_pct": pct(counters.get("caller_tx", 0), expected),
        }
        out["sipp_cores"] = round((uac_cpu + uas_cpu) / wall, 3)

        system_figures(out, trees, samples, plateau, idle, n, wall)

        if profile is not None:
            out["profile"] = finish_profiles(profile, args.profile)
        recorder_and_recordings(
            out,
            rec,
            rec_dir,
            res.successful,
            args.pcap_packets,
            caller_tx + callee_tx,
            (metrics_before, metrics_after, lag_last),
            n,
        )
    if (out.get("rtp", {}).get("uas_socket_drop_pct") or 0) >= LOSS_LIMIT_PCT:
        notes.append("the sipp UAS's echo socket dropped >= 0.1%: the harness is the limit")
    out["notes"] = notes
    out["failures"] = failures(out, n)
    out["ok"] = not out["failures"]
    if not args.keep_files:
        for sub in ("recordings", "rtpengine-recordings", "retry"):
            shutil.rmtree(work / sub, ignore_errors=True)
    return out


def failures(out: dict[str, Any], n: int) -> list[str]:
    why: list[str] = []
    calls = out.get("calls", {})
    if calls.get("failed") or calls.get("successful") != n:
        why.append(f"calls: {calls.get('successful')}/{n} successful, {calls.get('failed')} failed")
    rtp = out.get("rtp", {})
    for key in ("forward_loss_pct", "back_loss_pct"):
        if rtp.get(key) is None or rtp[key] >= LOSS_LIMIT_PCT:
            why.append(f"{key} = {rtp.get(key)}")
    recs = out.get("recordings")
    if recs is not None and not recs.get("complete"):
        why.append("recordings incomplete")
    return why


# --------------------------------------------------------------------------- py-spy


def py_spy() -> str | None:
    exe = Path(sys.executable).parent / "py-spy"
    return str(exe) if exe.exists() else shutil.which("py-spy")


def process_label(pid: int, root: int) -> str:
    """`service` for the recorder itself, else a short name from the child's command line."""
    if pid == root:
        return "service"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "child"
    text = " ".join(a.decode(errors="replace") for a in argv if a)
    m = re.search(r"(writer|media|worker)\w*", text)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", m.group(0) if m else comm)[:40]


def start_profiles(
    root: int, seconds: float, out_dir: Path, n: int, system: str
) -> list[tuple[int, str, subprocess.Popen[bytes], Path]]:
    """py-spy on every process of the recorder's tree (service, writer, media workers) for
    `seconds`: a flamegraph SVG and a speedscope JSON each, in `out_dir`."""
    exe = py_spy()
    if exe is None:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    started = []
    for pid in children_of([root]):
        label = process_label(pid, root)
        stem = out_dir / f"{n}-{system}-{label}-{pid}"
        for fmt, suffix in (("speedscope", ".speedscope.json"), ("flamegraph", ".svg")):
            path = stem.with_name(stem.name + suffix)
            cmd = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds))]
            cmd += ["--rate", "100", "--nonblocking", "--format", fmt, "--output", str(path)]
            with open(stem.with_name(stem.name + f".{fmt}.log"), "wb") as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            if fmt == "speedscope":
                started.append((pid, label, proc, path))
            else:
                started.append((pid, label + " (svg)", proc, path))
    return started


def finish_profiles(
    profiles: list[tuple[int, str, subprocess.Popen[bytes], Path]], seconds: float
) -> dict[str, Any]:
    """Per process: self and inclusive time per function from py-spy's speedscope file."""
    out: dict[str, Any] = {}
    for pid, label, proc, path in profiles:
        try:
            proc.wait(seconds + 120)
        except subprocess.TimeoutExpired:
            cp.stop(proc)
        key = f"{label} {pid}"
        if label.endswith("(svg)"):
            out[key] = {"file": str(path), "written": path.exists()}
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            out[key] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        frames = [
            f"{f.get('name')} ({'/'.join(str(f.get('file', '')).split('/')[-2:])})"
            for f in doc.get("shared", {}).get("frames", [])
        ]
        self_t: collections.Counter[str] = collections.Counter()
        incl: collections.Counter[str] = collections.Counter()
        total = 0.0  # seconds sampled busy (py-spy's speedscope weights are seconds)
        count = 0
        for prof in doc.get("profiles", []):
            weights = prof.get("weights") or [0.01] * len(prof.get("samples", []))
            for stack, weight in zip(prof.get("samples", []), weights, strict=False):
                if not stack:
                    continue
                total += weight
                count += 1
                self_t[frames[stack[-1]]] += weight
                for f in {frames[i] for i in stack}:
                    incl[f] += weight
        out[key] = {
            "file": str(path),
            "samples": count,
            "busy_fraction_of_one_core": round(total / seconds, 3),
            "self_pct_top": [(f, round(100 * c / total, 1)) for f, c in self_t.most_common(15)]
            if total
            else [],
            "inclusive_pct_top": [(f, round(100 * c / total, 1)) for f, c in incl.most_common(25)]
            if total
            else [],
        }
    return out


# --------------------------------------------------------------------------- report


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def verdict(r: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    """pass / FAIL, a system's failure not counted when the direct reference failed too."""
    if r.get("not_started"):
        return "did not start"
    if r["ok"]:
        return "pass"
    if r["system"] == "direct":
        return "FAIL (harness)"
    direct = [d for d in runs if d["system"] == "direct" and d["n"] == r["n"]]
    if direct and not direct[-1]["ok"]:
        return "fail, not counted (direct failed too)"
    if not direct:
        return "FAIL (no direct reference in this run)"
    behind = (r.get("load_gen", {}).get("packets_sent_over_20ms_late_pct") or 0) >= LOSS_LIMIT_PCT
    # Counted all the same (the system's own CPU may be what starved the generator), but said.
    return "**FAIL** (load generator behind too)" if behind else "**FAIL**"


def markdown(runs: list[dict[str, Any]], env: dict[str, Any], params: dict[str, Any]) -> str:
    rtpload = params.get("load", "sipp") == "rtpload"
    if rtpload:
        load_s = (
            f"bench/rtpload.py (SIP UAC + UAS, {params.get('load_workers')} media processes, "
            "a socket per call per side; each party sends its own PCMU 20-ms stream)"
        )
    else:
        load_s = f"{env['sipp']} (UAC pcap per call, UAS echo on one socket)"
    lines = [
        f"# Scale benchmark, {env['date'][:10]}",
        "",
        *([f"**{params['label']}**", ""] if params.get("label") else []),
        f"Machine: {env['nproc']} cores ({env['cpu_model']}), kernel {env['kernel']}, "
        f"Python {env['python']}. Load: {load_s}. Calls of {params['call_length_s']:g} s, "
        f"{params['pcap_packets']} packets per party, ramp at {RAMP_CPS:g} calls/s to N "
        "concurrent; every call recorded (recorder: WAV; rtpengine: pcap). "
        + (f"Every process of the run at nice {params['nice']}. " if params.get("nice") else "")
        + f"Command: `{params.get('command', '')}`"
        + (f". Code: {params['tested']}" if params.get("tested") else "")
        + (
            f"; `baseline` = recorder-workers at {params['baseline']}"
            if params.get("baseline")
            else ""
        ),
        "",
        "| N | system | load avg at start | host probe ms | calls ok / failed | retrans "
        "| RTP loss fwd / back % "
        + (
            f"| late (> {params.get('late_ms'):g} ms) fwd / back | kernel loss fwd / back % "
            if rtpload
            else "| UAS socket drops "
        )
        + "| cores (plateau) | mcores/call | CPU/call ÷ rtpengine's "
        + ("| load gen cores (send lag max ms) | host busy cores " if rtpload else "| sipp cores ")
        + "| KiB/call (PSS) | peak loop lag ms | recordings complete | verdict |",
        "|" + "---|" * (20 if rtpload else 17),
    ]
    theirs = {r["n"]: r.get("sut_mcores_per_call") for r in runs if r["system"] == "rtpengine"}
    for r in runs:
        calls = r.get("calls", {})
        rtp = r.get("rtp", {})
        per_call = r.get("sut_mcores_per_call")
        ratio = "n/a"
        if r["system"] == "rtpengine" and per_call:
            ratio = "1"
        elif r["system"] in RECORDERS and per_call and theirs.get(r["n"]):
            ratio = f"{per_call / theirs[r['n']]:.2f}"
        lag = r.get("lag")
        lag_s = (
            f"{lag['peak_sampled_ms']:.1f} (p99 <= {lag['p99_bucket_ms']:g})"
            if isinstance(lag, dict)
            else ("n/a" if r["system"] in RECORDERS else "-")
        )
        recs = r.get("recordings")
        rec_s = (
            "-"
            if recs is None
            else f"{'yes' if recs['complete'] else 'NO'} "
            f"({recs.get('finalized', recs.get('files'))}/{recs['expected']}"
            + (f", {recs['files_reanchored']} re-anchored" if recs.get("files_reanchored") else "")
            + ")"
        )
        cores = r.get("sut_cores")
        cpu = r.get("cpu", {})
        cores_s = fmt(cores)
        if r["system"] == "rtpengine" and cpu:
            cores_s += (
                " (" + " + ".join(f"{k} {fmt(v['plateau_cores'])}" for k, v in cpu.items()) + ")"
            )
        if rtpload:
            fwd, back, nft = rtp.get("forward", {}), rtp.get("back", {}), rtp.get("nft", {})
            gen = r.get("load_gen", {})
            middle = (
                f"| {fwd.get('late', 'n/a')} / {back.get('late', 'n/a')} "
                f"| {fmt(nft.get('forward_loss_pct'))} / {fmt(nft.get('back_loss_pct'))} "
            )
            gen_s = (
                f"{fmt(gen.get('plateau_cores'))} ({fmt(gen.get('send_lag_max_ms'))}) "
                f"| {fmt(r.get('host_busy_cores_plateau'))}"
            )
        else:
            middle = f"| {rtp.get('callee_socket_drops', 'n/a')} "
            gen_s = fmt(r.get("sipp_cores"))
        lines.append(
            f"| {r['n']} | {r['system']} | {'/'.join(map(str, r['loadavg_start']))} "
            f"| {fmt(r.get('probe_ms_start'))} "
            f"| {calls.get('successful', '-')} / {calls.get('failed', '-')} "
            f"| {calls.get('retransmissions_uac', 0)} + {calls.get('retransmissions_uas', 0)} "
            f"| {fmt(rtp.get('forward_loss_pct'))} / {fmt(rtp.get('back_loss_pct'))} "
            + middle
            + f"| {cores_s} | {fmt(per_call)} | {ratio} | {gen_s} "
            f"| {fmt(r.get('sut_kib_per_call'))} | {lag_s} | {rec_s} | {verdict(r, runs)} |"
        )
    notes = [
        f"- {r['n']} {r['system']}: {note}"
        for r in runs
        for note in [*r.get("notes", []), *([r["not_started"]] if r.get("not_started") else [])]
    ]
    if notes:
        lines += ["", "Notes:", "", *notes]
    lines += [
        "",
        "cores: CPU of the system under test's process tree while all N calls were up "
        "(recorder: service + writer + any media worker; rtpengine row: kamailio + rtpengine). "
        "CPU/call ÷ rtpengine's: that system's CPU per call over kamailio + rtpengine's at the "
        "same N in this run (issue 18's aim for the recorder: <= 1.5). "
        + (
            "RTP loss: what each party's socket sent against what reached the other party's "
            "socket (bench/rtpload.py: received, plus what that socket itself dropped for want "
            "of reading, which is the harness's; direct: end to end), both directions; "
            "late: received more than the limit after it was sent; kernel loss: the same from "
            "nftables counters (left one party's ports, reached the other's), a cross-check. "
            "load gen cores: bench/rtpload.py's processes on the plateau, and the worst lateness "
            "of its 20-ms sends (its own health: a loaded host shows there first); host busy "
            "cores: the whole machine's non-idle CPU on the plateau (/proc/stat), so that what "
            "else ran on this shared host is seen: with 2 cores, 2 means nothing was left. "
            if rtpload
            else "RTP loss: kernel counters (nftables) of packets leaving one sipp and reaching "
            "the other's host, both directions; UAS socket drops: the stand-in PBX's own echo "
            "socket overflowing (harness, not the system under test). "
        )
        + "A system's failure counts only when the direct reference passed at that N. "
        "KiB/call: (mean PSS on the plateau - idle PSS) / N. "
        "host probe ms: best of 5 timings of a fixed Python loop just before the run "
        "(lower is a faster host; these VMs share theirs, and its speed moves every figure).",
    ]
    return "\n".join(lines) + "\n"


def plot(runs: list[dict[str, Any]], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: .venv/bin/pip install matplotlib"
    fig, (ax_cpu, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {
        "recorder": "o-",
        "recorder-workers": "D-",
        "baseline": "x:",
        "rtpengine": "s-",
        "direct": "^--",
    }
    for system in SYSTEMS:
        rs = [r for r in runs if r["system"] == system]
        if not rs:
            continue
        ns = [r["n"] for r in rs]
        rs = [r for r in rs if not r.get("not_started")]
        if not rs:
            continue
        ns = [r["n"] for r in rs]
        if system == "direct":
            gen = [r.get("loadgen_cores", r.get("sipp_cores")) for r in rs]
            ax_cpu.plot(ns, gen, styles[system], label="direct (load generator only)")
        else:
            label = "kamailio + rtpengine" if system == "rtpengine" else system
            ax_cpu.plot(ns, [r.get("sut_cores") for r in rs], styles[system], label=label)
        loss = [
            max(r["rtp"].get("forward_loss_pct") or 0, r["rtp"].get("back_loss_pct") or 0)
            for r in rs
        ]
        ax_loss.plot(ns, loss, styles[system], label=system)
    ax_cpu.set_xlabel("concurrent calls")
    ax_cpu.set_ylabel("CPU (cores) on the plateau")
    ax_cpu.set_title("CPU of the system under test")
    ax_cpu.grid(True, alpha=0.3)
    ax_cpu.legend()
    ax_loss.axhline(LOSS_LIMIT_PCT, color="red", lw=0.8, ls=":", label="0.1% limit")
    ax_loss.set_yscale("symlog", linthresh=0.01)
    ax_loss.set_ylim(bottom=0)
    ax_loss.set_xlabel("concurrent calls")
    ax_loss.set_ylabel("RTP loss, worse direction (%)")
    ax_loss.set_title("RTP loss")
    ax_loss.grid(True, alpha=0.3)
    ax_loss.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--levels", default="250,500,750,1000", help="concurrent calls, comma list")
    p.add_argument("--call-length", type=float, default=60.0, help="seconds per call")
    p.add_argument(
        "--systems",
        default=",".join(s for s in SYSTEMS if s != "baseline"),
        help="subset of " + ",".join(SYSTEMS),
    )
    p.add_argument(
        "--baseline",
        metavar="DIR",
        help="another checkout of this project (git worktree add DIR REV): adds the "
        "`baseline` system, recorder-workers run from DIR's code",
    )
    p.add_argument(
        "--load",
        choices=LOADS,
        default="rtpload",
        help="rtpload: bench/rtpload.py as caller and PBX (a socket per call per side); "
        "sipp: sipp UAC (a pcap per call) and sipp UAS echo (one socket)",
    )
    p.add_argument(
        "--load-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="rtpload's media processes (default one per core)",
    )
    p.add_argument(
        "--late-ms", type=float, default=100.0, help="rtpload: a packet this late counts late"
    )
    p.add_argument("--out-stem", default=None, help="bench/results/STEM.{json,md,png}")
    p.add_argument(
        "--label",
        default="",
        help="a line said first in the report (e.g. 'Harness validation on a busy host')",
    )
    p.add_argument(
        "--stop-at-failure",
        action="store_true",
        help="stop after the first level at which every recorder system failed "
        "(default: run every level, and report them all)",
    )
    p.add_argument("--keep-going", action="store_true", help=argparse.SUPPRESS)  # the default
    p.add_argument("--keep-files", action="store_true", help="keep recordings after each run")
    p.add_argument(
        "--profile",
        type=float,
        default=0.0,
        help="py-spy every recorder process for S s on each plateau (SVG + speedscope in "
        "bench/results/STEM-profiles/)",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the benchmark and everything it starts (system, load, sipp) at this nice "
        "level, e.g. -10 on a shared host so that other tenants' work takes less from the "
        "runs (the same for every system; root only below 0)",
    )
    p.add_argument(
        "--sipp-nice",
        type=int,
        default=0,
        help="nice level of both sipp processes (2026-12-03: 10 starved sipp's echo instead)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=60.0,
        help="wait up to S s before each run for the host speed probe to come near its best",
    )
    args = p.parse_args(argv)
    args.best_probe = [math.inf]
    args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        p.error(f"unknown systems: {sorted(unknown)}")
    if args.baseline is not None:
        global BASELINE_ROOT
        BASELINE_ROOT = Path(args.baseline).resolve()
        if not (BASELINE_ROOT / "recorder" / "cli").is_dir():
            p.error(f"--baseline {args.baseline}: not a checkout of this project")
        if "baseline" not in args.systems:
            args.systems.append("baseline")
    elif "baseline" in args.systems:
        p.error("the baseline system needs --baseline DIR")
    too_big = [n for n in args.levels if 4 * n > RELAY_MEDIA_LAST - RELAY_MEDIA_FIRST - 100]
    if too_big:
        p.error(f"levels {too_big}: the media range holds about 1200 calls")
    if args.out_stem is None:
        args.out_stem = f"scale-{dt.date.today().strftime('%Y%m%d')}"
    args.profile_dir = ROOT / "bench" / "results" / f"{args.out_stem}-profiles"
    if (
        args.load == "rtpload"
        and max(args.levels, default=0) > (rl.CALLEE_BASE - rl.CALLER_BASE) // 2
    ):
        p.error(f"rtpload: at most {(rl.CALLEE_BASE - rl.CALLER_BASE) // 2} calls")
    return args


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(f"signal {signum}")  # so that every finally block stops its process


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if os.geteuid() != 0 or shutil.which("nft") is None:
        print("needs root and nft (nftables) for the RTP counters", file=sys.stderr)
        return 2
    if "rtpengine" in args.systems and not (shutil.which("rtpengine") and shutil.which("kamailio")):
        print("rtpengine/kamailio missing: see bench/bench_scale.py's docstring", file=sys.stderr)
        return 2
    if args.nice:
        os.nice(args.nice)  # inherited by every process started from here on
    env = cp.environment()
    env["rtpengine"] = cp.first_line(["rtpengine", "--version"])
    env["kamailio"] = cp.first_line(["kamailio", "-v"])
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    if args.load == "sipp":
        args.pcap, args.pcap_packets, pcap_s = cp.make_pcap(work, args.call_length)
    else:  # as many packets as the pcap would hold: every one sent before the BYE
        args.pcap_packets = max(1, round((args.call_length - 1.0) / 0.020))
        pcap_s = args.pcap_packets * 0.020
    params = {
        "levels": args.levels,
        "systems": args.systems,
        "call_length_s": args.call_length,
        "pcap_packets": args.pcap_packets,
        "pcap_seconds": round(pcap_s, 3),
        "ramp_calls_per_s": RAMP_CPS,
        "loss_limit_pct": LOSS_LIMIT_PCT,
        "duration_tolerance_s": DURATION_TOLERANCE_S,
        "sipp_nice": args.sipp_nice,
        "load": args.load,
        "load_workers": args.load_workers if args.load == "rtpload" else None,
        "late_ms": args.late_ms if args.load == "rtpload" else None,
        "command": " ".join(sys.argv),
        "label": args.label,
        "nice": args.nice,
        "baseline": _describe_checkout(BASELINE_ROOT) if BASELINE_ROOT else None,
        "tested": _describe_checkout(ROOT),
    }
    print(
        f"work dir {work}; {args.load}, {args.pcap_packets} packets per party per call; "
        f"load {cp.loadavg()}",
        flush=True,
    )
    runs: list[dict[str, Any]] = []
    stem = results_dir / args.out_stem

    def write() -> None:
        report = {"environment": env, "parameters": params, "runs": runs}
        stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        stem.with_suffix(".md").write_text(markdown(runs, env, params))
        problem = plot(runs, stem.with_suffix(".png"))
        if problem:
            print(problem, file=sys.stderr)

    for n in args.levels:
        for system in args.systems:
            print(f"[{time.strftime('%H:%M:%S')}] N={n} {system} (load {cp.loadavg()})", flush=True)
            try:
                one = run_one_rtpload if args.load == "rtpload" else run_one
                result = one(system, n, args, work / f"{n}-{system}")
            except NotStarted as exc:  # the sipp path: reported as rtpload's is
                result = {
                    "system": system,
                    "n": n,
                    "loadavg_start": cp.loadavg(),
                    "ok": False,
                    "not_started": str(exc),
                    "failures": [str(exc)],
                    "rtp": {},
                }
            except Exception as exc:  # one broken run is a result, not a crash
                traceback.print_exc()
                result = {
                    "system": system,
                    "n": n,
                    "loadavg_start": cp.loadavg(),
                    "probe_ms_start": speed_probe_ms(),
                    "ok": False,
                    "failures": [f"harness: {type(exc).__name__}: {exc}"],
                    "rtp": {},
                }
            runs.append(result)
            print(
                f"    ok={result['ok']} cores={result.get('sut_cores')} "
                f"loss={result['rtp'].get('forward_loss_pct')}/"
                f"{result['rtp'].get('back_loss_pct')} "
                f"{'; '.join(result['failures'])}",
                flush=True,
            )
            write()
            time.sleep(3.0)
        mine = [r for r in runs if r["n"] == n and r["system"] in RECORDERS]
        level_failed = bool(mine) and not any(r["ok"] for r in mine)
        if level_failed and args.stop_at_failure:
            print(f"every recorder failed at N={n}: stopping", flush=True)
            break
    write()
    print(stem.with_suffix(".md").read_text())
    print(f"wrote {stem}.json/.md/.png (logs in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
