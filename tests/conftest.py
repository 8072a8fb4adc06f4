"""Fixtures shared by every test directory: the catalog backends.

`backend` is "sqlite" or "postgresql". Tests that take it (directly, or through a fixture such
as tests/storage's and tests/retention's `db_url`) run once per backend; a test marked
`@pytest.mark.sqlite_only(reason=...)` runs on SQLite alone (file modes, WAL, the file in the
inventory...). PostgreSQL is a throwaway server started once per session (tests/pg.py) with a
fresh database per test. Without PostgreSQL installed its tests skip locally and fail under
CI (``CI=true``), where scripts/install-test-deps.sh must have installed it, as the interop
peers do (tests/interop/conftest.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from storage.db import upgrade
from tests.pg import PgServer, PgUnavailable

BACKENDS = ("sqlite", "postgresql")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("sqlite_only")
    if marker is not None and not marker.kwargs.get("reason"):
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: sqlite_only needs a reason=")
    backends = ["sqlite"] if marker is not None else list(BACKENDS)
    metafunc.parametrize("backend", backends, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The catalog backend of this test run (SQLite where a test is not parametrized)."""
    return str(getattr(request, "param", "sqlite"))


def start_pg_server() -> PgServer:
    """A new throwaway PostgreSQL server; skips the test where there is none (fails in CI)."""
    try:
        return PgServer.start()
    except PgUnavailable as exc:
        if _in_ci():
            pytest.fail(f"PostgreSQL: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL: {exc}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server for the whole session, started at the first test that needs it."""
    server = start_pg_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """The URL of a new, empty database of its own, dropped after the test."""
    name = pg_server.create_database()
    try:
        yield pg_server.database_url(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture(scope="session")
def pg_catalog_template(pg_server: PgServer) -> str:
    """A database migrated to the head revision once per session, for pg_catalog_url."""
    name = pg_server.create_database()
    upgrade(pg_server.database_url(name))  # disposes its engine: a template has no session
    return name


@pytest.fixture
def pg_catalog_url(pg_server: PgServer, pg_catalog_template: str) -> Iterator[str]:
    """A database of its own already at the head revision: what `Catalog.open(url,
    migrate=True)` makes of an empty one, copied instead of migrated (a migration is most
    of a PostgreSQL test's setup; tests/storage/test_migrations.py migrates empty ones)."""
    name = pg_server.create_database(template=pg_catalog_template)
    try:
        yield pg_server.database_url(name)
    finally:
        pg_server.drop_database(name)
