"""The purge against a real catalog and files: holds, integrity (X1), resume, idempotence."""

from __future__ import annotations

import hashlib
import os
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Recording, RecordingState
from storage.repository import Catalog, read_session, write_session
from storage.retention import (
    HoldRefused,
    PurgeError,
    Purger,
    add_hold,
    list_holds,
    recompute_expiry,
    release_holds,
)
from tests.retention.conftest import Store, local, make_settings

CALL = local(2026, 11, 1, 10, 0)
GONE = local(2026, 11, 9)  # D1 for CALL


def state(store: Store, recording_id: int) -> RecordingState:
    row = store.catalog.get_recording(recording_id)
    assert row is not None
    return row.state


def actions(store: Store) -> list[str]:
    return [entry.action for entry in store.trail().entries()]


def test_a_second_purge_finds_nothing_and_the_trail_verifies(store: Store) -> None:
    first, path = store.recording(CALL)
    report = store.purger().run(GONE)
    assert [d.recording_id for d in report.destroyed] == [first]
    assert report.ok and not path.exists()
    again = store.purger().run(GONE + timedelta(hours=1))
    assert again.destroyed == [] and again.resumed == []
    destroyed = [e for e in store.trail().entries() if e.action == "recording.destroyed"]
    assert [e.object for e in destroyed] == [f"recording:{first}"]
    assert destroyed[0].reason is not None and destroyed[0].reason.startswith("D1:")
    assert actions(store).count("retention.purge") == 2
    assert store.trail().verify().ok


def test_a_held_recording_survives_until_released(store: Store) -> None:
    held, path = store.recording(CALL)
    settings = make_settings(holds=True)
    add_hold(
        store.catalog,
        held,
        reason="complaint 2026-114",
        actor="quality",
        now=CALL + timedelta(days=2),
        settings=settings,
        anchor_path=store.anchor,
    )
    for day in (9, 30, 300):
        report = store.purger(settings).run(local(2026, 11, 1) + timedelta(days=day))
        assert report.held == [held] and report.destroyed == []
        assert path.exists() and state(store, held) is RecordingState.COMPLETE
    release_holds(
        store.catalog, held, actor="quality", now=local(2027, 9, 1), anchor_path=store.anchor
    )
    report = store.purger(settings).run(local(2027, 9, 1, 1))
    assert [d.recording_id for d in report.destroyed] == [held]
    assert not path.exists()
    # hold.add (2026) is past A5 by September 2027: pruned, and the trail still verifies.
    assert {"audit.pruned", "hold.release", "recording.destroyed"} <= set(actions(store))
    assert "hold.add" not in actions(store)
    assert store.trail().verify().ok


def test_a_hold_until_a_day_keeps_through_that_day(store: Store) -> None:
    held, path = store.recording(CALL)
    settings = make_settings(holds=True)
    hold = add_hold(
        store.catalog,
        held,
        reason="dispute",
        actor="clerk",
        now=CALL,
        until=local(2026, 12, 1),  # i.e. `--until 2026-11-30`: kept through the 30th
        settings=settings,
        anchor_path=store.anchor,
    )
    assert hold.active(local(2026, 11, 30, 23, 59)) and not hold.active(local(2026, 12, 1))
    assert store.purger(settings).run(local(2026, 12, 1) - timedelta(seconds=1)).held == [held]
    assert path.exists()
    report = store.purger(settings).run(local(2026, 12, 1))
    assert [d.recording_id for d in report.destroyed] == [held]
    assert list_holds(store.catalog, now=local(2026, 12, 1)) == []
    assert len(list_holds(store.catalog, now=local(2026, 12, 1), include_inactive=True)) == 1


def test_holds_are_refused_when_the_policy_forbids_them_and_the_refusal_is_audited(
    store: Store,
) -> None:
    recording, _ = store.recording(CALL)
    with pytest.raises(HoldRefused, match="allows no holds"):
        add_hold(
            store.catalog,
            recording,
            reason="complaint",
            actor="quality",
            now=CALL,
            settings=make_settings(holds=False),
            anchor_path=store.anchor,
        )
    assert list_holds(store.catalog, now=CALL, include_inactive=True) == []
    refused = store.trail().entries()[-1]
    assert (refused.action, refused.outcome) == ("hold.add", "refused")


