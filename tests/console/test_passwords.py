"""X3 for the console: the policy's password rule, argon2 hashes, the login throttle (A12)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from recorder.console import passwords
from recorder.console.passwords import (
    AddressLimiter,
    AuthResult,
    LoginThrottle,
    authenticate,
    check_password,
    hash_password,
    needs_rehash,
    verify_password,
)
from recorder.policy.model import PasswordRule, Person
from storage.accounts import AccountInfo, Accounts
from storage.repository import Catalog

T0 = datetime(2026, 12, 8, 14, 0, tzinfo=UTC)
RULE = PasswordRule()  # 12 characters, 3 classes, 5 failures lock for 15 minutes
ANN = Person(id="jtremblay", name="Julie-Anne Tremblay", role="lead", account="julie")
GOOD = "Velvet-Harbour-42"

# Cheap parameters: the real ones (64 MiB, t=3) cost ~0.1 s per hash.
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture(autouse=True)
def cheap_hasher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "HASHER", CHEAP)


@pytest.fixture
def accounts(tmp_path: Path) -> Iterator[Accounts]:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'recorder.db'}", migrate=True)
    try:
        yield Accounts(catalog)
    finally:
        catalog.close()


@pytest.fixture
def verifies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hashes passed to verify_password, one per argon2 verification."""
    seen: list[str] = []
    real = passwords.verify_password

    def counting(password_hash: str, password: str) -> bool:
        seen.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(passwords, "verify_password", counting)
    return seen


# --- the rule ---


def test_X3_a_strong_password_passes() -> None:
    assert check_password(RULE, GOOD, person=ANN) == []
    assert check_password(RULE, "correct horse battery staple 9", person=ANN) == []


@pytest.mark.parametrize(
    ("password", "words"),
    [
        ("Sh0rt-pass", "too short: fewer than 12 characters"),
        ("alllowercaseletters", "too few kinds of characters"),
        ("lowercase-and-dash", "missing: uppercase, digits"),
        ("Velvet-Tremblay-42", "contains the person's name"),
        ("Velvet-TREMBLÁY-42", "contains the person's name"),  # any case, any accent
        ("Velvet-anne-Harbour-1", "contains the person's name"),
        ("Velvet-jtremblay-42", "contains the person's id or name"),
        ("Velvet-Julie-Harbour-42", "contains the person's account or name"),
    ],
)
def test_X3_what_a_weak_password_lacks(password: str, words: str) -> None:
    problems = check_password(RULE, password, person=ANN)
    assert any(words in problem for problem in problems), problems
    assert all(password.lower() not in problem.lower() for problem in problems)


def test_X3_every_problem_is_listed() -> None:
    problems = check_password(RULE, "tremblay", person=ANN)
    assert len(problems) == 3


def test_X3_the_rule_comes_from_the_policy() -> None:
    lax = PasswordRule(min_length=8, min_classes=1)
    assert check_password(lax, "harbourss", person=ANN) == []
    strict = PasswordRule(min_length=20, min_classes=4)
    problems = check_password(strict, "VelvetHarbour42", person=ANN)
    assert any("fewer than 20" in p for p in problems)
    assert any("needs 4 of" in p and "(missing: other)" in p for p in problems)


def test_X3_short_name_parts_are_not_refused() -> None:
    li = Person(id="li", name="Li Na", role="lead")
    assert check_password(RULE, "Liam-Harbour-Na-42", person=li) == []
    assert check_password(RULE, "Lina-Harbour-42", person=li) != []  # the whole name, joined


def test_X3_an_absurdly_long_password_is_refused() -> None:
    problems = check_password(RULE, "Aa1-" * 300, person=ANN)
    assert any("too long" in p for p in problems)


# --- hashes ---


def test_X3_hash_and_verify_with_the_default_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "HASHER", PasswordHasher())
    hashed = hash_password(GOOD)
    assert hashed.startswith("$argon2id$") and GOOD not in hashed
    assert hashed != hash_password(GOOD)  # a fresh salt each time
    assert verify_password(hashed, GOOD)
    assert not verify_password(hashed, GOOD + "!")
    assert not needs_rehash(hashed)


