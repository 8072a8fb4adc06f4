"""Fixtures for retention: a migrated catalog, a recordings directory, policies, recordings."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from recorder.cli.retention import settings_from_policy
from recorder.policy import Policy, parse_policy
from storage.audit import AuditTrail, default_anchor_path
from storage.repository import Catalog
from storage.retention import Purger, RetentionSettings

MONTREAL = ZoneInfo("America/Montreal")

# OPC (D1, D2, A5) with holds allowed unless a test says otherwise.
POLICY = """
[policy]
name = "TEST"

[service]
timezone = "America/Montreal"

[recording]
directions = ["inbound"]
extensions = "all"
mode = "automatic"

[notice]
play = false

{sampling}

[retention]
fiscal_year_end = "03-31"
holds = {holds}
recordings = "{recordings}"
call_log_numbers = {{ period = "12 months", rule = "D2" }}
access_trace = {{ period = "3 months", after = "fiscal_year_end" }}
{extra}
"""


def make_policy(
    *,
    holds: bool = True,
    recordings: str = "8 days",
    sampling: str = "",
    extra: str = "",
) -> Policy:
    text = POLICY.format(
        holds=str(holds).lower(), recordings=recordings, sampling=sampling, extra=extra
    )
    return parse_policy(text, Path("test-policy.toml"))


def make_settings(**kwargs: object) -> RetentionSettings:
    return settings_from_policy(make_policy(**kwargs))  # type: ignore[arg-type]


def local(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    """A wall-clock time in Montreal."""
    return datetime(year, month, day, hour, minute, second, tzinfo=MONTREAL)


@dataclass
class Store:
    catalog: Catalog
    dir: Path

    @property
    def anchor(self) -> Path:
        return default_anchor_path(self.dir)

    def trail(self) -> AuditTrail:
        return AuditTrail(self.catalog, self.anchor)

    def recording(
        self,
        arrived: datetime,
        *,
        settings: RetentionSettings | None = None,
        agent: str = "4711",
        caller: str = "+15145550100",
        callee: str = "+15145559000",
        content: bytes | None = None,
        finalize: bool = True,
    ) -> tuple[int, Path]:
        """A call and its finalized recording, the file on disk, expiry as the service sets it."""
        call_id = self.catalog.add_call(
            call_id_a=f"a-{arrived.timestamp()}-{agent}-{id(content)}",
            direction="inbound",
            side="external",
            caller_number=caller,
            callee_number=callee,
            arrived_at=arrived,
            agent=agent,
            extension="235",
        )
        day = self.dir / arrived.astimezone(MONTREAL).strftime("%Y/%m/%d")
        day.mkdir(parents=True, exist_ok=True)
        data = content if content is not None else f"RIFF{call_id}".encode() * 100
        recording_id = self.catalog.add_recording(
            call_id,
            name=f"rec-{call_id}.wav",
            path=str(day / f"rec-{call_id}.wav"),
            format="pcm16",
            created_at=arrived,
        )
        path = day / f"rec-{call_id}.wav"
        path.write_bytes(data)
        if finalize:
            expires = (settings or make_settings()).expiry("recordings", arrived)
            self.catalog.finalize_recording(
                recording_id,
                at=arrived,
                sha256=hashlib.sha256(data).hexdigest(),
                size=len(data),
                duration=1.0,
                expires_at=expires,
            )
        return recording_id, path

    def purger(self, settings: RetentionSettings | None = None, **kwargs: object) -> Purger:
        return Purger(
            self.catalog,
            self.dir,
            settings or make_settings(),
            anchor_path=self.anchor,
            **kwargs,  # type: ignore[arg-type]
        )


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


@pytest.fixture
def store(catalog: Catalog, tmp_path: Path) -> Store:
    directory = tmp_path / "recordings"
    directory.mkdir()
    return Store(catalog, directory)
