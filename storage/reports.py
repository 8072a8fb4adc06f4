"""Figures for the yearly report (T1, A5), the quality report (T2, A11) and the inventory of
personal data (X4): read-only catalog queries, nothing else.

Every function reads in one transaction and returns frozen snapshots with `to_json()` (plain
JSON types) and `rows()` (flat dicts in the order of `columns()`, for CSV or a table). No
phone number ever leaves this module: the call log's number columns are only ever compared
with the erased/withheld markers, never selected.

Months are calendar months in the time zone passed in (the policy's): a call at 23:30 on
31 January in Montreal is a January call, although it is February in UTC. Month boundaries
are computed here, in Python, and each row is put in its month by a CASE over those
instants, so that the counting itself stays in SQL (GROUP BY) on every backend; no database
time zone function is involved.

What is counted where:

- calls, recorded calls, refusals: the call log, by `Call.arrived_at`. A call is recorded
  when it has at least one recording row that did not fail (a `failed` row holds no audio;
  destroyed recordings still count: the call was recorded). A refusal is a call whose
  `consent_outcome` is "refused"; `refusals_by_method` groups them by `consent_method` as
  stored ("dtmf-rfc4733", "sip-info", "inband", "voice", "timeout"; "(none)" if unset).
- requests: the register (`access_requests`): made by `created_at`, approved and denied by
  `decided_at`, per purpose.
- lawful-use acts: the audit trail, by `AuditEntry.at`: `access.request` refused,
  `recording.listen`, `recording.export` and `subject_access` ok. The trail is itself pruned
  (A5: 3 months after the fiscal year), so a year past that horizon reports zeros there.
- destructions: audit entries `recording.destroyed`, `training_copy.destroyed` and
  `summary.destroyed`, classed by the retention class whose rule the purge cited
  (storage/retention.py): a training copy is "training_copies", a summary sheet
  "summary_sheets"; a recording is "sampled_recordings" when the daily S6 draw dropped it
  (its reason says "not kept by the daily sample") or when the draw had kept it (a
  `sample_picks` row with kept true: it expired under the sample's period), and
  "recordings" otherwise (ordinary expiry, including a dropped recording that a hold kept
  past the draw and that expired once released: the purge cites the recordings rule then).
- numbers erased: the `count` in the detail of the `calls.numbers_erased` entries (D2), in
  the month the purge erased them.
- holds placed: `holds.created_at`.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    case,
    cast,
    exists,
    func,
    literal_column,
    make_url,
    select,
)
from sqlalchemy.orm import Session

from storage.db import _sqlite_file
from storage.models import (
    ERASED,
    WITHHELD,
    AccessRequest,
    AuditEntry,
    Call,
    Direction,
    Hold,
    Recording,
    RecordingState,
    RequestState,
    SamplePick,
    SummarySheet,
    TrainingCopy,
)
from storage.repository import Catalog, read_session

# --- shared helpers ---

REFUSED = "refused"  # Call.consent_outcome of a refusal (consent.events.Outcome)
NO_METHOD = "(none)"
NO_TEAM = "(no team)"
ALL_TEAMS = "(all teams)"
TOTAL = "total"

# The retention classes a destruction is counted under (see the module docstring).
DESTRUCTION_CLASSES: tuple[str, ...] = (
    "recordings",
    "sampled_recordings",
    "training_copies",
    "summary_sheets",
)
# What storage.retention.Purger._apply_draw writes in the reason of a recording the daily
# S6 draw did not keep ("<rule>: not kept by the daily sample of <day>"); a test runs the
# real purge so that a change there shows up here.
_DRAW_REASON = "%not kept by the daily sample%"
_RECORDING_PREFIX = "recording:"

# Audit actions of lawful use (recorder/access/desk.py) and of the purge.
_ACTS: Mapping[tuple[str, str], str] = {
    ("access.request", "refused"): "refused_requests",
    ("recording.listen", "ok"): "listens",
    ("recording.export", "ok"): "exports",
    ("subject_access", "ok"): "subject_access",
}
_DESTROYED = ("recording.destroyed", "training_copy.destroyed", "summary.destroyed")
_NUMBERS_ERASED = "calls.numbers_erased"


def _iso(value: datetime | None) -> str | None:
    # UTC in JSON, like the retention reports, the register and the audit trail.
    return None if value is None else value.astimezone(UTC).isoformat()


def _aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def _month_start(year: int, month: int, zone: tzinfo) -> datetime:
    # 00:00 local on the 1st, normalised through UTC as storage.retention.local_midnight.
    return datetime(year, month, 1, tzinfo=zone).astimezone(UTC)


def month_bounds(year: int, zone: tzinfo) -> tuple[datetime, ...]:
    """The 13 instants (UTC) that start each calendar month of `year` in `zone`, and end it."""
    starts = [_month_start(year, month, zone) for month in range(1, 13)]
    return (*starts, _month_start(year + 1, 1, zone))


def _in_year(column: Any, bounds: Sequence[datetime]) -> list[ColumnElement[bool]]:
    return [column >= bounds[0], column < bounds[12]]


def _month_of(column: Any, bounds: Sequence[datetime]) -> Any:
    """The month (1-12) of a timestamp already restricted to the year by `_in_year`."""
    return case(*[(column < bounds[m], m) for m in range(1, 12)], else_=12).label("month")


def _grouped(session: Session, query: Select[Any]) -> list[Any]:
    """GROUP BY every column of `query` but its last one, which is summed as a count.

    Through a subquery, so that GROUP BY names plain columns: a CASE with bound parameters
    repeated in GROUP BY is not always recognised as the selected expression (PostgreSQL).
    """
    inner = query.subquery()
    keys = list(inner.c)[:-1]
    value = list(inner.c)[-1]
    outer = select(*keys, func.coalesce(func.sum(value), 0)).group_by(*keys)
    return list(session.execute(outer))


# --- T1, A5: the yearly report ---


@dataclass(frozen=True, slots=True)
class MonthFigures:
    """One month's figures (`month` 1-12), or the year's (`month` None)."""

    month: int | None
    calls: int = 0
    recorded_calls: int = 0
    refusals: int = 0
    refusals_by_method: dict[str, int] = field(default_factory=dict)
    # purpose -> {"made": n, "approved": n, "denied": n}
    requests_by_purpose: dict[str, dict[str, int]] = field(default_factory=dict)
    refused_requests: int = 0
    listens: int = 0
    exports: int = 0
    subject_access: int = 0
    # Always the four DESTRUCTION_CLASSES, zeros included.
    destructions_by_class: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(DESTRUCTION_CLASSES, 0)
    )
    numbers_erased: int = 0
    holds_placed: int = 0

    def requests(self, what: Literal["made", "approved", "denied"]) -> int:
        return sum(counts.get(what, 0) for counts in self.requests_by_purpose.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "month": self.month,
            "calls": self.calls,
            "recorded_calls": self.recorded_calls,
            "refusals": self.refusals,
            "refusals_by_method": dict(sorted(self.refusals_by_method.items())),
            "requests_by_purpose": {
                purpose: dict(counts)
                for purpose, counts in sorted(self.requests_by_purpose.items())
            },
            "refused_requests": self.refused_requests,
            "listens": self.listens,
            "exports": self.exports,
            "subject_access": self.subject_access,
            "destructions_by_class": dict(self.destructions_by_class),
            "numbers_erased": self.numbers_erased,
            "holds_placed": self.holds_placed,
        }


_REQUEST_KEYS = ("made", "approved", "denied")
_MONTH_COLUMNS: tuple[str, ...] = (
    "month",
    "calls",
    "recorded_calls",
    "refusals",
    "requests_made",
    "requests_approved",
    "requests_denied",
    "refused_requests",
    "listens",
    "exports",
    "subject_access",
    *(f"destroyed_{name}" for name in DESTRUCTION_CLASSES),
    "numbers_erased",
    "holds_placed",
)


@dataclass(frozen=True, slots=True)
class AnnualReport:
    """T1, A5: the year's calls, refusals, requests, communications and destructions."""

    year: int
    zone: str
    months: tuple[MonthFigures, ...]  # 12, January first
    totals: MonthFigures  # month None

    def _label(self, figures: MonthFigures) -> str:
        return TOTAL if figures.month is None else f"{self.year:04d}-{figures.month:02d}"

    def _all(self) -> tuple[MonthFigures, ...]:
        return (*self.months, self.totals)

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return _MONTH_COLUMNS

    def rows(self) -> list[dict[str, Any]]:
        """One row per month ("YYYY-MM") and a "total" row, in `columns()` order."""
        out = []
        for figures in self._all():
            row: dict[str, Any] = {
                "month": self._label(figures),
                "calls": figures.calls,
                "recorded_calls": figures.recorded_calls,
                "refusals": figures.refusals,
                "requests_made": figures.requests("made"),
                "requests_approved": figures.requests("approved"),
                "requests_denied": figures.requests("denied"),
                "refused_requests": figures.refused_requests,
                "listens": figures.listens,
                "exports": figures.exports,
                "subject_access": figures.subject_access,
            }
            for name in DESTRUCTION_CLASSES:
                row[f"destroyed_{name}"] = figures.destructions_by_class.get(name, 0)
            row["numbers_erased"] = figures.numbers_erased
            row["holds_placed"] = figures.holds_placed
            out.append({key: row[key] for key in _MONTH_COLUMNS})
        return out

    @classmethod
    def method_columns(cls) -> tuple[str, ...]:
        return ("month", "method", "refusals")

    def method_rows(self) -> list[dict[str, Any]]:
        """Refusals per consent method, long format: only the (month, method) pairs seen."""
        return [
            {"month": self._label(figures), "method": method, "refusals": count}
            for figures in self._all()
            for method, count in sorted(figures.refusals_by_method.items())
        ]

    @classmethod
    def purpose_columns(cls) -> tuple[str, ...]:
        return ("month", "purpose", *_REQUEST_KEYS)

    def purpose_rows(self) -> list[dict[str, Any]]:
        """Requests per purpose, long format: only the (month, purpose) pairs seen."""
        return [
            {"month": self._label(figures), "purpose": purpose}
            | {key: counts.get(key, 0) for key in _REQUEST_KEYS}
            for figures in self._all()
            for purpose, counts in sorted(figures.requests_by_purpose.items())
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "year": self.year,
            "zone": self.zone,
            "months": [m.to_json() for m in self.months],
            "totals": self.totals.to_json(),
        }


