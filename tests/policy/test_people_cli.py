"""`recorder people list`: the nominative list of people with access, produced at once (A12)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recorder.cli.main import main
from recorder.policy import load_policy
from tests.policy.conftest import EXAMPLES, ROOT


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("path", [ROOT / "policy.toml", *EXAMPLES.values()], ids=lambda p: p.name)
def test_the_list_names_everyone_the_policy_lists_with_their_role(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A10, A12: every person of the policy, once, with the role that governs their access."""
    policy = load_policy(path)
    code, out, _ = run(["people", "list", "--config", str(path), "--json"], capsys)
    assert code == 0
    rows = json.loads(out)
    assert sorted(row["id"] for row in rows) == sorted(policy.people)
    for row in rows:
        person = policy.people[row["id"]]
        role = policy.roles[person.role]
        assert (row["name"], row["role"]) == (person.name, person.role)
        assert row["purposes"] == sorted(role.purposes)
        assert (row["scope"], row["window"]) == (role.scope, role.window)


def test_the_text_says_what_each_role_may_hear(capsys: pytest.CaptureFixture[str]) -> None:
    """MER: the clerk is confidential (A8) and the mayor may only override (A14)."""
    code, out, _ = run(["people", "list", "--config", str(EXAMPLES["MER"])], capsys)
    assert code == 0
    clerk = out[out.index("clerk  Denis Ferland") :].split("\n\n")[0]
    assert "(confidential, A8)" in clerk
    assert "purposes  complaints" in clerk
    assert "all recordings, the whole retention period" in clerk
    mayor = out[out.index("mayor  Lise Michaud") :].split("\n\n")[0]
    assert "purposes  none" in mayor
    assert "no recording; may override (A14)" in mayor


def test_a_team_lead_sees_own_agents_on_the_day_of_the_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """OPC A1, filtered by role: only the team lead, with their team."""
    path = tmp_path / "policy.toml"
    lead = '\n[people.lead_nord]\nname = "Julie Tremblay"\nrole = "team_lead"\nteam = "nord"\n'
    path.write_text((ROOT / "policy.toml").read_text() + lead)
    code, out, _ = run(
        ["people", "list", "--config", str(path), "--role", "team_lead", "--json"], capsys
    )
    assert code == 0
    assert [(row["id"], row["team"]) for row in json.loads(out)] == [("lead_nord", "nord")]
    code, out, _ = run(["people", "list", "--config", str(path), "--role", "team_lead"], capsys)
    assert code == 0
    assert "where     team nord" in out
    assert "access    its team's agents, the day of the call" in out
    assert "Louis Borgeat" not in out


def test_an_unknown_role_or_a_broken_policy_exits_2_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["people", "list", "--role", "emperor"], capsys)
    assert code == 2
    assert "--role: unknown role 'emperor'" in err
    broken = tmp_path / "policy.toml"
    broken.write_text((ROOT / "policy.toml").read_text().replace('role = "president"', "role = 3"))
    code, _, err = run(["people", "list", "--config", str(broken)], capsys)
    assert code == 2
    assert "people.president.role" in err


def test_the_installed_command_prints_the_list() -> None:
    """The entry point users type, not just the function."""
    done = subprocess.run(
        [sys.executable, "-m", "recorder.cli", "people", "list", "--config", str(EXAMPLES["MER"])],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Lise Michaud" in done.stdout
