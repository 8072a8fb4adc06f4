"""Lawful use: the access request register (A4, A9), summary sheets (P6), training copies (P5).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Frozen history, like 0001 and 0002: types are spelled out, not imported from storage.models.
Only new tables: nothing existing is altered, so the upgrade needs no batch mode and the
downgrade loses only the rows of these tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def _when(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "access_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=8), nullable=False),
        _when("created_at", nullable=False),
        sa.Column("requester", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=1024), nullable=False),
        sa.Column("selector", sa.JSON(), nullable=False),
        sa.Column("approvals_needed", sa.Integer(), nullable=False),
        sa.Column(
            "state",
            _enum("request_state", "pending", "approved", "denied"),
            nullable=False,
        ),
        _when("decided_at"),
        _when("valid_until"),
        sa.Column("policy_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_requests")),
    )
    op.create_index(op.f("ix_access_requests_created_at"), "access_requests", ["created_at"])
    op.create_index(op.f("ix_access_requests_requester"), "access_requests", ["requester"])
    op.create_index(op.f("ix_access_requests_state"), "access_requests", ["state"])

    op.create_table(
        "access_request_items",
        sa.Column("request_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("recording_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["access_requests.id"],
            name=op.f("fk_access_request_items_request_id_access_requests"),
        ),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
            name=op.f("fk_access_request_items_recording_id_recordings"),
        ),
        sa.PrimaryKeyConstraint("request_id", "recording_id", name=op.f("pk_access_request_items")),
    )
    op.create_index(
        op.f("ix_access_request_items_recording_id"), "access_request_items", ["recording_id"]
    )

    op.create_table(
        "access_verdicts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("person", sa.String(length=64), nullable=False),
        _when("at", nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=1024), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["access_requests.id"],
            name=op.f("fk_access_verdicts_request_id_access_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_verdicts")),
    )
    op.create_index(op.f("ix_access_verdicts_request_id"), "access_verdicts", ["request_id"])

    op.create_table(
        "summary_sheets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("recording_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("author", sa.String(length=64), nullable=False),
        _when("created_at", nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        _when("expires_at"),
        _when("destroyed_at"),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
            name=op.f("fk_summary_sheets_recording_id_recordings"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_summary_sheets")),
    )
    op.create_index(op.f("ix_summary_sheets_recording_id"), "summary_sheets", ["recording_id"])
    op.create_index(op.f("ix_summary_sheets_expires_at"), "summary_sheets", ["expires_at"])

    op.create_table(
        "training_copies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=True),
        sa.Column("node", sa.String(length=255), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("duration", sa.Float(), nullable=False),
        _when("created_at", nullable=False),
        _when("expires_at"),
        _when("destroyed_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_copies")),
    )
    op.create_index(op.f("ix_training_copies_expires_at"), "training_copies", ["expires_at"])


def downgrade() -> None:
    op.drop_table("training_copies")
    op.drop_table("summary_sheets")
    op.drop_table("access_verdicts")
    op.drop_table("access_request_items")
    op.drop_table("access_requests")
