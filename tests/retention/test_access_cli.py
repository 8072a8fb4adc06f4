"""`recorder access check` on a real catalog: the answer, its exit code, its audit entry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from recorder.cli.access import add_access_commands
from recorder.cli.retention import add_retention_commands
from tests.retention.conftest import local
from tests.retention.test_cli import Cli

ACCESS = """
[purposes.quality]
description = "Service quality"
rule = "P1"

[roles.team_lead]
description = "Team lead"
purposes = ["quality"]
scope = "team"
window = "call_day"

[roles.it]
description = "IT"
purposes = ["quality"]
scope = "all"
window = "retention"

[people.lead]
name = "Julie Tremblay"
role = "team_lead"
team = "nord"

[people.agent]
name = "Marc Gagnon"
role = "it"
team = "nord"
agent_code = "4711"

[people.admin]
name = "Luc Roy"
role = "it"
"""


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], db_url: str) -> Iterator[Cli]:
    runner = Cli(
        tmp_path,
        capsys,
        extra=ACCESS,
        commands=(add_access_commands, add_retention_commands),
        database=db_url,
    )
    try:
        yield runner
    finally:
        runner.catalog.close()


def check(cli: Cli, recording: int, person: str, at: str, *extra: str) -> tuple[int, str, str]:
    return cli(
        "access",
        "check",
        str(recording),
        "--as",
        person,
        "--purpose",
        "quality",
        "--reason",
        "complaint 114",
        "--at",
        at,
        *extra,
    )


def test_a_team_lead_is_allowed_the_same_day_and_refused_the_next(cli: Cli) -> None:
    """A1: the agent 4711 is in team nord; the day of the call only."""
    recording, _ = cli.store.recording(local(2026, 11, 2, 10))
    code, out, _ = check(cli, recording, "lead", "2026-11-02T18:00")
    assert code == 0
    assert out.startswith(f"ALLOWED: lead / recording {recording} / quality at 2026-11-02 18:00")
    code, out, _ = check(cli, recording, "lead", "2026-11-03T08:00", "--json")
    assert code == 1
    answer = json.loads(out)
    assert answer["allowed"] is False
    assert answer["reasons"] == [{"rule": "A1", "text": "only on the day of the call (2026-11-02)"}]


def test_it_staff_are_allowed_until_the_recording_expires(cli: Cli) -> None:
    """A2 for the 8 days of D1, then refused."""
    recording, _ = cli.store.recording(local(2026, 11, 2, 10))
    assert check(cli, recording, "admin", "2026-11-09T23:59")[0] == 0
    code, out, _ = check(cli, recording, "admin", "2026-11-10T00:00")
    assert code == 1 and "[D1] the retention period is over" in out


def test_every_check_is_in_the_audit_trail_with_purpose_and_reason(cli: Cli) -> None:
    """A5, A10: who asked for what, when and why, allowed or refused; the chain verifies."""
    recording, _ = cli.store.recording(local(2026, 11, 2, 10))
    check(cli, recording, "lead", "2026-11-02T18:00")
    check(cli, recording, "lead", "2026-11-05T18:00")
    check(cli, 999, "lead", "2026-11-05T18:00")
    code, out, _ = cli("audit", "list", "--json")
    assert code == 0
    entries = [entry for entry in json.loads(out) if entry["action"] == "access.check"]
    assert [(e["object"], e["outcome"]) for e in entries] == [
        (f"recording:{recording}", "allowed"),
        (f"recording:{recording}", "refused"),
        ("recording:999", "refused"),
    ]
    assert all(e["purpose"] == "quality" and e["reason"] == "complaint 114" for e in entries)
    assert all(e["actor"].startswith("lead via ") for e in entries)
    assert cli("audit", "verify")[0] == 0


def test_an_unknown_recording_exits_1_and_a_missing_reason_is_refused(cli: Cli) -> None:
    code, _, err = check(cli, 999, "admin", "2026-11-02T18:00")
    assert code == 1 and "no recording 999" in err
    with pytest.raises(SystemExit):
        cli("access", "check", "1", "--as", "admin", "--purpose", "quality")


def test_no_answer_without_its_trace_a_phone_number_in_the_reason_refuses(
    cli: Cli,
) -> None:
    """A5 and D2: the trail never holds a number, so such a check gets no answer at all."""
    recording, _ = cli.store.recording(local(2026, 11, 2, 10))
    code, out, err = cli(
        "access", "check", str(recording), "--as", "admin", "--purpose", "quality",
        "--reason", "caller +15145550100 complained", "--at", "2026-11-02T18:00",
    )  # fmt: skip
    assert code == 2 and out == ""
    assert err.startswith("access check refused: audit entries never hold a phone number")
    code, out, _ = cli("audit", "list", "--json")
    assert [e for e in json.loads(out) if e["action"] == "access.check"] == []
