"""Web console: nominative accounts (A12) with password hashes (X3) and throttle counters.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08

Frozen history, like 0001-0003: types are spelled out, not imported from storage.models.
One new table: nothing existing is altered, so the upgrade needs no batch mode and the
downgrade loses only the accounts.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _when(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "console_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("person", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        _when("created_at", nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        _when("password_changed_at", nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        _when("locked_until"),
        _when("last_login_at"),
        _when("disabled_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_accounts")),
        # A12: one account per person of the nominative list, never a shared one.
        sa.UniqueConstraint("person", name=op.f("uq_console_accounts_person")),
    )


def downgrade() -> None:
    op.drop_table("console_accounts")
