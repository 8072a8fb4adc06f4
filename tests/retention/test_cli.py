"""`recorder purge`, `hold`, `audit`, `recompute-expiry` through argparse, on a real catalog."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from recorder.cli.retention import add_retention_commands
from storage.repository import Catalog
from tests.retention.conftest import Store, local

CONFIG = """
[service]
timezone = "America/Montreal"

[sip.external]
listen = "127.0.0.1:5060"
allow = ["127.0.0.0/8"]
next_hop = "127.0.0.1:5061"

[sip.internal]
listen = "127.0.0.1:5062"
allow = ["127.0.0.1/32"]
next_hop = "127.0.0.1:5070"

[media]
address = "127.0.0.1"
ports = "20000-20099"

[storage]
dir = "{dir}/recordings"
database = "{database}"

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
holds = {holds}
recordings = "8 days"
call_log_numbers = {{ period = "12 months", rule = "D2" }}
access_trace = {{ period = "3 months", after = "fiscal_year_end" }}
"""


Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


class Cli:
    """`recorder <commands>` through argparse, on a catalog and policy of its own.

    The catalog is `database` (the `db_url` fixture: each backend in turn), by default a
    SQLite file in `base`.
    """

    def __init__(
        self,
        base: Path,
        capsys: pytest.CaptureFixture[str],
        *,
        extra: str = "",
        commands: tuple[Register, ...] = (add_retention_commands,),
        database: str | None = None,
    ) -> None:
        self.base = base
        self.capsys = capsys
        self.extra = extra
        self.commands = commands
        self.database = database or f"sqlite:///{base / 'recorder.db'}"
        self.config = base / "policy.toml"
        self.set_holds(True)
        self.catalog = Catalog.open(self.database, migrate=True)
        (base / "recordings").mkdir()
        self.store = Store(self.catalog, base / "recordings")

    def set_holds(self, holds: bool) -> None:
        config = CONFIG.format(dir=self.base, database=self.database, holds=str(holds).lower())
        self.config.write_text(config + self.extra)

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        parser = argparse.ArgumentParser(prog="recorder")
        subparsers = parser.add_subparsers(dest="command", required=True)
        for register in self.commands:
            register(subparsers)
        args = parser.parse_args([*argv, "--config", str(self.config)])
        code: int = args.handler(args)
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], db_url: str) -> Iterator[Cli]:
    runner = Cli(tmp_path, capsys, database=db_url)
    try:
        yield runner
    finally:
        runner.catalog.close()


def test_purge_now_json_destroys_on_the_right_day(cli: Cli) -> None:
    recording, path = cli.store.recording(local(2026, 11, 1, 23, 59))
    code, out, _ = cli("purge", "--now", "2026-11-08T23:59:59", "--json")
    assert code == 0 and json.loads(out)["destroyed"] == [] and path.exists()
    code, out, _ = cli("purge", "--now", "2026-11-09", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    assert [d["recording_id"] for d in report["destroyed"]] == [recording]
    assert report["now"] == "2026-11-09T05:00:00+00:00"
    assert not path.exists()


def test_purge_text_and_dry_run(cli: Cli) -> None:
    recording, path = cli.store.recording(local(2026, 11, 1, 10))
    code, out, _ = cli("purge", "--now", "2026-11-10T08:00", "--dry-run")
    assert code == 0 and "(dry run)" in out and f"recordings to destroy: 1 ({recording})" in out
    assert path.exists()
    code, out, _ = cli("purge", "--now", "2026-11-10T08:00")
    assert code == 0 and f"recordings destroyed: 1 ({recording})" in out


def test_purge_exits_1_on_an_integrity_failure(cli: Cli) -> None:
    recording, path = cli.store.recording(local(2026, 11, 1, 10))
    path.write_bytes(b"changed")
    code, out, _ = cli("purge", "--now", "2026-11-10")
    assert code == 1
    assert f"INTEGRITY FAILURE (X1) recording {recording}: sha256_mismatch" in out


def test_purge_refuses_a_bad_time(cli: Cli) -> None:
    code, _, err = cli("purge", "--now", "next tuesday")
    assert code == 2 and "--now" in err


def test_hold_add_list_release(cli: Cli) -> None:
    recording, path = cli.store.recording(local(2026, 11, 1, 10))
    # Real time here: the recording must still be within its retention for a hold.
    cli.catalog.update_recording(recording, expires_at=local(2099, 1, 1))
    code, out, _ = cli("hold", "add", str(recording), "--reason", "complaint 114", "--json")
    assert code == 0 and json.loads(out)["recording_id"] == recording
    code, out, _ = cli("hold", "list", "--json")
    assert [h["reason"] for h in json.loads(out)] == ["complaint 114"]
    code, out, _ = cli("hold", "list")
    assert "complaint 114" in out and "active" in out
    cli.catalog.update_recording(recording, expires_at=local(2026, 11, 9))
    code, out, _ = cli("purge", "--now", "2099-06-01", "--json")
    assert json.loads(out)["held"] == [recording] and path.exists()
    code, out, _ = cli("hold", "release", str(recording), "--reason", "settled")
    assert code == 0 and "released hold" in out
    code, out, _ = cli("hold", "release", str(recording))
    assert code == 1
    code, out, _ = cli("purge", "--now", "2099-06-01T01:00", "--json")
    assert [d["recording_id"] for d in json.loads(out)["destroyed"]] == [recording]


def test_hold_refusals(cli: Cli) -> None:
    recording, _ = cli.store.recording(local(2026, 11, 1, 10))
    cli.catalog.update_recording(recording, expires_at=local(2099, 1, 1))
    code, _, err = cli("hold", "add", str(recording), "--reason", "caller +15145550100")
    assert code == 2 and "phone number" in err
    code, _, err = cli("hold", "add", "999", "--reason", "complaint")
    assert code == 1 and "no recording 999" in err
    cli.set_holds(False)
    code, _, err = cli("hold", "add", str(recording), "--reason", "complaint")
    assert code == 1 and "allows no holds" in err
    code, out, _ = cli("audit", "list", "--json")
    assert [(e["action"], e["outcome"]) for e in json.loads(out)] == [
        ("hold.add", "refused"),
        ("hold.add", "refused"),
    ]


def test_audit_verify_passes_then_names_the_edited_entry(cli: Cli) -> None:
    cli.store.recording(local(2026, 11, 1, 10))
    cli("purge", "--now", "2026-11-10")
    code, out, _ = cli("audit", "verify")
    assert code == 0 and "audit trail intact: 2 entries" in out
    with cli.catalog.engine.begin() as connection:
        connection.execute(text("UPDATE audit_entries SET actor = 'nobody' WHERE seq = 1"))
    code, _, err = cli("audit", "verify")
    assert code == 1 and "BROKEN at entry 1" in err
    code, out, _ = cli("audit", "verify", "--json")
    assert code == 1 and json.loads(out)["first_bad"]["seq"] == 1


def test_audit_verify_detects_a_truncated_tail(cli: Cli) -> None:
    cli.store.recording(local(2026, 11, 1, 10))
    cli("purge", "--now", "2026-11-10")
    with cli.catalog.engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_entries WHERE seq = 2"))
    code, _, err = cli("audit", "verify")
    assert code == 1 and "BROKEN at entry 2" in err and "truncated" in err


def test_recompute_expiry(cli: Cli) -> None:
    recording, _ = cli.store.recording(local(2026, 11, 1, 10))
    cli.catalog.update_recording(recording, expires_at=local(2026, 12, 1))
    code, out, _ = cli("recompute-expiry", "--dry-run")
    assert code == 0 and "1 expiries would change" in out
    code, out, _ = cli("recompute-expiry", "--json")
    assert json.loads(out)[0]["new"] == "2026-11-09T05:00:00+00:00"
    row = cli.catalog.get_recording(recording)
    assert row is not None and row.expires_at == local(2026, 11, 9)


def test_a_missing_catalog_is_an_error_not_an_empty_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "policy.toml"
    database = f"sqlite:///{tmp_path / 'elsewhere' / 'recorder.db'}"
    config.write_text(CONFIG.format(dir=tmp_path / "elsewhere", database=database, holds="true"))
    parser = argparse.ArgumentParser(prog="recorder")
    add_retention_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", "verify", "--config", str(config)])
    assert args.handler(args) == 1
    assert "no catalog" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere" / "recorder.db").exists()
