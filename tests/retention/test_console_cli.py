"""`recorder console ...` on a migrated catalog: nominative accounts (A12), strong passwords
(X3), every change in the audit trail, never a password or a hash anywhere."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from recorder.cli.console import add_console_commands
from recorder.cli.retention import add_retention_commands
from recorder.console import passwords
from storage.accounts import Accounts
from tests.retention.test_cli import Cli

PEOPLE = """
[passwords]
min_length = 12
min_classes = 3
max_failures = 5
lock_minutes = 15

[purposes.quality]
description = "Service quality"
rule = "P1"

[roles.it]
description = "IT"
purposes = ["quality"]
scope = "all"
window = "retention"

[people.jtremblay]
name = "Julie Tremblay"
role = "it"

[people.mgagnon]
name = "Marc Gagnon"
role = "it"
"""

GOOD = "Velvet-Harbour-42"
OTHER = "Copper-Lantern-77"


@pytest.fixture
def cli(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
) -> Iterator[Cli]:
    # Cheap argon2 parameters (the real ones cost ~0.1 s a hash) and a known actor (A10).
    monkeypatch.setattr(
        passwords, "HASHER", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )
    monkeypatch.setenv("SUDO_USER", "admin1")
    runner = Cli(
        tmp_path,
        capsys,
        extra=PEOPLE,
        commands=(add_console_commands, add_retention_commands),
        database=db_url,
    )
    try:
        yield runner
    finally:
        runner.catalog.close()


def stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def add(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, person: str, password: str = GOOD
) -> tuple[int, str, str]:
    stdin(monkeypatch, password + "\n")
    return cli("console", "add-user", person, "--password-stdin")


def audit(cli: Cli) -> list[dict[str, object]]:
    code, out, _ = cli("audit", "list", "--json")
    assert code == 0
    entries: list[dict[str, object]] = json.loads(out)
    return sorted(entries, key=lambda entry: int(entry["seq"]))  # type: ignore[call-overload]


def everything(cli: Cli) -> str:
    """All the audit trail and the anchor file, as text: where a secret must never be."""
    anchors = cli.store.anchor.read_text() if cli.store.anchor.exists() else ""
    return json.dumps(audit(cli)) + anchors


def test_A12_X3_add_user_with_password_stdin(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = add(cli, monkeypatch, "jtremblay")
    assert (code, err) == (0, "")
    assert "console account added for jtremblay (Julie Tremblay)" in out
    account = Accounts(cli.catalog).get("jtremblay")
    assert account is not None and account.created_by == "admin1"
    assert passwords.verify_password(account.password_hash, GOOD)
    (entry,) = audit(cli)
    assert entry["action"] == "console.account_added" and entry["object"] == "person:jtremblay"
    assert entry["actor"] == "admin1" and entry["outcome"] == "ok"
    trail = everything(cli)
    assert GOOD not in trail and account.password_hash not in trail
    assert GOOD not in out
    code, _, _ = cli("audit", "verify")
    assert code == 0


def test_A12_a_person_outside_the_policy_is_refused(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = add(cli, monkeypatch, "intruder")
    assert code == 2 and out == ""
    assert err.startswith("refused (A12): 'intruder' is not a person of the policy's [people.*]")
    assert "jtremblay, mgagnon" in err and len(err.strip().splitlines()) == 1
    assert Accounts(cli.catalog).list() == []
    (entry,) = audit(cli)
    assert entry["outcome"] == "refused" and entry["object"] == "person:intruder"
    assert entry["action"] == "console.account_added"


@pytest.mark.parametrize(
    ("password", "missing"),
    [
        ("Short-1a", "too short: fewer than 12 characters"),
        ("onlylowercaseletters", "too few kinds of characters"),
        ("Velvet-Tremblay-42", "contains the person's name"),
        ("Velvet-jtremblay-42", "contains the person's id"),
    ],
)
def test_X3_a_weak_password_is_refused_and_never_echoed(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, password: str, missing: str
) -> None:
    code, out, err = add(cli, monkeypatch, "jtremblay", password)
    assert code == 2 and out == ""
    assert err.startswith("refused (X3): the password for jtremblay is not strong enough")
    assert missing in err and len(err.strip().splitlines()) == 1
    assert password not in err and password not in everything(cli)
    assert Accounts(cli.catalog).get("jtremblay") is None
    (entry,) = audit(cli)
    assert entry["outcome"] == "refused" and "X3" in str(entry["reason"])


def test_A12_one_account_per_person(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    assert add(cli, monkeypatch, "jtremblay")[0] == 0
    code, _, err = add(cli, monkeypatch, "jtremblay", OTHER)
    assert code == 1 and "already has a console account" in err and "A12" in err
    account = Accounts(cli.catalog).get("jtremblay")
    assert account is not None and passwords.verify_password(account.password_hash, GOOD)


def test_X3_password_typed_twice(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    typed = iter([GOOD, GOOD + "x"])
    prompts: list[str] = []

    def getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(typed)

    monkeypatch.setattr("getpass.getpass", getpass)
    code, _, err = cli("console", "add-user", "jtremblay")
    assert code == 2 and "differ" in err and GOOD not in err
    assert prompts == ["New console password for jtremblay: ", "Again: "]
    assert Accounts(cli.catalog).get("jtremblay") is None
    typed = iter([GOOD, GOOD])
    assert cli("console", "add-user", "jtremblay")[0] == 0


def test_X3_an_empty_stdin_is_refused(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    stdin(monkeypatch, "")
    code, _, err = cli("console", "add-user", "jtremblay", "--password-stdin")
    assert code == 2 and "no password" in err


def test_X3_set_password_replaces_the_hash_and_clears_a_lock(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(cli, monkeypatch, "jtremblay")
    accounts = Accounts(cli.catalog)
    accounts.record_failure("jtremblay", datetime.now(UTC), datetime.now(UTC) + timedelta(hours=1))
    stdin(monkeypatch, OTHER + "\r\n")
    code, out, err = cli("console", "set-password", "jtremblay", "--password-stdin", "--json")
    assert (code, err) == (0, "")
    shown = json.loads(out)
    assert shown["person"] == "jtremblay" and "password_hash" not in shown
    account = accounts.get("jtremblay")
    assert account is not None and account.locked_until is None and account.failed_logins == 0
    assert passwords.verify_password(account.password_hash, OTHER)
    assert not passwords.verify_password(account.password_hash, GOOD)
    actions = [(e["action"], e["outcome"]) for e in audit(cli)]
    assert actions == [("console.account_added", "ok"), ("console.password_set", "ok")]
    assert OTHER not in everything(cli)


def test_X3_set_password_is_checked_too(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    add(cli, monkeypatch, "jtremblay")
    stdin(monkeypatch, "weak\n")
    code, _, err = cli("console", "set-password", "jtremblay", "--password-stdin")
    assert code == 2 and err.startswith("refused (X3)") and "weak" not in err
    account = Accounts(cli.catalog).get("jtremblay")
    assert account is not None and passwords.verify_password(account.password_hash, GOOD)


def test_A12_set_password_needs_an_account_and_a_person(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin(monkeypatch, GOOD + "\n")
    code, _, err = cli("console", "set-password", "mgagnon", "--password-stdin")
    assert code == 1 and "no console account" in err
    code, _, err = cli("console", "set-password", "nobody", "--password-stdin")
    assert code == 2 and "refused (A12)" in err


def test_A12_disable_and_list_users(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    add(cli, monkeypatch, "jtremblay")
    add(cli, monkeypatch, "mgagnon", OTHER)
    now = datetime.now(UTC)
    accounts = Accounts(cli.catalog)
    # Someone since removed from the policy: still listed, and still disabled by the admin.
    accounts.create("former", passwords.hash_password(GOOD), now, "admin0")
    accounts.record_failure("mgagnon", now, now + timedelta(hours=1))

    code, out, _ = cli("console", "disable", "jtremblay", "--reason", "left the team")
    assert code == 0 and "console account of jtremblay disabled" in out
    code, _, err = cli("console", "disable", "jtremblay")
    assert code == 1 and "already disabled" in err

    code, out, _ = cli("console", "list-users", "--json")
    rows = {row["person"]: row for row in json.loads(out)}
    assert code == 0 and set(rows) == {"former", "jtremblay", "mgagnon"}
    assert rows["jtremblay"]["state"] == "disabled" and rows["jtremblay"]["disabled_at"]
    assert rows["mgagnon"]["state"] == "locked" and rows["mgagnon"]["failed_logins"] == 1
    assert rows["former"]["state"] == "not in policy" and rows["former"]["in_policy"] is False
    assert rows["mgagnon"]["name"] == "Marc Gagnon" and rows["mgagnon"]["role"] == "it"
    assert all("password_hash" not in row for row in rows.values())

    code, out, _ = cli("console", "list-users")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("PERSON") and len(lines) == 4
    assert "Julie Tremblay" in out and "disabled" in out
    assert "$argon2" not in out

    code, out, _ = cli("console", "disable", "former")
    assert code == 0
    disabled = [e for e in audit(cli) if e["action"] == "console.account_disabled"]
    assert [(e["object"], e["outcome"]) for e in disabled] == [
        ("person:jtremblay", "ok"),
        ("person:jtremblay", "refused"),
        ("person:former", "ok"),
    ]
    assert disabled[0]["reason"] == "left the team"
    assert cli("audit", "verify")[0] == 0


def test_A12_disable_without_an_account(cli: Cli) -> None:
    code, _, err = cli("console", "disable", "mgagnon")
    assert code == 1 and "no console account" in err


def test_the_trail_never_holds_a_number(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = cli("console", "disable", "x", "--reason", "call 5145550100")
    assert code == 2 and "phone number" in err
    code, _, err = add(cli, monkeypatch, "+15145550100")
    assert code == 2 and "A12" in err
    assert "5145550100" not in json.dumps(audit(cli))


def test_console_is_registered_on_the_recorder_command() -> None:
    from recorder.cli.main import build_parser

    args = build_parser().parse_args(["console", "list-users", "--json"])
    assert args.console_command == "list-users" and args.json