@pytest.mark.parametrize(
    ("when", "message"),
    [(GONE, "retention ended"), (CALL, "--until is not in the future")],
)
def test_holds_after_expiry_or_ending_in_the_past_are_refused(
    store: Store, when: object, message: str
) -> None:
    recording, _ = store.recording(CALL)
    with pytest.raises(HoldRefused, match=message):
        add_hold(
            store.catalog,
            recording,
            reason="too late",
            actor="quality",
            now=when,  # type: ignore[arg-type]
            until=CALL - timedelta(days=1),
            settings=make_settings(holds=True),
            anchor_path=store.anchor,
        )


def test_a_hold_on_a_destroyed_recording_is_refused(store: Store) -> None:
    recording, _ = store.recording(CALL)
    store.purger().run(GONE)
    with pytest.raises(HoldRefused, match="destroyed"):
        add_hold(
            store.catalog,
            recording,
            reason="late",
            actor="quality",
            now=CALL,
            settings=make_settings(holds=True),
            anchor_path=store.anchor,
        )


def test_releasing_without_a_hold_is_refused(store: Store) -> None:
    recording, _ = store.recording(CALL)
    with pytest.raises(HoldRefused, match="no active hold"):
        release_holds(store.catalog, recording, actor="x", now=CALL, anchor_path=store.anchor)


def test_a_missing_file_is_an_integrity_failure_reported_audited_and_closed(store: Store) -> None:
    recording, path = store.recording(CALL)
    path.unlink()
    report = store.purger().run(GONE)
    assert not report.ok
    assert [(f.recording_id, f.problem) for f in report.integrity_failures] == [
        (recording, "missing")
    ]
    row = store.catalog.get_recording(recording)
    assert row is not None and row.state is RecordingState.DESTROYED and row.path is None
    assert row.destroy_reason is not None and "integrity: missing" in row.destroy_reason
    failure = next(e for e in store.trail().entries() if e.action == "recording.integrity_failure")
    assert (failure.object, failure.outcome) == (f"recording:{recording}", "missing")
    assert store.trail().entries()[-1].outcome == "integrity_failures"


def test_a_changed_file_is_an_integrity_failure_and_still_destroyed(store: Store) -> None:
    recording, path = store.recording(CALL)
    path.write_bytes(b"tampered")
    report = store.purger().run(GONE)
    (failure,) = report.integrity_failures
    assert failure.problem == "sha256_mismatch"
    assert failure.found_sha256 == hashlib.sha256(b"tampered").hexdigest()
    assert not path.exists() and state(store, recording) is RecordingState.DESTROYED


def test_a_path_outside_the_storage_is_never_deleted(store: Store, tmp_path: Path) -> None:
    recording, _ = store.recording(CALL)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    store.catalog.update_recording(recording, path=str(victim))
    report = store.purger().run(GONE)
    assert [f.problem for f in report.integrity_failures] == ["outside_storage"]
    assert victim.read_text() == "keep me"
    assert state(store, recording) is RecordingState.COMPLETE


def test_a_dry_run_changes_nothing_but_says_what_would_happen(store: Store) -> None:
    recording, path = store.recording(CALL)
    store.recording(local(2025, 10, 1, 12))
    before = {r.id: r for r in store.catalog.list_recordings()}
    report = store.purger().run(local(2026, 11, 9), dry_run=True)
    assert report.dry_run and recording in [d.recording_id for d in report.destroyed]
    assert report.numbers_erased == 1
    assert path.exists()
    assert {r.id: r for r in store.catalog.list_recordings()} == before
    assert actions(store) == ["retention.purge"]
    assert store.trail().entries()[-1].outcome == "dry_run"