class _MonthAcc:
    """Mutable counters for one month while the queries are read."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)
        self.methods: dict[str, int] = defaultdict(int)
        self.purposes: dict[str, dict[str, int]] = defaultdict(
            lambda: dict.fromkeys(_REQUEST_KEYS, 0)
        )
        self.destructions: dict[str, int] = dict.fromkeys(DESTRUCTION_CLASSES, 0)

    def freeze(self, month: int | None) -> MonthFigures:
        c = self.counts
        return MonthFigures(
            month=month,
            calls=c["calls"],
            recorded_calls=c["recorded_calls"],
            refusals=c["refusals"],
            refusals_by_method=dict(self.methods),
            requests_by_purpose={k: dict(v) for k, v in self.purposes.items()},
            refused_requests=c["refused_requests"],
            listens=c["listens"],
            exports=c["exports"],
            subject_access=c["subject_access"],
            destructions_by_class=dict(self.destructions),
            numbers_erased=c["numbers_erased"],
            holds_placed=c["holds_placed"],
        )


def _destruction_class() -> Any:
    recording_id = cast(func.substr(AuditEntry.object, len(_RECORDING_PREFIX) + 1), Integer)
    kept = exists().where(SamplePick.recording_id == recording_id, SamplePick.kept.is_(True))
    # Evaluated in order: the sample lookup only runs for `recording.destroyed` entries,
    # whose object is always "recording:<id>".
    return case(
        (AuditEntry.action == "training_copy.destroyed", "training_copies"),
        (AuditEntry.action == "summary.destroyed", "summary_sheets"),
        (AuditEntry.reason.like(_DRAW_REASON), "sampled_recordings"),
        (kept, "sampled_recordings"),
        else_="recordings",
    ).label("retention_class")


def annual_report(catalog: Catalog, year: int, zone: tzinfo) -> AnnualReport:
    """T1, A5: the figures of each calendar month of `year` in `zone` (see module docstring)."""
    bounds = month_bounds(year, zone)
    months = {m: _MonthAcc() for m in range(1, 13)}
    one = literal_column("1", Integer).label("n")  # what each row counts for, summed by _grouped

    call_month = _month_of(Call.arrived_at, bounds)
    recorded = exists().where(
        Recording.call_id == Call.id, Recording.state != RecordingState.FAILED
    )
    refused = Call.consent_outcome == REFUSED
    audit_month = _month_of(AuditEntry.at, bounds)
    in_audit_year = _in_year(AuditEntry.at, bounds)

    with read_session(catalog) as session:
        for name, condition in (
            ("calls", None),
            ("recorded_calls", recorded),
            ("refusals", refused),
        ):
            query = select(call_month).where(*_in_year(Call.arrived_at, bounds))
            if condition is not None:
                query = query.where(condition)
            for month, count in _grouped(session, query.add_columns(one)):
                months[month].counts[name] += int(count)

        method = func.coalesce(Call.consent_method, NO_METHOD).label("method")
        query = select(call_month, method, one).where(*_in_year(Call.arrived_at, bounds), refused)
        for month, name, count in _grouped(session, query):
            months[month].methods[name] += int(count)

        made_month = _month_of(AccessRequest.created_at, bounds)
        query = select(made_month, AccessRequest.purpose, one).where(
            *_in_year(AccessRequest.created_at, bounds)
        )
        for month, purpose, count in _grouped(session, query):
            months[month].purposes[purpose]["made"] += int(count)

        decided_month = _month_of(AccessRequest.decided_at, bounds)
        query = select(decided_month, AccessRequest.purpose, AccessRequest.state, one).where(
            *_in_year(AccessRequest.decided_at, bounds),
            AccessRequest.state.in_([RequestState.APPROVED, RequestState.DENIED]),
        )
        for month, purpose, state, count in _grouped(session, query):
            months[month].purposes[purpose][RequestState(state).value] += int(count)

        actions = sorted({action for action, _ in _ACTS})
        query = select(audit_month, AuditEntry.action, AuditEntry.outcome, one).where(
            *in_audit_year, AuditEntry.action.in_(actions)
        )
        for month, action, outcome, count in _grouped(session, query):
            counter = _ACTS.get((action, outcome))
            if counter is not None:
                months[month].counts[counter] += int(count)

        query = select(audit_month, _destruction_class(), one).where(
            *in_audit_year, AuditEntry.action.in_(_DESTROYED)
        )
        for month, name, count in _grouped(session, query):
            months[month].destructions[name] += int(count)

        erased = AuditEntry.detail["count"].as_integer().label("n")
        query = select(audit_month, erased).where(
            *in_audit_year, AuditEntry.action == _NUMBERS_ERASED
        )
        for month, count in _grouped(session, query):
            months[month].counts["numbers_erased"] += int(count)

        query = select(_month_of(Hold.created_at, bounds), one).where(
            *_in_year(Hold.created_at, bounds)
        )
        for month, count in _grouped(session, query):
            months[month].counts["holds_placed"] += int(count)

    total = _MonthAcc()
    for acc in months.values():
        for key, value in acc.counts.items():
            total.counts[key] += value
        for key, value in acc.methods.items():
            total.methods[key] += value
        for purpose, counts in acc.purposes.items():
            for key, value in counts.items():
                total.purposes[purpose][key] += value
        for key, value in acc.destructions.items():
            total.destructions[key] += value
    return AnnualReport(
        year=year,
        zone=str(zone),
        months=tuple(months[m].freeze(m) for m in range(1, 13)),
        totals=total.freeze(None),
    )


# --- T2, A11: the quality report ---


@dataclass(frozen=True, slots=True)
class QualityFigures:
    """Calls of one team, one agent (`agent` set), or all teams (`team` ALL_TEAMS).

    `lost` calls were never answered. Setup times are those of answered calls (the time to
    answer); talk times those of answered calls that ended. None where there is no call.
    """

    team: str
    agent: str | None
    calls: int
    answered: int
    lost: int
    setup_seconds_mean: float | None
    setup_seconds_median: float | None
    talk_seconds_mean: float | None
    talk_seconds_median: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "team": self.team,
            "agent": self.agent,
            "calls": self.calls,
            "answered": self.answered,
            "lost": self.lost,
            "setup_seconds_mean": self.setup_seconds_mean,
            "setup_seconds_median": self.setup_seconds_median,
            "talk_seconds_mean": self.talk_seconds_mean,
            "talk_seconds_median": self.talk_seconds_median,
        }


_FIGURE_COLUMNS: tuple[str, ...] = (
    "calls",
    "answered",
    "lost",
    "setup_seconds_mean",
    "setup_seconds_median",
    "talk_seconds_mean",
    "talk_seconds_median",
)

Level = Literal["team", "agent"]


@dataclass(frozen=True, slots=True)
class QualityReport:
    """T2: calls arrived in [since, until), per team; per agent only when asked (A11).

    `agents` is empty unless `per_agent`; agents with fewer than `min_count` calls in the
    period are left out of it (a handful of calls identifies the people behind them) and
    counted in `suppressed`. Calls without an agent (usually the lost ones) count for their
    team ("(no team)") only.
    """

    since: datetime
    until: datetime
    per_agent: bool
    min_count: int
    teams: tuple[QualityFigures, ...]  # by team name, NO_TEAM last
    total: QualityFigures  # team ALL_TEAMS
    agents: tuple[QualityFigures, ...]  # by (team, agent)
    suppressed: int

    @classmethod
    def columns(cls, level: Level = "team") -> tuple[str, ...]:
        if level == "team":
            return ("team", *_FIGURE_COLUMNS)
        if level == "agent":
            return ("team", "agent", *_FIGURE_COLUMNS)
        raise ValueError(f"level is 'team' or 'agent', not {level!r}")

    def rows(self, level: Level = "team") -> list[dict[str, Any]]:
        """Team rows and the all-teams row, or the agent rows (ValueError without per_agent)."""
        columns = self.columns(level)
        if level == "agent":
            if not self.per_agent:
                raise ValueError("per-agent figures were not computed (A11)")
            figures: Iterable[QualityFigures] = self.agents
        else:
            figures = (*self.teams, self.total)
        return [{key: f.to_json()[key] for key in columns} for f in figures]

    def to_json(self) -> dict[str, Any]:
        return {
            "since": _iso(self.since),
            "until": _iso(self.until),
            "per_agent": self.per_agent,
            "min_count": self.min_count,
            "teams": [f.to_json() for f in self.teams],
            "total": self.total.to_json(),
            "agents": [f.to_json() for f in self.agents],
            "suppressed": self.suppressed,
        }


class _QualityAcc:
    def __init__(self) -> None:
        self.calls = 0
        self.answered = 0
        self.setup: list[float] = []
        self.talk: list[float] = []

    def add(self, answered: bool, setup: float | None, talk: float | None) -> None:
        self.calls += 1
        if answered:
            self.answered += 1
            if setup is not None:
                self.setup.append(float(setup))
            if talk is not None:
                self.talk.append(float(talk))

    def freeze(self, team: str, agent: str | None) -> QualityFigures:
        return QualityFigures(
            team=team,
            agent=agent,
            calls=self.calls,
            answered=self.answered,
            lost=self.calls - self.answered,
            setup_seconds_mean=statistics.fmean(self.setup) if self.setup else None,
            setup_seconds_median=float(statistics.median(self.setup)) if self.setup else None,
            talk_seconds_mean=statistics.fmean(self.talk) if self.talk else None,
            talk_seconds_median=float(statistics.median(self.talk)) if self.talk else None,
        )


def quality_report(
    catalog: Catalog,
    since: datetime,
    until: datetime,
    *,
    team_of: Mapping[str, str],
    per_agent: bool,
    min_count: int,
    direction: Direction | str | None = None,
) -> QualityReport:
    """T2, A11: figures of the calls that arrived in [since, until) (optionally of one
    direction), per team of their agent code (`team_of`; unknown or none: "(no team)")."""
    _aware("since", since)
    _aware("until", until)
    if until <= since:
        raise ValueError("until must be after since")
    if min_count < 0:
        raise ValueError("min_count is negative")
    query = select(
        Call.agent, Call.answered_at.is_not(None), Call.setup_seconds, Call.talk_seconds
    ).where(Call.arrived_at >= since, Call.arrived_at < until)
    if direction is not None:
        query = query.where(Call.direction == Direction(direction))
    with read_session(catalog) as session:
        rows = list(session.execute(query))
    teams: dict[str, _QualityAcc] = defaultdict(_QualityAcc)
    agents: dict[str, _QualityAcc] = defaultdict(_QualityAcc)
    total = _QualityAcc()
    for agent, answered, setup, talk in rows:
        team = team_of.get(agent, NO_TEAM) if agent is not None else NO_TEAM
        for acc in (teams[team], total):
            acc.add(bool(answered), setup, talk)
        if per_agent and agent is not None:
            agents[agent].add(bool(answered), setup, talk)
    agent_figures = []
    suppressed = 0
    for agent, acc in agents.items():
        if acc.calls < min_count:
            suppressed += 1
            continue
        agent_figures.append(acc.freeze(team_of.get(agent, NO_TEAM), agent))
    agent_figures.sort(key=lambda f: (f.team == NO_TEAM, f.team, f.agent or ""))
    return QualityReport(
        since=since,
        until=until,
        per_agent=per_agent,
        min_count=min_count,
        teams=tuple(
            teams[name].freeze(name, None)
            for name in sorted(teams, key=lambda name: (name == NO_TEAM, name))
        ),
        total=total.freeze(ALL_TEAMS, None),
        agents=tuple(agent_figures),
        suppressed=suppressed,
    )


# --- X4: the inventory of personal data ---

INVENTORY_KINDS: tuple[str, ...] = (
    "recordings",
    "training_copies",
    "summary_sheets",
    "call_log",
    "access_register",
    "audit_trail",
    "exports",
    "catalog",
    "catalog_journal",
    "logs",
)
PURPOSES: Mapping[str, str] = {
    "recordings": "Call recordings, kept for the purposes the policy allows "
    "(quality, complaints, training) and heard only on an approved request.",
    "training_copies": "Recordings kept for staff training, with what identifies the caller "
    "removed.",
    "summary_sheets": "Written summaries derived from recordings.",
    "call_log": "The log of every call (numbers, agent, times, consent), recorded or not, and why.",
    "access_register": "The register of written, motivated requests to hear recordings "
    "and the verdicts given on them.",
    "audit_trail": "The trace of every access to and destruction of personal data, "
    "for the annual statistics of communications.",
    "exports": "Sealed copies of recordings handed to approved requesters, held by them.",
    "catalog": "The database holding the call log, the register, the audit trail and "
    "the recordings' metadata.",
    "catalog_journal": "Call-log writes waiting for the catalog while it is unavailable "
    "(numbers included, as in the call log); present only during an outage.",
    "logs": "Service logs, with phone numbers masked.",
}
_LIVE_RECORDINGS = (
    RecordingState.RECORDING,
    RecordingState.COMPLETE,
    RecordingState.INTERRUPTED,
    RecordingState.DESTROYING,  # committed to deletion, the file may still be there
)


@dataclass(frozen=True, slots=True)
class InventoryItem:
    """One kind of personal data: what it is for, where it is, how much, since when, how
    long it is kept. `count`, `bytes`, `oldest` are None where they do not apply."""

    kind: str
    purpose: str
    location: str
    count: int | None
    bytes: int | None
    oldest: datetime | None
    retention: str | None
    detail: dict[str, int | str | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "purpose": self.purpose,
            "location": self.location,
            "count": self.count,
            "bytes": self.bytes,
            "oldest": _iso(self.oldest),
            "retention": self.retention,
            "detail": dict(self.detail),
        }


_INVENTORY_COLUMNS = ("kind", "purpose", "location", "count", "bytes", "oldest", "retention")


@dataclass(frozen=True, slots=True)
class Inventory:
    """X4: the personal-data files the service keeps, their purpose and retention."""

    items: tuple[InventoryItem, ...]  # in INVENTORY_KINDS order

    def item(self, kind: str) -> InventoryItem:
        for item in self.items:
            if item.kind == kind:
                return item
        raise KeyError(kind)

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return (*_INVENTORY_COLUMNS, "detail")

    def rows(self) -> list[dict[str, Any]]:
        """One row per kind; `detail` as "key=value, ..." text, `oldest` in ISO UTC."""
        out = []
        for item in self.items:
            row = {key: item.to_json()[key] for key in _INVENTORY_COLUMNS}
            row["detail"] = ", ".join(f"{k}={v}" for k, v in item.detail.items())
            out.append(row)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"items": [item.to_json() for item in self.items]}


def _database_location(database_url: str) -> tuple[str, int | None, dict[str, int | str | None]]:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = _sqlite_file(url)
        if path is None:
            return "sqlite (in memory)", None, {}
        size = path.stat().st_size if path.exists() else None
        wal = path.with_name(path.name + "-wal")
        detail: dict[str, int | str | None] = {}
        if wal.exists():
            detail["wal_bytes"] = wal.stat().st_size
        return str(path), size, detail
    query = {k: v for k, v in url.query.items() if k.lower() != "password"}
    # URL.set() treats None as "unchanged": replace the field of the named tuple instead.
    shown = url._replace(password=None).set(query=query)
    return shown.render_as_string(hide_password=False), None, {}


def inventory(
    catalog: Catalog,
    storage_dir: Path,
    database_url: str,
    *,
    rules: Mapping[str, str],
    journal: Path | None = None,
) -> Inventory:
    """X4: one item per kind of personal data (INVENTORY_KINDS), counted in one read."""
    live_copy = TrainingCopy.destroyed_at.is_(None)
    live_sheet = SummarySheet.destroyed_at.is_(None)
    kept = (ERASED, WITHHELD)
    has_number = Call.caller_number.not_in(kept) | Call.callee_number.not_in(kept)
    erased = (Call.caller_number == ERASED) | (Call.callee_number == ERASED)
    export_ok = (AuditEntry.action == "recording.export") & (AuditEntry.outcome == "ok")
    subject_export = (
        (AuditEntry.action == "subject_access")
        & (AuditEntry.outcome == "ok")
        & AuditEntry.detail["recipient"].as_string().is_not(None)
    )

    def count_case(condition: ColumnElement[bool]) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    with read_session(catalog) as session:
        recordings = session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(Recording.size), 0),
                func.min(Recording.created_at),
            ).where(Recording.state.in_(_LIVE_RECORDINGS))
        ).one()
        states: dict[Any, int] = {
            state: int(n)
            for state, n in session.execute(
                select(Recording.state, func.count())
                .where(Recording.state.in_(_LIVE_RECORDINGS))
                .group_by(Recording.state)
            )
        }
        copies = session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(TrainingCopy.size), 0),
                func.min(TrainingCopy.created_at),
            ).where(live_copy)
        ).one()
        sheets = session.execute(
            select(func.count(), func.min(SummarySheet.created_at)).where(live_sheet)
        ).one()
        calls = session.execute(
            select(
                func.count(),
                func.min(Call.arrived_at),
                count_case(has_number),
                count_case(~has_number & erased),
            )
        ).one()
        oldest_number = session.scalar(select(func.min(Call.arrived_at)).where(has_number))
        requests = session.execute(select(func.count(), func.min(AccessRequest.created_at))).one()
        request_states: dict[Any, int] = {
            state: int(n)
            for state, n in session.execute(
                select(AccessRequest.state, func.count()).group_by(AccessRequest.state)
            )
        }
        trail = session.execute(select(func.count(), func.min(AuditEntry.at))).one()
        exports = session.execute(
            select(count_case(export_ok), count_case(subject_export)).where(
                AuditEntry.action.in_(["recording.export", "subject_access"])
            )
        ).one()
        oldest_export = session.scalar(select(func.min(AuditEntry.at)).where(export_ok))

    db_location, db_bytes, db_detail = _database_location(database_url)
    in_catalog = "catalog, table {}".format
    total_calls, with_numbers, erased_rows = int(calls[0]), int(calls[2]), int(calls[3])
    items = {
        "recordings": InventoryItem(
            kind="recordings",
            purpose=PURPOSES["recordings"],
            location=str(storage_dir),
            count=int(recordings[0]),
            bytes=int(recordings[1] or 0),
            oldest=recordings[2],
            retention=rules.get("recordings"),
            detail={RecordingState(s).value: int(n) for s, n in sorted(states.items())},
        ),
        "training_copies": InventoryItem(
            kind="training_copies",
            purpose=PURPOSES["training_copies"],
            location=str(storage_dir / "training"),
            count=int(copies[0]),
            bytes=int(copies[1] or 0),
            oldest=copies[2],
            retention=rules.get("training_copies"),
        ),
        "summary_sheets": InventoryItem(
            kind="summary_sheets",
            purpose=PURPOSES["summary_sheets"],
            location=in_catalog("summary_sheets"),
            count=int(sheets[0]),
            bytes=None,
            oldest=sheets[1],
            retention=rules.get("summary_sheets"),
        ),
        "call_log": InventoryItem(
            kind="call_log",
            purpose=PURPOSES["call_log"],
            location=in_catalog("calls"),
            count=total_calls,
            bytes=None,
            oldest=calls[1],
            retention=rules.get("call_log"),
            detail={
                "with_numbers": with_numbers,
                "erased": erased_rows,
                "withheld": total_calls - with_numbers - erased_rows,
                "oldest_with_numbers": _iso(oldest_number),
            },
        ),
        "access_register": InventoryItem(
            kind="access_register",
            purpose=PURPOSES["access_register"],
            location=in_catalog("access_requests"),
            count=int(requests[0]),
            bytes=None,
            oldest=requests[1],
            retention=rules.get("access_register"),
            detail={RequestState(s).value: int(n) for s, n in sorted(request_states.items())},
        ),
        "audit_trail": InventoryItem(
            kind="audit_trail",
            purpose=PURPOSES["audit_trail"],
            location=in_catalog("audit_entries"),
            count=int(trail[0]),
            bytes=None,
            oldest=trail[1],
            retention=rules.get("audit_trail"),
        ),
        "exports": InventoryItem(
            kind="exports",
            purpose=PURPOSES["exports"],
            location="held by their recipients, sealed (X2); the recorder keeps no copy",
            count=int(exports[0]),
            bytes=None,
            oldest=oldest_export,
            retention=rules.get("exports"),
            detail={"subject_access_exports": int(exports[1])},
        ),
        "catalog": InventoryItem(
            kind="catalog",
            purpose=PURPOSES["catalog"],
            location=db_location,
            count=None,
            bytes=db_bytes,
            oldest=None,
            retention=rules.get("catalog"),
            detail=db_detail,
        ),
        "catalog_journal": _journal_item(journal, rules.get("catalog_journal")),
        "logs": InventoryItem(
            kind="logs",
            purpose=PURPOSES["logs"],
            location="journald / stdout",
            count=None,
            bytes=None,
            oldest=None,
            retention=rules.get("logs"),
        ),
    }
    return Inventory(items=tuple(items[kind] for kind in INVENTORY_KINDS))


def _journal_item(journal: Path | None, retention: str | None) -> InventoryItem:
    """The catalog journal (recorder.call.catalog_journal): a header line, then one line per
    call-log write waiting for the catalog; absent when nothing waits."""
    location = str(journal) if journal is not None else "not kept (no journal configured)"
    count, size, oldest = 0, 0, None
    if journal is not None:
        try:
            with journal.open(encoding="utf-8") as stream:
                header = stream.readline()
                count = sum(1 for line in stream if line.endswith("\n"))
            size = journal.stat().st_size
        except FileNotFoundError:
            header = ""
        if header:
            created = json.loads(header).get("created")
            if isinstance(created, dict) and isinstance(created.get("$at"), str):
                oldest = datetime.fromisoformat(created["$at"])
    return InventoryItem(
        kind="catalog_journal",
        purpose=PURPOSES["catalog_journal"],
        location=location,
        count=count,
        bytes=size,
        oldest=oldest,
        retention=retention,
    )
