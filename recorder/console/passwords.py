"""The console's passwords (X3) and logins: the policy's rule, argon2 hashes, the throttle.

- `check_password` says what a new password lacks under the policy's `[passwords]` rule, in
  words that never repeat the password.
- `hash_password`, `verify_password`, `needs_rehash`: argon2id through argon2-cffi's
  `PasswordHasher` (its defaults, RFC 9106's low-memory profile). Passwords are NFKC-
  normalised first (NIST SP 800-63B), so that the same password typed on two keyboards
  verifies.
- `LoginThrottle` (per account, state in the account row) and `AddressLimiter` (per client
  address, in memory) are sans-IO: the caller passes `now`.
- `authenticate` ties them to `storage.accounts.Accounts`.

Nothing here returns, logs or raises with a password or a hash in it.
"""

from __future__ import annotations

import unicodedata
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from recorder.policy.model import PasswordRule, Person
from storage.accounts import AccountInfo, Accounts

# A bound on what is hashed at all: argon2 copes with any length, a web form should not have to.
MAX_PASSWORD = 1024
# Name parts shorter than this ("Li", "de") are too common to refuse in a password.
MIN_NAME_PART = 3
CLASSES = ("lowercase", "uppercase", "digits", "other")  # "other": punctuation, spaces...

# The hasher every function here uses; replaceable (tests use cheaper parameters), and then
# `needs_rehash` tells which stored hashes were made with other parameters.
HASHER = PasswordHasher()

_dummy: tuple[PasswordHasher, str] | None = None


