"""Revision 0002 on a catalog that already holds 0001 data, and back."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from storage.db import alembic_config, current_revision, head_revision, make_engine, upgrade


def test_upgrade_from_0001_keeps_rows_and_allows_destroying(db_url: str) -> None:
    upgrade(db_url, "0001")
    engine = make_engine(db_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO calls (id, call_id_a, direction, side, caller_number,"
                    " callee_number, arrived_at, policy_record, policy_rules, status)"
                    " VALUES (1, 'a', 'inbound', 'external', '+15145550100', '235',"
                    " '2026-11-01 14:00:00', TRUE, '[]', 'ended')"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO recordings (id, call_id, name, format, channel_map, pauses,"
                    " state, created_at) VALUES (1, 1, 'r.wav', 'pcm16', '{}', '[]', 'complete',"
                    " '2026-11-01 14:00:00')"
                )
            )
        upgrade(db_url)
        assert current_revision(engine) == head_revision()
        tables = set(inspect(engine).get_table_names())
        assert {"holds", "audit_entries", "sampling_draws", "sample_picks"} <= tables
        with engine.begin() as connection:
            connection.execute(text("UPDATE recordings SET state = 'destroying' WHERE id = 1"))
            assert connection.execute(text("SELECT name FROM recordings")).scalar() == "r.wav"
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(text("UPDATE recordings SET state = 'vanished' WHERE id = 1"))
        # Downgrading refuses a row caught half-way through a purge...
        with pytest.raises(IntegrityError), engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0001")
        with engine.begin() as connection:
            connection.execute(text("UPDATE recordings SET state = 'destroyed' WHERE id = 1"))
        # ...and otherwise returns to 0001 with the data intact.
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0001")
        assert current_revision(engine) == "0001"
        assert "holds" not in inspect(engine).get_table_names()
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(text("UPDATE recordings SET state = 'destroying' WHERE id = 1"))
    finally:
        engine.dispose()
