"""kill -9 at random points (issue 20): nothing made is lost, nothing refused is kept.

A seeded loop of `KILLS` SIGKILLs (50 by default, `KILL_LOOP=N` to change it) of the real
`recorder serve`, spread evenly over five phases of a call's life and shuffled:

- setup: just after the INVITE arrived, or while the PBX rings after the consent;
- notice: while the notice plays; half the callers refuse with RFC 4733 key 9 meanwhile;
- recording: a few ms after the recording started (before its row may be written), or
  anywhere in the next 2.5 s;
- finalize: right after the caller's BYE, while the writer closes, renames and hashes;
- purge: while `recorder purge --now <9 days on>` destroys everything expired (as soon as
  it marks a row `destroying`, or at a random moment): the purge process, the service, or
  both are killed.

A kill takes the service alone (its writer process outlives it and flushes what it holds,
as after an OOM kill) or its writer too (as systemd's SIGKILL of the whole unit). Some
iterations add a caller who refuses, so that refused calls are bridged while the kill comes.

After each kill the service is restarted on the same directory, ports and catalog (its
start repairs the `.part` files and finishes an interrupted purge), and
`recorder catalog verify --json` must pass: every file catalogued, every catalogued file
present and hash-correct, no file for a refused call, the audit chain intact. The only
finding allowed is a "purge interrupted" note (a killed `recorder purge` with the service
still up); the next purge finishes it, and the verify after that must be fully clean. No
refused call may own a recording row at all (the refusal came before any recording).

Run it with `-s` to see the summary (kills per phase, recordings, repairs, refusals).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from . import audio, peers
from .recorder_proc import RecorderProcess, running_recorder

KILLS = int(os.environ.get("KILL_LOOP", "50"))
SEED = 20261204
PHASES = ("setup", "notice", "recording", "finalize", "purge")

NOTICE_SECONDS = 1.2  # a short tone as the notice: the loop is bounded in time
LISTEN_SECONDS = 0.4
RING_SECONDS = 0.4  # the stand-in PBX rings this long before it answers
DTMF_9 = Path("/usr/share/sip-tester/dtmf_2833_9.pcap")
PURGE_AHEAD = timedelta(days=9)  # past the 8 days of D1: every finished recording is due

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120 + 12 * KILLS)]

POLICY = """
[policy]
name = "KILL"

[recording]
directions = ["inbound"]
extensions = "all"
mode = "automatic"

[notice]
play = true
prompts = {{ en = "{notice}" }}
default_language = "en"

[consent]
mode = "opt_out"
refusal_keys = ["9"]
listen_seconds = {listen}
barge_in = true

[naming]                                # one minute, one name: collisions get -2, -3...
template = "{{date}}_{{time}}_ext-{{extension}}"