def test_a_run_killed_after_marking_finishes_next_time(store: Store) -> None:
    """Both windows of a kill: before the unlink (file there) and after it (file gone)."""
    before_unlink, path_a = store.recording(CALL)
    after_unlink, path_b = store.recording(CALL + timedelta(minutes=5))
    for recording_id in (before_unlink, after_unlink):
        with write_session(store.catalog) as session:
            row = session.get(Recording, recording_id)
            assert row is not None
            row.state = RecordingState.DESTROYING
            row.destroy_reason = "D1: retention over"
    path_b.unlink()
    report = store.purger().run(GONE + timedelta(hours=1))
    assert sorted(report.resumed) == [before_unlink, after_unlink]
    assert report.integrity_failures == []  # a missing file here is our own deletion
    assert not path_a.exists()
    with read_session(store.catalog) as session:
        rows = session.scalars(select(Recording)).all()
        assert {(r.state, r.path) for r in rows} == {(RecordingState.DESTROYED, None)}


def test_a_finished_recording_without_expiry_gets_one(store: Store) -> None:
    recording, path = store.recording(CALL)
    store.catalog.update_recording(recording, expires_at=None)
    report = store.purger().run(CALL + timedelta(days=1))
    assert report.expiry_set == [recording]
    row = store.catalog.get_recording(recording)
    assert row is not None and row.expires_at == GONE
    assert "recording.expiry_set" in actions(store)
    store.purger().run(GONE)
    assert not path.exists()


def test_recordings_in_progress_or_failed_are_left_alone(store: Store) -> None:
    running, path = store.recording(CALL, finalize=False)
    failed, _ = store.recording(CALL + timedelta(minutes=1), finalize=False)
    store.catalog.fail_recording(failed, at=CALL, reason="no media")
    store.purger().run(local(2027, 1, 1))
    assert state(store, running) is RecordingState.RECORDING and path.exists()
    assert state(store, failed) is RecordingState.FAILED


def test_a_missing_storage_directory_stops_the_purge(store: Store) -> None:
    store.recording(CALL)
    purger = Purger(store.catalog, store.dir / "nope", make_settings())
    with pytest.raises(PurgeError, match="does not exist"):
        purger.run(GONE)


def test_another_nodes_recordings_are_not_touched(store: Store) -> None:
    mine, mine_path = store.recording(CALL)
    theirs, theirs_path = store.recording(CALL + timedelta(minutes=1))
    store.catalog.update_recording(mine, node="node-a")
    store.catalog.update_recording(theirs, node="node-b")
    report = store.purger(node="node-a").run(GONE)
    assert [d.recording_id for d in report.destroyed] == [mine]
    assert theirs_path.exists() and not mine_path.exists()


def test_recompute_expiry_is_explicit_and_audited(store: Store) -> None:
    recording, _ = store.recording(CALL)
    longer = make_settings(recordings="6 months")
    changes = recompute_expiry(
        store.catalog, longer, now=CALL, actor="admin", dry_run=True, anchor_path=store.anchor
    )
    assert [(c.recording_id, c.old, c.new) for c in changes] == [
        (recording, GONE, local(2027, 5, 1))
    ]
    row = store.catalog.get_recording(recording)
    assert row is not None and row.expires_at == GONE
    recompute_expiry(store.catalog, longer, now=CALL, actor="admin", anchor_path=store.anchor)
    row = store.catalog.get_recording(recording)
    assert row is not None and row.expires_at == local(2027, 5, 1)
    assert "recording.expiry_recomputed" in actions(store)
    assert store.purger(longer).run(GONE).destroyed == []


def test_destroyed_files_leave_their_directory_entries_durable(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory is fsynced after the unlink and before the row says `destroyed`."""
    recording, path = store.recording(CALL)
    order: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        order.append("fsync")
        real_fsync(fd)

    def counted_write(catalog: Catalog) -> AbstractContextManager[Session]:
        order.append("write")
        return write_session(catalog)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr("storage.retention.write_session", counted_write)
    store.purger().run(GONE)
    # intent (write), anchor fsyncs excluded: the dir fsync comes before the finishing write.
    first_write = order.index("write")
    assert order[first_write + 1] == "fsync" and order[first_write + 2] == "write"
    assert not path.exists() and state(store, recording) is RecordingState.DESTROYED
