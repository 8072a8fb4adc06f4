"""Catalog CRUD, filters and invariants on a SQLite file in tmp."""

from __future__ import annotations

import os
import stat
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from storage.db import CatalogMissing
from storage.models import WITHHELD, CallStatus, Direction, RecordingState
from storage.repository import Catalog, InvalidState, NotFound
from tests.storage.conftest import T0


def add_call(catalog: Catalog, at: datetime = T0, **overrides: object) -> int:
    fields: dict[str, object] = {
        "call_id_a": "a1@trunk",
        "direction": "inbound",
        "side": "external",
        "caller_number": "+15145550100",
        "callee_number": "+15145559000",
        "arrived_at": at,
        "extension": "235",
        "policy_record": True,
        "policy_rules": ["S1", "C1"],
        "policy_hash": "ab" * 32,
    }
    fields.update(overrides)
    return catalog.add_call(**fields)  # type: ignore[arg-type]


def test_call_lifecycle_computes_durations_and_keeps_utc(catalog: Catalog) -> None:
    montreal = timezone(timedelta(hours=-5))
    call_id = add_call(catalog, at=T0.astimezone(montreal))
    catalog.set_consent(call_id, outcome="accepted", method="timeout", at=T0 + timedelta(seconds=4))
    catalog.answer_call(
        call_id, at=T0 + timedelta(seconds=6.5), agent="4711", call_id_b="b1@pbx", codec="PCMU"
    )
    catalog.end_call(
        call_id,
        at=T0 + timedelta(seconds=66.5),
        reason="bye from a",
        media={"a": {"packets": 3000, "lost": 2}, "b": {"packets": 2999}},
    )

    call = catalog.get_call(call_id)
    assert call is not None
    assert call.arrived_at == T0 and call.arrived_at.tzinfo is UTC
    assert call.setup_seconds == 6.5
    assert call.talk_seconds == 60.0
    assert call.status is CallStatus.ENDED
    assert (call.agent, call.call_id_b, call.codec) == ("4711", "b1@pbx", "PCMU")
    assert (call.consent_outcome, call.consent_method) == ("accepted", "timeout")
    assert call.media == {"a": {"packets": 3000, "lost": 2}, "b": {"packets": 2999}}
    assert call.policy_rules == ["S1", "C1"]
    assert call.end_reason == "bye from a"


def test_unanswered_call_setup_time_runs_to_its_end(catalog: Catalog) -> None:
    call_id = add_call(catalog, caller_number=WITHHELD)
    catalog.end_call(call_id, at=T0 + timedelta(seconds=12), reason="caller cancelled")
    call = catalog.get_call(call_id)
    assert call is not None
    assert call.setup_seconds == 12.0 and call.talk_seconds is None
    assert call.answered_at is None and call.caller_number == WITHHELD


def test_naive_datetimes_are_refused(catalog: Catalog) -> None:
    with pytest.raises(Exception, match="naive datetime"):
        add_call(catalog, at=datetime(2026, 11, 23, 10, 42))


def test_update_call_checks_column_names_and_enums(catalog: Catalog) -> None:
    call_id = add_call(catalog)
    catalog.update_call(call_id, site="Montreal", direction="outbound")
    call = catalog.get_call(call_id)
    assert call is not None and call.site == "Montreal" and call.direction is Direction.OUTBOUND
    with pytest.raises(TypeError, match="id"):
        catalog.update_call(call_id, id=5)
    with pytest.raises(ValueError):
        catalog.update_call(call_id, direction="sideways")
    with pytest.raises(NotFound):
        catalog.update_call(999, site="x")


def test_database_check_constraint_rejects_unknown_states(catalog: Catalog) -> None:
    add_call(catalog)
    with pytest.raises(IntegrityError), catalog.engine.begin() as connection:
        connection.execute(text("UPDATE calls SET direction = 'sideways'"))


