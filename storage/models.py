"""The catalog's tables: the call log (N3), recordings, per-call events, and retention.

Retention (issue 7) adds: holds (a recording may carry several, each with a reason, an
author, an end and a release, all audited), the hash-chained audit trail (which is also the
access trace of A5/A10), and the S6 sampling draws. A recording being destroyed goes through
the `destroying` state, so that a purge killed between deleting the file and closing the row
leaves a row that says what it was doing (storage/retention.py).

Lawful use (issue 15) adds: the register of access requests (A4) with the recordings each
names and the verdicts given on it (A9), the summary sheets derived from recordings (P6), and
the training copies (P5), which by design hold nothing that leads back to a caller.

The web console (issue 17) adds its accounts: one per person of the policy's nominative list
(A12), with a password hash (X3) and the counters of the login throttle.

Reliability (issue 20) adds the marks of the catalog journal's replay: which journal entries
(call-log writes made while the catalog was unavailable) are in, so none goes in twice.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stored instead of a number when the caller asked for privacy (RFC 3323 Privacy: id, or an
# anonymous From), and by the D2 purge once the call log's number period is over.
WITHHELD = "withheld"
ERASED = "erased"

# Left is the external party, right the agent/extension side, whatever the call's direction.
DEFAULT_CHANNEL_MAP: dict[str, str] = {"left": "external", "right": "agent"}

# Named constraints, so that later migrations can drop or alter them on every backend
# (SQLite batch mode and PostgreSQL both need the name).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class CallStatus(enum.StrEnum):
    SETUP = "setup"  # INVITE received, not answered yet (notice and consent happen here)
    ANSWERED = "answered"
    ENDED = "ended"  # answered or not: `answered_at` and `end_reason` tell which


class RecordingState(enum.StrEnum):
    RECORDING = "recording"
    COMPLETE = "complete"
    INTERRUPTED = "interrupted"  # repaired from a .part after a crash
    FAILED = "failed"
    # Retention (issue 7): the purge committed to deleting the file; `path` may or may not
    # still exist on disk, and the next purge finishes the job whatever it finds.
    DESTROYING = "destroying"
    DESTROYED = "destroyed"  # the row stays, the file and path do not


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on every backend.

    SQLite has no time zone type: values are stored as naive UTC there and made aware again
    when read. PostgreSQL gets `timestamptz`, and an aware value, so that the session time
    zone never shifts it. Naive datetimes are refused: a wall-clock time without a zone is
    the bug this type exists to catch.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given to the catalog")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _enum(cls: type[enum.StrEnum], name: str) -> Enum:
    # VARCHAR + CHECK rather than a native PostgreSQL ENUM: adding a state later is then the
    # same migration on both backends.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
_BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


class Call(Base):
    """One row per call seen by the recorder, recorded or not (N3): it says why."""

    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id_a: Mapped[str] = mapped_column(String(255), index=True)  # caller-side Call-ID
    call_id_b: Mapped[str | None] = mapped_column(String(255), index=True)  # PBX/trunk side
    direction: Mapped[Direction] = mapped_column(_enum(Direction, "direction"))
    # The SIP side the first INVITE arrived on: "external" (trunk) or "internal" (PBX).
    side: Mapped[str] = mapped_column(String(16))
    # A number, WITHHELD, or ERASED; indexed for a person's access request (R2).
    caller_number: Mapped[str] = mapped_column(String(128), index=True)
    callee_number: Mapped[str] = mapped_column(String(128), index=True)
    extension: Mapped[str | None] = mapped_column(String(32), index=True)
    agent: Mapped[str | None] = mapped_column(String(64), index=True)
    site: Mapped[str | None] = mapped_column(String(64))
    arrived_at: Mapped[datetime] = mapped_column(index=True)
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    setup_seconds: Mapped[float | None] = mapped_column(Float)  # arrival to answer
    talk_seconds: Mapped[float | None] = mapped_column(Float)  # answer to end
    codec: Mapped[str | None] = mapped_column(String(32))
    media: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # relay counters per leg
    policy_record: Mapped[bool] = mapped_column(Boolean, default=False)
    policy_rules: Mapped[list[str]] = mapped_column(JSON, default=list)
    policy_hash: Mapped[str | None] = mapped_column(String(64))
    consent_outcome: Mapped[str | None] = mapped_column(String(16))
    consent_method: Mapped[str | None] = mapped_column(String(16))
    consent_digit: Mapped[str | None] = mapped_column(String(4))
    consent_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[CallStatus] = mapped_column(
        _enum(CallStatus, "call_status"), default=CallStatus.SETUP
    )

    recordings: Mapped[list[Recording]] = relationship(
        back_populates="call", order_by="Recording.id"
    )
    events: Mapped[list[CallEvent]] = relationship(
        back_populates="call", order_by="(CallEvent.at, CallEvent.id)"
    )


class Recording(Base):
    __tablename__ = "recordings"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), index=True)
    # Absolute path of the final file; None once destroyed. While recording, the writer
    # writes PATH + ".part".
    path: Mapped[str | None] = mapped_column(String(1024))
    name: Mapped[str] = mapped_column(String(255))
    # Host holding the file: with several nodes sharing one catalog, only that node can
    # repair, verify or delete it.
    node: Mapped[str | None] = mapped_column(String(255))
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(BigInteger)
    duration: Mapped[float | None] = mapped_column(Float)  # seconds of audio in the file
    format: Mapped[str] = mapped_column(String(16))  # e.g. "pcm16", "ulaw", "alaw"
    channel_map: Mapped[dict[str, str]] = mapped_column(
        JSON, default=lambda: dict(DEFAULT_CHANNEL_MAP)
    )
    # [[start, end], ...] in seconds from the start of the file (S8).
    pauses: Mapped[list[list[float]]] = mapped_column(JSON, default=list)
    state: Mapped[RecordingState] = mapped_column(
        _enum(RecordingState, "recording_state"), default=RecordingState.RECORDING, index=True
    )
    created_at: Mapped[datetime]
    finalized_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None] = mapped_column(index=True)
    destroyed_at: Mapped[datetime | None]
    destroy_reason: Mapped[str | None] = mapped_column(String(255))

    call: Mapped[Call] = relationship(back_populates="recordings")


class CallEvent(Base):
    """What happened during a call, in order: consent, pauses, re-INVITEs, failures."""

    __tablename__ = "call_events"
    __table_args__ = (Index("ix_call_events_call_id_at", "call_id", "at"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"))
    at: Mapped[datetime]
    name: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    call: Mapped[Call] = relationship(back_populates="events")


class Hold(Base):
    """D4, P4: keeps a recording past its expiry for a complaint, a dispute or evidence.

    Rows are never deleted: a release is a date, so that the hold history stays readable
    next to the audit entries that describe it.
    """

    __tablename__ = "holds"

    id: Mapped[int] = mapped_column(primary_key=True)
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id"), index=True)
    reason: Mapped[str] = mapped_column(String(1024))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    # The first instant the hold no longer applies (00:00 local after the `--until` day).
    until: Mapped[datetime | None]
    released_at: Mapped[datetime | None]
    released_by: Mapped[str | None] = mapped_column(String(128))


class AuditEntry(Base):
    """One link of the append-only audit chain (A10, X1); see storage/audit.py.

    `seq` is assigned by the writer (last + 1, under the write lock) rather than by a
    sequence, so that a gap always means a deleted entry; `hash` covers every other column
    and `prev_hash`, which is the previous entry's `hash`. Never a phone number in any column.
    """

    __tablename__ = "audit_entries"

    seq: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    object: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(1024))
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class SamplingDraw(Base):
    """S6: one daily draw over the recordings of one calendar day (the draw is also audited)."""

    __tablename__ = "sampling_draws"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime]
    day: Mapped[str] = mapped_column(String(10), index=True)  # YYYY-MM-DD, policy time zone
    fraction: Mapped[float] = mapped_column(Float)
    candidates: Mapped[int] = mapped_column(Integer)
    kept: Mapped[int] = mapped_column(Integer)


class SamplePick(Base):
    """Whether a recording was drawn: one row per recording, so no recording is drawn twice."""

    __tablename__ = "sample_picks"

    recording_id: Mapped[int] = mapped_column(
        ForeignKey("recordings.id"), primary_key=True, autoincrement=False
    )
    draw_id: Mapped[int] = mapped_column(ForeignKey("sampling_draws.id"), index=True)
    kept: Mapped[bool] = mapped_column(Boolean)


# --- lawful use (issue 15): the request register (A4, A9), summary sheets (P6), training
# copies (P5). Decisions live in recorder.access; these tables only keep what was decided.


class RequestState(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"


class AccessRequest(Base):
    """A4: one written, motivated request (A3) to hear recordings, as kept in the register.

    Nothing here deletes rows: the register is the written record A4 asks for. The public id
    is `R<id>-<token>` (storage/register.py): the random token makes a mistyped or guessed id
    fail instead of naming someone else's request. `selector` says how the recordings were
    chosen (ids, calls, or "by number" with dates) and never holds a phone number: the
    register outlives the call log's numbers (D2).
    """

    __tablename__ = "access_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(index=True)
    requester: Mapped[str] = mapped_column(String(64), index=True)  # a policy person id
    role: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(1024))
    selector: Mapped[dict[str, Any]] = mapped_column(JSON)
    approvals_needed: Mapped[int] = mapped_column(Integer)
    state: Mapped[RequestState] = mapped_column(
        _enum(RequestState, "request_state"), default=RequestState.PENDING, index=True
    )
    decided_at: Mapped[datetime | None]
    # Until when an approved grant may be used (the recordings' own expiry still applies).
    valid_until: Mapped[datetime | None]
    policy_hash: Mapped[str] = mapped_column(String(64))  # the policy the request was made under

    items: Mapped[list[AccessRequestItem]] = relationship(
        back_populates="request", order_by="AccessRequestItem.recording_id"
    )
    verdicts: Mapped[list[AccessVerdict]] = relationship(
        back_populates="request", order_by="(AccessVerdict.at, AccessVerdict.id)"
    )


class AccessRequestItem(Base):
    """One recording named by a request (the selector resolved when it was made)."""

    __tablename__ = "access_request_items"

    request_id: Mapped[int] = mapped_column(
        ForeignKey("access_requests.id"), primary_key=True, autoincrement=False
    )
    # Indexed: "which requests named this recording" is what an A5 trace review asks.
    recording_id: Mapped[int] = mapped_column(
        ForeignKey("recordings.id"), primary_key=True, autoincrement=False, index=True
    )

    request: Mapped[AccessRequest] = relationship(back_populates="items")


class AccessVerdict(Base):
    """One person's approval or denial of a request (A9: some requests need two)."""

    __tablename__ = "access_verdicts"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("access_requests.id"), index=True)
    person: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    verdict: Mapped[str] = mapped_column(String(16))  # "approved" | "denied"
    reason: Mapped[str | None] = mapped_column(String(1024))

    request: Mapped[AccessRequest] = relationship(back_populates="verdicts")


