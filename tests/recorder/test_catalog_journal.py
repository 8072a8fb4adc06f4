"""The catalog journal (issue 20, "catalog unavailable"): while the catalog cannot be reached,
the call log's writes wait in a local file, in order, and a replay puts them in once it
answers, exactly once, also across a crash in the middle of the replay.

The outage here is injected under a real SQLite catalog (its sessions raise the
OperationalError a locked or unreachable database raises); tests/interop/test_catalog_outage.py
locks SQLite and stops PostgreSQL under a running `recorder serve`.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError

from recorder.call.call_log import CallLog
from recorder.call.catalog_journal import Journal, JournalError, catalog_unavailable
from storage.models import JournalMark
from storage.repository import AsyncCatalog, Catalog, read_session

T0 = datetime(2026, 12, 5, 14, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@contextmanager
def outage(catalog: AsyncCatalog) -> Iterator[None]:
    """Every session the catalog opens fails as a locked SQLite (or a stopped server) does."""
    sync = catalog.catalog
    sessions = sync._sessions

    def unavailable() -> Any:
        raise OperationalError("BEGIN", {}, Exception("database is locked"))

    sync._sessions = unavailable  # type: ignore[assignment]
    try:
        yield
    finally:
        sync._sessions = sessions


@pytest.fixture
async def catalog(tmp_path: Path) -> AsyncIterator[AsyncCatalog]:
    opened = await AsyncCatalog.open(f"sqlite:///{tmp_path / 'recorder.db'}", migrate=True)
    yield opened
    await opened.close()


async def open_log(catalog: AsyncCatalog, path: Path) -> CallLog:
    log = CallLog(catalog, journal_path=path)
    await log.open_journal()
    return log


def call_fields(name: str) -> dict[str, Any]:
    """What the controller passes at a call's arrival (recorder.call.controller)."""
    return {
        "call_id_a": f"{name}@trunk",
        "call_id_b": f"{name}-b@recorder",
        "direction": "inbound",
        "side": "external",
        "caller_number": "+15145550100",
        "callee_number": "+15145559000",
        "arrived_at": at(0),
        "policy_record": True,
        "policy_rules": ("S1", "C1"),
        "policy_hash": "ab" * 32,
    }


def whole_call(log: CallLog, name: str, *, start: float = 0.0) -> None:
    """One recorded call's writes, as the controller and the recording glue make them."""
    log.opened(name, **(call_fields(name) | {"arrived_at": at(start)}))
    log.consent(name, outcome="accepted", method="timeout", at=at(start + 3), digit=None)
    log.answered(name, at=at(start + 5), agent="4711", codec="PCMU")
    path = f"/var/rec/2026/12/05/{name}.wav"
    log.recording_started(name, name=f"{name}.wav", path=path, format="pcm16", at=at(start + 5))
    log.event(name, "agent.pause", at(start + 20), {"actor": "agent"})
    log.ended(name, at=at(start + 60), reason="bye-caller", media={"a": {"received": 2750}})
    file = {
        "path": path,
        "name": f"{name}.wav",
        "sha256": "cd" * 32,
        "size": 1_920_044,
        "duration": 55.0,
        "pauses": [[15.0, 20.0]],
        "state": "complete",
        "reason": None,
    }
    log.recording_done(name, at=at(start + 61), files=[file], error=None, expires_at=at(86400))


async def settle(log: CallLog) -> None:
    """Every write queued so far has run (the catalog's thread takes them in order)."""
    await log.catalog.run(lambda _catalog: None)


def summary(catalog: Catalog) -> list[tuple[str, str | None, str | None, list[str], str, str]]:
    """Each call with its consent, agent, events, and its recordings' states and hashes."""
    rows = []
    for call in catalog.list_calls():
        events = [event.name for event in catalog.list_events(call.id)]
        recordings = catalog.list_recordings(call_id=call.id)
        states = ",".join(f"{r.state.value}:{r.sha256}:{r.duration}" for r in recordings)
        ended = "ended" if call.ended_at is not None else "open"
        rows.append((call.call_id_a, call.consent_outcome, call.agent, events, states, ended))
    return rows


async def call_during_outage(catalog: AsyncCatalog, path: Path, *, stop: bool) -> CallLog:
    """A whole recorded call while the catalog is away (its 7 writes journaled); `stop`: the
    service stops before the catalog is back, so the file stays for the next start."""
    log = await open_log(catalog, path)
    with outage(catalog):
        whole_call(log, "c1")
        await settle(log)
        if stop:
            await log.close()
    return log


# --- the file --------------------------------------------------------------------------------


