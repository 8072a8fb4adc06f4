"""The catalog's tables: the call log (N3), recordings, per-call events, and retention.

Retention (issue 7) adds: holds (a recording may carry several, each with a reason, an
author, an end and a release, all audited), the hash-chained audit trail (which is also the
access trace of A5/A10), and the S6 sampling draws. A recording being destroyed goes through
the `destroying` state, so that a purge killed between deleting the file and closing the row
leaves a row that says what it was doing (storage/retention.py).
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
