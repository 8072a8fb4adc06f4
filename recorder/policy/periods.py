"""Retention periods with calendar-day semantics, in the policy's time zone.

The seeds count in calendar days, not in hours: OPC keeps a recording "the day
of the call and the 7 following calendar days", so a call at 00:01 and one at
23:59 on 1 November are both destroyed at 00:00 on 9 November, local time,
whatever DST did in between. Every expiry here is therefore "00:00 local on
some calendar day", computed with date arithmetic, never as `now + timedelta`.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Unit = Literal["days", "months", "years"]
Anchor = Literal["call", "fiscal_year_end"]

_PERIOD = re.compile(r"\s*(-?\d+)\s*(day|days|month|months|year|years)\s*")


@dataclass(frozen=True, slots=True)
class Period:
    count: int
    unit: Unit

    def after(self, day: date) -> date:
        """The calendar day `count` units after `day` (31 Jan + 1 month = 28/29 Feb)."""
        if self.unit == "days":
            return day + timedelta(days=self.count)
        months = self.count * (12 if self.unit == "years" else 1)
        month_index = day.month - 1 + months
        year, month = day.year + month_index // 12, month_index % 12 + 1
        return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))

    def __str__(self) -> str:
        unit = self.unit if self.count != 1 else self.unit[:-1]
        return f"{self.count} {unit}"


def parse_period(text: str) -> Period:
    """`"8 days"`, `"6 months"`, `"1 year"`; raises ValueError when not a positive period."""
    match = _PERIOD.fullmatch(text)
    if not match:
        raise ValueError(f"must be like '8 days', '6 months' or '1 year', got {text!r}")
    count = int(match.group(1))
    if count < 1:
        raise ValueError(f"must be at least 1 {match.group(2)}, got {text!r}")
    unit = match.group(2) if match.group(2).endswith("s") else match.group(2) + "s"
    return Period(count, unit)  # type: ignore[arg-type]  # the regex allows only the 3 units


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """How long one class of data lives.

    `anchor="call"`: the period counts from the day of the call, that day
    included (D1: 8 days = the call day and the 7 following), so the data is
    destroyed at 00:00 on call day + period. `minimum=True` turns an "at most"
    into an "at least" (D4 "kept at least 1 year"): kept through the anniversary
    day itself, destroyed at 00:00 the day after. `anchor="fiscal_year_end"`
    counts from the end of the fiscal year the event falls in (A5: "until 3
    months after the end of the current fiscal year").
    """

    period: Period
    rule_id: str
    minimum: bool = False
    anchor: Anchor = "call"

    def expiry(self, at: datetime, tz: ZoneInfo, fiscal_year_end: tuple[int, int]) -> datetime:
        """The first instant at which data created at `at` must be gone (00:00 local)."""
        if at.tzinfo is None:
            raise ValueError("expiry needs a timezone-aware datetime")
        day = at.astimezone(tz).date()
        if self.anchor == "fiscal_year_end":
            day = fiscal_year_end_on_or_after(day, fiscal_year_end) + timedelta(days=1)
        last = self.period.after(day)
        if self.minimum:
            last += timedelta(days=1)
        return local_midnight(last, tz)

    def describe(self) -> str:
        text = str(self.period)
        if self.anchor == "fiscal_year_end":
            return f"{text} after the end of the fiscal year"
        return f"at least {text}" if self.minimum else f"{text} (calendar days, call day included)"


def fiscal_year_end_on_or_after(day: date, fiscal_year_end: tuple[int, int]) -> date:
    """The last day of the fiscal year that contains `day`."""
    month, dom = fiscal_year_end
    end = date(day.year, month, dom)
    return end if end >= day else date(day.year + 1, month, dom)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """00:00 of `day` in `tz`, normalised through UTC.

    Where a zone skips midnight (a DST jump at 00:00), the naive wall time does
    not exist; the UTC round trip maps it to the first real instant of the day.
    """
    wall = datetime.combine(day, time(0), tzinfo=tz)
    return wall.astimezone(ZoneInfo("UTC")).astimezone(tz)