class SummarySheet(Base):
    """P6, D5: a written summary derived from a recording, kept for its own period.

    Destruction empties `text` and sets `destroyed_at`; the row stays, so that the audit
    entries about the sheet still name something. `request_id` is a plain column, not a key:
    should the register ever get a retention period of its own (A4 sets none), a sheet that
    cites a request must not block it.
    """

    __tablename__ = "summary_sheets"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Recording rows are never deleted (only their files), so the key outlives the audio.
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id"), index=True)
    request_id: Mapped[int | None] = mapped_column(Integer)
    author: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    text: Mapped[str] = mapped_column(Text)  # at most 4000 characters (storage/register.py)
    expires_at: Mapped[datetime | None] = mapped_column(index=True)
    destroyed_at: Mapped[datetime | None]


class TrainingCopy(Base):
    """P5: a copy kept for staff training, with everything that identifies the caller removed.

    On purpose there is no link to the source recording, call, number, agent or extension:
    a training copy must not lead back to a caller through the catalog either. Its
    provenance is in the audit trail, which access rules guard. For the same reason the
    dates are coarse: `month` is the only date of the source ("YYYY-MM"), and `created_at`
    is stored truncated to the first day of its month, 00:00 UTC, so that it cannot be
    matched against the call log's arrival times. `path` is None once destroyed.
    """

    __tablename__ = "training_copies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    month: Mapped[str] = mapped_column(String(7))
    path: Mapped[str | None] = mapped_column(String(1024))
    node: Mapped[str | None] = mapped_column(String(255))  # the host holding the file
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    duration: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None] = mapped_column(index=True)
    destroyed_at: Mapped[datetime | None]


