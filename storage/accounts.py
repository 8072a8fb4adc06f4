"""The web console's accounts (A12, X3): one per person of the nominative list, and the login
throttle's counters.

Storage only, like storage.register: which people may have an account (the policy's
`[people.*]`), what a strong password is (the policy's `[passwords]`), how a password is
hashed and when an account locks are the caller's decisions (recorder.console.passwords),
passed in as plain values. What this module guarantees: at most one account per person (a
unique constraint, not only a check), a hash that is a hash (a PHC string such as
`$argon2id$...`, so that a password passed by mistake is refused rather than stored), every
change in one transaction with its optional audit entry (the `audit` hooks, which call
storage.audit.append), and never a row deleted: an account that must go is disabled.

Everything returned is a frozen `AccountInfo` snapshot, never an ORM object. Its `to_json`
and its repr leave the hash out: a snapshot may be printed or logged, the hash never is.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import ConsoleAccount
from storage.repository import (
    Catalog,
    CatalogError,
    InvalidState,
    NotFound,
    read_session,
    write_session,
)

MAX_PERSON = 64
MAX_HASH = 255
MAX_ACTOR = 128

AuditHook = Callable[[Session, "AccountInfo"], None]


class AccountExists(CatalogError):
    """The person already has an account (enabled or disabled): one per person (A12)."""


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class AccountInfo:
    id: int
    person: str  # the policy's person id (A12)
    password_hash: str = field(repr=False)  # never printed, never in to_json
    created_at: datetime
    created_by: str
    password_changed_at: datetime
    failed_logins: int
    locked_until: datetime | None
    last_login_at: datetime | None
    disabled_at: datetime | None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    def locked(self, now: datetime) -> bool:
        """Whether a lock set by the login throttle still holds at `now`."""
        return self.locked_until is not None and now < self.locked_until

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "person": self.person,
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
            "password_changed_at": _iso(self.password_changed_at),
            "failed_logins": self.failed_logins,
            "locked_until": _iso(self.locked_until),
            "last_login_at": _iso(self.last_login_at),
            "disabled_at": _iso(self.disabled_at),
        }


def _info(row: ConsoleAccount) -> AccountInfo:
    return AccountInfo(
        id=row.id,
        person=row.person,
        password_hash=row.password_hash,
        created_at=row.created_at,
        created_by=row.created_by,
        password_changed_at=row.password_changed_at,
        failed_logins=row.failed_logins,
        locked_until=row.locked_until,
        last_login_at=row.last_login_at,
        disabled_at=row.disabled_at,
    )


def _check_name(what: str, value: str, limit: int) -> None:
    if not value or not value.strip():
        raise ValueError(f"{what} is empty")
    if len(value) > limit:
        raise ValueError(f"{what} is longer than {limit} characters")
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError(f"{what} holds a control character")


def _check_hash(password_hash: str) -> None:
    # A PHC string ("$argon2id$v=19$m=...,t=...,p=...$salt$hash"): what the hasher gives back.
    # The message never repeats the value: it might be a password passed by mistake.
    if not password_hash.startswith("$") or password_hash.count("$") < 3:
        raise ValueError("password_hash is not a PHC hash string ($algorithm$...)")
    if len(password_hash) > MAX_HASH:
        raise ValueError(f"password_hash is longer than {MAX_HASH} characters")


class Accounts:
    """The console's accounts over one catalog. Synchronous, like Catalog: one thread at a
    time (from asyncio, run it through AsyncCatalog.run)."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    @staticmethod
    def _load(session: Session, person: str, *, lock: bool) -> ConsoleAccount:
        query = select(ConsoleAccount).where(ConsoleAccount.person == person)
        if lock:
            query = query.with_for_update()  # no-op on SQLite, whose write lock is held
        row = session.scalars(query).first()
        if row is None:
            raise NotFound(f"no console account for person {person!r}")
        return row

    @staticmethod
    def _done(session: Session, row: ConsoleAccount, audit: AuditHook | None) -> AccountInfo:
        session.flush()
        info = _info(row)
        if audit is not None:
            audit(session, info)
        return info

    def create(
        self,
        person: str,
        password_hash: str,
        at: datetime,
        created_by: str,
        *,
        audit: AuditHook | None = None,
    ) -> AccountInfo:
        """A new account for `person`; AccountExists if they have one, even a disabled one.

        `audit(session, info)` runs inside the transaction (storage.audit.append)."""
        _check_name("person", person, MAX_PERSON)
        _check_name("created_by", created_by, MAX_ACTOR)
        _check_hash(password_hash)
        try:
            with write_session(self._catalog) as session:
                exists = session.scalars(
                    select(ConsoleAccount.id).where(ConsoleAccount.person == person)
                ).first()
                if exists is not None:
                    raise AccountExists(f"person {person!r} already has a console account (A12)")
                row = ConsoleAccount(
                    person=person,
                    password_hash=password_hash,
                    created_at=at,
                    created_by=created_by,
                    password_changed_at=at,
                    failed_logins=0,
                )
                session.add(row)
                return self._done(session, row, audit)
        except IntegrityError:
            # Another writer (a second node on PostgreSQL) created it between check and insert.
            if self.get(person) is None:
                raise
            raise AccountExists(f"person {person!r} already has a console account (A12)") from None

    def set_password(
        self,
        person: str,
        password_hash: str,
        at: datetime,
        *,
        audit: AuditHook | None = None,
    ) -> AccountInfo:
        """A new password (its hash) set at `at`; also clears the failure count and any lock
        (an administrator's reset is how a locked-out person gets back in). A disabled
        account stays disabled. NotFound if the person has no account."""
        _check_hash(password_hash)
        with write_session(self._catalog) as session:
            row = self._load(session, person, lock=True)
            row.password_hash = password_hash
            row.password_changed_at = at
            row.failed_logins = 0
            row.locked_until = None
            return self._done(session, row, audit)

    def get(self, person: str) -> AccountInfo | None:
        with read_session(self._catalog) as session:
            row = session.scalars(
                select(ConsoleAccount).where(ConsoleAccount.person == person)
            ).first()
            return None if row is None else _info(row)

    def hash_of(self, person: str) -> str | None:
        """The stored hash, or None if the person has no account (disabled ones have one)."""
        with read_session(self._catalog) as session:
            value: str | None = session.scalars(
                select(ConsoleAccount.password_hash).where(ConsoleAccount.person == person)
            ).first()
            return value

    def record_failure(self, person: str, at: datetime, lock_until: datetime | None) -> AccountInfo:
        """One failed login: the count goes up by one, under the row's lock.

        `lock_until` is the throttle's answer (recorder.console.passwords.LoginThrottle):
        when given, the account is locked until then; None leaves any current lock as it is
        (a failure never shortens a lock). NotFound if the person has no account."""
        with write_session(self._catalog) as session:
            row = self._load(session, person, lock=True)
            row.failed_logins = row.failed_logins + 1
            if lock_until is not None and (
                row.locked_until is None or row.locked_until < lock_until
            ):
                row.locked_until = lock_until
            return self._done(session, row, None)

    def record_success(
        self, person: str, at: datetime, *, password_hash: str | None = None
    ) -> AccountInfo:
        """A successful login at `at`: the failure count and any lock are cleared.

        `password_hash`, when given, replaces the stored hash without counting as a password
        change (a rehash with stronger parameters). NotFound if the person has no account."""
        if password_hash is not None:
            _check_hash(password_hash)
        with write_session(self._catalog) as session:
            row = self._load(session, person, lock=True)
            row.failed_logins = 0
            row.locked_until = None
            row.last_login_at = at
            if password_hash is not None:
                row.password_hash = password_hash
            return self._done(session, row, None)

    def disable(self, person: str, at: datetime, *, audit: AuditHook | None = None) -> AccountInfo:
        """The account can no longer log in, from `at` on; the row stays (A12: the list says
        who had access and until when). NotFound without an account, InvalidState if it is
        already disabled."""
        with write_session(self._catalog) as session:
            row = self._load(session, person, lock=True)
            if row.disabled_at is not None:
                raise InvalidState(
                    f"the console account of {person!r} is already disabled"
                    f" (since {_iso(row.disabled_at)})"
                )
            row.disabled_at = at
            return self._done(session, row, audit)

    def list(self) -> builtins.list[AccountInfo]:
        """Every account, disabled ones included, by person id."""
        with read_session(self._catalog) as session:
            rows = session.scalars(select(ConsoleAccount).order_by(ConsoleAccount.person))
            return [_info(row) for row in rows]
