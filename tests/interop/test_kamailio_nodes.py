"""Two recorder nodes behind Kamailio's dispatcher (issue 19): spread, drain, kill -9.

sipp caller -> kamailio (examples/kamailio/kamailio.cfg) -> recorder node rec-1 or rec-2 ->
sipp PBX (uas_echo). Both nodes share one PostgreSQL catalog (the tests' throwaway server)
and one storage root; each has its own `service.node`, catalog journal and runtime directory.

1. Calls are spread over both nodes (each node's log has `call.received` events).
2. rec-1 gets SIGTERM while it has a call: that call goes on to its end and is recorded
   complete (drain); new calls all connect, through rec-2 (a draining node answers 503, to
   INVITEs and to Kamailio's OPTIONS probe).
3. rec-1 comes back (Kamailio's probe brings it back), then rec-2 is killed with kill -9
   while it records a call: every new call still connects and is recorded (Kamailio fails
   over to rec-1 when rec-2 does not answer). The call on rec-2 loses its media from then on,
   but its recording up to the kill is kept: rec-2's restart repairs it (`interrupted`).
4. Nothing already recorded is lost: the shared catalog lists every recording with its file
   under storage.dir/NODE/, its SHA-256 as catalogued; `recorder catalog verify` (as each
   node) and `recorder audit verify` pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import peers
from .kamailio import kamailio_binary, start_kamailio
from .recorder_proc import RecorderProcess, running_recorder

pytestmark = [pytest.mark.interop, pytest.mark.timeout(420)]

POLICY = """
[policy]
name = "NODES"

[recording]
directions = ["inbound"]
extensions = "all"
mode = "automatic"

[notice]
play = false