# --- the web console (issue 17): nominative accounts (A12) with strong passwords (X3).


class ConsoleAccount(Base):
    """A12, X3: one web-console account, tied to one person of the policy's `[people.*]`.

    `person` is the policy's person id and is unique: one account per person, never a shared
    one. `password_hash` is a self-describing hash string (argon2's PHC format), never the
    password; the hashing is the caller's (recorder.console.passwords). Rows are never
    deleted: an account that must go is disabled (`disabled_at`), so that the audit entries
    about it still name something. `failed_logins` and `locked_until` are the throttle's
    state; a successful login clears both.
    """

    __tablename__ = "console_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    person: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))
    password_changed_at: Mapped[datetime]
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]


class JournalMark(Base):
    """Issue 20: one entry of the catalog journal, applied by a replay.

    While the catalog is unavailable the service writes its call log to a local journal
    (recorder.call.catalog_journal); a replay applies each entry and its mark in one
    transaction, so an entry whose commit came just before a crash is not applied twice.
    `call_row` and `recording_row` are the rows the entry created (or named), for the
    entries after it when the replay resumes in another process.
    """

    __tablename__ = "journal_marks"

    journal: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    op: Mapped[str] = mapped_column(String(32))
    applied_at: Mapped[datetime]
    call_row: Mapped[int | None] = mapped_column(Integer)
    recording_row: Mapped[int | None] = mapped_column(Integer)
