"""Several nodes on one PostgreSQL catalog and one storage root (issue 19): the purge.

Every node runs the purge (and an admin may run `recorder purge` beside a node's own hourly
run). Runs racing over one catalog must take each item exactly once: every expired recording
destroyed once, with one `recording.destroyed` entry; every call's numbers erased once; no
integrity failure made up because another run deleted the file first; one audit chain that
verifies against the one anchor file they share. A node only destroys files of its own
(`recordings.node`) or of no node (made before node names). A hold placed from one node's
command line stops every node's purge at once, since holds live in the shared catalog.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from recorder.cli.retention import add_retention_commands
from storage.audit import AuditTrail, default_anchor_path
from storage.models import Recording, RecordingState
from storage.repository import Catalog, read_session, write_session
from storage.retention import Purger, PurgeReport
from tests.retention.conftest import local, make_settings
from tests.retention.test_cli import CONFIG

ARRIVED = local(2025, 10, 1, 10, 0)  # past D1 (8 days) and D2 (12 months) at NOW
NOW = local(2026, 12, 6, 9, 0)
NODES = ("n1", "n2")


@pytest.fixture
def catalog(pg_catalog_url: str) -> Iterator[Catalog]:
    opened = Catalog.open(pg_catalog_url, migrate=True)
    try:
        yield opened
    finally:
        opened.close()


def recording(catalog: Catalog, root: Path, node: str | None, index: int) -> tuple[int, Path]:
    """A finalized recording of `node` (None: made before node names) in its directory."""
    call = catalog.add_call(
        call_id_a=f"call-{node}-{index}",
        direction="inbound",
        side="external",
        caller_number="+15145550100",
        callee_number="+15145559000",
        arrived_at=ARRIVED,
        agent="4711",
        extension="235",
    )
    day = (root / node if node else root) / "2025" / "10" / "01"
    day.mkdir(parents=True, exist_ok=True)
    path = day / f"rec-{call}.wav"
    data = f"RIFF{call}".encode() * 200
    path.write_bytes(data)
    row = catalog.add_recording(
        call, name=path.name, path=str(path), format="pcm16", created_at=ARRIVED, node=node
    )
    catalog.finalize_recording(
        row,
        at=ARRIVED,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        duration=1.0,
        expires_at=make_settings().expiry("recordings", ARRIVED),
    )
    return row, path


def race(url: str, root: Path, nodes: list[str]) -> list[PurgeReport]:
    """One purge per entry of `nodes`, each on its own connection, started together."""
    barrier = threading.Barrier(len(nodes))
    reports: list[PurgeReport | None] = [None] * len(nodes)
    errors: list[BaseException] = []

    def run(index: int, node: str) -> None:
        catalog = Catalog.open(url, create=False)
        try:
            purger = Purger(
                catalog,
                root,
                make_settings(),
                node=node,
                actor=f"service@{node}",
                anchor_path=default_anchor_path(root),
                batch=4,  # many small transactions: many chances to interleave
            )
            barrier.wait(timeout=30)
            reports[index] = purger.run(NOW)
        except BaseException as exc:  # handed to the test thread, which fails with it
            errors.append(exc)
        finally:
            catalog.close()

    threads = [threading.Thread(target=run, args=(i, n)) for i, n in enumerate(nodes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert all(report is not None for report in reports)
    return [report for report in reports if report is not None]


def test_racing_purges_on_two_nodes_take_every_item_exactly_once(
    catalog: Catalog, pg_catalog_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "recordings"
    owners: dict[int, str | None] = {}
    paths: list[Path] = []
    for node in (*NODES, None):
        for index in range(12):
            row, path = recording(catalog, root, node, index)
            owners[row] = node
            paths.append(path)
    calls = len(owners)

    # Each node's hourly run and an admin's `recorder purge` on each node, all at once.
    reports = race(pg_catalog_url, root, ["n1", "n2", "n1", "n2"])

    destroyed = Counter(d.recording_id for r in reports for d in r.destroyed)
    destroyed.update(rid for r in reports for rid in r.resumed)
    assert sorted(destroyed) == sorted(owners) and set(destroyed.values()) == {1}
    for report, node in zip(reports, ["n1", "n2", "n1", "n2"], strict=True):
        assert report.ok, report.to_json()  # no made-up integrity failure, no error
        mine = {d.recording_id for d in report.destroyed}
        assert all(owners[rid] in (None, node) for rid in mine), (node, mine)
    assert not any(path.exists() for path in paths)
    assert sum(r.numbers_erased for r in reports) == calls

    trail = AuditTrail(catalog, default_anchor_path(root))
    entries = trail.entries()
    gone = Counter(e.object for e in entries if e.action == "recording.destroyed")
    assert gone == Counter(f"recording:{rid}" for rid in owners)
    erased = [e for e in entries if e.action == "calls.numbers_erased"]
    assert sum(int(e.detail["count"]) for e in erased) == calls
    assert not [e for e in entries if e.action == "recording.integrity_failure"]
    assert [e.actor for e in entries if e.action == "retention.purge"].count("service@n1") == 2
    verified = trail.verify()
    assert verified.ok, verified.to_json()
    assert verified.anchors_checked > 0

    again = race(pg_catalog_url, root, ["n1", "n2"])
    assert all(not r.destroyed and not r.resumed and not r.numbers_erased for r in again)


def test_a_row_another_run_holds_for_a_moment_is_still_finished(
    catalog: Catalog, pg_catalog_url: str, tmp_path: Path
) -> None:
    """The race CI met (2026-12-06): run A marks a row `destroying` and deletes its file;
    run B, which read the row as due before that, locks it, sees `destroying` and lets go.
    A's SKIP LOCKED must not skip it for good while B holds it, or no run finishes it."""
    root = tmp_path / "recordings"
    rows = sorted(recording(catalog, root, "n1", i)[0] for i in range(3))
    locked, release = threading.Event(), threading.Event()

    def run_b(ids: list[int]) -> None:
        other = Catalog.open(pg_catalog_url, create=False)
        try:
            with write_session(other) as session:
                session.scalars(
                    select(Recording).where(Recording.id.in_(ids)).with_for_update()
                ).all()
                locked.set()
                release.wait(10)
        finally:
            other.close()

    threads: list[threading.Thread] = []

    class RaceA(Purger):
        def _finish(
            self, ids: Sequence[int], now: datetime, report: PurgeReport, *, resumed: bool
        ) -> list[int]:
            if ids and not threads:  # the first time A finishes: B holds a row for 100 ms
                threads.append(threading.Thread(target=run_b, args=([ids[0]],)))
                threads[0].start()
                assert locked.wait(10)
                threads.append(threading.Timer(0.1, release.set))
                threads[1].start()
            return super()._finish(ids, now, report, resumed=resumed)

    purger = RaceA(
        catalog,
        root,
        make_settings(),
        node="n1",
        actor="service@n1",
        anchor_path=default_anchor_path(root),
        batch=4,
    )
    report = purger.run(NOW)
    for thread in threads:
        thread.join(10)
    assert sorted(d.recording_id for d in report.destroyed) == rows
    with read_session(catalog) as session:
        states = set(session.scalars(select(Recording.state).where(Recording.id.in_(rows))))
    assert states == {RecordingState.DESTROYED}


