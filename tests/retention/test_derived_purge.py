"""The purge destroys expired training copies (P5, D3) and summary sheets (P6, D5)."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from storage.models import TrainingCopy
from storage.register import Register, SummaryInfo, TrainingCopyInfo
from storage.repository import write_session
from storage.retention import Purger
from tests.retention.conftest import Store, local, make_settings

CALL = local(2026, 11, 1, 10, 0)
NOW = local(2027, 11, 2, 12, 0)
SOON = NOW - timedelta(days=1)  # expired at NOW
LATER = NOW + timedelta(days=30)  # not yet


def training_copy(
    store: Store,
    name: str,
    expires_at: datetime | None,
    *,
    node: str | None = None,
    directory: Path | None = None,
) -> tuple[TrainingCopyInfo, Path]:
    folder = directory if directory is not None else store.dir / "training" / "2026-11"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    data = f"stripped audio {name}".encode()
    path.write_bytes(data)
    info = Register(store.catalog).add_training_copy(
        at=CALL,
        name=name,
        month="2026-11",
        path=str(path),
        node=node,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        duration=3.0,
        expires_at=expires_at,
    )
    return info, path


def summary(store: Store, recording_id: int, expires_at: datetime | None) -> SummaryInfo:
    return Register(store.catalog).add_summary(
        at=CALL,
        author="alice",
        recording_id=recording_id,
        request_id=None,
        text="The caller asked for a refund.",
        expires_at=expires_at,
    )


def copies(store: Store) -> dict[int, TrainingCopyInfo]:
    return {copy.id: copy for copy in Register(store.catalog).training_copies()}


def sheets(store: Store, recording_id: int) -> dict[int, SummaryInfo]:
    return {sheet.id: sheet for sheet in Register(store.catalog).summaries(recording_id)}


def test_P5_an_expired_training_copy_loses_its_file_and_path(store: Store) -> None:
    expired, expired_path = training_copy(store, "a.wav", SOON)
    kept, kept_path = training_copy(store, "b.wav", LATER)
    forever, forever_path = training_copy(store, "c.wav", None)
    report = store.purger().run(NOW)
    assert report.ok
    assert report.training_copies_destroyed == [expired.id]
    assert report.counts()["training_copies_destroyed"] == 1
    assert report.to_json()["training_copies_destroyed"] == [expired.id]
    assert not expired_path.exists() and kept_path.exists() and forever_path.exists()
    after = copies(store)
    assert after[expired.id].path is None and after[expired.id].destroyed_at == NOW
    assert after[kept.id] == kept and after[forever.id] == forever
    entries = [e for e in store.trail().entries() if e.action == "training_copy.destroyed"]
    assert [e.object for e in entries] == [f"training_copy:{expired.id}"]
    assert entries[0].reason is not None and entries[0].reason.startswith("P5:")
    assert entries[0].detail["file"] == "deleted"
    assert store.trail().verify().ok
    # Nothing left to do on the next run.
    assert store.purger().run(NOW + timedelta(hours=1)).training_copies_destroyed == []


def test_P5_the_rule_cited_comes_from_the_settings(store: Store) -> None:
    copy, _ = training_copy(store, "a.wav", SOON)
    settings = make_settings()
    settings = dataclasses.replace(settings, rules={**settings.rules, "training_copies": "D3"})
    store.purger(settings).run(NOW)
    entry = next(e for e in store.trail().entries() if e.action == "training_copy.destroyed")
    assert entry.object == f"training_copy:{copy.id}"
    assert entry.reason is not None and entry.reason.startswith("D3:")


def test_P5_a_run_killed_after_the_unlink_is_finished_next_time(store: Store) -> None:
    copy, path = training_copy(store, "a.wav", SOON)
    path.unlink()  # what a purge killed between the unlink and the row's update leaves
    report = store.purger().run(NOW)
    assert report.training_copies_destroyed == [copy.id] and report.ok
    entry = next(e for e in store.trail().entries() if e.action == "training_copy.destroyed")
    assert entry.detail["file"] == "missing"
    assert copies(store)[copy.id].path is None


def test_P5_only_this_nodes_copies_and_never_outside_the_storage(
    store: Store, tmp_path: Path
) -> None:
    mine, mine_path = training_copy(store, "a.wav", SOON, node="rec1")
    shared, shared_path = training_copy(store, "b.wav", SOON)
    theirs, theirs_path = training_copy(store, "c.wav", SOON, node="rec2")
    outside, outside_path = training_copy(store, "d.wav", SOON, directory=tmp_path / "elsewhere")
    report = store.purger(node="rec1").run(NOW)
    assert sorted(report.training_copies_destroyed) == [mine.id, shared.id]
    assert not mine_path.exists() and not shared_path.exists()
    assert theirs_path.exists() and copies(store)[theirs.id].destroyed_at is None
    assert outside_path.exists() and copies(store)[outside.id].path == str(outside_path)
    assert any(f"training copy {outside.id}" in error for error in report.errors)


def test_P6_an_expired_summary_sheet_loses_its_text(store: Store) -> None:
    recording_id, _ = store.recording(CALL, settings=make_settings(recordings="2 years"))
    expired = summary(store, recording_id, SOON)
    kept = summary(store, recording_id, LATER)
    forever = summary(store, recording_id, None)
    report = store.purger().run(NOW)
    assert report.summaries_destroyed == [expired.id]
    assert report.counts()["summaries_destroyed"] == 1
    after = sheets(store, recording_id)
    assert after[expired.id].text == "" and after[expired.id].destroyed_at == NOW
    assert after[kept.id] == kept and after[forever.id] == forever
    entries = [e for e in store.trail().entries() if e.action == "summary.destroyed"]
    assert [e.object for e in entries] == [f"summary:{expired.id}"]
    assert entries[0].reason is not None and entries[0].reason.startswith("P6:")
    assert entries[0].detail["recording"] == recording_id
    assert store.trail().verify().ok
    assert store.purger().run(NOW + timedelta(hours=1)).summaries_destroyed == []


def test_P6_a_sheet_outlives_its_recording(store: Store) -> None:
    recording_id, path = store.recording(CALL)  # D1: 8 days
    sheet = summary(store, recording_id, LATER)
    report = store.purger().run(NOW)
    assert [d.recording_id for d in report.destroyed] == [recording_id] and not path.exists()
    assert report.summaries_destroyed == []
    assert sheets(store, recording_id)[sheet.id] == sheet


def test_P5_P6_a_dry_run_changes_nothing(store: Store) -> None:
    recording_id, _ = store.recording(CALL, settings=make_settings(recordings="2 years"))
    copy, path = training_copy(store, "a.wav", SOON)
    sheet = summary(store, recording_id, SOON)
    before = store.trail().entries()
    report = store.purger().run(NOW, dry_run=True)
    assert report.training_copies_destroyed == [copy.id]
    assert report.summaries_destroyed == [sheet.id]
    assert path.exists() and copies(store)[copy.id] == copy
    assert sheets(store, recording_id)[sheet.id] == sheet
    after = store.trail().entries()
    assert [e.action for e in after[len(before) :]] == ["retention.purge"]
    assert after[-1].outcome == "dry_run"
    assert after[-1].detail["training_copies_destroyed"] == 1
    assert after[-1].detail["summaries_destroyed"] == 1


def test_P5_batches_cover_every_expired_copy(store: Store) -> None:
    made = [training_copy(store, f"{i}.wav", SOON)[0].id for i in range(5)]
    report = Purger(
        store.catalog, store.dir, make_settings(), anchor_path=store.anchor, batch=2
    ).run(NOW)
    assert sorted(report.training_copies_destroyed) == made
    assert all(copy.path is None for copy in copies(store).values())


@pytest.mark.parametrize("kind", ["copy", "sheet"])
def test_P5_P6_a_destroyed_row_is_not_destroyed_twice(store: Store, kind: str) -> None:
    recording_id, _ = store.recording(CALL, settings=make_settings(recordings="2 years"))
    if kind == "copy":
        copy, _ = training_copy(store, "a.wav", SOON)
        with write_session(store.catalog) as session:
            session.execute(
                update(TrainingCopy)
                .where(TrainingCopy.id == copy.id)
                .values(path=None, destroyed_at=SOON)
            )
    else:
        sheet = summary(store, recording_id, SOON)
        store.purger().run(NOW)
        assert sheets(store, recording_id)[sheet.id].destroyed_at == NOW
    report = store.purger().run(NOW + timedelta(days=1))
    assert report.training_copies_destroyed == [] and report.summaries_destroyed == []
    assert store.trail().verify().ok