[retention]
recordings = "8 days"
"""
DRAIN_SECONDS = 20  # longer than a call: the drain lets the call in progress end


@pytest.fixture(autouse=True)
def _require_kamailio() -> None:
    if kamailio_binary() is None:
        message = "kamailio missing (run scripts/install-test-deps.sh)"
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@dataclass
class Node:
    """One recorder node: fixed ports and directories, so that a restart is the same node."""

    name: str
    workdir: Path
    storage: Path
    database: str
    pbx_port: int
    external_port: int = field(default_factory=lambda: peers.free_port_block(1, tcp=True))
    internal_port: int = field(default_factory=lambda: peers.free_port_block(1, tcp=True))
    media_first: int = field(default_factory=lambda: peers.free_port_block(64))
    stack: ExitStack = field(default_factory=ExitStack)
    proc: RecorderProcess | None = None
    # `call.received` events of the runs before this one (each run rewrites its log).
    earlier: list[dict[str, Any]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.external_port}"

    @property
    def runtime(self) -> Path:
        return self.workdir / "run"

    def start(self) -> RecorderProcess:
        if self.proc is not None:
            self.earlier += self.proc.events("call.received")
        self.proc = self.stack.enter_context(
            running_recorder(
                self.workdir,
                external_port=self.external_port,
                internal_port=self.internal_port,
                pbx_port=self.pbx_port,
                trunk_port=peers.free_udp_port(),
                media_first=self.media_first,
                media_last=self.media_first + 63,
                drain_seconds=DRAIN_SECONDS,
                policy_extra=POLICY,
                database=self.database,
                storage_dir=self.storage,
                storage_extra=f'journal = "{self.workdir / "catalog-journal.jsonl"}"',
                service_extra=f'node = "{self.name}"',
                # Two nodes on one host: each its own control and access sockets.
                env={"RUNTIME_DIRECTORY": str(self.runtime)},
            )
        )
        return self.proc

    @property
    def running(self) -> RecorderProcess:
        assert self.proc is not None
        return self.proc

    def received(self) -> list[str]:
        """SIP Call-IDs of every call this node took, over all its runs."""
        events = self.earlier + (self.proc.events("call.received") if self.proc else [])
        return [str(e["sip_call_id"]) for e in events]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.proc is not None
        return subprocess.run(
            [sys.executable, "-m", "recorder.cli", *args, "--config", str(self.proc.policy_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@contextmanager
def two_nodes(base: Path, database: str, pbx_port: int) -> Iterator[tuple[Node, Node]]:
    storage = base / "shared" / "recordings"
    nodes = tuple(
        Node(name, base / name, storage, database, pbx_port) for name in ("rec-1", "rec-2")
    )
    try:
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            node.stack.close()


def calls_of(result: peers.SippResult) -> int:
    return result.successful


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_calls_spread_drain_and_kill_through_kamailio(
    interop_dir: Path, prompt_pcap: Path, pg_url: str
) -> None:
    call_seconds = peers.pcap_duration(prompt_pcap) + 0.3
    succeeded = 0
    with (
        peers.start_sipp_uas("uas_echo", log_dir=interop_dir) as pbx,
        two_nodes(interop_dir, pg_url, pbx.port) as (rec1, rec2),
    ):
        rec1.start()
        rec2.start()
        # Probes every 2 s, each given up after 1.5 s: a probe lost while a node restarts is
        # over before the next one, so a node's state does not flap after it comes back.
        with start_kamailio(
            interop_dir / "kamailio",
            nodes=[rec1.address, rec2.address],
            ping_interval=2,
            fr_timer_ms=1500,
        ) as kam:
            # 1. Spread: round-robin over both nodes.
            first = peers.run_sipp_uac(
                "uac_pcap",
                kam.target,
                log_dir=interop_dir,
                pcap=prompt_pcap,
                calls=6,
                rate=3,
                timeout=40,
            )
            first.assert_ok(calls=6)
            succeeded += calls_of(first)
            assert len(rec1.received()) >= 2 and len(rec2.received()) >= 2, kam.dispatched()
            assert len(rec1.received()) + len(rec2.received()) == 6

            # 2. Drain rec-1 while it has a call in progress.
            taken = len(rec1.received())
            with peers.sipp_uac_in_background(
                "uac_pcap",
                kam.target,
                log_dir=interop_dir,
                pcap=prompt_pcap,
                calls=2,
                rate=4,
                timeout=40,
            ) as in_progress:
                wait_until(lambda: len(rec1.received()) > taken, 15, "a call on rec-1")
                rec1.running.wait_event("recording.started", count=1 + taken, timeout=10)
                rec1.running.proc.send_signal(signal.SIGTERM)
                rec1.running.wait_event("service.draining", timeout=10)
                during = peers.run_sipp_uac(
                    "uac_pcap",
                    kam.target,
                    log_dir=interop_dir,
                    pcap=prompt_pcap,
                    calls=4,
                    rate=4,
                    timeout=40,
                )
            during.assert_ok(calls=4)
            (background,) = in_progress
            background.assert_ok(calls=2)  # the drained call too: it ended normally
            succeeded += calls_of(during) + calls_of(background)
            assert rec1.running.proc.wait(DRAIN_SECONDS + 15) == 0
            assert len(rec1.received()) == taken + 1, "rec-1 took a call while draining"
            drained_ok = rec1.running.events("recording.finalized")
            assert len(drained_ok) == taken + 1, rec1.running.log_text()[-3000:]

            # 3. rec-1 back; Kamailio's probe puts it back in the set.
            mark = kam.log_size()
            rec1.start()
            kam.wait_log(rf"dst-up: recorder node sip:{rec1.address}", after=mark, timeout=15)

            # kill -9 rec-2 while it records a call.
            taken2 = len(rec2.received())
            with peers.sipp_uac_in_background(
                "uac_pcap",
                kam.target,
                log_dir=interop_dir,
                pcap=prompt_pcap,
                calls=2,
                rate=4,
                timeout=40,
                extra_args=["-max_retrans", "1", "-recv_timeout", "3s"],
            ) as cut:
                wait_until(lambda: len(rec2.received()) > taken2, 15, "a call on rec-2")
                rec2.running.wait_event("recording.started", count=1 + taken2, timeout=10)
                time.sleep(1.5)  # some audio recorded before the kill
                rec2.running.proc.send_signal(signal.SIGKILL)
                rec2.running.proc.wait(5)
                after = peers.run_sipp_uac(
                    "uac_pcap",
                    kam.target,
                    log_dir=interop_dir,
                    pcap=prompt_pcap,
                    calls=4,
                    rate=4,
                    timeout=40,
                )
            after.assert_ok(calls=4)
            succeeded += calls_of(after) + calls_of(cut[0])
            # The killed node's writer outlives it long enough to flush its `.part`.
            own = rec2.storage / "rec-2"
            wait_until(lambda: list(own.rglob("*.wav.part")), 10, "rec-2's .part")

            # rec-2 back: it repairs its own `.part` (and nobody else's).
            rec2.start()
            rec2.running.wait_event("recording.recovered", timeout=20)
            assert not list(rec2.storage.rglob("*.part"))
        pbx.stop()

        # 4. Nothing recorded is lost; the catalog, the files and the trail agree.
        listed = rec1.cli("recordings", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        by_node: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_node.setdefault(row["node"], []).append(row)
        assert set(by_node) == {"rec-1", "rec-2"}, [r["node"] for r in rows]
        for row in rows:
            assert row["state"] in ("complete", "interrupted"), row
            path = Path(row["path"])
            assert path.is_relative_to(rec1.storage / row["node"]), row
            assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"], row
        complete = [r for r in rows if r["state"] == "complete"]
        interrupted = [r for r in rows if r["state"] == "interrupted"]
        assert len(complete) >= succeeded, (len(complete), succeeded)
        assert [r["node"] for r in interrupted] == ["rec-2"], interrupted
        assert interrupted[0]["duration"] >= 1.0, interrupted
        assert len(rows) == len(rec1.received()) + len(rec2.received())

        for node in (rec1, rec2):
            socket_path = node.runtime / "control.sock"
            verified = node.cli("catalog", "verify", "--service-socket", str(socket_path))
            assert verified.returncode == 0, verified.stdout + verified.stderr
        trail = rec2.cli("audit", "verify")
        assert trail.returncode == 0, trail.stdout + trail.stderr
        assert call_seconds > 1.0