def test_X3_a_malformed_hash_never_verifies() -> None:
    for bad in ("", "plain", "$argon2id$v=19$m=8,t=1,p=1$AAAA$BBBB", "$2b$12$abc"):
        assert verify_password(bad, GOOD) is False
        assert needs_rehash(bad) is True


def test_X3_other_parameters_need_a_rehash() -> None:
    old = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1).hash(GOOD)
    assert verify_password(old, GOOD)  # still verifies...
    assert needs_rehash(old)  # ...but should be replaced
    assert not needs_rehash(hash_password(GOOD))


def test_X3_passwords_are_compared_after_nfkc() -> None:
    composed = "Caf\u00e9-Harbour-42"
    decomposed = "Cafe\u0301-Harbour-42"
    assert verify_password(hash_password(composed), decomposed)


# --- the per-account throttle ---


def account(failed: int = 0, locked_until: datetime | None = None) -> AccountInfo:
    return AccountInfo(
        id=1,
        person="jtremblay",
        password_hash="$argon2id$x$y",
        created_at=T0,
        created_by="root",
        password_changed_at=T0,
        failed_logins=failed,
        locked_until=locked_until,
        last_login_at=None,
        disabled_at=None,
    )


def test_X3_throttle_locks_at_max_failures() -> None:
    throttle = LoginThrottle(RULE)
    assert throttle.after_failure(account(failed=3), T0) is None  # the 4th failure
    assert throttle.after_failure(account(failed=4), T0) == T0 + timedelta(minutes=15)
    assert throttle.after_failure(None, T0) is None
    assert LoginThrottle(PasswordRule(max_failures=1, lock_minutes=60)).after_failure(
        account(), T0
    ) == T0 + timedelta(hours=1)


def test_X3_throttle_refuses_while_locked() -> None:
    throttle = LoginThrottle(RULE)
    until = T0 + timedelta(minutes=15)
    assert throttle.allowed(None, T0) == (True, None)
    assert throttle.allowed(account(failed=2), T0) == (True, None)
    allowed, why = throttle.allowed(account(failed=5, locked_until=until), T0)
    assert not allowed and why is not None and until.isoformat() in why and "X3" in why
    assert throttle.allowed(account(failed=5, locked_until=until), until) == (True, None)


# --- the per-address limiter ---


def test_X3_address_limiter_slides_over_a_minute() -> None:
    limiter = AddressLimiter(per_minute=3)
    assert [limiter.hit("192.0.2.1", t) for t in (0.0, 1.0, 2.0, 3.0)] == [True] * 3 + [False]
    assert limiter.hit("192.0.2.2", 3.0)  # another address is counted apart
    assert not limiter.hit("192.0.2.1", 59.9)
    assert limiter.hit("192.0.2.1", 60.5)  # the attempt at 0.0 left the window
    assert not limiter.hit("192.0.2.1", 60.6)


def test_X3_address_limiter_memory_is_bounded() -> None:
    limiter = AddressLimiter(per_minute=2, max_addresses=100)
    for n in range(10_000):
        assert limiter.hit(f"10.0.{n // 256}.{n % 256}", n / 1000)
        assert len(limiter) <= 100
    # Addresses whose attempts left the window are forgotten.
    assert limiter.hit("198.51.100.7", 1000.0)
    assert len(limiter) == 1


def test_address_limiter_arguments() -> None:
    with pytest.raises(ValueError):
        AddressLimiter(per_minute=0)
    with pytest.raises(ValueError):
        AddressLimiter(window=0)


# --- authenticate ---


def test_X3_a_good_login_succeeds_and_clears_failures(accounts: Accounts) -> None:
    accounts.create("jtremblay", hash_password(GOOD), T0, "root")
    accounts.record_failure("jtremblay", T0, None)
    result = authenticate(accounts, RULE, "jtremblay", GOOD, T0 + timedelta(minutes=1))
    assert result == AuthResult(True, "jtremblay", None)
    after = accounts.get("jtremblay")
    assert after is not None and after.failed_logins == 0
    assert after.last_login_at == T0 + timedelta(minutes=1)