def test_journal_lines_survive_a_reload_with_their_datetimes_and_rows(tmp_path: Path) -> None:
    path = tmp_path / "catalog-journal.jsonl"
    journal = Journal(path)
    journal.append("add_call", "c1", call_fields("c1"), call_row=None, recording_row=None)
    journal.append("end_call", "c1", {"at": at(60), "reason": "bye"}, call_row=7, recording_row=3)
    journal.close()
    # The journal holds numbers, as the catalog does: the service's alone.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Journal.load(path)
    assert again.id == journal.id and len(again) == 2
    first, second = again.pending
    assert first.args["arrived_at"] == at(0) and first.args["policy_rules"] == ["S1", "C1"]
    assert (second.seq, second.call_row, second.recording_row) == (2, 7, 3)
    assert second.args["at"] == at(60)


def test_a_torn_last_line_is_dropped_and_counted(tmp_path: Path) -> None:
    """A crash in the middle of writing a line, before its fsync: that write never counted
    as done, so it is not replayed; the file is rewritten before anything is appended."""
    path = tmp_path / "catalog-journal.jsonl"
    journal = Journal(path)
    journal.append("add_call", "c1", call_fields("c1"), call_row=None, recording_row=None)
    journal.close()
    with path.open("a") as stream:
        stream.write('{"seq":2,"op":"end_call","call":"c1","ar')
    again = Journal.load(path)
    assert again.torn == 1 and [entry.seq for entry in again] == [1]
    assert path.read_text().endswith("\n")
    entry = again.append("end_call", "c1", {"at": at(9)}, call_row=None, recording_row=None)
    assert entry.seq == 2
    assert [e.seq for e in Journal.load(path)] == [1, 2]


def test_the_file_is_gone_once_every_entry_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "catalog-journal.jsonl"
    journal = Journal(path)
    first = journal.append("add_call", "c1", {}, call_row=None, recording_row=None)
    journal.append("end_call", "c1", {}, call_row=None, recording_row=None)
    old_id = journal.id
    journal.applied(first)
    assert path.exists()
    journal.set_aside(journal.pending[0], "KeyError")
    assert not path.exists() and journal.id is None
    rejected = (tmp_path / "catalog-journal.jsonl.rejected").read_text().splitlines()
    assert len(rejected) == 1 and '"reason":"KeyError"' in rejected[0]
    # The next outage starts a journal of its own, with its own id and numbering.
    again = journal.append("add_call", "c2", {}, call_row=None, recording_row=None)
    assert journal.id not in (None, old_id) and again.seq == 1


def test_only_errors_of_reach_count_as_an_outage() -> None:
    locked = OperationalError("INSERT", {}, Exception("database is locked"))
    refused = IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))
    assert catalog_unavailable(locked)
    assert not catalog_unavailable(refused)
    assert not catalog_unavailable(KeyError("c1"))


# --- the call log through an outage ----------------------------------------------------------


async def test_writes_during_an_outage_are_journaled_then_replayed_in_order_once(
    catalog: AsyncCatalog, tmp_path: Path
) -> None:
    path = tmp_path / "catalog-journal.jsonl"
    log = await open_log(catalog, path)
    log.opened("c1", **call_fields("c1"))
    await settle(log)
    with outage(catalog):
        # The outage begins mid-call: everything after the arrival waits in the journal,
        # and so does a whole second call.
        log.consent("c1", outcome="accepted", method="timeout", at=at(3), digit=None)
        log.answered("c1", at=at(5), agent="4711", codec="PCMU")
        log.ended("c1", at=at(60), reason="bye-caller", media={})
        whole_call(log, "c2", start=100)
        await settle(log)
        assert log.outages == 1 and log.journal_pending == 10 and log.failures == 0
        assert path.exists()
        # A retry is armed; while the catalog is still away it changes nothing.
        assert log._retry is not None
        assert await log.replay() == 0 and log.journal_pending == 10
    # Back, but the journal is not empty: a new write goes after it, to keep the order.
    log.opened("c3", **(call_fields("c3") | {"arrived_at": at(200)}))
    await settle(log)
    assert log.journal_pending == 11
    assert await log.replay() == 11
    assert log.journal_pending == 0 and not path.exists() and log.replayed == 11
    rows = summary(catalog.catalog)
    assert rows == [
        ("c1@trunk", "accepted", "4711", [], "", "ended"),
        (
            "c2@trunk",
            "accepted",
            "4711",
            ["agent.pause"],
            f"complete:{'cd' * 32}:55.0",
            "ended",
        ),
        ("c3@trunk", None, None, [], "", "open"),
    ]
    # Once in: the call log writes straight to the catalog again.
    log.event("c3", "agent.pause", at(300))
    await settle(log)
    assert log.journal_pending == 0 and not path.exists()
    await log.close()


