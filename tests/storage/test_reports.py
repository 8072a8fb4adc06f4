"""The figures of the yearly report (T1, A5), the quality report (T2, A11) and the inventory
of personal data (X4), over a migrated SQLite catalog with known content."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update

from storage.audit import AuditTrail
from storage.models import (
    ERASED,
    WITHHELD,
    Recording,
    RecordingState,
    RequestState,
    SummarySheet,
    TrainingCopy,
)
from storage.register import Outcome, Register, RequestInfo
from storage.reports import (
    ALL_TEAMS,
    DESTRUCTION_CLASSES,
    INVENTORY_KINDS,
    NO_TEAM,
    AnnualReport,
    QualityReport,
    annual_report,
    inventory,
    quality_report,
)
from storage.repository import Catalog, write_session
from storage.retention import (
    Purger,
    RetentionSettings,
    add_hold,
    local_day,
    local_midnight,
    release_holds,
)

ZONE = ZoneInfo("America/Montreal")
CALLER = "+15145550100"
CALLEE = "+15145559000"
POLICY_HASH = "ab" * 32
# Days of retention per class, counted from the local day of the data (OPC-like; S6 sample).
PERIODS = {"recordings": 8, "sampled_recordings": 30, "call_log_numbers": 60}


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZONE)


def expiry(retention_class: str, at: datetime) -> datetime | None:
    days = PERIODS.get(retention_class)
    if days is None:
        return None
    return local_midnight(local_day(at, ZONE) + timedelta(days=days), ZONE)


def settings(*, fraction: float | None = None) -> RetentionSettings:
    return RetentionSettings(
        timezone=ZONE, expiry=expiry, holds_allowed=True, sample_fraction=fraction
    )


@pytest.fixture
def storage_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "recordings"
    directory.mkdir()
    return directory


def add_call(
    catalog: Catalog,
    arrived: datetime,
    *,
    agent: str | None = None,
    consent: tuple[str, str] | None = None,
    caller: str = CALLER,
    callee: str = CALLEE,
) -> int:
    call_id = catalog.add_call(
        call_id_a=f"a-{arrived.timestamp()}-{agent}-{caller}-{consent}",
        direction="inbound",
        side="external",
        caller_number=caller,
        callee_number=callee,
        arrived_at=arrived,
        agent=agent,
    )
    if consent is not None:
        outcome, method = consent
        catalog.set_consent(call_id, outcome=outcome, method=method, at=arrived)
    return call_id


def add_recording(
    catalog: Catalog, storage_dir: Path, call_id: int, at: datetime, *, size: int = 64
) -> int:
    """A finalized recording with its file on disk and the expiry the service would set."""
    data = bytes([call_id % 256]) * size
    path = storage_dir / f"rec-{call_id}-{at.timestamp()}.wav"
    path.write_bytes(data)
    recording_id = catalog.add_recording(
        call_id, name=path.name, path=str(path), format="pcm16", created_at=at
    )
    catalog.finalize_recording(
        recording_id,
        at=at,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        duration=1.0,
        expires_at=expiry("recordings", at),
    )
    return recording_id


def recorded_call(catalog: Catalog, storage_dir: Path, arrived: datetime) -> int:
    return add_recording(catalog, storage_dir, add_call(catalog, arrived), arrived)


def audit(
    catalog: Catalog, at: datetime, action: str, outcome: str = "ok", **detail: object
) -> None:
    AuditTrail(catalog, None).record(
        at=at,
        actor="alice (uid 1001)",
        action=action,
        object="request:1",
        outcome=outcome,
        detail=detail,
    )


def open_request(register: Register, recording_id: int, at: datetime, purpose: str) -> RequestInfo:
    return register.open(
        at=at,
        requester="alice",
        role="quality",
        purpose=purpose,
        reason="the caller complained about the answer given",
        selector={"recordings": [recording_id]},
        approvals_needed=1,
        recording_ids=[recording_id],
        policy_hash=POLICY_HASH,
    )


def decide(register: Register, info: RequestInfo, at: datetime, outcome: Outcome) -> None:
    register.decide(info.public_id, "bob", at, lambda _info: outcome)


APPROVE = Outcome("approved", None, RequestState.APPROVED)
DENY = Outcome("denied", "not a purpose of the policy", RequestState.DENIED)


def zero_destructions() -> dict[str, int]:
    return dict.fromkeys(DESTRUCTION_CLASSES, 0)


# --- T1, A5: the yearly report ---


def test_T1_calls_recordings_and_refusals_by_month_of_the_policy_zone(
    catalog: Catalog, storage_dir: Path
) -> None:
    c1 = add_call(catalog, local(2026, 1, 5, 10), consent=("accepted", "dtmf-rfc4733"))
    add_recording(catalog, storage_dir, c1, local(2026, 1, 5, 10))
    # 23:30 on 31 January in Montreal is 04:30 on 1 February in UTC: a January call.
    add_call(catalog, local(2026, 1, 31, 23, 30), consent=("refused", "dtmf-rfc4733"))
    add_call(catalog, local(2026, 2, 1, 0, 30), consent=("refused", "voice"))
    add_call(catalog, local(2026, 2, 10, 9), consent=("refused", "sip-info"))
    failed_call = add_call(catalog, local(2026, 2, 11, 9), consent=("accepted", "timeout"))
    failed = catalog.add_recording(
        failed_call,
        name="f.wav",
        path=str(storage_dir / "f.wav"),
        format="pcm16",
        created_at=local(2026, 2, 11, 9),
    )
    catalog.fail_recording(failed, at=local(2026, 2, 11, 9, 1), reason="writer died")
    split = add_call(catalog, local(2026, 2, 12, 9), consent=("accepted", "inband"))
    add_recording(catalog, storage_dir, split, local(2026, 2, 12, 9))
    add_recording(catalog, storage_dir, split, local(2026, 2, 12, 9, 5))  # writer restart
    recorded_call(catalog, storage_dir, local(2026, 3, 3, 9))  # no notice, no consent
    # New Year's Eve, local: the first is 2025's, the second 2026's (both January in UTC).
    add_call(catalog, local(2025, 12, 31, 23, 30), consent=("refused", "voice"))
    add_call(catalog, local(2026, 12, 31, 23, 30), consent=("refused", "inband"))

    report = annual_report(catalog, 2026, ZONE)

    assert report.year == 2026 and report.zone == "America/Montreal"
    assert [m.month for m in report.months] == list(range(1, 13))
    jan, feb, mar, dec = (report.months[i] for i in (0, 1, 2, 11))
    assert (jan.calls, jan.recorded_calls, jan.refusals) == (2, 1, 1)
    assert jan.refusals_by_method == {"dtmf-rfc4733": 1}
    # The failed recording holds no audio; the split call counts once.
    assert (feb.calls, feb.recorded_calls, feb.refusals) == (4, 1, 2)
    assert feb.refusals_by_method == {"voice": 1, "sip-info": 1}
    assert (mar.calls, mar.recorded_calls, mar.refusals) == (1, 1, 0)
    assert mar.refusals_by_method == {}
    assert (dec.calls, dec.recorded_calls, dec.refusals_by_method) == (1, 0, {"inband": 1})
    assert all(m.calls == 0 for i, m in enumerate(report.months) if i not in (0, 1, 2, 11))
    totals = report.totals
    assert totals.month is None
    assert (totals.calls, totals.recorded_calls, totals.refusals) == (8, 3, 4)
    assert totals.refusals_by_method == {"dtmf-rfc4733": 1, "voice": 1, "sip-info": 1, "inband": 1}

    # The same catalog counted in UTC puts the 23:30 calls in the next month.
    utc = annual_report(catalog, 2026, UTC)
    assert [m.calls for m in utc.months[:3]] == [2, 5, 1]
    assert utc.months[11].calls == 0 and utc.totals.calls == 8


def test_A5_requests_and_communications_counted_per_month(
    catalog: Catalog, storage_dir: Path
) -> None:
    register = Register(catalog)
    rec = recorded_call(catalog, storage_dir, local(2026, 1, 29, 10))
    late = recorded_call(catalog, storage_dir, local(2026, 2, 6, 10))
    r1 = open_request(register, rec, local(2026, 1, 30, 9), "complaint")
    decide(register, r1, local(2026, 2, 2, 9), APPROVE)  # made in January, approved in February
    r2 = open_request(register, rec, local(2026, 2, 3, 9), "quality")
    decide(register, r2, local(2026, 2, 3, 10), DENY)
    r3 = open_request(register, rec, local(2026, 2, 4, 9), "complaint")
    decide(register, r3, local(2026, 2, 4, 10), Outcome("approved", "one of two"))  # pending
    # Made and approved on 31 January, local, although 1 February in UTC.
    r4 = open_request(register, rec, local(2026, 1, 31, 23), "training")
    decide(register, r4, local(2026, 1, 31, 23, 50), APPROVE)

    audit(catalog, local(2026, 1, 10, 9), "access.request", "refused", rule="A3")
    audit(catalog, local(2026, 1, 11, 9), "access.request", "refused", rule="P2")
    audit(catalog, local(2026, 1, 30, 9), "access.request")  # the request above: made, not refused
    for minute in range(3):
        audit(catalog, local(2026, 2, 5, 9, minute), "recording.listen", bytes=64)
    audit(catalog, local(2026, 2, 5, 10), "recording.listen", "refused", rule="A1")
    audit(catalog, local(2026, 2, 6, 9), "recording.export", recordings=[rec])
    audit(catalog, local(2026, 2, 6, 10), "recording.export", "refused", rule="X2")
    audit(catalog, local(2026, 3, 1, 9), "subject_access", erased=0)
    audit(catalog, local(2026, 3, 1, 10), "subject_access", "refused", rule="R2")
    audit(catalog, local(2026, 3, 1, 11), "access.whoami")
    audit(catalog, local(2026, 12, 31, 23, 59), "recording.listen")
    audit(catalog, local(2025, 12, 31, 23, 59), "recording.listen")  # last year's
    add_hold(
        catalog,
        late,
        reason="complaint 2026-17",
        actor="carol",
        now=local(2026, 2, 7, 9),
        settings=settings(),
    )

    report = annual_report(catalog, 2026, ZONE)

    jan, feb, mar, dec = (report.months[i] for i in (0, 1, 2, 11))
    assert jan.requests_by_purpose == {
        "complaint": {"made": 1, "approved": 0, "denied": 0},
        "training": {"made": 1, "approved": 1, "denied": 0},
    }
    assert feb.requests_by_purpose == {
        "complaint": {"made": 1, "approved": 1, "denied": 0},
        "quality": {"made": 1, "approved": 0, "denied": 1},
    }
    assert (jan.refused_requests, jan.listens, jan.exports, jan.subject_access) == (2, 0, 0, 0)
    assert (feb.refused_requests, feb.listens, feb.exports, feb.subject_access) == (0, 3, 1, 0)
    assert (mar.refused_requests, mar.listens, mar.exports, mar.subject_access) == (0, 0, 0, 1)
    assert dec.listens == 1
    assert (jan.holds_placed, feb.holds_placed) == (0, 1)
    totals = report.totals
    assert totals.requests_by_purpose == {
        "complaint": {"made": 2, "approved": 1, "denied": 0},
        "quality": {"made": 1, "approved": 0, "denied": 1},
        "training": {"made": 1, "approved": 1, "denied": 0},
    }
    assert (totals.requests("made"), totals.requests("approved"), totals.requests("denied")) == (
        4,
        2,
        1,
    )
    assert (totals.refused_requests, totals.listens, totals.exports) == (2, 4, 1)
    assert (totals.subject_access, totals.holds_placed) == (1, 1)

    rows = report.rows()
    assert [row["month"] for row in rows] == [f"2026-{m:02d}" for m in range(1, 13)] + ["total"]
    assert rows[1]["requests_made"] == 2 and rows[1]["requests_approved"] == 1
    assert rows[-1]["listens"] == 4
    assert report.purpose_rows()[:2] == [
        {"month": "2026-01", "purpose": "complaint", "made": 1, "approved": 0, "denied": 0},
        {"month": "2026-01", "purpose": "training", "made": 1, "approved": 1, "denied": 0},
    ]


def test_T1_destructions_classed_as_the_real_purge_cites_them(
    catalog: Catalog, storage_dir: Path
) -> None:
    """D1, S6, D2, P5, P6: recordings destroyed at their expiry, dropped by the daily draw,
    kept by it then expired, a dropped one kept by a hold; training copies, summary sheets
    and numbers erased, each in the month (local) of the purge that did it."""

    def purge(now: datetime, fraction: float | None = None, seed: int | None = None) -> None:
        report = Purger(catalog, storage_dir, settings(fraction=fraction), seed=seed).run(now)
        assert report.ok, report.to_json()

    for _ in range(2):
        recorded_call(catalog, storage_dir, local(2026, 1, 2, 10))
    purge(local(2026, 1, 11, 12))  # D1: both expired on 10 January

    feb = [recorded_call(catalog, storage_dir, local(2026, 2, 3, 10)) for _ in range(3)]
    add_hold(
        catalog,
        feb[2],
        reason="complaint 2026-21",
        actor="carol",
        now=local(2026, 2, 3, 12),
        settings=settings(),
    )
    purge(local(2026, 2, 4, 12), fraction=0.0)  # S6: the draw keeps none; the hold wins once
    release_holds(catalog, feb[2], actor="carol", now=local(2026, 2, 20, 9))
    purge(local(2026, 2, 21, 12))  # the held one goes under the recordings rule

    march = [recorded_call(catalog, storage_dir, local(2026, 3, 2, 10)) for _ in range(4)]
    seeded = Purger(catalog, storage_dir, settings(fraction=0.5), seed=1).run(local(2026, 3, 3, 12))
    (draw,) = seeded.sampling
    kept = len(draw.kept)
    assert 0 < kept < 4 and set(draw.kept) | set(draw.dropped) == set(march)

    register = Register(catalog)
    training_dir = storage_dir / "training" / "2026-03"
    training_dir.mkdir(parents=True)
    (training_dir / "t1.wav").write_bytes(b"RIFF" * 8)
    register.add_training_copy(
        at=local(2026, 3, 10),
        name="t1.wav",
        month="2026-03",
        path=str(training_dir / "t1.wav"),
        node=None,
        sha256="0" * 64,
        size=32,
        duration=1.0,
        expires_at=local(2026, 4, 1),
    )
    register.add_summary(
        at=local(2026, 3, 10),
        author="alice",
        recording_id=march[0],
        request_id=None,
        text="the agent explained the refund rules",
        expires_at=local(2026, 4, 1),
    )
    # S6 kept ones expire on 1 April (30 days).
    purge(local(2026, 4, 2, 12))

    report = annual_report(catalog, 2026, ZONE)

    by_month = {m.month: m.destructions_by_class for m in report.months}
    assert by_month[1] == zero_destructions() | {"recordings": 2}
    assert by_month[2] == zero_destructions() | {"sampled_recordings": 2, "recordings": 1}
    assert by_month[3] == zero_destructions() | {"sampled_recordings": 4 - kept}
    assert by_month[4] == zero_destructions() | {
        "sampled_recordings": kept,
        "training_copies": 1,
        "summary_sheets": 1,
    }
    assert all(by_month[m] == zero_destructions() for m in range(5, 13))
    assert report.totals.destructions_by_class == {
        "recordings": 3,
        "sampled_recordings": 6,
        "training_copies": 1,
        "summary_sheets": 1,
    }
    # D2: the 2 January numbers, 60 days on, went with the purge of 3 March.
    assert [m.numbers_erased for m in report.months[:5]] == [0, 0, 2, 0, 0]
    assert report.totals.numbers_erased == 2
    assert report.totals.holds_placed == 1
    row = report.rows()[3]
    assert (row["destroyed_sampled_recordings"], row["destroyed_training_copies"]) == (kept, 1)
    assert (row["destroyed_summary_sheets"], row["numbers_erased"]) == (1, 0)
    assert report.rows()[2]["numbers_erased"] == 2


def test_T1_a_year_without_data_is_twelve_months_of_zeros(
    catalog: Catalog, storage_dir: Path
) -> None:
    recorded_call(catalog, storage_dir, local(2026, 6, 1, 10))
    audit(catalog, local(2026, 6, 1, 11), "recording.listen")

    report = annual_report(catalog, 2030, ZONE)

    assert len(report.months) == 12
    for figures in (*report.months, report.totals):
        assert figures.to_json() | {"month": None} == {
            "month": None,
            "calls": 0,
            "recorded_calls": 0,
            "refusals": 0,
            "refusals_by_method": {},
            "requests_by_purpose": {},
            "refused_requests": 0,
            "listens": 0,
            "exports": 0,
            "subject_access": 0,
            "destructions_by_class": zero_destructions(),
            "numbers_erased": 0,
            "holds_placed": 0,
        }
    rows = report.rows()
    assert len(rows) == 13
    assert all(list(row) == list(AnnualReport.columns()) for row in rows)
    assert all(value == 0 for row in rows for key, value in row.items() if key != "month")
    assert report.method_rows() == [] and report.purpose_rows() == []


def test_T1_report_output_is_plain_json_without_numbers(
    catalog: Catalog, storage_dir: Path
) -> None:
    call_id = add_call(catalog, local(2026, 5, 4, 10), consent=("refused", "voice"))
    add_recording(catalog, storage_dir, call_id, local(2026, 5, 4, 10))
    report = annual_report(catalog, 2026, ZONE)

    text = json.dumps(
        {"json": report.to_json(), "rows": report.rows(), "methods": report.method_rows()}
    )
    assert "5145550100" not in text and "5145559000" not in text
    assert json.loads(text)["json"]["months"][4]["refusals_by_method"] == {"voice": 1}
    assert report.method_rows() == [
        {"month": "2026-05", "method": "voice", "refusals": 1},
        {"month": "total", "method": "voice", "refusals": 1},
    ]
    assert AnnualReport.columns()[:4] == ("month", "calls", "recorded_calls", "refusals")
    assert AnnualReport.method_columns() == ("month", "method", "refusals")
    assert AnnualReport.purpose_columns() == ("month", "purpose", "made", "approved", "denied")
    with pytest.raises(AttributeError):
        report.year = 2027  # type: ignore[misc]


# --- T2, A11: the quality report ---

TEAMS = {"A1": "north", "A2": "north", "B1": "south"}


def quality_calls(catalog: Catalog) -> None:
    """March 2026: agents A1 (3 calls), A2 (1), B1 (3, one still talking), X9 (1, no team),
    two calls lost before an answer; one call on each side of the period."""

    def answered(agent: str, arrived: datetime, setup: float, talk: float | None) -> None:
        call_id = add_call(catalog, arrived)
        catalog.answer_call(call_id, at=arrived + timedelta(seconds=setup), agent=agent)
        if talk is not None:
            end = arrived + timedelta(seconds=setup + talk)
            catalog.end_call(call_id, at=end, reason="BYE")

    for day, (setup, talk) in enumerate([(2, 60), (4, 120), (9, 30)], start=2):
        answered("A1", local(2026, 3, day, 10), setup, talk)
    answered("A2", local(2026, 3, 5, 10), 6, 100)
    answered("B1", local(2026, 3, 6, 10), 1, 10)
    answered("B1", local(2026, 3, 7, 10), 3, 20)
    answered("B1", local(2026, 3, 8, 10), 2, None)
    answered("X9", local(2026, 3, 9, 10), 5, 50)
    for day, waited in ((10, 15), (11, 25)):
        arrived = local(2026, 3, day, 10)
        lost = add_call(catalog, arrived)
        catalog.end_call(lost, at=arrived + timedelta(seconds=waited), reason="CANCEL")
    answered("A1", local(2026, 2, 28, 23, 59), 1, 1)  # February's
    answered("A2", local(2026, 4, 1, 0, 0), 1, 1)  # April's


def march(catalog: Catalog, **kwargs: object) -> QualityReport:
    options: dict[str, object] = {"team_of": TEAMS, "per_agent": False, "min_count": 3}
    options |= kwargs
    return quality_report(catalog, local(2026, 3, 1), local(2026, 4, 1), **options)  # type: ignore[arg-type]


def test_T2_calls_answered_lost_and_times_per_team(catalog: Catalog) -> None:
    quality_calls(catalog)

    report = march(catalog)

    north, south, none = report.teams
    assert (north.team, south.team, none.team) == ("north", "south", NO_TEAM)
    assert (north.calls, north.answered, north.lost) == (4, 4, 0)
    assert (north.setup_seconds_mean, north.setup_seconds_median) == (5.25, 5.0)
    assert (north.talk_seconds_mean, north.talk_seconds_median) == (77.5, 80.0)
    assert (south.calls, south.answered, south.lost) == (3, 3, 0)
    assert (south.setup_seconds_mean, south.setup_seconds_median) == (2.0, 2.0)
    # The call still talking has no talk time yet.
    assert (south.talk_seconds_mean, south.talk_seconds_median) == (15.0, 15.0)
    # The unknown agent and the lost calls; a lost call's wait is no time to answer.
    assert (none.calls, none.answered, none.lost) == (3, 1, 2)
    assert (none.setup_seconds_mean, none.talk_seconds_median) == (5.0, 50.0)
    total = report.total
    assert (total.team, total.calls, total.answered, total.lost) == (ALL_TEAMS, 10, 8, 2)
    assert (total.setup_seconds_mean, total.setup_seconds_median) == (4.0, 3.5)
    assert total.talk_seconds_mean == pytest.approx(390 / 7)
    assert total.talk_seconds_median == 50.0

    rows = report.rows()
    assert [row["team"] for row in rows] == ["north", "south", NO_TEAM, ALL_TEAMS]
    assert list(rows[0]) == list(QualityReport.columns("team"))
    assert QualityReport.columns("team") == (
        "team",
        "calls",
        "answered",
        "lost",
        "setup_seconds_mean",
        "setup_seconds_median",
        "talk_seconds_mean",
        "talk_seconds_median",
    )
    assert rows[0]["lost"] == 0 and rows[2]["lost"] == 2


def test_T2_empty_period_and_bad_arguments(catalog: Catalog) -> None:
    report = quality_report(
        catalog, local(2026, 3, 1), local(2026, 4, 1), team_of={}, per_agent=True, min_count=5
    )
    assert report.teams == () and report.agents == () and report.suppressed == 0
    assert report.total.calls == 0 and report.total.setup_seconds_median is None
    with pytest.raises(ValueError):
        quality_report(
            catalog, local(2026, 4, 1), local(2026, 3, 1), team_of={}, per_agent=False, min_count=1
        )
    with pytest.raises(ValueError):
        quality_report(
            catalog,
            datetime(2026, 3, 1),
            local(2026, 4, 1),
            team_of={},
            per_agent=False,
            min_count=1,
        )


def test_A11_suppressed_agents_with_fewer_calls_than_min_count(catalog: Catalog) -> None:
    quality_calls(catalog)

    report = march(catalog, per_agent=True, min_count=3)

    assert [(f.team, f.agent, f.calls) for f in report.agents] == [
        ("north", "A1", 3),
        ("south", "B1", 3),
    ]
    assert report.suppressed == 2  # A2 and X9, one call each
    a1 = report.agents[0]
    assert (a1.setup_seconds_mean, a1.setup_seconds_median) == (5.0, 4.0)
    assert (a1.talk_seconds_mean, a1.talk_seconds_median) == (70.0, 60.0)
    rows = report.rows("agent")
    assert [row["agent"] for row in rows] == ["A1", "B1"]
    assert list(rows[0]) == list(QualityReport.columns("agent"))
    assert QualityReport.columns("agent")[:2] == ("team", "agent")
    # Team figures are the same whatever the agent level shows.
    assert report.teams == march(catalog).teams

    everyone = march(catalog, per_agent=True, min_count=1)
    assert [f.agent for f in everyone.agents] == ["A1", "A2", "B1", "X9"]
    assert everyone.agents[-1].team == NO_TEAM and everyone.suppressed == 0


def test_A11_no_agent_figures_unless_asked(catalog: Catalog) -> None:
    quality_calls(catalog)

    report = march(catalog, per_agent=False, min_count=0)

    assert report.agents == () and report.suppressed == 0
    with pytest.raises(ValueError):
        report.rows("agent")
    text = json.dumps(report.to_json())
    assert '"A1"' not in text and '"B1"' not in text
    assert json.loads(text)["agents"] == []
    assert json.loads(text)["since"] == local(2026, 3, 1).astimezone(UTC).isoformat()


# --- X4: the inventory of personal data ---


def test_X4_inventory_of_every_kind_of_personal_data(
    catalog: Catalog, storage_dir: Path, db_url: str
) -> None:
    first = add_call(catalog, local(2026, 3, 1, 9))
    add_recording(catalog, storage_dir, first, local(2026, 3, 1, 9), size=100)
    second = add_call(catalog, local(2026, 3, 2, 9), caller=WITHHELD)
    live = add_recording(catalog, storage_dir, second, local(2026, 3, 2, 9), size=200)
    gone = recorded_call(catalog, storage_dir, local(2026, 2, 27, 9))
    erased = add_call(catalog, local(2026, 1, 5, 9))
    catalog.update_call(erased, caller_number=ERASED, callee_number=ERASED)
    half = add_call(catalog, local(2026, 1, 6, 9), caller=WITHHELD)
    catalog.update_call(half, callee_number=ERASED)
    add_call(catalog, local(2026, 2, 1, 9), caller=WITHHELD, callee=WITHHELD)
    register = Register(catalog)
    for day in (10, 11):
        register.add_training_copy(
            at=local(2026, 3, day),
            name=f"t{day}.wav",
            month="2026-03",
            path=str(storage_dir / "training" / f"t{day}.wav"),
            node=None,
            sha256="0" * 64,
            size=50,
            duration=1.0,
            expires_at=local(2026, 6, 1),
        )
    for day in (12, 13, 14):
        register.add_summary(
            at=local(2026, 3, day),
            author="alice",
            recording_id=live,
            request_id=None,
            text="summary",
            expires_at=local(2027, 3, 1),
        )
    with write_session(catalog) as session:
        session.execute(
            update(Recording)
            .where(Recording.id == gone)
            .values(state=RecordingState.DESTROYED, path=None)
        )
        session.execute(
            update(TrainingCopy).where(TrainingCopy.name == "t10.wav").values(path=None)
        )
        session.execute(
            update(TrainingCopy)
            .where(TrainingCopy.name == "t10.wav")
            .values(destroyed_at=local(2026, 3, 20))
        )
        session.execute(
            update(SummarySheet)
            .where(SummarySheet.created_at < local(2026, 3, 14))
            .values(destroyed_at=local(2026, 3, 20), text="")
        )
    request = open_request(register, live, local(2026, 3, 3, 9), "complaint")
    decide(register, request, local(2026, 3, 3, 10), APPROVE)
    open_request(register, live, local(2026, 3, 4, 9), "quality")
    audit(catalog, local(2026, 3, 5, 9), "recording.export", recipient="age1xyz")
    audit(catalog, local(2026, 3, 6, 9), "recording.export", recipient="age1xyz")
    audit(catalog, local(2026, 3, 6, 10), "recording.export", "refused", rule="X2")
    audit(catalog, local(2026, 3, 7, 9), "subject_access", recipient="age1abc")
    audit(catalog, local(2026, 3, 7, 10), "subject_access", recipient=None)
    rules = {"recordings": "D1: 8 days", "call_log": "D4: 1 year; numbers D2: 12 months"}

    found = inventory(catalog, storage_dir, db_url, rules=rules)

    assert [item.kind for item in found.items] == list(INVENTORY_KINDS)
    recordings = found.item("recordings")
    assert (recordings.count, recordings.bytes) == (2, 300)
    assert recordings.oldest == local(2026, 3, 1, 9)
    assert recordings.location == str(storage_dir) and recordings.retention == "D1: 8 days"
    assert recordings.detail == {"complete": 2}
    copies = found.item("training_copies")
    assert (copies.count, copies.bytes, copies.retention) == (1, 50, None)
    assert copies.oldest == datetime(2026, 3, 1, tzinfo=UTC)  # stored to its month only (P5)
    assert copies.location == str(storage_dir / "training")
    sheets = found.item("summary_sheets")
    assert (sheets.count, sheets.bytes, sheets.oldest) == (1, None, local(2026, 3, 14))
    calls = found.item("call_log")
    assert (calls.count, calls.oldest) == (6, local(2026, 1, 5, 9))
    assert calls.retention == "D4: 1 year; numbers D2: 12 months"
    assert calls.detail == {
        "with_numbers": 3,
        "erased": 2,
        "withheld": 1,
        "oldest_with_numbers": local(2026, 2, 27, 9).astimezone(UTC).isoformat(),
    }
    register_item = found.item("access_register")
    assert (register_item.count, register_item.oldest) == (2, local(2026, 3, 3, 9))
    assert register_item.detail == {"approved": 1, "pending": 1}
    trail = found.item("audit_trail")
    assert (trail.count, trail.oldest) == (5, local(2026, 3, 5, 9))
    exports = found.item("exports")
    assert (exports.count, exports.oldest) == (2, local(2026, 3, 5, 9))
    assert exports.detail == {"subject_access_exports": 1}
    database = found.item("catalog")
    if db_url.startswith("sqlite:"):
        db_file = Path(db_url.removeprefix("sqlite:///"))
        assert database.location == str(db_file) and database.bytes == db_file.stat().st_size
    else:  # a server: its URL (no password, see below), and no file of ours to measure
        assert (database.location, database.bytes) == (db_url, None)
    assert database.count is None and database.oldest is None
    logs = found.item("logs")
    assert logs.location == "journald / stdout"
    assert (logs.count, logs.bytes, logs.oldest, logs.retention) == (None, None, None, None)
    assert all(item.purpose.endswith(".") for item in found.items)

    rows = found.rows()
    assert [list(row) for row in rows] == [list(found.columns())] * len(INVENTORY_KINDS)
    assert rows[3]["detail"].startswith("with_numbers=3, erased=2, withheld=1")
    text = json.dumps({"json": found.to_json(), "rows": rows})
    assert "5145550100" not in text and "5145559000" not in text


def test_X4_the_catalog_journal_is_in_the_inventory_while_it_holds_writes(
    catalog: Catalog, storage_dir: Path, tmp_path: Path
) -> None:
    """Issue 20: during a catalog outage the call log's writes (numbers included) wait in
    the catalog journal; X4 lists it, with what waits and since when, and 0 once empty."""
    journal = tmp_path / "catalog-journal.jsonl"
    item = inventory(catalog, storage_dir, "sqlite://", rules={}, journal=journal).item(
        "catalog_journal"
    )
    assert (item.location, item.count, item.bytes, item.oldest) == (str(journal), 0, 0, None)
    since = datetime(2026, 3, 5, 14, 0, tzinfo=UTC)
    journal.write_text(
        json.dumps({"journal": "j1", "created": {"$at": since.isoformat()}})
        + "\n"
        + '{"seq":1,"op":"add_call","call":"c1","args":{}}\n'
        + '{"seq":2,"op":"end_call","call":"c1","args":{}}\n'
        + '{"seq":3,"op":"end_ca'  # torn by a crash: never counted as written
    )
    rules = {"catalog_journal": "until the catalog answers again"}
    item = inventory(catalog, storage_dir, "sqlite://", rules=rules, journal=journal).item(
        "catalog_journal"
    )
    assert (item.count, item.oldest, item.retention) == (2, since, rules["catalog_journal"])
    assert item.bytes == journal.stat().st_size
    unset = inventory(catalog, storage_dir, "sqlite://", rules={}).item("catalog_journal")
    assert unset.location == "not kept (no journal configured)" and unset.count == 0


def test_X4_catalog_url_is_shown_without_its_password(catalog: Catalog, storage_dir: Path) -> None:
    found = inventory(
        catalog,
        storage_dir,
        "postgresql+psycopg://recorder:s3cret@db.example:5432/recorder?password=other",
        rules={"catalog": "as its longest-kept content"},
    )
    database = found.item("catalog")
    assert "s3cret" not in database.location and "other" not in database.location
    assert database.location == "postgresql+psycopg://recorder@db.example:5432/recorder"
    assert (database.bytes, database.retention) == (None, "as its longest-kept content")
    memory = inventory(catalog, storage_dir, "sqlite://", rules={}).item("catalog")
    assert (memory.location, memory.bytes) == ("sqlite (in memory)", None)
