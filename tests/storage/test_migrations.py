"""The Alembic history builds exactly the models' schema, on SQLite and as PostgreSQL DDL."""

from __future__ import annotations

import io

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from storage.db import alembic_config, current_revision, head_revision, make_engine, upgrade
from storage.models import Base


def schema_diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_migrated_schema_equals_the_models(db_url: str) -> None:
    upgrade(db_url)
    assert schema_diff(db_url) == []


def test_an_empty_database_differs_from_the_models(db_url: str) -> None:
    # Guards the test above: the comparison does see missing tables.
    assert schema_diff(db_url) != []


def test_upgrade_is_idempotent_and_records_the_head(db_url: str) -> None:
    upgrade(db_url)
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision() == "0005"
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"calls", "recordings", "call_events", "alembic_version"} <= tables


def test_downgrade_to_base_and_back(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        assert current_revision(engine) is None
    finally:
        engine.dispose()
    upgrade(db_url)
    assert schema_diff(db_url) == []


def test_a_failing_migration_leaves_nothing_behind(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite DDL runs in one transaction: a revision that dies half-way rolls back."""
    from alembic.operations import Operations

    created: list[str] = []
    real_create_index = Operations.create_index

    def failing_create_index(self: Operations, *args: object, **kwargs: object) -> object:
        created.append(str(args[0]))
        if len(created) == 3:
            raise RuntimeError("disk on fire")
        return real_create_index(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Operations, "create_index", failing_create_index)
    with pytest.raises(RuntimeError, match="disk on fire"):
        upgrade(db_url)
    engine = make_engine(db_url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_postgresql_ddl_is_generated_offline() -> None:
    """No PostgreSQL here: at least the migrations must render for it, with timestamptz."""
    buffer = io.StringIO()
    config = alembic_config(url="postgresql://recorder@localhost/recorder")
    config.output_buffer = buffer
    command.upgrade(config, "head", sql=True)
    ddl = buffer.getvalue()
    assert "CREATE TABLE calls" in ddl and "CREATE TABLE recordings" in ddl
    assert "arrived_at TIMESTAMP WITH TIME ZONE NOT NULL" in ddl
    assert "id BIGSERIAL NOT NULL" in ddl  # call_events
    assert "CHECK (state IN ('recording', 'complete', 'interrupted', 'failed', 'destroyed'))" in ddl
    assert "pg_advisory" not in ddl  # the lock is for online runs only