async def test_a_crash_in_the_middle_of_a_replay_applies_nothing_twice(
    catalog: AsyncCatalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service dies after an entry's commit, before the journal forgets it: the next
    start finds the entry's mark and skips it, and what it created (the call's row) is
    known to the entries after it."""
    path = tmp_path / "catalog-journal.jsonl"
    log = await call_during_outage(catalog, path, stop=False)
    assert log.journal_pending == 7
    calls = {"n": 0}
    real_applied = Journal.applied

    def dies_at_the_third(self: Journal, entry: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise SystemExit("killed")  # the process is gone: no line leaves the file
        real_applied(self, entry)

    monkeypatch.setattr(Journal, "applied", dies_at_the_third)
    with pytest.raises(SystemExit):
        await log.replay()
    monkeypatch.setattr(Journal, "applied", real_applied)
    assert log._lock is not None
    os.close(log._lock)  # the dead process's lock goes with it
    # The file keeps every line until the journal is empty (no rewrite per entry); the
    # catalog holds the marks of the three entries that committed.
    assert len(Journal.load(path)) == 7
    with read_session(catalog.catalog) as session:
        assert len(list(session.scalars(select(JournalMark)))) == 3

    restarted = await open_log(catalog, path)  # a new process: nothing known but the file
    assert restarted.journal_pending == 0 and not path.exists()
    assert restarted.replayed == 4
    assert summary(catalog.catalog) == [
        ("c1@trunk", "accepted", "4711", ["agent.pause"], f"complete:{'cd' * 32}:55.0", "ended")
    ]
    await restarted.close()


async def test_a_journal_left_by_a_stopped_service_goes_in_at_the_next_start(
    catalog: AsyncCatalog, tmp_path: Path
) -> None:
    path = tmp_path / "catalog-journal.jsonl"
    await call_during_outage(catalog, path, stop=True)
    assert path.exists()
    restarted = await open_log(catalog, path)
    assert restarted.replayed == 7 and not path.exists()
    assert [row[0] for row in summary(catalog.catalog)] == ["c1@trunk"]
    await restarted.close()


async def test_an_entry_the_catalog_refuses_for_good_is_set_aside_not_retried(
    catalog: AsyncCatalog, tmp_path: Path
) -> None:
    path = tmp_path / "catalog-journal.jsonl"
    log = await open_log(catalog, path)
    with outage(catalog):
        log.event("ghost", "agent.pause", at(1))  # a call the catalog never heard of
        whole_call(log, "c1")
        await settle(log)
    assert await log.replay() == 7
    assert log.rejected == 1 and log.journal_pending == 0
    [line] = (tmp_path / "catalog-journal.jsonl.rejected").read_text().splitlines()
    assert '"call":"ghost"' in line
    assert [row[0] for row in summary(catalog.catalog)] == ["c1@trunk"]
    await log.close()


async def test_one_journal_serves_one_service(catalog: AsyncCatalog, tmp_path: Path) -> None:
    """Two services on one journal file (two nodes given the same storage.journal) would
    interleave their lines: the second one does not start, and says which file."""
    path = tmp_path / "catalog-journal.jsonl"
    first = await open_log(catalog, path)
    with pytest.raises(JournalError, match="in use by another recorder service"):
        await open_log(catalog, path)
    await first.close()
    again = await open_log(catalog, path)  # released at close
    await again.close()


async def test_a_journal_that_cannot_go_in_stops_the_start(
    catalog: AsyncCatalog, tmp_path: Path
) -> None:
    path = tmp_path / "catalog-journal.jsonl"
    await call_during_outage(catalog, path, stop=True)
    with outage(catalog), pytest.raises(JournalError, match="7 entries not replayed"):
        await open_log(catalog, path)
    assert len(Journal.load(path)) == 7  # kept whole for the next start


async def test_without_a_journal_an_outage_loses_the_write_and_counts_it(
    catalog: AsyncCatalog,
) -> None:
    log = CallLog(catalog)
    with outage(catalog):
        log.opened("c1", **call_fields("c1"))
        await settle(log)
    assert log.failures == 1 and log.journal_pending == 0


def test_the_journal_holds_json_a_person_can_read(tmp_path: Path) -> None:
    """`recorder` support: an admin may read what waits (it is plain JSON lines)."""
    path = tmp_path / "catalog-journal.jsonl"
    journal = Journal(path)
    journal.append("add_call", "c1", call_fields("c1"), call_row=None, recording_row=None)
    journal.close()
    header, line = (json.loads(raw) for raw in path.read_text().splitlines())
    assert set(header) == {"journal", "created"}
    assert line["op"] == "add_call" and line["args"]["arrived_at"] == {"$at": at(0).isoformat()}
