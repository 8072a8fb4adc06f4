"""The catalog unavailable mid-call (issue 20), for real: `recorder serve`, sipp calls, a
SQLite catalog locked by another process, a PostgreSQL server stopped and started again.

The calls connect and end as usual; their call-log writes wait in the catalog journal
(`storage.journal`, `catalog.unavailable` logged, `recorder_catalog_available` 0) and go
into the catalog once it answers (`catalog.available`), in order, exactly once: one row per
call, one per recording, complete and hashed. A service killed with the journal still full
puts it in at its next start. `recorder catalog verify` and `recorder audit verify` pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import start_pg_server

from . import peers
from .conftest import RecorderFactory
from .recorder_proc import RecorderProcess
from .test_postgres_catalog import POLICY  # record every inbound call, no notice, D1 8 days

pytestmark = pytest.mark.interop


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        lines = page.read().decode().splitlines()
    samples: dict[str, float] = {}
    for line in lines:
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def journal_ops(path: Path) -> list[str]:
    """The operations waiting in the journal file (its first line is the header)."""
    try:
        lines = path.read_text().splitlines()[1:]
    except FileNotFoundError:
        return []
    return [json.loads(line)["op"] for line in lines if line.endswith("}")]


def wait_for(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def cli(recorder: RecorderProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recorder.cli", *args, "--config", str(recorder.policy_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_catalogued_once(recorder: RecorderProcess, calls: int) -> None:
    """One row per call, ended; one complete recording per call, its file's hash; the
    catalog and the audit trail verify."""
    rows = recorder.catalog("calls", "list")
    assert len(rows) == calls, rows
    assert len({row["call_id_a"] for row in rows}) == calls
    assert all(row["ended_at"] is not None and row["status"] == "ended" for row in rows), rows
    recordings = recorder.catalog("recordings", "list")
    assert len(recordings) == calls, recordings
    assert sorted(r["call_id"] for r in recordings) == sorted(row["id"] for row in rows)
    for recording in recordings:
        assert recording["state"] == "complete", recording
        data = Path(recording["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == recording["sha256"]
        assert recording["duration"] > 3.0
    verified = cli(recorder, "catalog", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    audit = cli(recorder, "audit", "verify")
    assert audit.returncode == 0, audit.stdout + audit.stderr


def kill_hard(recorder: RecorderProcess) -> None:
    """SIGKILL the service and its writer process, as systemd's unit kill would."""
    children = [
        int(pid)
        for pid in Path(f"/proc/{recorder.proc.pid}/task/{recorder.proc.pid}/children")
        .read_text()
        .split()
    ]
    recorder.proc.send_signal(signal.SIGKILL)
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    recorder.proc.wait(10)


def test_sqlite_locked_mid_call_the_journal_takes_the_writes_and_gives_them_back(
    interop_dir: Path, prompt_pcap: Path, start_recorder: RecorderFactory
) -> None:
    metrics = peers.free_port_block(1, tcp=True)
    extra = POLICY + f'\n[metrics]\nlisten = "127.0.0.1:{metrics}"\n'
    workdir = interop_dir / "recorder"
    database, journal = workdir / "recorder.db", workdir / "catalog-journal.jsonl"
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=2) as pbx:
        recorder = start_recorder(pbx_port=pbx.port, media_ports=32, policy_extra=extra)
        recorder.wait_event("metrics.listening", timeout=10)
        assert scrape(metrics)["recorder_catalog_available"] == 1

        # Call 1: the catalog is locked by another process once the call is up.
        lock = sqlite3.connect(database, isolation_level=None, timeout=30)
        with peers.sipp_uac_in_background(
            "uac_pcap", recorder.external_target, log_dir=interop_dir, pcap=prompt_pcap
        ) as first:
            recorder.wait_event("recording.started", timeout=10)
            lock.execute("BEGIN EXCLUSIVE")
        first[0].assert_ok()
        # The write waits out SQLite's busy timeout (10 s), then the journal takes it.
        recorder.wait_event("catalog.unavailable", timeout=30)
        wait_for(
            "the finalized recording in the journal",
            lambda: "finalize_recording" in journal_ops(journal),
            timeout=60,
        )
        assert "end_call" in journal_ops(journal)
        samples = scrape(metrics)
        assert samples["recorder_catalog_available"] == 0
        assert samples["recorder_catalog_journal_entries"] >= 2
        assert samples["recorder_catalog_outages_total"] == 1
        lock.execute("ROLLBACK")
        recorder.wait_event("catalog.available", timeout=30)
        assert not journal.exists()
        samples = scrape(metrics)
        assert samples["recorder_catalog_available"] == 1
        assert samples["recorder_catalog_journal_replayed_total"] >= 2
        assert samples["recorder_catalog_write_failures_total"] == 0
        assert_catalogued_once(recorder, calls=1)

        # Call 2: locked before it starts; the service is killed with the journal full.
        lock.execute("BEGIN EXCLUSIVE")
        second = peers.run_sipp_uac(
            "uac_pcap", recorder.external_target, log_dir=interop_dir, pcap=prompt_pcap
        )
        second.assert_ok()
        wait_for(
            "the second call's recording in the journal",
            lambda: (
                journal_ops(journal).count("finalize_recording") == 1
                and "add_call" in journal_ops(journal)
            ),
            timeout=60,
        )
        kill_hard(recorder)
        recorder.log_path.rename(workdir / "recorder-killed.log")
        lock.execute("ROLLBACK")
        lock.close()
        waiting = journal_ops(journal)
        assert "end_call" in waiting
        restarted = start_recorder(pbx_port=pbx.port, media_ports=32, policy_extra=POLICY)
        [replayed] = restarted.wait_event("catalog.journal_replayed", timeout=30)
        assert replayed["entries"] == len(waiting)
        assert not journal.exists()
        assert_catalogued_once(restarted, calls=2)
    assert not list(workdir.glob("*.rejected"))


def test_postgresql_stopped_mid_call_then_back(
    interop_dir: Path, prompt_pcap: Path, start_recorder: RecorderFactory
) -> None:
    """A server of the test's own (the session's server stays up for the other tests)."""
    server = start_pg_server()
    try:
        url = server.database_url(server.create_database())
        journal = interop_dir / "recorder" / "catalog-journal.jsonl"
        with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
            recorder = start_recorder(
                pbx_port=pbx.port, media_ports=32, policy_extra=POLICY, database=url
            )
            with peers.sipp_uac_in_background(
                "uac_pcap", recorder.external_target, log_dir=interop_dir, pcap=prompt_pcap
            ) as call:
                recorder.wait_event("recording.started", timeout=10)
                server.halt()
            call[0].assert_ok()
            recorder.wait_event("catalog.unavailable", timeout=20)
            wait_for(
                "the finalized recording in the journal",
                lambda: (
                    "finalize_recording" in journal_ops(journal)
                    and "end_call" in journal_ops(journal)
                ),
                timeout=30,
            )
            server.resume()
            recorder.wait_event("catalog.available", timeout=30)
            assert not journal.exists()
            assert_catalogued_once(recorder, calls=1)
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                assert connection.scalar(text("SELECT count(*) FROM calls")) == 1
                assert connection.scalar(text("SELECT count(*) FROM recordings")) == 1
                marks = connection.scalar(text("SELECT count(*) FROM journal_marks"))
                assert marks is not None and marks >= 2
        finally:
            engine.dispose()
    finally:
        server.stop()