def test_recording_lifecycle(catalog: Catalog) -> None:
    call_id = add_call(catalog)
    recording_id = catalog.add_recording(
        call_id,
        name="2026-11-23_1042_agent-4711.wav",
        path="/rec/2026/11/23/2026-11-23_1042_agent-4711.wav",
        format="pcm16",
        created_at=T0 + timedelta(seconds=7),
        node="rec1",
    )
    started = catalog.get_recording(recording_id)
    assert started is not None
    assert started.state is RecordingState.RECORDING
    assert started.channel_map == {"left": "external", "right": "agent"}
    assert started.pauses == [] and started.sha256 is None

    catalog.update_recording(recording_id, pauses=[(10, 25.5)])
    catalog.finalize_recording(
        recording_id,
        at=T0 + timedelta(seconds=70),
        sha256="f" * 64,
        size=960_044,
        duration=60.0,
        pauses=[(10, 25.5), (40.0, 41.0)],
        name="2026-11-23_1042_agent-4711-2.wav",
        path="/rec/2026/11/23/2026-11-23_1042_agent-4711-2.wav",
        expires_at=datetime(2026, 12, 1, 5, 0, tzinfo=UTC),
    )
    done = catalog.get_recording(recording_id)
    assert done is not None
    assert done.state is RecordingState.COMPLETE
    assert done.name.endswith("-2.wav") and done.path is not None and done.path.endswith("-2.wav")
    assert done.pauses == [[10.0, 25.5], [40.0, 41.0]]
    assert (done.sha256, done.size, done.duration) == ("f" * 64, 960_044, 60.0)
    assert done.expires_at == datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    assert done.finalized_at == T0 + timedelta(seconds=70)

    with pytest.raises(InvalidState):
        catalog.interrupt_recording(recording_id, at=T0, sha256="0" * 64, size=1, duration=0.0)


def test_interrupted_and_failed_recordings(catalog: Catalog) -> None:
    call_id = add_call(catalog)
    crashed = catalog.add_recording(
        call_id, name="a.wav", path="/r/a.wav", format="ulaw", created_at=T0
    )
    broken = catalog.add_recording(
        call_id, name="b.wav", path="/r/b.wav", format="ulaw", created_at=T0
    )
    catalog.interrupt_recording(
        crashed, at=T0 + timedelta(hours=1), sha256="1" * 64, size=8044, duration=1.0
    )
    catalog.fail_recording(broken, at=T0 + timedelta(seconds=2), reason="disk full")

    assert catalog.list_recordings(state="interrupted")[0].id == crashed
    failed = catalog.get_recording(broken)
    assert failed is not None and failed.state is RecordingState.FAILED
    events = catalog.list_events(call_id)
    assert [(e.name, e.detail) for e in events] == [
        ("recording.failed", {"recording": broken, "reason": "disk full"})
    ]
    with pytest.raises(InvalidState):
        catalog.fail_recording(broken, at=T0, reason="again")


def test_pauses_must_be_ordered_pairs(catalog: Catalog) -> None:
    recording_id = catalog.add_recording(
        add_call(catalog), name="a.wav", path="/r/a.wav", format="pcm16", created_at=T0
    )
    with pytest.raises(ValueError, match="ends before"):
        catalog.update_recording(recording_id, pauses=[(5.0, 4.0)])
    with pytest.raises(TypeError):
        catalog.update_recording(recording_id, state="complete")


def test_foreign_keys_are_enforced(catalog: Catalog) -> None:
    with pytest.raises(NotFound):
        catalog.add_recording(42, name="x.wav", path="/x", format="pcm16", created_at=T0)
    with pytest.raises(NotFound):
        catalog.add_event(42, at=T0, name="x")
    with pytest.raises(IntegrityError), catalog.engine.begin() as connection:
        connection.execute(
            text("INSERT INTO call_events (call_id, at, name, detail) VALUES (42, :at, 'x', '{}')"),
            {"at": "2026-11-23 15:42:00.000000"},
        )


def test_events_are_listed_in_time_order(catalog: Catalog) -> None:
    call_id = add_call(catalog)
    other = add_call(catalog, call_id_a="other")
    catalog.add_event(call_id, at=T0 + timedelta(seconds=9), name="recording.resumed")
    catalog.add_event(
        call_id, at=T0 + timedelta(seconds=3), name="consent.accepted", detail={"digit": None}
    )
    catalog.add_event(other, at=T0, name="noise")
    catalog.add_event(
        call_id, at=T0 + timedelta(seconds=5), name="recording.paused", detail={"by": "dtmf"}
    )
    events = catalog.list_events(call_id)
    assert [e.name for e in events] == ["consent.accepted", "recording.paused", "recording.resumed"]
    assert events[1].detail == {"by": "dtmf"} and events[1].at.tzinfo is UTC


