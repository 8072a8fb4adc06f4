"""What the start-up reconciliation makes of rows a killed service left `recording`.

Found by tests/interop/test_kill_loop.py (issue 20): a SIGKILL right after the caller's BYE,
once the writer process had closed and renamed the file into place but before the catalog
heard of it, left the row `recording` with no `.part` on disk. The start failed the row
("no file left") while the whole file sat at its path: a recording lost to the catalog,
never hashed (X1) and never purged (D1). `catalog verify` reported it as a file whose row
is `failed`.

The row is now written before the file (tests/recording/test_tap_ready.py), with the writer's
first choice of name: a kill before a `-2` the writer took reaches the row leaves both names,
which the reconciliation matches.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from recorder.call.call_log import CallLog
from recorder.recording.repair import describe_published
from storage.audit import default_anchor_path
from storage.models import RecordingState
from storage.repository import AsyncCatalog, Catalog
from storage.verify import verify_catalog

ARRIVED = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
RESTART = datetime(2026, 12, 4, 15, 5, tzinfo=UTC)


def closed_wav(path: Path, frames: int) -> bytes:
    """A file as the writer publishes it: closed by libsndfile, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.random.default_rng(frames).integers(-8000, 8000, (frames, 2)).astype(np.int16)
    sf.write(path, audio, 8000, subtype="PCM_16", format="WAV")
    return path.read_bytes()


def open_row(catalog: Catalog, path: Path, *, consent: str = "accepted") -> int:
    """A call and its recording row as the service writes them when the file is opened."""
    call = catalog.add_call(
        call_id_a=f"a-{path.name}",
        direction="inbound",
        side="external",
        caller_number="+15145550100",
        callee_number="+15145559000",
        arrived_at=ARRIVED,
        policy_record=True,
    )
    catalog.set_consent(call, outcome=consent, method="dtmf-rfc4733", at=ARRIVED, digit=None)
    return catalog.add_recording(
        call, name=path.name, path=str(path), format="pcm16", created_at=ARRIVED
    )


@pytest.fixture
async def call_log(tmp_path: Path) -> CallLog:
    catalog = await AsyncCatalog.open(f"sqlite:///{tmp_path / 'recorder.db'}", migrate=True)
    yield CallLog(catalog)  # type: ignore[misc]
    await catalog.close()