def _normalise(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def _fold(text: str) -> str:
    """Case- and accent-insensitive form: "Géraldine" and "GERALDINE" compare equal."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def _classes(password: str) -> set[str]:
    found: set[str] = set()
    for char in password:
        if char.islower():
            found.add(CLASSES[0])
        elif char.isupper():
            found.add(CLASSES[1])
        elif char.isdigit():
            found.add(CLASSES[2])
        else:
            found.add(CLASSES[3])
    return found


def _personal_words(person: Person) -> dict[str, set[str]]:
    """The person's id, Unix account and name, each whole and in parts, folded."""
    fields = {"id": person.id, "account": person.account or "", "name": person.name}
    out: dict[str, set[str]] = {}
    for field, text in fields.items():
        folded = _fold(text)
        parts = "".join(char if char.isalnum() else " " for char in folded).split()
        words = {*parts, "".join(parts)}
        out[field] = {word for word in words if len(word) >= MIN_NAME_PART}
    return out


def check_password(rule: PasswordRule, password: str, *, person: Person) -> list[str]:
    """What `password` lacks under `rule` (X3), as short phrases; empty when it is strong.

    Refused: fewer than `rule.min_length` characters, fewer than `rule.min_classes` of the
    four classes (lowercase, uppercase, digits, other), and anything that holds the person's
    id, Unix account or a part of their name (3 letters or more, any case, any accents).
    """
    password = _normalise(password)
    problems: list[str] = []
    if len(password) < rule.min_length:
        problems.append(f"too short: fewer than {rule.min_length} characters")
    elif len(password) > MAX_PASSWORD:
        problems.append(f"too long: more than {MAX_PASSWORD} characters")
    present = _classes(password)
    if len(present) < rule.min_classes:
        missing = ", ".join(name for name in CLASSES if name not in present)
        problems.append(
            f"too few kinds of characters: needs {rule.min_classes} of"
            f" {', '.join(CLASSES)} (missing: {missing})"
        )
    folded = _fold(password)
    fields = [
        field
        for field, words in _personal_words(person).items()
        if any(word in folded for word in words)
    ]
    if fields:
        # Names the field (id, account, name), never the password nor the part it holds.
        problems.append(f"contains the person's {' or '.join(fields)} (or part of it)")
    return problems


def hash_password(password: str) -> str:
    """An argon2id PHC string (`$argon2id$v=19$m=...`) with a fresh random salt."""
    return HASHER.hash(_normalise(password))


def verify_password(password_hash: str, password: str) -> bool:
    """Whether `password` is the one `password_hash` was made from; False for a malformed
    hash too (never an exception: a bad row must not tell a visitor anything)."""
    try:
        return HASHER.verify(password_hash, _normalise(password))
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with parameters other than `HASHER`'s (or is malformed)."""
    try:
        return HASHER.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True


def _dummy_verify(password: str) -> None:
    """As costly as a real verify, for logins that fail before one (no such account, disabled,
    locked): the time a login takes must not tell which accounts exist."""
    global _dummy
    if _dummy is None or _dummy[0] is not HASHER:
        _dummy = (HASHER, HASHER.hash("not a password of anyone"))
    verify_password(_dummy[1], password)


class LoginThrottle:
    """X3, per account: `rule.max_failures` failed logins in a row lock the account for
    `rule.lock_minutes`. The state is the account row's (`failed_logins`, `locked_until`);
    only a successful login or a new password (storage.accounts) clears it, so that a failure
    after a lock has ended locks the account again at once."""

    def __init__(self, rule: PasswordRule) -> None:
        self.rule = rule

    def allowed(self, account: AccountInfo | None, now: datetime) -> tuple[bool, str | None]:
        """Whether a login may be tried now; if not, why (`locked until ...`). An unknown
        account (None) is not throttled here: `authenticate` fails it all the same, and the
        per-address limiter is what slows down guessing names."""
        if account is not None and account.locked(now):
            assert account.locked_until is not None
            until = account.locked_until.astimezone(UTC).isoformat()
            return False, f"locked until {until} after {account.failed_logins} failed logins (X3)"
        return True, None

    def after_failure(self, account: AccountInfo | None, now: datetime) -> datetime | None:
        """The `lock_until` to store with this failure: `account` is the row as read before
        it, so this failure is its `failed_logins + 1`-th in a row. None: no lock (yet)."""
        if account is None:
            return None
        if account.failed_logins + 1 >= self.rule.max_failures:
            return now + timedelta(minutes=self.rule.lock_minutes)
        return None


class AddressLimiter:
    """At most `per_minute` login attempts per client address in any sliding `window`
    seconds; `hit` says whether one more is allowed now (refused ones are not counted).

    Memory is bounded: an address whose last attempt left the window is forgotten, and
    beyond `max_addresses` the least recently seen address is forgotten first (a flood from
    many addresses can then let a forgotten one start afresh: the per-account lock still
    holds).
    """

    def __init__(
        self, per_minute: int = 10, *, window: float = 60.0, max_addresses: int = 10_000
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        if window <= 0 or max_addresses < 1:
            raise ValueError("window and max_addresses must be positive")
        self.per_minute = per_minute
        self.window = window
        self.max_addresses = max_addresses
        # address -> its attempts in the window, oldest first; ordered by the last attempt.
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        """How many addresses are remembered."""
        return len(self._hits)

    def _evict(self, now: float) -> None:
        horizon = now - self.window
        while self._hits:
            oldest_address, oldest = next(iter(self._hits.items()))
            if oldest and oldest[-1] > horizon and len(self._hits) <= self.max_addresses:
                break
            del self._hits[oldest_address]

    def hit(self, address: str, now: float) -> bool:
        """One attempt from `address` at `now` (a monotonic clock, seconds): False when it
        is over the rate."""
        self._evict(now)
        hits = self._hits.get(address)
        if hits is None:
            hits = deque()
            self._hits[address] = hits
        else:
            self._hits.move_to_end(address)
        horizon = now - self.window
        while hits and hits[0] <= horizon:
            hits.popleft()
        if len(hits) >= self.per_minute:
            return False
        hits.append(now)
        if len(self._hits) > self.max_addresses:
            self._hits.popitem(last=False)
        return True


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of one login. `reason` is for the audit trail and the logs, never for the
    visitor: a web page shows one message for every failure, so that it does not tell which
    accounts exist, are disabled or are locked."""

    ok: bool
    person: str
    reason: str | None = None


def authenticate(
    accounts: Accounts,
    rule: PasswordRule,
    person: str,
    password: str,
    now: datetime,
    *,
    people: Mapping[str, Person] | None = None,
) -> AuthResult:
    """One login attempt by `person` (a policy person id) at `now`.

    Fails for an unknown or disabled account, a person no longer in `people` (the policy's
    nominative list, when given: A12), a locked account, and a wrong password, which counts
    as a failure and may lock the account (`LoginThrottle`). Every failure costs one argon2
    verification, real or dummy. A success clears the failures and, when the stored hash
    was made with other parameters, stores a new one.
    """
    throttle = LoginThrottle(rule)
    account = accounts.get(person)
    if account is None:
        _dummy_verify(password)
        return AuthResult(False, person, "no console account")
    if account.disabled:
        _dummy_verify(password)
        return AuthResult(False, person, "account disabled")
    if people is not None and person not in people:
        _dummy_verify(password)
        return AuthResult(False, person, "not on the policy's nominative list (A12)")
    allowed, why = throttle.allowed(account, now)
    if not allowed:
        _dummy_verify(password)
        return AuthResult(False, person, why)
    if not verify_password(account.password_hash, password):
        lock_until = throttle.after_failure(account, now)
        updated = accounts.record_failure(person, now, lock_until)
        reason = f"wrong password ({updated.failed_logins} in a row)"
        if lock_until is not None:
            reason += f"; locked until {lock_until.astimezone(UTC).isoformat()} (X3)"
        return AuthResult(False, person, reason)
    new_hash = hash_password(password) if needs_rehash(account.password_hash) else None
    accounts.record_success(person, now, password_hash=new_hash)
    return AuthResult(True, person, None)