[retention]
recordings = "8 days"
"""


# --- the service's log, read as it grows ---


class LogTail:
    """The JSON lines of one service run, read incrementally (a run rewrites the file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.events: list[dict[str, Any]] = []

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            if line.startswith(b"{"):
                with contextlib.suppress(json.JSONDecodeError):
                    self.events.append(json.loads(line))

    def count(self, name: str) -> int:
        self.poll()
        return sum(1 for event in self.events if event.get("event") == name)

    def wait(self, name: str, after: int, timeout: float) -> dict[str, Any] | None:
        """The first `name` event past the first `after` ones; polled every 2 ms."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            found = [event for event in self.events if event.get("event") == name]
            if len(found) > after:
                return found[after]
            if time.monotonic() > deadline:
                return None
            time.sleep(0.002)


# --- processes ---


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (the writer process), from /proc."""
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ")".
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise AssertionError(f"processes {pids} still alive {timeout} s after their parent")
        time.sleep(0.01)


@dataclass
class Ports:
    external: int
    internal: int
    trunk: int
    media_first: int
    media_last: int


class Service:
    """`recorder serve` restarted on one directory, with the same ports each time."""

    def __init__(self, workdir: Path, ports: Ports, pbx_port: int, policy: str) -> None:
        self.workdir = workdir
        self.ports = ports
        self.pbx_port = pbx_port
        self.policy = policy
        self.stack: ExitStack | None = None
        self.proc: RecorderProcess | None = None
        self.log = LogTail(workdir / "recorder.log")
        self.runs = 0
        self.recovered: list[dict[str, Any]] = []

    @property
    def policy_path(self) -> Path:
        return self.workdir / "policy.toml"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.proc.poll() is None

    def start(self) -> None:
        assert self.stack is None
        before = _purges(self.workdir)
        stack = ExitStack()
        self.proc = stack.enter_context(
            running_recorder(
                self.workdir,
                external_port=self.ports.external,
                internal_port=self.ports.internal,
                pbx_port=self.pbx_port,
                trunk_port=self.ports.trunk,
                media_first=self.ports.media_first,
                media_last=self.ports.media_last,
                drain_seconds=1,
                policy_extra=self.policy,
            )
        )
        self.stack = stack
        self.runs += 1
        self.log = LogTail(self.workdir / "recorder.log")
        self.log.poll()
        self.recovered += [e for e in self.log.events if e.get("event") == "recording.recovered"]
        # The start's purge finishes what a killed purge left; wait for its audit entry, so
        # that what is verified next is the state the start leaves.
        deadline = time.monotonic() + 20
        while _purges(self.workdir) <= before:
            assert time.monotonic() < deadline, "the service's start purge did not run"
            time.sleep(0.02)

    def kill(self, *, with_writer: bool) -> None:
        """SIGKILL the service (and its writer process, as systemd's unit kill would)."""
        assert self.proc is not None and self.stack is not None
        pid = self.proc.proc.pid
        writers = _children(pid)
        self.proc.proc.send_signal(signal.SIGKILL)
        if with_writer:
            for child in writers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
        self.proc.proc.wait(10)
        # Like systemd, start again only once the unit's last process is gone: the orphaned
        # writer flushes its files into their `.part` and exits when its pipe closes.
        _wait_gone(writers, 15)
        self.stack.close()
        self.stack = None
        # Keep each run's log for a post-mortem (the next start rewrites recorder.log).
        log = self.workdir / "recorder.log"
        if log.exists():
            log.rename(self.workdir / f"recorder-run{self.runs:03d}.log")

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.close()  # SIGTERM: calls drained, recordings finalized
            self.stack = None

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "recorder.cli", *args, "--config", str(self.policy_path)],
            capture_output=True,
            text=True,
            cwd=self.workdir,
            timeout=timeout,
            check=False,
        )

    def spawn_cli(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "recorder.cli", *args, "--config", str(self.policy_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=self.workdir,
        )


# --- the catalog, read directly (read-only) ---


def _query(workdir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    database = workdir / "recorder.db"
    if not database.exists():
        return []
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        return connection.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        connection.close()


def _purges(workdir: Path) -> int:
    rows = _query(
        workdir,
        "SELECT count(*) FROM audit_entries WHERE action = 'retention.purge' AND actor = 'service'",
    )
    return int(rows[0][0]) if rows else 0


def _finished_recordings(workdir: Path) -> int:
    rows = _query(
        workdir, "SELECT count(*) FROM recordings WHERE state IN ('complete', 'interrupted')"
    )
    return int(rows[0][0]) if rows else 0


def _destroying(workdir: Path) -> int:
    rows = _query(workdir, "SELECT count(*) FROM recordings WHERE state = 'destroying'")
    return int(rows[0][0]) if rows else 0


# --- callers ---


@dataclass
class Slot:
    """A caller's fixed ports, reused by each iteration's sipp (the previous one is gone)."""

    sip_port: int
    media_port: int


@dataclass
class Callers:
    interop_dir: Path
    tone_pcap: Path
    slots: tuple[Slot, Slot]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    refusers: int = 0

    def call(
        self, target: str, *, slot: int, length_s: float, refuse_after_s: float | None, tag: str
    ) -> None:
        stem = "sipp-accept" if refuse_after_s is None else "sipp-refuse"
        log_dir = peers._unique_dir(self.interop_dir / tag, stem)
        if refuse_after_s is None:
            scenario, keys, variables = "uac_pcap", {"pcap": str(self.tone_pcap)}, {}
        else:
            scenario = "uac_dtmf"
            keys = {"dtmf": str(DTMF_9)}
            variables = {"dtmf_delay_ms": str(int(refuse_after_s * 1000))}
            self.refusers += 1
        cmd = peers.sipp_command(
            scenario,
            log_dir=log_dir,
            target=target,
            port=self.slots[slot].sip_port,
            media_port=self.slots[slot].media_port,
            calls=1,
            call_length_ms=int(length_s * 1000),
            service="service",
            keys=keys,
            variables=variables,
            timeout_s=30,
            extra_args=["-max_retrans", "2", "-recv_timeout", "3s"],
        )
        self.procs.append(peers._spawn(cmd, log_dir))

    def wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))

    def stop_all(self) -> None:
        for proc in self.procs:
            peers.stop_process(proc, grace=2.0)
        self.procs.clear()


