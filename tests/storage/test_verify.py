"""`storage.verify` and `recorder catalog verify`: the catalog and the disk agree (X1, C5, D1).

A migrated SQLite catalog and real files in tmp_path; each damage is reported with a line
that names it, and the command exits 1.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from recorder.cli.catalog_verify import add_catalog_verify_commands, service_started
from recorder.cli.retention import add_retention_commands
from storage import verify as verify_module
from storage.register import Register
from storage.repository import Catalog
from storage.verify import CatalogReport, verify_catalog
from tests.retention.conftest import Store, local
from tests.retention.test_cli import Cli

NOW = datetime(2026, 11, 5, 12, tzinfo=UTC)


@pytest.fixture
def store(catalog: Catalog, tmp_path: Path) -> Store:
    directory = tmp_path / "recordings"
    directory.mkdir()
    return Store(catalog, directory)


def check(store: Store, *, service_started: datetime | None = NOW) -> CatalogReport:
    return verify_catalog(
        store.catalog,
        store.dir,
        anchor_path=store.anchor,
        service_started=service_started,
        now=NOW,
    )


def kinds(report: CatalogReport) -> list[str]:
    return [problem.kind for problem in report.problems]


def refuse(store: Store, recording_id: int) -> None:
    info = store.catalog.get_recording(recording_id)
    assert info is not None
    store.catalog.set_consent(
        info.call_id, outcome="refused", method="dtmf-rfc4733", at=NOW, digit="9"
    )


def training_copy(store: Store, name: str, expires_at: datetime | None) -> tuple[int, Path]:
    folder = store.dir / "training" / "2026-11"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    data = f"stripped audio {name}".encode()
    path.write_bytes(data)
    info = Register(store.catalog).add_training_copy(
        at=NOW,
        name=name,
        month="2026-11",
        path=str(path),
        node=None,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        duration=3.0,
        expires_at=expires_at,
    )
    return info.id, path


@pytest.fixture
def filled(store: Store) -> Store:
    """Two live recordings, one destroyed by a purge, a training copy, an audited trail."""
    store.recording(local(2026, 11, 1, 10))
    store.recording(local(2026, 11, 2, 11), agent="4712")
    old, _ = store.recording(local(2026, 10, 1, 9), agent="4713")
    report = store.purger().run(local(2026, 11, 3, 8))
    assert [d.recording_id for d in report.destroyed] == [old]
    training_copy(store, "training-2026-11-001.wav", local(2026, 12, 1))
    # A refused call with no recording is what C5 wants: nothing to report.
    store.catalog.set_consent(
        store.catalog.add_call(
            call_id_a="refused@trunk",
            direction="inbound",
            side="external",
            caller_number="+15145550101",
            callee_number="+15145559000",
            arrived_at=NOW,
        ),
        outcome="refused",
        method="dtmf-rfc4733",
        at=NOW,
        digit="9",
    )
    return store


def test_a_clean_store_passes(filled: Store) -> None:
    report = check(filled)
    assert report.ok, [p.line() for p in report.problems]
    assert report.notes == []
    assert report.counts["recording_files"] == 2
    assert report.counts["live_recordings"] == 2 and report.counts["recordings"] == 3
    assert report.counts["training_files"] == 1 and report.counts["training_copies"] == 1
    assert report.counts["audit_entries"] >= 2
    assert report.to_json()["ok"] is True


def test_an_uncatalogued_file_is_reported(filled: Store) -> None:
    stray = filled.dir / "2026" / "11" / "01" / "stray.wav"
    stray.write_bytes(b"RIFF....WAVE")
    report = check(filled)
    assert kinds(report) == ["uncatalogued_file"]
    assert report.problems[0].path == str(stray)
    assert "a recording file with no catalog row" in report.problems[0].line()


def test_a_file_left_beside_a_failed_row_is_uncatalogued(store: Store) -> None:
    recording, _ = store.recording(local(2026, 11, 1, 10), finalize=False)
    store.catalog.fail_recording(recording, at=NOW, reason="service stopped; no file left")
    report = check(store)
    assert kinds(report) == ["uncatalogued_file"]
    assert report.problems[0].recording_id == recording
    assert f"(recording {recording}) is failed" in report.problems[0].message


def test_a_missing_file_is_reported(filled: Store) -> None:
    recording, path = filled.recording(local(2026, 11, 4, 10))
    path.unlink()
    report = check(filled)
    assert kinds(report) == ["missing_file"]
    assert report.problems[0].recording_id == recording
    assert f"recording {recording}: its file {path} is missing" in report.problems[0].line()


def test_a_changed_byte_is_reported(filled: Store) -> None:
    recording, path = filled.recording(local(2026, 11, 4, 10))
    data = bytearray(path.read_bytes())
    data[20] ^= 0x01
    path.write_bytes(bytes(data))
    report = check(filled)
    assert kinds(report) == ["sha256_mismatch"]
    assert report.problems[0].recording_id == recording
    assert "the catalog says" in report.problems[0].message


def test_a_wrong_size_is_reported(filled: Store) -> None:
    recording, _ = filled.recording(local(2026, 11, 4, 10))
    filled.catalog.update_recording(recording, size=1)
    report = check(filled)
    assert kinds(report) == ["size_mismatch"]
    assert "the catalog says 1" in report.problems[0].message


def test_a_refused_call_with_a_live_recording_is_reported(filled: Store) -> None:
    recording, _ = filled.recording(local(2026, 11, 4, 10))
    refuse(filled, recording)
    report = check(filled)
    assert kinds(report) == ["refused_call_recorded"]
    assert report.problems[0].recording_id == recording
    assert "C5" in report.problems[0].message and "refused" in report.problems[0].message


def test_a_refused_call_whose_recording_was_destroyed_passes(store: Store) -> None:
    # The mid-call refusal path (recording_glue): file deleted, row failed, no path.
    recording, path = store.recording(local(2026, 11, 1, 10), finalize=False)
    path.unlink()
    store.catalog.fail_recording(recording, at=NOW, reason="refused during the call (C5)")
    store.catalog.update_recording(
        recording, path=None, destroyed_at=NOW, destroy_reason="refused during the call (C5)"
    )
    refuse(store, recording)
    assert check(store).ok


def test_a_leftover_part_is_reported(filled: Store) -> None:
    part = filled.dir / "2026" / "11" / "01" / "crashed.wav.part"
    part.write_bytes(b"RIFF")
    old = (NOW - timedelta(minutes=5)).timestamp()
    os.utime(part, (old, old))
    report = check(filled)
    assert kinds(report) == ["part_unrepaired"]
    assert "a .part left unrepaired" in report.problems[0].line()
    # Without a running service every .part is left over.
    assert kinds(check(filled, service_started=None)) == ["part_unrepaired"]


def test_a_part_being_written_by_the_running_service_is_not_a_problem(filled: Store) -> None:
    part = filled.dir / "2026" / "11" / "01" / "live.wav.part"
    part.write_bytes(b"RIFF")
    later = (NOW + timedelta(seconds=3)).timestamp()
    os.utime(part, (later, later))
    assert check(filled).ok


def test_a_row_left_recording_by_a_dead_service_is_reported(store: Store) -> None:
    recording, path = store.recording(local(2026, 11, 1, 10), finalize=False)
    path.unlink()
    report = check(store)
    assert kinds(report) == ["recording_left_open"]
    assert report.problems[0].recording_id == recording
    # A recording started after the service did is in progress.
    assert check(store, service_started=local(2026, 11, 1, 9)).ok


def test_a_broken_audit_entry_is_reported(filled: Store) -> None:
    with filled.catalog.engine.begin() as connection:
        connection.execute(text("UPDATE audit_entries SET actor = 'nobody' WHERE seq = 1"))
    report = check(filled)
    assert kinds(report) == ["audit_chain_broken"]
    assert report.problems[0].audit_seq == 1
    assert "audit trail broken at entry 1" in report.problems[0].line()


def test_a_missing_anchor_file_is_reported(filled: Store) -> None:
    filled.anchor.unlink()
    report = check(filled)
    assert kinds(report) == ["audit_chain_broken"]
    assert "anchor file missing" in report.problems[0].message


def test_an_interrupted_purge_is_a_note_not_a_problem(filled: Store) -> None:
    recording, path = filled.recording(local(2026, 11, 4, 10))
    with filled.catalog.engine.begin() as connection:
        connection.execute(
            text("UPDATE recordings SET state = 'destroying' WHERE id = :id"), {"id": recording}
        )
    report = check(filled)
    assert report.ok
    assert [note.kind for note in report.notes] == ["purge_interrupted"]
    assert "purge interrupted" in report.notes[0].line() and "still there" in report.notes[0].line()
    path.unlink()  # the purge got past the unlink
    assert "already gone" in check(filled).notes[0].message
    filled.purger().run(local(2026, 11, 4, 12))  # the next purge finishes it
    report = check(filled)
    assert report.ok and report.notes == []


def test_training_copies_are_checked_against_their_table(filled: Store) -> None:
    copy, path = training_copy(filled, "training-2026-11-002.wav", local(2026, 12, 1))
    path.write_bytes(b"changed")
    stray = filled.dir / "training" / "2026-11" / "training-2026-11-003.wav"
    stray.write_bytes(b"no row")
    report = check(filled)
    assert sorted(kinds(report)) == ["sha256_mismatch", "uncatalogued_file"]
    by_kind = {p.kind: p for p in report.problems}
    assert by_kind["sha256_mismatch"].training_copy_id == copy
    assert by_kind["uncatalogued_file"].path == str(stray)
    assert "training-copy file" in by_kind["uncatalogued_file"].message


def test_an_expired_training_copy_whose_file_went_first_is_a_note(filled: Store) -> None:
    _, path = training_copy(filled, "training-2026-11-002.wav", local(2026, 11, 4))
    path.unlink()
    report = check(filled)
    assert report.ok and [n.kind for n in report.notes] == ["purge_interrupted"]


def test_a_problem_gone_by_the_second_look_is_not_reported(
    filled: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that was finalized (or purged) between two reads is not a fault."""
    real = verify_module._walk
    calls: list[int] = []

    def first_sees_a_phantom(
        directory: Path, skip: frozenset[str] = frozenset()
    ) -> verify_module._Files:
        files = real(directory, skip)
        calls.append(1)
        if len(calls) == 1:
            files.recordings.append(directory / "2026" / "11" / "01" / "being-finalized.wav")
        return files

    monkeypatch.setattr(verify_module, "_walk", first_sees_a_phantom)
    report = check(filled)
    assert report.ok and len(calls) == 2