def test_X3_wrong_passwords_lock_the_account(accounts: Accounts) -> None:
    accounts.create("jtremblay", hash_password(GOOD), T0, "root")
    for n in range(1, 5):
        result = authenticate(accounts, RULE, "jtremblay", "Wrong-Guess-0000", T0)
        assert not result.ok and result.reason == f"wrong password ({n} in a row)"
    fifth = authenticate(accounts, RULE, "jtremblay", "Wrong-Guess-0000", T0)
    until = T0 + timedelta(minutes=15)
    assert not fifth.ok and fifth.reason is not None and until.isoformat() in fifth.reason
    # Locked: even the right password fails, without counting a failure.
    during = authenticate(accounts, RULE, "jtremblay", GOOD, T0 + timedelta(minutes=14))
    assert not during.ok and during.reason is not None and "locked until" in during.reason
    stored = accounts.get("jtremblay")
    assert stored is not None and stored.failed_logins == 5 and stored.locked_until == until
    # After the lock, the right password gets in and clears it all.
    assert authenticate(accounts, RULE, "jtremblay", GOOD, until).ok
    cleared = accounts.get("jtremblay")
    assert cleared is not None and cleared.failed_logins == 0 and cleared.locked_until is None


def test_X3_a_failure_after_a_lock_locks_again_at_once(accounts: Accounts) -> None:
    rule = PasswordRule(max_failures=2, lock_minutes=10)
    accounts.create("jtremblay", hash_password(GOOD), T0, "root")
    for _ in range(2):
        authenticate(accounts, rule, "jtremblay", "Wrong-Guess-0000", T0)
    later = T0 + timedelta(minutes=10)
    result = authenticate(accounts, rule, "jtremblay", "Wrong-Guess-0000", later)
    stored = accounts.get("jtremblay")
    assert not result.ok and stored is not None
    assert stored.locked_until == later + timedelta(minutes=10)


def test_A12_unknown_disabled_and_unlisted_fail_with_a_dummy_verify(
    accounts: Accounts, verifies: list[str]
) -> None:
    accounts.create("jtremblay", hash_password(GOOD), T0, "root")
    accounts.create("gone", hash_password(GOOD), T0, "root")
    accounts.disable("gone", T0)
    unknown = authenticate(accounts, RULE, "nobody", GOOD, T0)
    disabled = authenticate(accounts, RULE, "gone", GOOD, T0)
    unlisted = authenticate(accounts, RULE, "jtremblay", GOOD, T0, people={"someone-else": ANN})
    assert [r.ok for r in (unknown, disabled, unlisted)] == [False, False, False]
    assert unknown.reason == "no console account" and disabled.reason == "account disabled"
    assert unlisted.reason is not None and "A12" in unlisted.reason
    # One argon2 verification each, as for a real account: timing says nothing.
    assert len(verifies) == 3
    assert accounts.get("jtremblay").failed_logins == 0  # type: ignore[union-attr]
    assert authenticate(accounts, RULE, "jtremblay", GOOD, T0, people={"jtremblay": ANN}).ok


def test_X3_a_locked_account_still_costs_one_verify(
    accounts: Accounts, verifies: list[str]
) -> None:
    accounts.create("jtremblay", hash_password(GOOD), T0, "root")
    accounts.record_failure("jtremblay", T0, T0 + timedelta(minutes=15))
    assert not authenticate(accounts, RULE, "jtremblay", GOOD, T0).ok
    assert len(verifies) == 1 and verifies[0] != accounts.hash_of("jtremblay")


def test_X3_a_login_rehashes_an_old_hash(accounts: Accounts) -> None:
    old = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1).hash(GOOD)
    accounts.create("jtremblay", old, T0, "root")
    assert authenticate(accounts, RULE, "jtremblay", GOOD, T0 + timedelta(days=1)).ok
    new = accounts.hash_of("jtremblay")
    assert new is not None and new != old and not needs_rehash(new)
    assert verify_password(new, GOOD)
    info = accounts.get("jtremblay")
    assert info is not None and info.password_changed_at == T0
