"""Retention with calendar-day semantics (D1-D5, A5, S6), across month, year and DST."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from recorder.policy import Policy
from recorder.policy.periods import Period, RetentionRule, local_midnight, parse_period

MONTREAL = ZoneInfo("America/Montreal")
UTC = ZoneInfo("UTC")


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, tz: ZoneInfo = MONTREAL
) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=tz)


@pytest.mark.parametrize(
    ("call", "gone"),
    [
        (at(2026, 11, 1, 0, 1), at(2026, 11, 9)),
        (at(2026, 11, 1, 23, 59), at(2026, 11, 9)),
        (at(2026, 12, 28, 12, 0), at(2027, 1, 5)),  # across the new year
        (at(2026, 10, 29, 9, 0), at(2026, 11, 6)),  # across the DST end (1 Nov 2026)
        (at(2027, 3, 10, 9, 0), at(2027, 3, 18)),  # across the DST start (14 Mar 2027)
        (at(2026, 11, 2, 4, 30, tz=UTC), at(2026, 11, 9)),  # 23:30 on 1 Nov, local
    ],
)
def test_D1_day_of_call_and_seven_following_days(
    policies: dict[str, Policy], call: datetime, gone: datetime
) -> None:
    expiry = policies["shipped"].expiry("recordings", call)
    assert expiry == gone
    assert expiry is not None and expiry.utcoffset() == gone.utcoffset()
    assert (expiry.hour, expiry.minute) == (0, 0)


def test_D2_numbers_leave_call_logs_after_12_months(policies: dict[str, Policy]) -> None:
    opc = policies["OPC"]
    assert opc.expiry("call_log_numbers", at(2026, 11, 23, 10)) == at(2027, 11, 23)
    assert opc.expiry("call_log_numbers", at(2028, 2, 29, 10)) == at(2029, 2, 28)
    assert opc.retention.classes["call_log_numbers"].rule_id == "D2"


def test_D3_nothing_without_a_period_expires_by_itself(policies: dict[str, Policy]) -> None:
    # OPC sets no period for training copies: the holder destroys them (D3), no automatic date.
    assert policies["OPC"].expiry("training_copies", at(2026, 11, 23, 10)) is None
    with pytest.raises(KeyError):
        policies["OPC"].expiry("screenshots", at(2026, 11, 23, 10))


def test_D4_at_least_one_year_and_holds(policies: dict[str, Policy]) -> None:
    mer = policies["MER"]
    # Kept through the anniversary day itself, destroyed the day after.
    assert mer.expiry("recordings", at(2026, 11, 23, 10)) == at(2027, 11, 24)
    assert mer.retention.holds
    assert not policies["OPC"].retention.holds  # OPC: cannot be requested after the 8 days


def test_D5_six_months_and_summary_sheets(policies: dict[str, Policy]) -> None:
    paris = ZoneInfo("Europe/Paris")
    tel, sq = policies["TEL"], policies["SQ"]
    assert tel.expiry("recordings", at(2026, 8, 31, 10, tz=paris)) == at(2027, 2, 28, tz=paris)
    assert tel.expiry("summary_sheets", at(2026, 8, 31, 10, tz=paris)) == at(2027, 8, 31, tz=paris)
    assert sq.expiry("recordings", at(2026, 3, 29, 1, tz=paris)) == at(2026, 9, 29, tz=paris)


def test_S6_sampled_recordings_one_month(policies: dict[str, Policy]) -> None:
    monaco = ZoneInfo("Europe/Monaco")
    ccin = policies["CCIN"]
    assert ccin.expiry("sampled_recordings", at(2026, 1, 31, 10, tz=monaco)) == at(
        2026, 2, 28, tz=monaco
    )


@pytest.mark.parametrize(
    ("event", "gone"),
    [
        (at(2026, 11, 23, 10), at(2027, 7, 1)),  # FY ends 31 Mar 2027, + 3 months
        (at(2027, 3, 31, 23, 59), at(2027, 7, 1)),  # the last day of the fiscal year
        (at(2027, 4, 1, 0, 0), at(2028, 7, 1)),  # the first day of the next one
    ],
)
def test_A5_three_months_after_fiscal_year_end(
    policies: dict[str, Policy], event: datetime, gone: datetime
) -> None:
    assert policies["OPC"].expiry("access_trace", event) == gone


def test_periods_parse_and_add() -> None:
    assert parse_period("8 days") == Period(8, "days")
    assert parse_period("1 year") == Period(1, "years")
    assert str(Period(1, "months")) == "1 month"
    for bad in ("-1 days", "0 months", "soon", "8 weeks"):
        with pytest.raises(ValueError):
            parse_period(bad)
    rule = RetentionRule(Period(8, "days"), "D1")
    with pytest.raises(ValueError, match="aware"):
        rule.expiry(datetime(2026, 1, 1), MONTREAL, (3, 31))


def test_local_midnight_where_midnight_does_not_exist() -> None:
    # Santiago moved clocks from 00:00 to 01:00 on 2024-09-08: that midnight never happened.
    santiago = ZoneInfo("America/Santiago")
    first = local_midnight(datetime(2024, 9, 8).date(), santiago)
    assert first.astimezone(UTC) == datetime(2024, 9, 8, 4, 0, tzinfo=UTC)
