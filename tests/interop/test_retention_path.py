"""Retention end to end (issue 7): a real call through sipp is recorded, then `recorder purge
--now` moves the clock: the file is gone exactly on the 9th day (D1), unless a hold keeps it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from . import peers
from .recorder_proc import RecorderProcess, running_recorder

pytestmark = pytest.mark.interop

MONTREAL = ZoneInfo("America/Montreal")

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
fiscal_year_end = "03-31"
holds = true                            # D4 (MER): complaints keep recordings
recordings = "8 days"                   # D1
access_trace = { period = "3 months", after = "fiscal_year_end" }  # A5
"""


def cli(recorder: RecorderProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recorder.cli", *args, "--config", str(recorder.policy_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def purge(recorder: RecorderProcess, now: datetime) -> dict[str, Any]:
    done = cli(recorder, "purge", "--now", now.isoformat(), "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.fixture
def recorded_call(
    interop_dir: Path, prompt_pcap: Path
) -> Iterator[Callable[[], tuple[RecorderProcess, dict[str, Any]]]]:
    stack = ExitStack()

    def run() -> tuple[RecorderProcess, dict[str, Any]]:
        pbx = stack.enter_context(peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1))
        first = peers.free_port_block(32)
        cm: AbstractContextManager[RecorderProcess] = running_recorder(
            interop_dir / "recorder",
            external_port=peers.free_port_block(1, tcp=True),
            internal_port=peers.free_port_block(1, tcp=True),
            pbx_port=pbx.port,
            trunk_port=peers.free_udp_port(),
            media_first=first,
            media_last=first + 31,
            policy_extra=POLICY,
        )
        recorder = stack.enter_context(cm)
        uac = peers.run_sipp_uac(
            "uac_pcap", recorder.external_target, log_dir=interop_dir, pcap=prompt_pcap, timeout=20
        )
        pbx.wait(5)
        uac.assert_ok()
        recorder.wait_event("recording.finalized", timeout=15)
        (row,) = recorder.catalog("recordings", "list")
        assert row["state"] == "complete" and Path(row["path"]).exists()
        return recorder, row

    with stack:
        yield run


def ninth_day(row: dict[str, Any]) -> datetime:
    """00:00 local on the call day + 8: the first instant D1 wants the recording gone."""
    created = datetime.fromisoformat(row["created_at"]).astimezone(MONTREAL)
    day = created.date() + timedelta(days=8)
    return datetime(day.year, day.month, day.day, tzinfo=MONTREAL)


def show(recorder: RecorderProcess, recording_id: int) -> dict[str, Any]:
    done = cli(recorder, "recordings", "show", str(recording_id), "--json")
    assert done.returncode == 0, done.stderr
    shown: dict[str, Any] = json.loads(done.stdout)["recording"]
    return shown


def test_recording_is_destroyed_exactly_on_the_ninth_day(
    recorded_call: Callable[[], tuple[RecorderProcess, dict[str, Any]]],
) -> None:
    recorder, row = recorded_call()
    path, gone = Path(row["path"]), ninth_day(row)
    assert datetime.fromisoformat(row["expires_at"]) == gone

    before = purge(recorder, gone - timedelta(seconds=1))
    assert before["destroyed"] == [] and path.exists()

    after = purge(recorder, gone)
    assert [d["recording_id"] for d in after["destroyed"]] == [row["id"]]
    assert after["integrity_failures"] == []
    assert not path.exists()
    shown = show(recorder, row["id"])
    assert shown["state"] == "destroyed" and shown["path"] is None
    assert datetime.fromisoformat(shown["destroyed_at"]) == gone
    assert shown["destroy_reason"].startswith("D1:")

    verify = cli(recorder, "audit", "verify")
    assert verify.returncode == 0, verify.stderr
    entries = json.loads(cli(recorder, "audit", "list", "--json").stdout)
    assert ("recording.destroyed", f"recording:{row['id']}") in {
        (e["action"], e["object"]) for e in entries
    }


def test_a_held_recording_is_kept_until_released(
    recorded_call: Callable[[], tuple[RecorderProcess, dict[str, Any]]],
) -> None:
    recorder, row = recorded_call()
    path, gone = Path(row["path"]), ninth_day(row)
    held = cli(recorder, "hold", "add", str(row["id"]), "--reason", "complaint 2026-114")
    assert held.returncode == 0, held.stderr

    for later in (gone, gone + timedelta(days=40)):
        report = purge(recorder, later)
        assert report["held"] == [row["id"]] and report["destroyed"] == []
        assert path.exists() and show(recorder, row["id"])["state"] == "complete"

    released = cli(recorder, "hold", "release", str(row["id"]), "--reason", "settled")
    assert released.returncode == 0, released.stderr
    report = purge(recorder, gone + timedelta(days=40, hours=1))
    assert [d["recording_id"] for d in report["destroyed"]] == [row["id"]]
    assert not path.exists() and show(recorder, row["id"])["state"] == "destroyed"
    assert cli(recorder, "audit", "verify").returncode == 0