def test_call_filters(catalog: Catalog) -> None:
    first = add_call(catalog, at=T0, extension="235")
    second = add_call(catalog, at=T0 + timedelta(days=1), extension="236", direction="outbound")
    third = add_call(catalog, at=T0 + timedelta(days=2), extension="235")
    catalog.answer_call(third, at=T0 + timedelta(days=2, seconds=3), agent="4711")
    catalog.answer_call(first, at=T0 + timedelta(seconds=3), agent="4712")

    def ids(**filters: object) -> list[int]:
        return [call.id for call in catalog.list_calls(**filters)]  # type: ignore[arg-type]

    assert ids() == [first, second, third]
    assert ids(since=T0 + timedelta(days=1)) == [second, third]
    assert ids(until=T0 + timedelta(days=1)) == [first]
    assert ids(extension="235") == [first, third]
    assert ids(agent="4711") == [third]
    assert ids(direction=Direction.OUTBOUND) == [second]
    assert ids(extension="235", since=T0 + timedelta(seconds=1)) == [third]
    assert ids(limit=2) == [first, second]
    assert ids(extension="999") == []


def test_recording_filters_use_the_call(catalog: Catalog) -> None:
    call_a = add_call(catalog, at=T0, extension="235")
    call_b = add_call(catalog, at=T0, extension="236", direction="outbound")
    catalog.answer_call(call_b, at=T0, agent="4711")
    rec_a = catalog.add_recording(call_a, name="a", path="/a", format="pcm16", created_at=T0)
    rec_b = catalog.add_recording(
        call_b, name="b", path="/b", format="pcm16", created_at=T0 + timedelta(hours=1)
    )
    catalog.finalize_recording(
        rec_b, at=T0 + timedelta(hours=2), sha256="0" * 64, size=1, duration=1
    )

    def ids(**filters: object) -> list[int]:
        return [r.id for r in catalog.list_recordings(**filters)]  # type: ignore[arg-type]

    assert ids() == [rec_a, rec_b]
    assert ids(extension="235") == [rec_a]
    assert ids(agent="4711") == [rec_b]
    assert ids(direction="outbound") == [rec_b]
    assert ids(state=RecordingState.RECORDING) == [rec_a]
    assert ids(state="complete", since=T0 + timedelta(minutes=30)) == [rec_b]
    assert ids(since=T0 + timedelta(hours=3)) == []
    assert ids(call_id=call_a) == [rec_a]
    assert catalog.get_recording(12345) is None
    assert set(catalog.get_calls([call_a, call_b, 777])) == {call_a, call_b}


def test_find_call_by_either_call_id(catalog: Catalog) -> None:
    old = add_call(catalog, at=T0, call_id_a="same")
    new = add_call(catalog, at=T0 + timedelta(minutes=1), call_id_a="same")
    catalog.update_call(old, call_id_b="b-leg")
    found = catalog.find_call("same")
    assert found is not None and found.id == new
    by_b = catalog.find_call("b-leg")
    assert by_b is not None and by_b.id == old
    assert catalog.find_call("nope") is None


def test_sqlite_file_and_directory_modes(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        path = tmp_path / "new" / "deeper" / "recorder.db"
        catalog = Catalog.open(f"sqlite:///{path}", migrate=True)
        catalog.close()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o750
    assert stat.S_IMODE(tmp_path.stat().st_mode) != 0o750  # existing directories untouched


@pytest.mark.sqlite_only(reason="SQLite pragmas (WAL, foreign_keys) set by storage.db's hooks")
def test_sqlite_runs_in_wal_with_foreign_keys(catalog: Catalog) -> None:
    with catalog.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_missing_file_is_not_created_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "recorder.db"
    with pytest.raises(CatalogMissing):
        Catalog.open(f"sqlite:///{path}", create=False)
    assert not path.parent.exists()


def test_in_memory_catalog_shares_one_database() -> None:
    catalog = Catalog.open("sqlite://", migrate=True)
    try:
        call_id = add_call(catalog)
        assert catalog.get_call(call_id) is not None
    finally:
        catalog.close()


def test_two_writers_on_one_file_never_see_database_locked(db_url: str) -> None:
    """The service and a CLI command (a later purge) may write at once: writers take the
    lock up front instead of failing on a read-to-write upgrade."""
    first = Catalog.open(db_url, migrate=True)
    second = Catalog.open(db_url)
    call_id = add_call(first)
    errors: list[BaseException] = []

    def hammer(catalog: Catalog, name: str) -> None:
        try:
            for i in range(60):
                catalog.add_event(call_id, at=T0, name=f"{name}.{i}")
                catalog.update_call(call_id, codec=f"{name}{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=hammer, args=(first, "one")),
        threading.Thread(target=hammer, args=(second, "two")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first.close()
    second.close()
    assert errors == []
    reopened = Catalog.open(db_url)
    assert len(reopened.list_events(call_id)) == 120
    reopened.close()