# --- one iteration ---


@dataclass
class Tally:
    kills: Counter[str] = field(default_factory=Counter)
    moments: Counter[str] = field(default_factory=Counter)
    purge_processes_killed: int = 0
    purge_interrupted_notes: int = 0
    # How long a whole `recorder purge` takes here (start-up included), as last measured:
    # a kill "at a random moment" falls within it.
    purge_seconds: float = 0.9

    def purge_took(self, seconds: float) -> None:
        self.purge_seconds = 0.5 * self.purge_seconds + 0.5 * seconds

    writers_killed: int = 0
    verifies: int = 0


def _accepting_call_length(recorded_s: float) -> float:
    """How long a consenting caller stays, for `recorded_s` of recording after the bridge."""
    return NOTICE_SECONDS + LISTEN_SECONDS + RING_SECONDS + 0.3 + recorded_s


def _record_one_call(service: Service, callers: Callers, tag: str) -> None:
    """A consenting call to its end, so that a purge has something to destroy."""
    assert service.proc is not None
    before = service.log.count("recording.finalized")
    callers.call(
        service.proc.external_target,
        slot=0,
        length_s=_accepting_call_length(0.8),
        refuse_after_s=None,
        tag=tag,
    )
    found = service.log.wait("recording.finalized", before, timeout=20)
    assert found is not None, "a consenting call was not recorded"
    callers.wait_all(5)
    callers.stop_all()


