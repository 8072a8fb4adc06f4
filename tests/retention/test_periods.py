"""Calendar-day retention in America/Montreal, across month, year and DST boundaries.

Fixed clocks only. 2026-11-01 is the day DST ends in Montreal (02:00 EDT -> 01:00 EST) and
2027-03-14 the day it starts, so the D1 cases below straddle both.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from storage.models import ERASED, WITHHELD, RecordingState
from storage.retention import expired_before
from tests.retention.conftest import Store, local, make_settings

US = timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("arrived", "gone"),
    [
        # OPC: "the day of the call and the 7 following calendar days", DST ends on the 1st.
        (local(2026, 11, 1, 0, 1), local(2026, 11, 9)),
        (local(2026, 11, 1, 23, 59), local(2026, 11, 9)),
        (local(2026, 11, 1, 1, 30), local(2026, 11, 9)),  # the ambiguous hour (fold=0, EDT)
        (local(2026, 10, 28, 12, 0), local(2026, 11, 5)),  # month boundary, DST in between
        (local(2026, 12, 28, 9, 0), local(2027, 1, 5)),  # year boundary
        (local(2027, 3, 10, 23, 59), local(2027, 3, 18)),  # DST starts on the 14th
    ],
)
def test_d1_eight_calendar_days(arrived: datetime, gone: datetime) -> None:
    expiry = make_settings().expiry("recordings", arrived)
    assert expiry == gone
    assert expiry is not None and expiry.utcoffset() == gone.utcoffset()


@pytest.mark.parametrize(
    ("arrived", "gone"),
    [
        (local(2025, 11, 1, 23, 59), local(2026, 11, 1)),  # D2: 12 months
        (local(2024, 2, 29, 10, 0), local(2025, 2, 28)),  # leap day: the month's last day
        (local(2025, 12, 31, 23, 59), local(2026, 12, 31)),
        (local(2026, 3, 8, 1, 0), local(2027, 3, 8)),  # DST starts 2026-03-08
    ],
)
def test_d2_twelve_months(arrived: datetime, gone: datetime) -> None:
    assert make_settings().expiry("call_log_numbers", arrived) == gone


@pytest.mark.parametrize(
    ("arrived", "gone"),
    [
        (local(2026, 8, 31, 8, 0), local(2027, 2, 28)),  # D5: 6 months, clamped
        (local(2026, 5, 3, 23, 59), local(2026, 11, 3)),  # across the DST end
        (local(2026, 9, 14, 0, 0), local(2027, 3, 14)),  # onto the DST start day
    ],
)
def test_d5_six_months(arrived: datetime, gone: datetime) -> None:
    assert make_settings(recordings="6 months").expiry("recordings", arrived) == gone


@pytest.mark.parametrize(
    ("at", "gone"),
    [
        # A5: until 3 months after the end of the fiscal year (31 March) the entry falls in.
        (local(2026, 3, 31, 23, 59), local(2026, 7, 1)),
        (local(2026, 4, 1, 0, 0), local(2027, 7, 1)),
        (local(2026, 11, 1, 1, 30), local(2027, 7, 1)),
        (local(2027, 1, 1, 0, 0), local(2027, 7, 1)),
    ],
)
def test_a5_three_months_after_fiscal_year(at: datetime, gone: datetime) -> None:
    assert make_settings().expiry("access_trace", at) == gone


def test_s6_sampled_month() -> None:
    settings = make_settings(
        recordings="6 months",
        sampling='[sampling]\nfraction = 0.05\nstage = "daily"',
        extra='sampled_recordings = { period = "1 month", rule = "S6" }',
    )
    assert settings.expiry("sampled_recordings", local(2027, 1, 31, 12)) == local(2027, 2, 28)
    assert settings.expiry("sampled_recordings", local(2026, 10, 15, 12)) == local(2026, 11, 15)
    assert settings.sample_fraction == 0.05


@pytest.mark.parametrize("retention_class", ["recordings", "call_log_numbers", "access_trace"])
@pytest.mark.parametrize(
    "now",
    [
        local(2026, 11, 9),
        local(2026, 11, 9) - US,
        local(2027, 1, 1, 0, 0, 1),
        local(2027, 3, 14, 3, 0),
        local(2027, 7, 1),
        local(2027, 6, 30, 23, 59, 59),
    ],
)
def test_cutoff_agrees_with_expiry_row_by_row(retention_class: str, now: datetime) -> None:
    """The purge selects `created < cutoff`; that must be exactly `expiry(created) <= now`."""
    settings = make_settings()
    cutoff = expired_before(settings, retention_class, now)
    assert cutoff is not None
    created = local(2024, 12, 30, 0, 0)
    mismatches = []
    while created < now:
        expiry = settings.expiry(retention_class, created)
        assert expiry is not None
        if (created < cutoff) != (expiry <= now):
            mismatches.append(created)
        created += timedelta(hours=7, minutes=13)
    assert mismatches == []


def test_cutoff_is_none_without_a_period() -> None:
    assert expired_before(make_settings(), "summary_sheets", local(2027, 1, 1)) is None


def test_purge_destroys_on_the_ninth_day_at_midnight_not_before(store: Store) -> None:
    early, _ = store.recording(local(2026, 11, 1, 0, 1))
    late, late_path = store.recording(local(2026, 11, 1, 23, 59))
    nextday, nextday_path = store.recording(local(2026, 11, 2, 0, 0))

    report = store.purger().run(local(2026, 11, 9) - US)
    assert report.destroyed == []
    assert late_path.exists()

    report = store.purger().run(local(2026, 11, 9))
    assert sorted(d.recording_id for d in report.destroyed) == [early, late]
    assert not late_path.exists() and nextday_path.exists()
    row = store.catalog.get_recording(late)
    assert row is not None
    assert row.state is RecordingState.DESTROYED
    assert row.path is None
    assert row.destroyed_at == local(2026, 11, 9)
    assert row.destroy_reason is not None and row.destroy_reason.startswith("D1:")
    kept = store.catalog.get_recording(nextday)
    assert kept is not None and kept.state is RecordingState.COMPLETE


def test_purge_erases_numbers_after_twelve_months_keeping_rows(store: Store) -> None:
    store.recording(local(2025, 11, 1, 23, 59), caller="+15145550101")
    store.recording(local(2025, 11, 2, 0, 0), caller="+15145550102")
    store.recording(local(2025, 11, 1, 12, 0), caller=WITHHELD)

    assert store.purger().run(local(2026, 11, 1) - US).numbers_erased == 0
    report = store.purger().run(local(2026, 11, 1))
    assert report.numbers_erased == 2
    calls = {c.arrived_at: c for c in store.catalog.list_calls()}
    first = calls[local(2025, 11, 1, 23, 59)]
    assert (first.caller_number, first.callee_number) == (ERASED, ERASED)
    withheld = calls[local(2025, 11, 1, 12, 0)]
    assert (withheld.caller_number, withheld.callee_number) == (WITHHELD, ERASED)
    assert calls[local(2025, 11, 2, 0, 0)].caller_number == "+15145550102"
    # Rows stay for statistics; a second run has nothing left to do.
    assert len(calls) == 3
    assert store.purger().run(local(2026, 11, 1, 1)).numbers_erased == 0
    actions = [e.action for e in store.trail().entries()]
    assert "calls.numbers_erased" in actions


def test_purge_prunes_the_audit_trail_three_months_after_the_fiscal_year(store: Store) -> None:
    trail = store.trail()
    for at in (local(2026, 3, 30, 9), local(2026, 3, 31, 23, 59), local(2026, 4, 1, 0, 0)):
        trail.record(at=at, actor="tester", action="recording.read", object="recording:1")

    assert store.purger().run(local(2026, 7, 1) - US).audit_pruned == 0
    report = store.purger().run(local(2026, 7, 1))
    assert report.audit_pruned == 2
    remaining = trail.entries()
    assert remaining[0].at == local(2026, 4, 1)
    assert "audit.pruned" in [e.action for e in remaining]
    verified = trail.verify()
    assert verified.ok, verified.problems
