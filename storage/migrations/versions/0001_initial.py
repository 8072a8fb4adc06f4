"""Initial catalog: calls (the call log, N3), recordings, call events.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Frozen history: column types are spelled out here rather than imported from
storage.models, so that later model changes cannot rewrite what this revision did.
Timestamps are `DateTime(timezone=True)` (timestamptz on PostgreSQL); storage.models.UTCDateTime
only changes how values are bound and read, not the column type.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def _when(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id_a", sa.String(length=255), nullable=False),
        sa.Column("call_id_b", sa.String(length=255), nullable=True),
        sa.Column("direction", _enum("direction", "inbound", "outbound"), nullable=False),
        sa.Column("side", sa.String(length=16), nullable=False),
        sa.Column("caller_number", sa.String(length=128), nullable=False),
        sa.Column("callee_number", sa.String(length=128), nullable=False),
        sa.Column("extension", sa.String(length=32), nullable=True),
        sa.Column("agent", sa.String(length=64), nullable=True),
        sa.Column("site", sa.String(length=64), nullable=True),
        _when("arrived_at", nullable=False),
        _when("answered_at"),
        _when("ended_at"),
        sa.Column("setup_seconds", sa.Float(), nullable=True),
        sa.Column("talk_seconds", sa.Float(), nullable=True),
        sa.Column("codec", sa.String(length=32), nullable=True),
        sa.Column("media", sa.JSON(), nullable=True),
        sa.Column("policy_record", sa.Boolean(), nullable=False),
        sa.Column("policy_rules", sa.JSON(), nullable=False),
        sa.Column("policy_hash", sa.String(length=64), nullable=True),
        sa.Column("consent_outcome", sa.String(length=16), nullable=True),
        sa.Column("consent_method", sa.String(length=16), nullable=True),
        sa.Column("consent_digit", sa.String(length=4), nullable=True),
        _when("consent_at"),
        sa.Column("end_reason", sa.String(length=255), nullable=True),
        sa.Column("status", _enum("call_status", "setup", "answered", "ended"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calls")),
    )
    for column in (
        "agent",
        "arrived_at",
        "call_id_a",
        "call_id_b",
        "callee_number",
        "caller_number",
        "extension",
    ):
        op.create_index(op.f(f"ix_calls_{column}"), "calls", [column])

    op.create_table(
        "call_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=False),
        _when("at", nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name=op.f("fk_call_events_call_id_calls")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_events")),
    )
    op.create_index("ix_call_events_call_id_at", "call_events", ["call_id", "at"])

    op.create_table(
        "recordings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("node", sa.String(length=255), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("channel_map", sa.JSON(), nullable=False),
        sa.Column("pauses", sa.JSON(), nullable=False),
        sa.Column(
            "state",
            _enum("recording_state", "recording", "complete", "interrupted", "failed", "destroyed"),
            nullable=False,
        ),
        _when("created_at", nullable=False),
        _when("finalized_at"),
        _when("expires_at"),
        _when("destroyed_at"),
        sa.Column("destroy_reason", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name=op.f("fk_recordings_call_id_calls")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recordings")),
    )
    for column in ("call_id", "expires_at", "state"):
        op.create_index(op.f(f"ix_recordings_{column}"), "recordings", [column])


def downgrade() -> None:
    op.drop_table("recordings")
    op.drop_table("call_events")
    op.drop_table("calls")