def test_a_node_leaves_the_other_nodes_recordings_alone(
    catalog: Catalog, pg_catalog_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "recordings"
    ours = [recording(catalog, root, "n1", i) for i in range(3)]
    theirs = [recording(catalog, root, "n2", i) for i in range(3)]
    (report,) = race(pg_catalog_url, root, ["n1"])
    assert sorted(d.recording_id for d in report.destroyed) == sorted(r for r, _ in ours)
    assert all(path.exists() for _, path in theirs)
    (report,) = race(pg_catalog_url, root, ["n2"])
    assert sorted(d.recording_id for d in report.destroyed) == sorted(r for r, _ in theirs)


class NodeCli:
    """`recorder <command>` as run on one node: its own policy file, the shared catalog and
    storage root."""

    def __init__(
        self, tmp: Path, node: str, database: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        text = CONFIG.format(dir=tmp, database=database, holds="true")
        self.config = tmp / f"{node}.toml"
        self.config.write_text(text.replace("[service]\n", f'[service]\nnode = "{node}"\n', 1))
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, dict[str, Any]]:
        parser = argparse.ArgumentParser(prog="recorder")
        add_retention_commands(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args([*argv, "--json", "--config", str(self.config)])
        code: int = args.handler(args)
        out = self.capsys.readouterr().out
        return code, json.loads(out) if out.strip() else {}


def test_a_hold_placed_on_one_node_stops_the_other_nodes_purge(
    catalog: Catalog, pg_catalog_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "recordings"
    held, held_path = recording(catalog, root, "n2", 0)
    free, free_path = recording(catalog, root, "n2", 1)
    node1 = NodeCli(tmp_path, "n1", pg_catalog_url, capsys)
    node2 = NodeCli(tmp_path, "n2", pg_catalog_url, capsys)
    # Within its retention when the hold is placed (real time), expired when the purge runs.
    catalog.update_recording(held, expires_at=datetime(2099, 1, 1, tzinfo=ARRIVED.tzinfo))
    code, _ = node1("hold", "add", str(held), "--reason", "complaint 114")
    assert code == 0
    catalog.update_recording(held, expires_at=local(2025, 10, 9))

    code, report = node2("purge", "--now", NOW.isoformat())
    assert code == 0
    assert report["held"] == [held]
    assert [d["recording_id"] for d in report["destroyed"]] == [free]
    assert held_path.exists() and not free_path.exists()
    # Node 1 sees node 2's destruction at once: one catalog, one trail.
    code, verified = node1("audit", "verify")
    assert code == 0 and verified["ok"] is True

    code, _ = node1("hold", "release", str(held), "--reason", "settled")
    assert code == 0
    code, report = node2("purge", "--now", NOW.isoformat())
    assert code == 0
    assert [d["recording_id"] for d in report["destroyed"]] == [held]
    assert not held_path.exists()
