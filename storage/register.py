"""The register of access requests (A4), their verdicts (A9), summary sheets (P6) and training
copies (P5): what was asked, by whom, for what, and what was decided.

Storage only: who may ask, who may approve and how many approvals a request needs are the
caller's decisions (recorder.access), passed in as plain values or as the `apply` function
of `Register.decide`. What this module guarantees is the register's integrity: a request is
written in one transaction with the recordings it names; a verdict is written under the
request's row lock, only while the request is pending, and only if the caller's rules accept
it; and every write may carry its audit entry in the same transaction (the `audit` hooks,
which call storage.audit.append), so that the register and the trail never disagree.

Requests are named `R<id>-<token>`: the id is the row's, the token six random base32
characters. The token is no credential (access is always checked by the caller); it makes a
mistyped or guessed id fail loudly instead of silently naming somebody else's request.

Like storage.repository, everything returned is a frozen snapshot, never an ORM object.
Nothing written here may hold a phone number (the register outlives the call log's numbers,
D2): selectors name recordings, calls or dates, and reasons are refused if they hold one.
"""

from __future__ import annotations

import builtins
import hmac
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, selectinload

from storage.audit import contains_phone_number
from storage.models import (
    AccessRequest,
    AccessRequestItem,
    AccessVerdict,
    Recording,
    RequestState,
    SummarySheet,
    TrainingCopy,
)
from storage.repository import Catalog, InvalidState, NotFound, read_session, write_session

T = TypeVar("T")

TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648 base32, lower case
TOKEN_LENGTH = 6
# Case-insensitive, as base32 is: a token read aloud or typed in capitals still verifies.
_PUBLIC_ID = re.compile(r"R([1-9][0-9]{0,17})-([a-z2-7]{6})", re.IGNORECASE)
_MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")
_SHA256 = re.compile(r"[0-9a-f]{64}")

MAX_REASON = 1024
MAX_SUMMARY = 4000
_MAX_NAME = 64  # requester, role, purpose, person, author: policy identifiers

Verdict = Literal["approved", "denied"]
VERDICTS: tuple[Verdict, ...] = ("approved", "denied")

AuditHook = Callable[[Session, T], None]


class BadRequestId(ValueError):
    """A malformed public request id, or one whose token does not match (mistyped, tampered).

    The message describes the id, never anything personal: it may end up in a log."""


