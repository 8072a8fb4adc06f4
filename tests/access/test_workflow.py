"""The request workflow as pure rules: policy, facts and `now` in, a plan or a refusal out."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from recorder.access.rules import RecordingFacts
from recorder.access.workflow import (
    AccessRefused,
    Caller,
    RequestView,
    check_reason,
    check_use,
    grant_until,
    identify,
    plan_request,
    verdict_outcome,
)
from recorder.policy import parse_policy

from .test_desk import POLICY

MONTREAL = ZoneInfo("America/Montreal")
CALL_AT = datetime(2026, 12, 3, 10, 0, tzinfo=MONTREAL)
NOW = datetime(2026, 12, 3, 14, 0, tzinfo=MONTREAL)
POLICY_MODEL = parse_policy(
    POLICY + '\n[people.clerk2]\nname = "C2"\nrole = "clerk"\nuid = 2010\n', Path("t.toml")
)
FACTS = {
    7: RecordingFacts(
        call_at=CALL_AT,
        expires_at=datetime(2026, 12, 11, tzinfo=MONTREAL),
        destroyed=False,
        agent="4711",
        extension="235",
    )
}


def person(person_id: str):  # type: ignore[no-untyped-def]
    return POLICY_MODEL.people[person_id]


def pending(requester: str, purpose: str, needed: int = 1, approved_by: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    return RequestView("R1-abcdef", requester, purpose, "pending", needed, approved_by, None, (7,))


def test_A12_identify_by_uid_then_account() -> None:
    assert identify(POLICY_MODEL, Caller(2001, "whoever")).id == "lead"
    assert identify(POLICY_MODEL, Caller(9999, "director")).id == "director"
    with pytest.raises(AccessRefused) as info:
        identify(POLICY_MODEL, Caller(9999, "mallory"))
    assert info.value.rule == "A12" and "mallory" not in info.value.message


@pytest.mark.parametrize(
    ("reason", "rule"),
    [("", "A3"), ("   \n ", "A3"), ("x" * 1001, "A3"), ("caller +15145550100", "D2")],
)
def test_A3_D2_a_reason_is_written_and_holds_no_number(reason: str, rule: str) -> None:
    with pytest.raises(AccessRefused) as info:
        check_reason(reason)
    assert info.value.rule == rule


def test_A3_a_reason_may_hold_dates_and_ticket_numbers() -> None:
    assert (
        check_reason("  complaint  2026-114 of 2026-12-03 ") == "complaint 2026-114 of 2026-12-03"
    )


def test_P1_the_plan_names_the_approvals_the_purpose_needs() -> None:
    plan = plan_request(POLICY_MODEL, person("director"), "complaints", "dispute", FACTS, NOW)
    assert plan.approvals_needed == 2 and plan.recording_ids == (7,)


def test_A3_a_request_names_at_least_one_recording() -> None:
    with pytest.raises(AccessRefused, match=r"no recording"):
        plan_request(POLICY_MODEL, person("director"), "quality", "q", {}, NOW)


def test_A9_the_last_of_two_different_approvals_approves() -> None:
    first = verdict_outcome(
        POLICY_MODEL, pending("clerk2", "complaints", 2), person("director"), "approved", FACTS, NOW
    )
    assert first.new_state is None
    with pytest.raises(AccessRefused) as again:
        verdict_outcome(
            POLICY_MODEL,
            pending("clerk2", "complaints", 2, ("director",)),
            person("director"),
            "approved",
            FACTS,
            NOW,
        )
    assert again.value.rule == "A9"
    last = verdict_outcome(
        POLICY_MODEL,
        pending("clerk2", "complaints", 2, ("director",)),
        person("clerk"),
        "approved",
        FACTS,
        NOW,
    )
    assert last.new_state == "approved" and last.valid_until is not None


def test_A1_a_team_lead_approves_only_their_team_s_calls() -> None:
    other_team = {7: RecordingFacts(CALL_AT, None, False, "9999", None)}
    with pytest.raises(AccessRefused) as info:
        verdict_outcome(
            POLICY_MODEL,
            pending("director", "quality"),
            person("lead"),
            "approved",
            other_team,
            NOW,
        )
    assert info.value.rule == "A1"


def test_a_deny_ends_the_request_without_a_grant() -> None:
    plan = verdict_outcome(
        POLICY_MODEL, pending("agent", "quality"), person("lead"), "denied", FACTS, NOW
    )
    assert (plan.new_state, plan.valid_until) == ("denied", None)


def test_A4_a_decided_request_takes_no_more_verdicts() -> None:
    done = RequestView("R1-abcdef", "agent", "quality", "denied", 1, (), None, (7,))
    with pytest.raises(AccessRefused) as info:
        verdict_outcome(POLICY_MODEL, done, person("lead"), "approved", FACTS, NOW)
    assert info.value.rule == "A4"


def test_A1_D1_A13_the_grant_ends_at_the_first_limit() -> None:
    # Same-day role: midnight after the call, before its 24 h grant.
    assert grant_until(POLICY_MODEL, person("agent"), FACTS, NOW) == datetime(
        2026, 12, 4, tzinfo=MONTREAL
    )
    # Vendor: its 2 hours.
    assert grant_until(POLICY_MODEL, person("vendor"), FACTS, NOW) == NOW + timedelta(hours=2)
    # Retention: the recording's expiry, when that comes first.
    late = NOW + timedelta(days=7, hours=20)
    assert grant_until(POLICY_MODEL, person("director"), FACTS, late) == FACTS[7].expires_at


def test_a_grant_is_used_by_its_requester_within_its_time() -> None:
    approved = RequestView(
        "R1-abcdef",
        "vendor",
        "maintenance",
        "approved",
        1,
        ("director",),
        NOW + timedelta(hours=2),
        (7,),
    )
    check_use(POLICY_MODEL, approved, person("vendor"), 7, FACTS[7], NOW + timedelta(hours=1))
    for who, at, rule in (
        ("director", NOW, "A10"),
        ("vendor", NOW + timedelta(hours=2), "A13"),
    ):
        with pytest.raises(AccessRefused) as info:
            check_use(POLICY_MODEL, approved, person(who), 7, FACTS[7], at)
        assert info.value.rule == rule
    with pytest.raises(AccessRefused, match="not in"):
        check_use(POLICY_MODEL, approved, person("vendor"), 8, FACTS[7], NOW)
