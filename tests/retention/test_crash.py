"""A purge SIGKILLed at random points, 50 times, in a real child process.

After each kill: no file without a row, no row outside `destroying` pointing to a file the
purge deleted, and a second purge ends in exactly the state of an uninterrupted run, with an
audit trail that verifies.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.models import RecordingState
from storage.repository import Catalog
from storage.retention import Purger
from tests.pg import PgServer
from tests.retention.conftest import Store
from tests.retention.scenarios import NOW, SCENARIOS, populate

ROOT = Path(__file__).resolve().parents[2]
RUNS = 50
LIVE = (RecordingState.COMPLETE, RecordingState.INTERRUPTED)

Final = dict[int, tuple[RecordingState, str | None]]


class Workdir:
    """One scenario's catalog and files, always at the same path (rows hold absolute paths).

    On SQLite the catalog is a file in the directory and is copied with it; on PostgreSQL
    (`pg` given) each reset is a new database copied from the populated one (a template).
    """

    def __init__(self, base: Path, scenario: str, pg: PgServer | None = None) -> None:
        self.scenario = scenario
        self.pg = pg
        self.run = base / f"run-{scenario}"
        self.template = base / f"template-{scenario}"
        self.databases: list[str] = []
        if pg is None:
            self.url = f"sqlite:///{self.run / 'recorder.db'}"
        else:
            self.template_db = self._database()
            self.url = pg.database_url(self.template_db)
        self.storage = self.run / "recordings"
        self.storage.mkdir(parents=True)
        catalog = Catalog.open(self.url, migrate=True)
        try:
            self.missing = populate(Store(catalog, self.storage), scenario)
        finally:
            catalog.close()
        shutil.copytree(self.run, self.template)
        if pg is not None:
            self.reset()

    def _database(self, template: str | None = None) -> str:
        assert self.pg is not None
        name = self.pg.create_database(template)
        self.databases.append(name)
        return name

    def reset(self) -> None:
        shutil.rmtree(self.run)
        shutil.copytree(self.template, self.run)
        if self.pg is not None:
            if self.url != self.pg.database_url(self.template_db):
                self.pg.drop_database(self.url.rsplit("/", 1)[1])
            self.url = self.pg.database_url(self._database(self.template_db))

    def drop(self) -> None:
        if self.pg is not None:
            for name in self.databases:
                self.pg.drop_database(name)

    def child(self, kill_at: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.retention.purge_child",
                self.url,
                str(self.storage),
                self.scenario,
                NOW.isoformat(),
                str(kill_at),
            ],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def finish(self) -> Final:
        """The second purge, with the same draw seed, then the resulting catalog state."""
        settings, seed = SCENARIOS[self.scenario]
        catalog = Catalog.open(self.url, create=False)
        try:
            store = Store(catalog, self.storage)
            Purger(catalog, self.storage, settings(), seed=seed).run(NOW)
            report = store.trail().verify()
            assert report.ok, report.problems
            return {r.id: (r.state, r.path) for r in catalog.list_recordings()}
        finally:
            catalog.close()

    def check_invariants(self) -> None:
        catalog = Catalog.open(self.url, create=False)
        try:
            rows = catalog.list_recordings()
        finally:
            catalog.close()
        files = {str(p) for p in self.storage.rglob("*.wav")}
        by_path = {r.path: r for r in rows if r.path is not None}
        for path in files:
            row = by_path.get(path)
            assert row is not None, f"orphan file {path}"
            assert row.state in (*LIVE, RecordingState.DESTROYING), (path, row.state)
        for row in rows:
            if row.state in LIVE and row.id not in self.missing:
                assert row.path in files, f"recording {row.id} points to a deleted file"
            if row.state is RecordingState.DESTROYED:
                assert row.path is None


@pytest.fixture
def workdirs(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, Workdir]]:
    base = tmp_path_factory.mktemp("crash")
    pg = request.getfixturevalue("pg_server") if backend == "postgresql" else None
    made: dict[str, Workdir] = {}
    try:
        for name in SCENARIOS:
            made[name] = Workdir(base, name, pg)
        yield made
    finally:
        for workdir in made.values():
            workdir.drop()


def test_purge_killed_at_random_points_recovers(workdirs: dict[str, Workdir]) -> None:
    steps: dict[str, int] = {}
    reference: dict[str, Final] = {}
    for name, workdir in workdirs.items():
        done = workdir.child(0)
        assert done.returncode == 0, done.stderr
        steps[name] = int(done.stdout.strip())
        assert steps[name] > 20  # the scenario exercises every kind of step
        workdir.check_invariants()
        reference[name] = workdir.finish()
        states = {state for state, _ in reference[name].values()}
        assert RecordingState.DESTROYED in states and RecordingState.COMPLETE in states

    rng = random.Random(20261120)
    killed_at: list[tuple[str, int]] = []
    for run in range(RUNS):
        name = list(workdirs)[run % len(workdirs)]
        workdir = workdirs[name]
        workdir.reset()
        kill_at = rng.randint(1, steps[name])
        done = workdir.child(kill_at)
        assert done.returncode == -signal.SIGKILL, (name, kill_at, done.stderr)
        killed_at.append((name, kill_at))
        workdir.check_invariants()
        assert workdir.finish() == reference[name], (name, kill_at)
        workdir.check_invariants()
    # The kills did land all over the run, not in one corner of it.
    for name in workdirs:
        points = sorted(k for n, k in killed_at if n == name)
        assert points[0] <= steps[name] // 4 and points[-1] >= 3 * steps[name] // 4