def _kill_during(
    phase: str,
    rng: random.Random,
    service: Service,
    callers: Callers,
    tally: Tally,
    tag: str,
) -> bool:
    """Drive one call into `phase` and kill there. Returns whether the service was killed."""
    assert service.proc is not None
    target = service.proc.external_target
    log = service.log
    with_writer = rng.random() < 0.5
    refuser = phase != "notice" and rng.random() < 0.3

    def alongside() -> None:
        # Now and then a caller who refuses: refused calls are bridged when the kill comes.
        if refuser:
            callers.call(
                target, slot=1, length_s=4.0, refuse_after_s=rng.uniform(0.2, 0.9), tag=tag
            )

    def kill_service(moment: str) -> bool:
        tally.moments[f"{phase}/{moment}"] += 1
        tally.writers_killed += with_writer
        service.kill(with_writer=with_writer)
        return True

    if phase != "purge":
        alongside()

    if phase == "setup":
        received = log.count("call.received")
        accepted = log.count("consent.accepted")
        callers.call(target, slot=0, length_s=4.0, refuse_after_s=None, tag=tag)
        if rng.random() < 0.5:
            assert log.wait("call.received", received, 10) is not None
            time.sleep(rng.uniform(0, 0.03))
            return kill_service("invite")
        assert log.wait("consent.accepted", accepted, 10) is not None
        time.sleep(rng.uniform(0, RING_SECONDS))
        return kill_service("ringing")

    if phase == "notice":
        started = log.count("notice.started")
        refusing = rng.random() < 0.5
        callers.call(
            target,
            slot=0,
            length_s=4.0,
            refuse_after_s=rng.uniform(0.2, NOTICE_SECONDS - 0.1) if refusing else None,
            tag=tag,
        )
        assert log.wait("notice.started", started, 10) is not None
        time.sleep(rng.uniform(0, NOTICE_SECONDS + LISTEN_SECONDS))
        return kill_service("refusing" if refusing else "silent")

    if phase == "recording":
        started = log.count("recording.started")
        callers.call(
            target, slot=0, length_s=_accepting_call_length(4.0), refuse_after_s=None, tag=tag
        )
        assert log.wait("recording.started", started, 15) is not None
        if rng.random() < 0.3:
            # Between the writer claiming the `.part` and the catalog row that names it.
            time.sleep(rng.uniform(0, 0.03))
            return kill_service("opening")
        time.sleep(rng.uniform(0.05, 2.5))
        return kill_service("writing")

    if phase == "finalize":
        ended = log.count("call.ended")
        callers.call(
            target,
            slot=0,
            length_s=_accepting_call_length(rng.uniform(0.3, 1.2)),
            refuse_after_s=None,
            tag=tag,
        )
        assert log.wait("call.ended", ended, 20) is not None
        time.sleep(rng.uniform(0, 0.06))
        return kill_service("after-bye")

    assert phase == "purge"
    if _finished_recordings(service.workdir) == 0:
        _record_one_call(service, callers, tag)
    alongside()
    if rng.random() < 0.5:
        # A recording in progress meanwhile: the purge must leave it alone.
        started = log.count("recording.started")
        callers.call(
            target, slot=0, length_s=_accepting_call_length(4.0), refuse_after_s=None, tag=tag
        )
        assert log.wait("recording.started", started, 15) is not None
    victim = rng.choices(("purge", "service", "both"), weights=(4, 2, 4))[0]
    at_destroying = rng.random() < 0.5
    now = (datetime.now(UTC) + PURGE_AHEAD).isoformat(timespec="seconds")
    purge = service.spawn_cli("purge", "--now", now, "--json")
    spawned = time.monotonic()
    deadline = time.monotonic() + 30
    if at_destroying:
        moment = "destroying"
        while _destroying(service.workdir) == 0 and purge.poll() is None:
            assert time.monotonic() < deadline, "the purge did not get anywhere"
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.005))
    else:
        moment = "random"
        time.sleep(rng.uniform(0.2, 1.0) * tally.purge_seconds)
    if purge.poll() is not None:
        moment += "-too-late"  # the purge was done: the kill still comes, to the service
        victim = "service"
    killed_service = False
    if victim in ("purge", "both"):
        purge.send_signal(signal.SIGKILL)
        tally.purge_processes_killed += 1
    if victim in ("service", "both"):
        killed_service = kill_service(f"{victim}-{moment}")
    else:
        tally.moments[f"purge/purge-{moment}"] += 1
    purge.communicate(timeout=30)
    if purge.returncode == 0:
        tally.purge_took(time.monotonic() - spawned)
    return killed_service


def _verify(service: Service, tally: Tally, context: str) -> dict[str, Any]:
    done = service.cli("catalog", "verify", "--json")
    tally.verifies += 1
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"{context}: verify printed no report: {done.stderr}") from None
    problems = report["problems"]
    assert done.returncode == 0 and not problems, (
        f"{context}: catalog verify found problems:\n"
        + "\n".join(f"  {p['kind']}: {p['message']}" for p in problems)
        + f"\nrecovered at the starts: {service.recovered[-3:]}\nstderr: {done.stderr}"
    )
    kinds = {note["kind"] for note in report["notes"]}
    assert kinds <= {"purge_interrupted"}, f"{context}: unexpected notes {report['notes']}"
    return report


def _assert_no_refused_recording(workdir: Path, context: str) -> None:
    rows = _query(
        workdir,
        "SELECT r.id, r.state, r.path FROM recordings r JOIN calls c ON c.id = r.call_id"
        " WHERE c.consent_outcome = 'refused'",
    )
    assert rows == [], f"{context}: recordings of refused calls: {rows}"


@pytest.fixture
def notice_wav(audio_dir: Path) -> Path:
    return audio.tone(audio_dir / "kill-notice.wav", NOTICE_SECONDS, freq=600.0)


@pytest.fixture
def tone_pcap(audio_dir: Path) -> Path:
    wav = audio.tone(audio_dir / "kill-caller.wav", 9.0, freq=350.0, gain_db=-12.0)
    return audio.wav_to_pcap(wav, audio_dir / "kill-caller.pcap")