def test_a_missing_storage_directory_is_a_problem(store: Store) -> None:
    store.dir.rmdir()
    assert kinds(check(store)) == ["missing_file"]


# --- the command ---


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    runner = Cli(tmp_path, capsys, commands=(add_catalog_verify_commands, add_retention_commands))
    try:
        yield runner
    finally:
        runner.catalog.close()


def verify(cli: Cli, *extra: str) -> tuple[int, str, str]:
    # No service runs in these tests, whatever this machine has in /run/recorder.
    return cli("catalog", "verify", "--service-socket", str(cli.base / "control.sock"), *extra)


def test_cli_clean_store_exits_0_and_audits_the_run(cli: Cli) -> None:
    cli.store.recording(local(2026, 11, 1, 10))
    code, out, err = verify(cli)
    assert code == 0, out + err
    assert out.splitlines()[-1].startswith("catalog verify: ok (1 files, 1 live recordings of 1")
    code, out, _ = verify(cli, "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True and report["problems"] == []
    assert report["counts"]["recording_files"] == 1 and report["audit"]["ok"] is True
    code, out, _ = cli("audit", "list", "--json")
    entries = [e for e in json.loads(out) if e["action"] == "catalog.verify"]
    assert [e["outcome"] for e in entries] == ["ok", "ok"]
    assert entries[0]["object"] == "catalog" and entries[0]["detail"]["problems"] == {}
    code, _, _ = cli("audit", "verify")
    assert code == 0


def _uncatalogued(store: Store) -> str:
    (store.dir / "2026" / "11" / "01" / "stray.wav").write_bytes(b"RIFF")
    return "PROBLEM uncatalogued_file: "


def _missing(store: Store) -> str:
    recording, path = store.recording(local(2026, 11, 2, 10))
    path.unlink()
    return f"PROBLEM missing_file: recording {recording}: its file {path} is missing"


def _changed_byte(store: Store) -> str:
    recording, path = store.recording(local(2026, 11, 2, 10))
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    return f"PROBLEM sha256_mismatch: recording {recording}: {path} has SHA-256"


def _refused(store: Store) -> str:
    recording, _ = store.recording(local(2026, 11, 2, 10))
    refuse(store, recording)
    return f"PROBLEM refused_call_recorded: recording {recording}: the call's consent was refused"


def _part(store: Store) -> str:
    (store.dir / "2026" / "11" / "01" / "crash.wav.part").write_bytes(b"RIFF")
    return "PROBLEM part_unrepaired: "


def _audit(store: Store) -> str:
    with store.catalog.engine.begin() as connection:
        connection.execute(text("UPDATE audit_entries SET outcome = 'x' WHERE seq = 1"))
    return "PROBLEM audit_chain_broken: audit trail broken at entry 1: entry 1: content"


@pytest.mark.parametrize(
    ("damage", "kind"),
    [
        (_uncatalogued, "uncatalogued_file"),
        (_missing, "missing_file"),
        (_changed_byte, "sha256_mismatch"),
        (_refused, "refused_call_recorded"),
        (_part, "part_unrepaired"),
        (_audit, "audit_chain_broken"),
    ],
    ids=["uncatalogued", "missing", "changed-byte", "refused", "part", "audit"],
)
def test_cli_reports_each_damage_and_exits_1(cli: Cli, damage: object, kind: str) -> None:
    cli.store.recording(local(2026, 11, 1, 10))
    cli.store.trail().record(at=NOW, actor="test", action="test.entry", object="catalog")
    assert callable(damage)
    line = damage(cli.store)
    code, out, _ = verify(cli)
    assert code == 1, out
    assert any(row.startswith(line) for row in out.splitlines()), out
    assert "catalog verify: 1 problems" in out.splitlines()[-1]
    code, out, _ = verify(cli, "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert [p["kind"] for p in report["problems"]] == [kind]
    code, out, _ = cli("audit", "list", "--json")
    last = [e for e in json.loads(out) if e["action"] == "catalog.verify"][-1]
    assert last["outcome"] == "problems" and last["detail"]["problems"] == {kind: 1}


def test_cli_purge_interrupted_is_a_note_and_exits_0(cli: Cli) -> None:
    recording, _ = cli.store.recording(local(2026, 11, 1, 10))
    with cli.catalog.engine.begin() as connection:
        connection.execute(
            text("UPDATE recordings SET state = 'destroying' WHERE id = :id"), {"id": recording}
        )
    code, out, _ = verify(cli)
    assert code == 0
    assert f"NOTE purge_interrupted: recording {recording}: purge interrupted" in out
    assert "1 notes" in out.splitlines()[-1]


def test_cli_takes_the_live_control_socket_as_the_service_start(cli: Cli) -> None:
    part = cli.store.dir / "2026" / "11" / "01" / "live.wav.part"
    part.parent.mkdir(parents=True)
    path = cli.base / "control.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        server.listen(4)
        started = service_started([path])
        assert started is not None
        time.sleep(0.02)
        part.write_bytes(b"RIFF")  # written after the start: a recording in progress
        code, out, _ = verify(cli)
        assert code == 0, out
        old = started.timestamp() - 60
        os.utime(part, (old, old))  # left from before the start
        code, out, _ = verify(cli)
        assert code == 1 and "PROBLEM part_unrepaired" in out
    finally:
        server.close()
    # A socket nobody listens on is a dead service's.
    assert service_started([path]) is None
    assert service_started([cli.base / "nothing.sock"]) is None


def test_cli_missing_catalog_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runner = Cli(tmp_path, capsys, commands=(add_catalog_verify_commands,))
    runner.catalog.close()
    (tmp_path / "recorder.db").unlink()
    code, _, err = runner("catalog", "verify")
    assert code == 1 and "recorder.db" in err


def test_a_node_verifies_its_own_directory_and_rows_not_another_nodes(store: Store) -> None:
    """Several nodes, one storage root (issue 19): node n1's `.part` in progress, its rows
    still `recording`, are n1's to judge; n2's verify neither walks n1/ nor reads its rows."""
    mine, _ = store.recording(local(2026, 11, 1, 10))
    store.catalog.update_recording(mine, node="n2")
    theirs = store.dir / "n1" / "2026" / "11" / "05"
    theirs.mkdir(parents=True)
    (theirs / "in-progress.wav.part").write_bytes(b"RIFF")
    call = store.catalog.add_call(
        call_id_a="n1-call",
        direction="inbound",
        side="external",
        caller_number="+15145550100",
        callee_number="+15145559000",
        arrived_at=NOW - timedelta(hours=2),
    )
    store.catalog.add_recording(
        call,
        name="in-progress.wav",
        path=str(theirs / "in-progress.wav"),
        format="pcm16",
        created_at=NOW - timedelta(hours=2),
        node="n1",
    )
    as_n2 = verify_catalog(
        store.catalog, store.dir, anchor_path=store.anchor, service_started=None, now=NOW, node="n2"
    )
    assert as_n2.ok, as_n2.to_json()
    assert as_n2.counts["recordings"] == 1 and as_n2.counts["part_files"] == 0
    # Without a node (an admin's look at everything) the same two are problems.
    everything = check(store, service_started=None)
    assert sorted(kinds(everything)) == ["part_unrepaired", "recording_left_open"]
