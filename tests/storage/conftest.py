from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage.repository import Catalog

T0 = datetime(2026, 11, 23, 15, 42, tzinfo=UTC)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'var' / 'recorder.db'}"


@pytest.fixture
def catalog(db_url: str) -> Iterator[Catalog]:
    opened = Catalog.open(db_url, migrate=True)
    try:
        yield opened
    finally:
        opened.close()
