from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage.repository import Catalog

T0 = datetime(2026, 11, 23, 15, 42, tzinfo=UTC)


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty catalog, on each backend in turn (tests/conftest.py): a SQLite file that does
    not exist yet, or a database of its own on the session's PostgreSQL server (for a test
    that opens `catalog` too, one already migrated: `catalog` then finds it at the head)."""
    if backend == "postgresql":
        wanted = "pg_catalog_url" if "catalog" in request.fixturenames else "pg_url"
        return str(request.getfixturevalue(wanted))
    return f"sqlite:///{tmp_path / 'var' / 'recorder.db'}"


@pytest.fixture
def catalog(db_url: str) -> Iterator[Catalog]:
    opened = Catalog.open(db_url, migrate=True)
    try:
        yield opened
    finally:
        opened.close()