def _iso(value: datetime | None) -> str | None:
    # UTC in JSON, like the retention reports and the audit trail.
    return None if value is None else value.astimezone(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class VerdictInfo:
    person: str
    at: datetime
    verdict: str  # "approved" | "denied"
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "person": self.person,
            "at": _iso(self.at),
            "verdict": self.verdict,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class RequestInfo:
    id: int
    public_id: str
    created_at: datetime
    requester: str
    role: str
    purpose: str
    reason: str
    selector: dict[str, Any]
    approvals_needed: int
    state: RequestState
    decided_at: datetime | None
    valid_until: datetime | None
    policy_hash: str
    recording_ids: tuple[int, ...]
    verdicts: tuple[VerdictInfo, ...]

    @property
    def approvals(self) -> int:
        """How many distinct people approved so far (A9 counts people, not clicks)."""
        return len({v.person for v in self.verdicts if v.verdict == "approved"})

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "public_id": self.public_id,
            "created_at": _iso(self.created_at),
            "requester": self.requester,
            "role": self.role,
            "purpose": self.purpose,
            "reason": self.reason,
            "selector": self.selector,
            "approvals_needed": self.approvals_needed,
            "state": self.state.value,
            "decided_at": _iso(self.decided_at),
            "valid_until": _iso(self.valid_until),
            "policy_hash": self.policy_hash,
            "recording_ids": list(self.recording_ids),
            "verdicts": [v.to_json() for v in self.verdicts],
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the caller's rules make of one verdict, returned by `decide`'s `apply`.

    `new_state` None leaves the request pending (e.g. the first of two A9 approvals);
    otherwise it must be the state the verdict leads to. `valid_until` goes with an approval
    only: until when the grant may be used.
    """

    verdict: Verdict
    reason: str | None = None
    new_state: RequestState | None = None
    valid_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class SummaryInfo:
    id: int
    recording_id: int
    request_id: int | None
    author: str
    created_at: datetime
    text: str  # "" once destroyed
    expires_at: datetime | None
    destroyed_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "recording_id": self.recording_id,
            "request_id": self.request_id,
            "author": self.author,
            "created_at": _iso(self.created_at),
            "text": self.text,
            "expires_at": _iso(self.expires_at),
            "destroyed_at": _iso(self.destroyed_at),
        }


@dataclass(frozen=True, slots=True)
class TrainingCopyInfo:
    id: int
    name: str
    month: str
    path: str | None  # None once destroyed
    node: str | None
    sha256: str
    size: int
    duration: float
    created_at: datetime  # the first day of its month, 00:00 UTC (see models.TrainingCopy)
    expires_at: datetime | None
    destroyed_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "month": self.month,
            "path": self.path,
            "node": self.node,
            "sha256": self.sha256,
            "size": self.size,
            "duration": self.duration,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "destroyed_at": _iso(self.destroyed_at),
        }


# --- public ids ---


def new_token() -> str:
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


def public_id(request_id: int, token: str) -> str:
    return f"R{request_id}-{token}"


def _public(row: AccessRequest) -> str:
    return public_id(row.id, row.token)


def parse_public_id(text: str) -> tuple[int, str]:
    """`R<id>-<token>` -> (id, token); BadRequestId for anything else.

    The text itself is not repeated in the error: what does not look like an id may be
    anything, a phone number included."""
    match = _PUBLIC_ID.fullmatch(text.strip())
    if match is None:
        raise BadRequestId(
            "malformed request id: expected R<number>-<6 characters a-z or 2-7> (A4)"
        )
    return int(match.group(1)), match.group(2).lower()


# --- validation ---


def _check_name(field: str, value: str) -> None:
    if not value.strip():
        raise ValueError(f"{field} is empty")
    if len(value) > _MAX_NAME:
        raise ValueError(f"{field} is longer than {_MAX_NAME} characters")


def _check_text(field: str, value: str | None, limit: int, *, required: bool) -> None:
    if value is None or not value.strip():
        if required:
            raise ValueError(f"{field} is empty: a request is made in writing (A3, A4)")
        return
    if len(value) > limit:
        raise ValueError(f"{field} is longer than {limit} characters")
    if contains_phone_number(value):
        # The message does not repeat the value: it holds the very thing to keep out.
        raise ValueError(f"{field} holds a phone number; the register never does (D2)")


def _first_of_month(at: datetime) -> datetime:
    utc = at.astimezone(UTC)
    return datetime(utc.year, utc.month, 1, tzinfo=UTC)


# --- snapshots ---


def _verdict_info(row: AccessVerdict) -> VerdictInfo:
    return VerdictInfo(person=row.person, at=row.at, verdict=row.verdict, reason=row.reason)


def _request_info(row: AccessRequest) -> RequestInfo:
    # Sorted here rather than trusted to the relationship's order: a verdict appended in
    # this session is at the end of the list whatever its time.
    verdicts = sorted(row.verdicts, key=lambda v: (v.at, v.id))
    return RequestInfo(
        id=row.id,
        public_id=_public(row),
        created_at=row.created_at,
        requester=row.requester,
        role=row.role,
        purpose=row.purpose,
        reason=row.reason,
        selector=dict(row.selector),
        approvals_needed=row.approvals_needed,
        state=row.state,
        decided_at=row.decided_at,
        valid_until=row.valid_until,
        policy_hash=row.policy_hash,
        recording_ids=tuple(sorted(item.recording_id for item in row.items)),
        verdicts=tuple(_verdict_info(v) for v in verdicts),
    )


def _summary_info(row: SummarySheet) -> SummaryInfo:
    return SummaryInfo(
        id=row.id,
        recording_id=row.recording_id,
        request_id=row.request_id,
        author=row.author,
        created_at=row.created_at,
        text=row.text,
        expires_at=row.expires_at,
        destroyed_at=row.destroyed_at,
    )


def _training_copy_info(row: TrainingCopy) -> TrainingCopyInfo:
    return TrainingCopyInfo(
        id=row.id,
        name=row.name,
        month=row.month,
        path=row.path,
        node=row.node,
        sha256=row.sha256,
        size=row.size,
        duration=row.duration,
        created_at=row.created_at,
        expires_at=row.expires_at,
        destroyed_at=row.destroyed_at,
    )


_SelectT = TypeVar("_SelectT", bound=Select[Any])


def _with_children(query: _SelectT) -> _SelectT:
    # selectinload, not joinedload: PostgreSQL refuses FOR UPDATE on the nullable side of an
    # outer join, and a separate SELECT per relationship keeps `decide`'s lock on one row.
    return query.options(selectinload(AccessRequest.items), selectinload(AccessRequest.verdicts))


class Register:
    """The request register over one catalog. Synchronous, like Catalog: one thread at a
    time (from asyncio, run it through AsyncCatalog.run)."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    @staticmethod
    def _load(session: Session, public: str, *, lock: bool) -> AccessRequest:
        request_id, token = parse_public_id(public)
        query = _with_children(select(AccessRequest).where(AccessRequest.id == request_id))
        if lock:
            query = query.with_for_update()  # no-op on SQLite, whose write lock is held
        row = session.scalars(query).first()
        if row is None:
            raise NotFound(f"no request R{request_id}")
        if not hmac.compare_digest(row.token, token):
            raise BadRequestId(f"request id {public_id(request_id, token)!r} does not verify (A4)")
        return row

    # --- requests (A3, A4) ---

    def open(
        self,
        *,
        at: datetime,
        requester: str,
        role: str,
        purpose: str,
        reason: str,
        selector: Mapping[str, Any],
        approvals_needed: int,
        recording_ids: Iterable[int],
        policy_hash: str,
        audit: AuditHook[RequestInfo] | None = None,
    ) -> RequestInfo:
        """Register a pending request naming `recording_ids`, in one transaction.

        `selector` records how the recordings were chosen, for whoever reads the register
        later (it is not re-evaluated); `audit(session, info)` runs inside the transaction.
        Raises NotFound for an unknown recording, ValueError for a missing or overlong
        field, or a phone number where the register keeps none.
        """
        for field, value in (("requester", requester), ("role", role), ("purpose", purpose)):
            _check_name(field, value)
        _check_text("reason", reason, MAX_REASON, required=True)
        if contains_phone_number(dict(selector)):
            raise ValueError("the selector holds a phone number; the register never does (D2)")
        if approvals_needed < 0:
            raise ValueError("approvals_needed is negative")
        if len(policy_hash) > 64:
            raise ValueError("policy_hash is longer than 64 characters")
        ids = sorted(set(recording_ids))
        with write_session(self._catalog) as session:
            found = set(session.scalars(select(Recording.id).where(Recording.id.in_(ids))))
            missing = [i for i in ids if i not in found]
            if missing:
                raise NotFound(f"no recording {', '.join(map(str, missing))}")
            row = AccessRequest(
                token=new_token(),
                created_at=at,
                requester=requester,
                role=role,
                purpose=purpose,
                reason=reason,
                selector=dict(selector),
                approvals_needed=approvals_needed,
                state=RequestState.PENDING,
                policy_hash=policy_hash,
                items=[AccessRequestItem(recording_id=i) for i in ids],
                verdicts=[],
            )
            session.add(row)
            session.flush()
            info = _request_info(row)
            if audit is not None:
                audit(session, info)
            return info

    def get(self, public_id: str) -> RequestInfo:
        """The request named `public_id`: BadRequestId if it does not verify, else NotFound."""
        with read_session(self._catalog) as session:
            return _request_info(self._load(session, public_id, lock=False))

    def decide(
        self,
        public_id: str,
        person: str,
        at: datetime,
        apply: Callable[[RequestInfo], Outcome],
        *,
        audit: AuditHook[RequestInfo] | None = None,
    ) -> RequestInfo:
        """Record `person`'s verdict on a pending request, as the caller's rules decide it.

        In one write transaction, under the request's row lock: the request must still be
        pending (InvalidState otherwise, before `apply` runs); `apply(snapshot)` then judges
        the verdict against the request as it is now, verdicts included (so that two
        approvers racing each other are counted one after the other), and raises to refuse,
        in which case nothing is written. The verdict row follows, then the new state if the
        outcome sets one, then `audit(session, new_snapshot)`. Returns the new snapshot.
        """
        _check_name("person", person)
        with write_session(self._catalog) as session:
            row = self._load(session, public_id, lock=True)
            if row.state is not RequestState.PENDING:
                raise InvalidState(f"request {_public(row)} is {row.state.value}, not pending (A9)")
            outcome = apply(_request_info(row))
            _check_outcome(outcome)
            row.verdicts.append(
                AccessVerdict(person=person, at=at, verdict=outcome.verdict, reason=outcome.reason)
            )
            if outcome.new_state is not None:
                row.state = outcome.new_state
                row.decided_at = at
                row.valid_until = outcome.valid_until
            session.flush()
            info = _request_info(row)
            if audit is not None:
                audit(session, info)
            return info

    def list(
        self,
        *,
        requester: str | None = None,
        state: RequestState | str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> builtins.list[RequestInfo]:
        """Requests made in [since, until), newest first (the register as A4 shows it)."""
        query = select(AccessRequest)
        if requester is not None:
            query = query.where(AccessRequest.requester == requester)
        if state is not None:
            query = query.where(AccessRequest.state == RequestState(state))
        if since is not None:
            query = query.where(AccessRequest.created_at >= since)
        if until is not None:
            query = query.where(AccessRequest.created_at < until)
        query = query.order_by(AccessRequest.created_at.desc(), AccessRequest.id.desc())
        query = _with_children(query.limit(limit))
        with read_session(self._catalog) as session:
            return [_request_info(row) for row in session.scalars(query)]

    # --- summary sheets (P6) ---

    def add_summary(
        self,
        *,
        at: datetime,
        author: str,
        recording_id: int,
        request_id: int | None,
        text: str,
        expires_at: datetime | None,
        audit: AuditHook[SummaryInfo] | None = None,
    ) -> SummaryInfo:
        """Keep a summary sheet derived from a recording until `expires_at` (the policy's
        `summary_sheets` period, computed by the caller); the purge destroys it then."""
        _check_name("author", author)
        if not text.strip():
            raise ValueError("the summary is empty")
        if len(text) > MAX_SUMMARY:
            raise ValueError(f"a summary sheet holds at most {MAX_SUMMARY} characters (P6)")
        with write_session(self._catalog) as session:
            if session.get(Recording, recording_id) is None:
                raise NotFound(f"no recording {recording_id}")
            if request_id is not None and session.get(AccessRequest, request_id) is None:
                raise NotFound(f"no request R{request_id}")
            row = SummarySheet(
                recording_id=recording_id,
                request_id=request_id,
                author=author,
                created_at=at,
                text=text,
                expires_at=expires_at,
            )
            session.add(row)
            session.flush()
            info = _summary_info(row)
            if audit is not None:
                audit(session, info)
            return info

    def summaries(self, recording_id: int) -> builtins.list[SummaryInfo]:
        """The sheets of a recording, oldest first, destroyed ones included (text "")."""
        query = (
            select(SummarySheet)
            .where(SummarySheet.recording_id == recording_id)
            .order_by(SummarySheet.created_at, SummarySheet.id)
        )
        with read_session(self._catalog) as session:
            return [_summary_info(row) for row in session.scalars(query)]

    # --- training copies (P5) ---

    def add_training_copy(
        self,
        *,
        at: datetime,
        name: str,
        month: str,
        path: str,
        node: str | None,
        sha256: str,
        size: int,
        duration: float,
        expires_at: datetime | None,
        audit: AuditHook[TrainingCopyInfo] | None = None,
    ) -> TrainingCopyInfo:
        """Catalog a training copy whose file is already written (and stripped, P5).

        Nothing here links it to its source: record the provenance with `audit`, in the
        same transaction. `at` is kept only to its month (models.TrainingCopy says why);
        `month` is the source's "YYYY-MM". ValueError for a name or path holding a phone
        number, a malformed month or hash.
        """
        if not name.strip():
            raise ValueError("the training copy has no name")
        if _MONTH.fullmatch(month) is None:
            raise ValueError("month is not YYYY-MM (P5 keeps no finer date)")
        if _SHA256.fullmatch(sha256) is None:
            raise ValueError("sha256 is not 64 lower-case hex digits")
        if size < 0 or duration < 0:
            raise ValueError("negative size or duration")
        if contains_phone_number(name) or contains_phone_number(path):
            raise ValueError("a training copy's name or path holds a phone number (P5)")
        row = TrainingCopy(
            name=name,
            month=month,
            path=path,
            node=node,
            sha256=sha256,
            size=size,
            duration=float(duration),
            created_at=_first_of_month(at),
            expires_at=expires_at,
        )
        with write_session(self._catalog) as session:
            session.add(row)
            session.flush()
            info = _training_copy_info(row)
            if audit is not None:
                audit(session, info)
            return info

    def training_copies(self) -> builtins.list[TrainingCopyInfo]:
        """Every training copy, oldest first, destroyed ones included (path None)."""
        query = select(TrainingCopy).order_by(TrainingCopy.id)
        with read_session(self._catalog) as session:
            return [_training_copy_info(row) for row in session.scalars(query)]


def _check_outcome(outcome: Outcome) -> None:
    if outcome.verdict not in VERDICTS:
        raise ValueError(f"verdict {outcome.verdict!r} is neither approved nor denied")
    _check_text("verdict reason", outcome.reason, MAX_REASON, required=False)
    if outcome.new_state is not None and outcome.new_state.value != outcome.verdict:
        raise ValueError(f"a verdict {outcome.verdict} cannot make a request {outcome.new_state}")
    if outcome.valid_until is not None and outcome.new_state is not RequestState.APPROVED:
        raise ValueError("valid_until goes with an approval that decides the request")
