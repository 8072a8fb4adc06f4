"""Engine and session setup for the catalog: SQLite (WAL) by default, PostgreSQL by URL.

Everything here is portable SQL: SQLite-only behaviour (pragmas, BEGIN IMMEDIATE,
file creation) is confined to connection hooks that only run for the sqlite dialect.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Execution option asking for a write transaction from the start (see _sqlite_hooks).
IMMEDIATE = "recorder_sqlite_immediate"

# The catalog holds phone numbers (N3): neither the file nor its directory is world-readable.
_DIR_MODE = 0o750
_FILE_MODE = 0o640


class CatalogMissing(Exception):
    """The SQLite file named by the URL does not exist and we were asked not to create it."""


def _sqlite_file(url: URL) -> Path | None:
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def _make_dirs(directory: Path) -> None:
    """Create missing directories as 0750 whatever the umask; leave existing ones alone."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=_DIR_MODE)
        except FileExistsError:
            continue  # another process (a second node, the CLI) raced us
        os.chmod(path, _DIR_MODE)


def _prepare_sqlite_file(path: Path, create: bool) -> None:
    if path.exists():
        return
    if not create:
        raise CatalogMissing(f"no catalog at {path}")
    _make_dirs(path.parent)
    # Created here so that SQLite (and its -wal/-shm files, which copy the database file's
    # mode) never makes it with the umask's default 0644.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, _FILE_MODE)
    os.close(fd)
    os.chmod(path, _FILE_MODE)


def _sqlite_hooks(engine: Engine, in_memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite, which otherwise issues BEGIN lazily and
        # never before DDL: migrations would not be atomic (SQLAlchemy's documented recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            # The CLI and a purge may read or write while the service writes.
            cursor.execute("PRAGMA busy_timeout=10000")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                # FULL: a committed catalog row survives a power cut; the catalog is the legal
                # record of what exists on disk, and its writes are few and off the event loop.
                cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A deferred transaction that reads then writes fails at once with SQLITE_BUSY when
        # another connection wrote in between (busy_timeout does not apply); writers ask for
        # the write lock up front instead.
        immediate = connection.get_execution_options().get(IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str | URL, *, create: bool = True, echo: bool = False) -> Engine:
    """An engine for the catalog URL; for a SQLite file, creates it (0640, directory 0750).

    With `create=False` a missing SQLite file raises `CatalogMissing` rather than appearing
    empty, so that a reading command pointed at the wrong file says so.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # pool_pre_ping: a PostgreSQL restart must not make the next catalog write fail.
        return create_engine(parsed, echo=echo, pool_pre_ping=True)
    path = _sqlite_file(parsed)
    if path is not None:
        _prepare_sqlite_file(path, create)
        engine = create_engine(parsed, echo=echo)
    else:
        # One shared connection, or every connection would see its own empty memory database.
        engine = create_engine(
            parsed,
            echo=echo,
            poolclass=StaticPool,
            connect_args={"check_same_thread": False},
        )
    _sqlite_hooks(engine, in_memory=path is None)
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: rows are copied into frozen snapshots right after commit, and a
    # reload per attribute would be a query per field.
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Any:
    """Alembic configuration built in code: no alembic.ini is installed or needed."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def upgrade_engine(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to `revision` on `engine`, in one transaction."""
    from alembic import command

    # One outer transaction: alembic then runs inside it instead of per statement, so that a
    # migration interrupted half-way leaves the previous schema (SQLite has transactional DDL
    # once pysqlite stops committing behind our back, see _sqlite_hooks).
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Bring the catalog at `url` to the latest schema; called once at service start.

    Safe to run from several nodes at once against one PostgreSQL catalog: the migration
    environment takes an advisory lock (see migrations/env.py).
    """
    engine = make_engine(url, create=True)
    try:
        upgrade_engine(engine, revision)
    finally:
        engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The schema revision stored in the database, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        revision: str | None = MigrationContext.configure(connection).get_current_revision()
        return revision


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migration revision under {MIGRATIONS_DIR}")
    return head
