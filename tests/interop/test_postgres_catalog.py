"""`recorder serve` with its catalog on PostgreSQL (issue 19): one recorded sipp call.

The server is the tests' throwaway PostgreSQL (tests/pg.py, a database of this test's own);
the service migrates it at start, catalogues the call and its recording there, and the
reading commands (`calls list`, `recordings list`, `audit verify`) work against it. No
SQLite file appears anywhere.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from storage.db import head_revision

from . import peers
from .conftest import RecorderFactory

pytestmark = pytest.mark.interop

POLICY = """
[policy]
name = "TEST"

[recording]
directions = ["inbound"]
extensions = "all"
mode = "automatic"

[notice]
play = false

[retention]
recordings = "8 days"
"""


def test_a_recorded_call_is_catalogued_on_postgresql(
    interop_dir: Path, prompt_pcap: Path, start_recorder: RecorderFactory, pg_url: str
) -> None:
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = start_recorder(
            pbx_port=pbx.port, media_ports=32, policy_extra=POLICY, database=pg_url
        )
        uac = peers.run_sipp_uac(
            "uac_pcap", recorder.external_target, log_dir=interop_dir, pcap=prompt_pcap, timeout=20
        )
        pbx.wait(5)
    uac.assert_ok()
    recorder.wait_event("recording.finalized", timeout=15)

    calls = recorder.catalog("calls", "list")
    assert len(calls) == 1, calls
    assert calls[0]["policy_record"] is True and calls[0]["direction"] == "inbound"
    rows = recorder.catalog("recordings", "list")
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["state"] == "complete" and row["call_id"] == calls[0]["id"]
    assert row["expires_at"] is not None  # D1, computed and stored by the service
    path = Path(row["path"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"]

    # The two listings above are in the audit trail, whose chain verifies on this server.
    config = str(recorder.policy_path)
    done = subprocess.run(
        [sys.executable, "-m", "recorder.cli", "audit", "verify", "--config", config],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "audit trail intact" in done.stdout

    # It is all in PostgreSQL, at the head revision; no SQLite catalog was made instead.
    engine = create_engine(pg_url)
    try:
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT count(*) FROM recordings")) == 1
            actions = connection.scalars(text("SELECT action FROM audit_entries ORDER BY seq"))
            assert {"calls.list", "recordings.list"} <= set(actions)
            version = connection.scalar(text("SELECT version_num FROM alembic_version"))
            assert version == head_revision()
    finally:
        engine.dispose()
    assert not list(interop_dir.rglob("*.db"))
