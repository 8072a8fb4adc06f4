"""`calls list`, `recordings list`, `recordings show`: argv in, stdout and exit code out."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path

import pytest

from recorder.cli.catalog import add_catalog_commands
from storage import audit
from storage.models import WITHHELD
from storage.repository import Catalog
from tests.pg import PgServer
from tests.storage.conftest import T0

POLICY = """\
[service]
timezone = "America/Montreal"

[sip.external]
listen = "127.0.0.1:5060"
allow = ["203.0.113.0/24"]
next_hop = "203.0.113.10:5060"

[sip.internal]
listen = "127.0.0.1:5062"
allow = ["127.0.0.1/32"]
next_hop = "127.0.0.1:5070"

[media]
address = "127.0.0.1"
ports = "20000-29999"

[storage]
dir = "{dir}"
database = "{database}"
"""


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="recorder")
    add_catalog_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def policy(tmp_path: Path, db_url: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY.format(dir=tmp_path / "rec", database=db_url))
    return path


@pytest.fixture
def filled(policy: Path, db_url: str) -> Path:
    """Two calls on two days: one recorded (ext 235, agent 4711, paused once), one refused."""
    catalog = Catalog.open(db_url, migrate=True)
    recorded = catalog.add_call(
        call_id_a="a1@trunk",
        direction="inbound",
        side="external",
        caller_number="+15145550100",
        callee_number="+15145559000",
        arrived_at=T0,  # 10:42 in Montreal
        extension="235",
        policy_record=True,
        policy_rules=["S1", "C1"],
    )
    catalog.set_consent(
        recorded, outcome="accepted", method="timeout", at=T0 + timedelta(seconds=5)
    )
    catalog.answer_call(recorded, at=T0 + timedelta(seconds=6), agent="4711")
    recording = catalog.add_recording(
        recorded,
        name="2026-11-23_1042_agent-4711.wav",
        path="/rec/2026/11/23/2026-11-23_1042_agent-4711.wav",
        format="pcm16",
        created_at=T0 + timedelta(seconds=6),
    )
    catalog.add_event(
        recorded, at=T0 + timedelta(seconds=20), name="recording.paused", detail={"by": "dtmf"}
    )
    catalog.finalize_recording(
        recording,
        at=T0 + timedelta(seconds=66),
        sha256="e3" * 32,
        size=960_044,
        duration=60.0,
        pauses=[(14.0, 30.0)],
    )
    catalog.end_call(recorded, at=T0 + timedelta(seconds=66), reason="bye from a")
    refused = catalog.add_call(
        call_id_a="a2@trunk",
        direction="inbound",
        side="external",
        caller_number=WITHHELD,
        callee_number="+15145559000",
        arrived_at=T0 + timedelta(days=1),
        extension="236",
        policy_record=True,
        policy_rules=["S1"],
    )
    catalog.set_consent(
        refused, outcome="refused", method="dtmf-rfc4733", digit="9", at=T0 + timedelta(days=1)
    )
    catalog.close()
    return policy


def test_calls_list_table(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["calls", "list", "--config", str(filled)], capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID", "ARRIVED", "DIR", "FROM", "TO", "EXT", "AGENT", "SITE",
        "TALK", "REC", "RULES", "CONSENT", "STATUS", "END",
    ]  # fmt: skip
    assert len(lines) == 3
    assert "2026-11-23 10:42:00" in lines[1]  # policy time zone, not UTC
    assert "+15145550100" in lines[1] and "4711" in lines[1] and "accepted/timeout" in lines[1]
    assert WITHHELD in lines[2] and "refused/dtmf-rfc4733" in lines[2]


def test_calls_list_filters_and_json(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        ["calls", "list", "--config", str(filled), "--json", "--extension", "236"], capsys
    )
    assert code == 0
    rows = json.loads(out)
    assert [row["call_id_a"] for row in rows] == ["a2@trunk"]
    assert rows[0]["caller_number"] == WITHHELD and rows[0]["consent_digit"] == "9"
    assert rows[0]["arrived_at"] == "2026-11-24T15:42:00+00:00"

    # A date without offset is a calendar day in the policy's zone: 24 Nov starts at 05:00 UTC.
    code, out, _ = run(
        ["calls", "list", "--config", str(filled), "--json", "--since", "2026-11-24"], capsys
    )
    assert [row["call_id_a"] for row in json.loads(out)] == ["a2@trunk"]
    code, out, _ = run(
        [
            "calls",
            "list",
            "--config",
            str(filled),
            "--json",
            "--since",
            "2026-11-23T10:42:00-05:00",
        ],
        capsys,
    )
    assert len(json.loads(out)) == 2
    code, out, _ = run(
        ["calls", "list", "--config", str(filled), "--json", "--agent", "4711"], capsys
    )
    assert [row["agent"] for row in json.loads(out)] == ["4711"]


def test_recordings_list(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["recordings", "list", "--config", str(filled)], capsys)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[1].split()[4:9] == ["complete", "60.0", "960044", "235", "4711"]
    assert lines[1].endswith("2026-11-23_1042_agent-4711.wav")

    code, out, _ = run(
        ["recordings", "list", "--config", str(filled), "--json", "--agent", "4712"], capsys
    )
    assert (code, json.loads(out)) == (0, [])
    code, out, _ = run(
        ["recordings", "list", "--config", str(filled), "--json", "--state", "complete"], capsys
    )
    assert [r["sha256"] for r in json.loads(out)] == ["e3" * 32]


def test_recordings_show(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["recordings", "show", "1", "--config", str(filled)], capsys)
    assert code == 0
    assert "sha256        " + "e3" * 32 in out
    assert "pauses        14.00-30.00" in out
    assert "channels      left=external right=agent" in out
    assert "+15145550100 -> +15145559000" in out
    assert "recording.paused" in out

    code, out, _ = run(["recordings", "show", "1", "--config", str(filled), "--json"], capsys)
    shown = json.loads(out)
    assert shown["recording"]["pauses"] == [[14.0, 30.0]]
    assert shown["call"]["agent"] == "4711"
    assert [e["name"] for e in shown["events"]] == ["recording.paused"]


def test_unknown_recording_exits_1(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["recordings", "show", "99", "--config", str(filled)], capsys)
    assert (code, out) == (1, "")
    assert "no recording 99" in err


@pytest.mark.sqlite_only(reason="a missing SQLite file; a server's database is never created")
def test_missing_catalog_is_reported_not_created(
    policy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["calls", "list", "--config", str(policy)], capsys)
    assert (code, out) == (1, "")
    assert "no catalog at" in err and str(policy) in err
    assert not (tmp_path / "var").exists()


def test_a_missing_postgresql_database_is_a_catalog_error(
    pg_server: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server's counterpart of the missing file: one line naming the database, no
    traceback and no password."""
    database = pg_server.database_url("nosuchdb").replace("recorder@", "recorder:s3cret@")
    path = tmp_path / "policy.toml"
    path.write_text(POLICY.format(dir=tmp_path / "rec", database=database))
    code, out, err = run(["calls", "list", "--config", str(path)], capsys)
    assert (code, out) == (1, "")
    assert err.startswith("catalog error:") and '"nosuchdb" does not exist' in err
    assert "s3cret" not in err and len(err.splitlines()) == 1