def test_kill_9_at_random_points_loses_nothing_and_keeps_nothing_refused(
    interop_dir: Path, notice_wav: Path, tone_pcap: Path
) -> None:
    assert DTMF_9.is_file(), f"{DTMF_9} missing (sipp's sip-tester package)"
    started_at = time.monotonic()
    rng = random.Random(SEED)
    phases = [PHASES[i % len(PHASES)] for i in range(KILLS)]
    rng.shuffle(phases)
    tally = Tally()
    workdir = interop_dir / "recorder"
    media_first = peers.free_port_block(64)
    ports = Ports(
        external=peers.free_port_block(1, tcp=True),
        internal=peers.free_port_block(1, tcp=True),
        trunk=peers.free_udp_port(),
        media_first=media_first,
        media_last=media_first + 63,
    )
    slots = tuple(Slot(peers.free_udp_port(), peers.free_port_block(4)) for _ in range(2))
    callers = Callers(interop_dir, tone_pcap, (slots[0], slots[1]))
    policy = POLICY.format(notice=notice_wav, listen=LISTEN_SECONDS)
    with (
        peers.start_sipp_uas("uas_echo", log_dir=interop_dir, call_length_s=RING_SECONDS) as pbx,
        _stopped(callers),
    ):
        service = Service(workdir, ports, pbx.port, policy)
        try:
            service.start()
            for index, phase in enumerate(phases):
                tag = f"kill-{index:03d}-{phase}"
                killed = _kill_during(phase, rng, service, callers, tally, tag)
                tally.kills[phase] += 1
                if killed:
                    callers.stop_all()
                    service.start()
                else:
                    # The service lives on: its calls end as callers hang up.
                    callers.wait_all(15)
                    callers.stop_all()
                context = f"kill {index + 1}/{KILLS} ({phase}, {tag})"
                report = _verify(service, tally, context)
                if report["notes"]:
                    tally.purge_interrupted_notes += len(report["notes"])
                    finishing = time.monotonic()
                    finish = service.cli("purge", "--json")
                    tally.purge_took(time.monotonic() - finishing)
                    assert finish.returncode == 0, f"{context}: purge: {finish.stderr}"
                    again = _verify(service, tally, context + " after the purge")
                    assert again["notes"] == [], f"{context}: still {again['notes']}"
                _assert_no_refused_recording(workdir, context)
            # The last word: a clean stop, then the catalog with no service running.
            service.stop()
            final = _verify(service, tally, "after a clean stop")
            assert final["notes"] == []
        finally:
            service.stop()
    states = dict(_query(workdir, "SELECT state, count(*) FROM recordings GROUP BY state"))
    refused = _query(workdir, "SELECT count(*) FROM calls WHERE consent_outcome = 'refused'")
    calls = _query(workdir, "SELECT count(*) FROM calls")
    repaired = sum(int(e.get("repaired", 0)) for e in service.recovered)
    reconciled = Counter[str]()
    for event in service.recovered:
        for key in ("interrupted", "published", "failed", "refused", "uncatalogued"):
            reconciled[key] += int(event.get(key, 0))
    elapsed = time.monotonic() - started_at
    print(
        f"\nkill loop: {KILLS} kills in {elapsed:.0f} s (seed {SEED}), {service.runs} starts,"
        f" {tally.verifies} verifies"
        f"\n  kills per phase: {dict(sorted(tally.kills.items()))}"
        f"\n  moments: {dict(sorted(tally.moments.items()))}"
        f"\n  writer killed too: {tally.writers_killed}, purge processes killed:"
        f" {tally.purge_processes_killed}, purge-interrupted notes: {tally.purge_interrupted_notes}"
        f"\n  calls: {calls[0][0] if calls else 0}, refused: {refused[0][0] if refused else 0}"
        f" (refusing callers started: {callers.refusers})"
        f"\n  recordings: {sum(states.values())} by state {states}"
        f"\n  repaired .part at the starts: {repaired}, reconciled: {dict(reconciled)}"
    )
    assert sum(tally.kills.values()) == KILLS


@contextlib.contextmanager
def _stopped(callers: Callers) -> Iterator[Callers]:
    try:
        yield callers
    finally:
        callers.stop_all()
