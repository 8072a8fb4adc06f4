"""The console's account rows (A12, X3): one per person, hashes only, the throttle's counters."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta

import pytest
from alembic import command
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from storage.accounts import AccountExists, AccountInfo, Accounts
from storage.audit import AuditTrail, append
from storage.db import alembic_config, current_revision, head_revision, make_engine, upgrade
from storage.models import ConsoleAccount
from storage.repository import Catalog, InvalidState, NotFound, write_session
from tests.storage.conftest import T0

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
OTHER = "$argon2id$v=19$m=65536,t=3,p=4$b3RoZXJzYWx0$b3RoZXJoYXNob3RoZXJoYQ"


@pytest.fixture
def accounts(catalog: Catalog) -> Accounts:
    return Accounts(catalog)


def test_A12_create_get_and_list(accounts: Accounts) -> None:
    made = accounts.create("ann", HASH, T0, "root")
    assert isinstance(made, AccountInfo)
    assert (made.person, made.created_by, made.created_at) == ("ann", "root", T0)
    assert made.password_changed_at == T0 and made.failed_logins == 0
    assert made.locked_until is None and made.last_login_at is None and made.disabled_at is None
    assert accounts.get("ann") == made
    assert accounts.get("bob") is None
    accounts.create("bob", OTHER, T0 + timedelta(minutes=1), "root")
    assert [a.person for a in accounts.list()] == ["ann", "bob"]
    assert accounts.hash_of("ann") == HASH and accounts.hash_of("carl") is None


def test_X3_the_hash_is_in_neither_json_nor_repr(accounts: Accounts) -> None:
    made = accounts.create("ann", HASH, T0, "root")
    assert HASH not in repr(made) and HASH not in str(made.to_json())
    assert "password_hash" not in made.to_json()
    assert made.to_json()["created_at"] == T0.isoformat()


def test_A12_one_account_per_person_even_disabled(accounts: Accounts) -> None:
    accounts.create("ann", HASH, T0, "root")
    with pytest.raises(AccountExists, match="A12"):
        accounts.create("ann", OTHER, T0, "root")
    accounts.disable("ann", T0)
    with pytest.raises(AccountExists):
        accounts.create("ann", OTHER, T0, "root")
    assert accounts.hash_of("ann") == HASH


def test_A12_the_database_itself_refuses_a_second_row(catalog: Catalog) -> None:
    Accounts(catalog).create("ann", HASH, T0, "root")
    with pytest.raises(IntegrityError), write_session(catalog) as session:
        session.add(
            ConsoleAccount(
                person="ann",
                password_hash=OTHER,
                created_at=T0,
                created_by="root",
                password_changed_at=T0,
            )
        )


def test_X3_a_password_is_never_stored_as_a_hash(accounts: Accounts) -> None:
    for not_a_hash in ("Correct-Horse-Battery-9", "", "$argon2id", "$" + "x$" * 200):
        with pytest.raises(ValueError) as info:
            accounts.create("ann", not_a_hash, T0, "root")
        assert not not_a_hash or not_a_hash not in str(info.value)
    assert accounts.list() == []
    accounts.create("ann", HASH, T0, "root")
    with pytest.raises(ValueError, match="PHC"):
        accounts.set_password("ann", "Correct-Horse-Battery-9", T0)
    with pytest.raises(ValueError, match="PHC"):
        accounts.record_success("ann", T0, password_hash="plain")
    assert accounts.hash_of("ann") == HASH


def test_bad_names_are_refused(accounts: Accounts) -> None:
    for person in ("", "  ", "x" * 65, "ann\n"):
        with pytest.raises(ValueError):
            accounts.create(person, HASH, T0, "root")
    with pytest.raises(ValueError):
        accounts.create("ann", HASH, T0, "")


def test_X3_failures_count_and_lock_never_shortens(accounts: Accounts) -> None:
    accounts.create("ann", HASH, T0, "root")
    first = accounts.record_failure("ann", T0, None)
    assert first.failed_logins == 1 and first.locked_until is None
    lock = T0 + timedelta(minutes=15)
    locked = accounts.record_failure("ann", T0, lock)
    assert locked.failed_logins == 2 and locked.locked_until == lock
    assert locked.locked(T0) and not locked.locked(lock)
    again = accounts.record_failure("ann", T0, T0 + timedelta(minutes=1))
    assert again.failed_logins == 3 and again.locked_until == lock
    assert accounts.record_failure("ann", T0, None).locked_until == lock


def test_X3_success_clears_failures_and_may_rehash(accounts: Accounts) -> None:
    accounts.create("ann", HASH, T0, "root")
    accounts.record_failure("ann", T0, T0 + timedelta(minutes=15))
    later = T0 + timedelta(hours=1)
    done = accounts.record_success("ann", later)
    assert done.failed_logins == 0 and done.locked_until is None and done.last_login_at == later
    rehashed = accounts.record_success("ann", later, password_hash=OTHER)
    assert accounts.hash_of("ann") == OTHER
    assert rehashed.password_changed_at == T0  # a rehash is not a password change


def test_X3_set_password_resets_the_lock(accounts: Accounts) -> None:
    accounts.create("ann", HASH, T0, "root")
    accounts.record_failure("ann", T0, T0 + timedelta(minutes=15))
    later = T0 + timedelta(minutes=2)
    changed = accounts.set_password("ann", OTHER, later)
    assert changed.password_changed_at == later and changed.failed_logins == 0
    assert changed.locked_until is None and accounts.hash_of("ann") == OTHER


def test_A12_disable_keeps_the_row(accounts: Accounts) -> None:
    accounts.create("ann", HASH, T0, "root")
    gone = accounts.disable("ann", T0 + timedelta(days=1))
    assert gone.disabled and gone.disabled_at == T0 + timedelta(days=1)
    assert [a.person for a in accounts.list()] == ["ann"]
    with pytest.raises(InvalidState, match="already disabled"):
        accounts.disable("ann", T0 + timedelta(days=2))
    # A new password does not enable it again.
    assert accounts.set_password("ann", OTHER, T0 + timedelta(days=3)).disabled


def test_unknown_person_is_not_found(accounts: Accounts) -> None:
    calls: list[Callable[[], object]] = [
        lambda: accounts.set_password("nobody", HASH, T0),
        lambda: accounts.record_failure("nobody", T0, None),
        lambda: accounts.record_success("nobody", T0),
        lambda: accounts.disable("nobody", T0),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            call()


def test_A10_audit_hook_commits_with_the_change(catalog: Catalog) -> None:
    accounts = Accounts(catalog)
    trail = AuditTrail(catalog, None)

    def audit(session: object, info: AccountInfo) -> None:
        append(
            session,  # type: ignore[arg-type]
            at=T0,
            actor="root",
            action="console.account_added",
            object=f"person:{info.person}",
        )

    accounts.create("ann", HASH, T0, "root", audit=audit)
    assert [e.object for e in trail.entries()] == ["person:ann"]

    def failing(session: object, info: AccountInfo) -> None:
        raise RuntimeError("trail unavailable")

    with pytest.raises(RuntimeError):
        accounts.create("bob", HASH, T0, "root", audit=failing)
    with pytest.raises(RuntimeError):
        accounts.disable("ann", T0, audit=failing)
    assert accounts.get("bob") is None and not accounts.get("ann").disabled  # type: ignore[union-attr]
    assert len(trail.entries()) == 1


def test_naive_times_are_refused(accounts: Accounts) -> None:
    with pytest.raises(Exception, match="naive datetime"):
        accounts.create("ann", HASH, T0.replace(tzinfo=None), "root")


def test_revision_0004_adds_the_accounts_to_a_0003_catalog_and_back(db_url: str) -> None:
    upgrade(db_url, "0003")
    catalog = Catalog.open(db_url, migrate=True)
    try:
        Accounts(catalog).create("ann", HASH, T0, "root")
    finally:
        catalog.close()
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0003")
        tables = set(inspect(engine).get_table_names())
        assert "console_accounts" not in tables and "access_requests" in tables
    finally:
        engine.dispose()


def test_postgresql_ddl_has_the_accounts() -> None:
    buffer = io.StringIO()
    config = alembic_config(url="postgresql://recorder@localhost/recorder")
    config.output_buffer = buffer
    command.upgrade(config, "0003:0004", sql=True)
    ddl = buffer.getvalue()
    assert "CREATE TABLE console_accounts" in ddl
    assert "locked_until TIMESTAMP WITH TIME ZONE" in ddl
    assert "CONSTRAINT uq_console_accounts_person UNIQUE (person)" in ddl