def test_describe_published_reads_a_closed_wav_without_changing_it(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    data = closed_wav(path, 12000)
    found = describe_published(path)
    assert found.frames == 12000 and found.duration_s == pytest.approx(1.5)
    assert found.sha256 == hashlib.sha256(data).hexdigest() and found.size == len(data)
    assert found.format == "pcm16" and path.read_bytes() == data
    (tmp_path / "junk.wav").write_bytes(b"not a wav at all, but long enough" * 4)
    with pytest.raises(ValueError):
        describe_published(tmp_path / "junk.wav")


async def test_a_file_published_before_its_row_was_finalized_is_catalogued_not_failed(
    tmp_path: Path, call_log: CallLog
) -> None:
    storage = tmp_path / "recordings"
    path = storage / "2026" / "12" / "04" / "2026-12-04_1000_ext-pbx-3.wav"
    data = closed_wav(path, 16000)
    recording = await call_log.catalog.run(lambda c: open_row(c, path))
    counts = await call_log.reconcile_after_crash([], RESTART)
    assert counts["published"] == 1 and counts["failed"] == 0
    row = await call_log.catalog.get_recording(recording)
    assert row is not None and row.state is RecordingState.INTERRUPTED
    assert row.path == str(path) and row.sha256 == hashlib.sha256(data).hexdigest()
    assert row.size == len(data) and row.duration == pytest.approx(2.0)
    assert path.read_bytes() == data
    report = await call_log.catalog.run(
        lambda c: verify_catalog(
            c,
            storage,
            anchor_path=default_anchor_path(storage),
            service_started=RESTART,
            now=RESTART,
        )
    )
    assert report.ok, [p.line() for p in report.problems]


async def test_a_row_whose_file_never_reached_the_disk_still_fails(
    tmp_path: Path, call_log: CallLog
) -> None:
    path = tmp_path / "recordings" / "never.wav"
    recording = await call_log.catalog.run(lambda c: open_row(c, path))
    counts = await call_log.reconcile_after_crash([], RESTART)
    assert counts["failed"] == 1 and counts["published"] == 0
    row = await call_log.catalog.get_recording(recording)
    assert row is not None and row.state is RecordingState.FAILED


async def test_a_refused_calls_file_left_by_a_crash_is_destroyed_at_restart(
    tmp_path: Path, call_log: CallLog
) -> None:
    """C5: refused during the call (the agent's code), killed before the file was deleted."""
    storage = tmp_path / "recordings"
    published = storage / "2026" / "12" / "04" / "refused.wav"
    closed_wav(published, 8000)
    repaired = storage / "2026" / "12" / "04" / "refused-part.wav"
    repaired_data = closed_wav(repaired, 4000)
    first = await call_log.catalog.run(lambda c: open_row(c, published, consent="refused"))
    second = await call_log.catalog.run(lambda c: open_row(c, repaired, consent="refused"))
    item = {
        "final": str(repaired),
        "path": str(repaired),
        "name": repaired.name,
        "sha256": hashlib.sha256(repaired_data).hexdigest(),
        "size": len(repaired_data),
        "duration": 0.5,
    }
    counts = await call_log.reconcile_after_crash([item], RESTART)
    assert counts["refused"] == 2 and counts["interrupted"] == 0
    assert not published.exists() and not repaired.exists()
    for recording in (first, second):
        row = await call_log.catalog.get_recording(recording)
        assert row is not None and row.path is None and row.destroyed_at == RESTART
        assert row.destroy_reason is not None and "C5" in row.destroy_reason


def repaired_item(path: Path, data: bytes) -> dict[str, object]:
    return {
        "final": str(path),
        "path": str(path),
        "name": path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "duration": 0.5,
    }


async def test_a_part_named_with_a_suffix_the_row_never_heard_of_is_matched_to_it(
    tmp_path: Path, call_log: CallLog
) -> None:
    """The row is written before the file, with the writer's first choice of name; a kill
    before the writer's `-2` reached the row leaves the row and the file with two names."""
    day = tmp_path / "recordings" / "2026" / "12" / "04"
    first = day / "2026-12-04_1000_ext-pbx.wav"
    earlier = closed_wav(first, 800)
    done = await call_log.catalog.run(lambda c: open_row(c, first))
    await call_log.catalog.finalize_recording(
        done,
        at=ARRIVED,
        sha256=hashlib.sha256(earlier).hexdigest(),
        size=len(earlier),
        duration=0.1,
    )
    second, third = day / "2026-12-04_1000_ext-pbx-2.wav", day / "2026-12-04_1000_ext-pbx-3.wav"
    a = await call_log.catalog.run(lambda c: open_row(c, first))  # both still say `first`
    b = await call_log.catalog.run(lambda c: open_row(c, first))
    items = [
        repaired_item(third, closed_wav(third, 400)),
        repaired_item(second, closed_wav(second, 200)),
    ]
    counts = await call_log.reconcile_after_crash(items, RESTART)
    assert counts == {
        "interrupted": 2,
        "failed": 0,
        "uncatalogued": 0,
        "published": 0,
        "refused": 0,
    }
    paths = {}
    for recording in (done, a, b):
        row = await call_log.catalog.get_recording(recording)
        assert row is not None
        paths[recording] = (row.state, row.path)
    assert paths == {
        done: (RecordingState.COMPLETE, str(first)),
        a: (RecordingState.INTERRUPTED, str(second)),
        b: (RecordingState.INTERRUPTED, str(third)),
    }


async def test_a_failed_row_of_the_same_name_does_not_keep_a_published_file_from_its_own(
    tmp_path: Path, call_log: CallLog
) -> None:
    """An earlier call of the same minute, killed before its file was made, failed with the
    name (its row is written first now); the next call took the name, was finalized by its
    writer and killed before the catalog heard of it. (The kill loop caught a first version
    of this fix that took the failed row's name for a claim.)"""
    path = tmp_path / "recordings" / "2026" / "12" / "04" / "2026-12-04_1513_ext-pbx.wav"
    earlier = await call_log.catalog.run(lambda c: open_row(c, path))
    await call_log.catalog.fail_recording(earlier, at=ARRIVED, reason="service stopped")
    data = closed_wav(path, 800)
    later = await call_log.catalog.run(lambda c: open_row(c, path))
    counts = await call_log.reconcile_after_crash([], RESTART)
    assert counts["published"] == 1 and counts["failed"] == 0
    row = await call_log.catalog.get_recording(later)
    assert row is not None and row.state is RecordingState.INTERRUPTED
    assert row.sha256 == hashlib.sha256(data).hexdigest()


async def test_two_rows_of_one_name_take_a_published_file_and_a_repaired_one_in_order(
    tmp_path: Path, call_log: CallLog
) -> None:
    day = tmp_path / "recordings" / "2026" / "12" / "04"
    first, second = day / "2026-12-04_1000_ext-pbx.wav", day / "2026-12-04_1000_ext-pbx-2.wav"
    a = await call_log.catalog.run(lambda c: open_row(c, first))
    b = await call_log.catalog.run(lambda c: open_row(c, first))
    published = closed_wav(first, 800)
    items = [repaired_item(second, closed_wav(second, 400))]
    counts = await call_log.reconcile_after_crash(items, RESTART)
    assert counts["interrupted"] == 2 and counts["published"] == 1
    row_a, row_b = [await call_log.catalog.get_recording(r) for r in (a, b)]
    assert row_a is not None and row_a.path == str(first)
    assert row_a.sha256 == hashlib.sha256(published).hexdigest()
    assert row_b is not None and row_b.path == str(second)


async def test_a_restarting_node_leaves_another_nodes_recordings_in_progress_alone(
    tmp_path: Path, call_log: CallLog
) -> None:
    """Issue 19: node n2 restarts while n1 records a call on the same catalog. n1's row is
    `recording` with no file n2 could find (n1 writes it under storage.dir/n1/): n2 must not
    fail it, or n1's recording would end up failed while its file is made."""
    storage = tmp_path / "recordings"
    theirs = await call_log.catalog.run(lambda c: open_row(c, storage / "n1" / "live.wav"))
    ours = await call_log.catalog.run(lambda c: open_row(c, storage / "n2" / "lost.wav"))
    await call_log.catalog.update_recording(theirs, node="n1")
    await call_log.catalog.update_recording(ours, node="n2")
    node2 = CallLog(call_log.catalog, node="n2")
    counts = await node2.reconcile_after_crash([], RESTART)
    assert counts["failed"] == 1
    live = await call_log.catalog.get_recording(theirs)
    lost = await call_log.catalog.get_recording(ours)
    assert live is not None and live.state is RecordingState.RECORDING
    assert lost is not None and lost.state is RecordingState.FAILED
