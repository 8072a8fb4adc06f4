"""Retention: holds, the audit chain, S6 sampling draws, and the `destroying` state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

Frozen history, like 0001: types are spelled out, not imported from storage.models.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STATES = ("recording", "complete", "interrupted", "failed", "destroyed")
_NEW_STATES = ("recording", "complete", "interrupted", "failed", "destroying", "destroyed")


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def _when(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _set_states(old: tuple[str, ...], new: tuple[str, ...]) -> None:
    # Batch mode: SQLite rebuilds the table with the new CHECK; PostgreSQL drops and re-adds
    # the named constraint (ck_recordings_recording_state) in place.
    with op.batch_alter_table("recordings") as batch:
        batch.alter_column(
            "state",
            existing_type=_enum("recording_state", *old),
            type_=_enum("recording_state", *new),
            existing_nullable=False,
        )


def upgrade() -> None:
    _set_states(_OLD_STATES, _NEW_STATES)

    op.create_table(
        "holds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("recording_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=1024), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        _when("created_at", nullable=False),
        _when("until"),
        _when("released_at"),
        sa.Column("released_by", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["recording_id"], ["recordings.id"], name=op.f("fk_holds_recording_id_recordings")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_holds")),
    )
    op.create_index(op.f("ix_holds_recording_id"), "holds", ["recording_id"])

    op.create_table(
        "audit_entries",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        _when("at", nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("object", sa.String(length=255), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=1024), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_entries")),
    )
    op.create_index(op.f("ix_audit_entries_at"), "audit_entries", ["at"])
    op.create_index(op.f("ix_audit_entries_action"), "audit_entries", ["action"])

    op.create_table(
        "sampling_draws",
        sa.Column("id", sa.Integer(), nullable=False),
        _when("at", nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("fraction", sa.Float(), nullable=False),
        sa.Column("candidates", sa.Integer(), nullable=False),
        sa.Column("kept", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sampling_draws")),
    )
    op.create_index(op.f("ix_sampling_draws_day"), "sampling_draws", ["day"])

    op.create_table(
        "sample_picks",
        sa.Column("recording_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("draw_id", sa.Integer(), nullable=False),
        sa.Column("kept", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["draw_id"], ["sampling_draws.id"], name=op.f("fk_sample_picks_draw_id_sampling_draws")
        ),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
            name=op.f("fk_sample_picks_recording_id_recordings"),
        ),
        sa.PrimaryKeyConstraint("recording_id", name=op.f("pk_sample_picks")),
    )
    op.create_index(op.f("ix_sample_picks_draw_id"), "sample_picks", ["draw_id"])


def downgrade() -> None:
    op.drop_table("sample_picks")
    op.drop_table("sampling_draws")
    op.drop_table("audit_entries")
    op.drop_table("holds")
    # A row caught half-way through a purge cannot be expressed in the old schema; finishing
    # the purge first is the admin's job, and the CHECK below refuses to hide it.
    _set_states(_NEW_STATES, _OLD_STATES)