def test_unmigrated_catalog_is_a_catalog_error(
    policy: Path, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if db_url.startswith("sqlite:"):  # an empty file; db_url on a server is an empty database
        (tmp_path / "var").mkdir()
        (tmp_path / "var" / "recorder.db").touch()
    code, _, err = run(["recordings", "list", "--config", str(policy)], capsys)
    assert code == 1 and err.startswith("catalog error:")


def test_bad_policy_and_bad_since_exit_2(
    filled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["calls", "list", "--config", str(filled), "--since", "yesterday"], capsys)
    assert code == 2 and "--since" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[storage]\ndatabase = 3\n")
    code, _, err = run(["calls", "list", "--config", str(bad)], capsys)
    assert code == 2 and f"{bad}:" in err


def test_default_config_is_found_in_the_working_directory(
    filled: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(filled.parent)
    code, out, _ = run(["calls", "list", "--json"], capsys)
    assert code == 0 and len(json.loads(out)) == 2


def test_every_listing_and_reading_is_audited(
    filled: Path, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A10, A5: who listed or read what, and when; the chain still verifies."""
    run(["calls", "list", "--config", str(filled), "--extension", "235"], capsys)
    run(["recordings", "list", "--config", str(filled)], capsys)
    run(["recordings", "show", "1", "--config", str(filled)], capsys)
    catalog = Catalog.open(db_url, create=False)
    try:
        entries = audit.AuditTrail(catalog, audit.default_anchor_path(tmp_path / "rec")).entries()
        actions = [(e.action, e.object) for e in entries]
        assert actions[-3:] == [
            ("calls.list", "calls"),
            ("recordings.list", "recordings"),
            ("recording.read", "recording:1"),
        ]
        assert entries[-3].detail == {"extension": "235", "count": 1}
        assert audit.AuditTrail(catalog, audit.default_anchor_path(tmp_path / "rec")).verify().ok
    finally:
        catalog.close()
