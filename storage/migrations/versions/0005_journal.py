"""Catalog journal (issue 20): the marks of the entries a replay has applied.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

Frozen history, like 0001-0004: types are spelled out, not imported from storage.models.
One new table: nothing existing is altered.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "journal_marks",
        sa.Column("journal", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("op", sa.String(length=32), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("call_row", sa.Integer(), nullable=True),
        sa.Column("recording_row", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("journal", "seq", name=op.f("pk_journal_marks")),
    )


def downgrade() -> None:
    op.drop_table("journal_marks")
