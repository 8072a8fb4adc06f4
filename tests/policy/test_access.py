"""check_access(): who may hear which recording, for what, and when (A1-A3, A7-A11, A14, P1)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from recorder.access.rules import RecordingFacts, check_access
from recorder.policy import Policy, parse_policy
from tests.policy.conftest import EXAMPLES, ROOT

MONTREAL = ZoneInfo("America/Montreal")
CALL_AT = datetime(2026, 12, 3, 10, 15, tzinfo=MONTREAL)

OPC_STAFF = """
[people.lead_nord]
name = "Julie Tremblay"
role = "team_lead"
team = "nord"

[people.agent_42]
name = "Marc Gagnon"
role = "agent"
team = "nord"
agent_code = "42"

[people.agent_43]
name = "Anne Roy"
role = "agent"
team = "sud"
agent_code = "43"
"""

MER_STAFF = """
[people.finance_director]
name = "Nathalie Caron"
role = "director"
department = "Finances et trésorerie"
extension = "236"

[people.greffe_director]
name = "Paul Dubé"
role = "director"
department = "Greffe"
extension = "261"
"""


def policy_with(example: Path, staff: str) -> Policy:
    return parse_policy(example.read_text() + staff, example)


def facts(
    *, agent: str | None = None, extension: str | None = None, days_kept: int = 8
) -> RecordingFacts:
    return RecordingFacts(
        call_at=CALL_AT,
        expires_at=CALL_AT + timedelta(days=days_kept),
        destroyed=False,
        agent=agent,
        extension=extension,
    )


def rules(decision_reasons: tuple[tuple[str, str], ...]) -> list[str]:
    return [rule for rule, _ in decision_reasons]


def test_a_team_lead_hears_their_agents_on_the_day_of_the_call_only() -> None:
    """A1: own agents, the day of the call; the next morning is refused."""
    policy = policy_with(ROOT / "policy.toml", OPC_STAFF)
    same_day = check_access(
        policy, "lead_nord", "quality", facts(agent="42"), CALL_AT.replace(hour=17)
    )
    assert same_day.allowed, same_day.reasons
    next_day = CALL_AT.replace(hour=0, minute=5) + timedelta(days=1)
    late = check_access(policy, "lead_nord", "quality", facts(agent="42"), next_day)
    assert not late.allowed
    assert late.reasons == (("A1", "only on the day of the call (2026-12-03)"),)
    other_team = check_access(policy, "lead_nord", "quality", facts(agent="43"), CALL_AT)
    assert not other_team.allowed
    assert rules(other_team.reasons) == ["A1"]


def test_the_day_of_the_call_is_the_policy_time_zone_calendar_day() -> None:
    """A1 at 23:30 Montreal is still the same day, though it is tomorrow in UTC."""
    policy = policy_with(ROOT / "policy.toml", OPC_STAFF)
    late_evening = CALL_AT.replace(hour=23, minute=30).astimezone(ZoneInfo("UTC"))
    assert late_evening.date() != CALL_AT.date()
    assert check_access(policy, "lead_nord", "quality", facts(agent="42"), late_evening).allowed


def test_an_agent_hears_only_their_own_calls() -> None:
    """A3, A7: own calls, same day, for quality only."""
    policy = policy_with(ROOT / "policy.toml", OPC_STAFF)
    assert check_access(policy, "agent_42", "quality", facts(agent="42"), CALL_AT).allowed
    theirs = check_access(policy, "agent_42", "quality", facts(agent="43"), CALL_AT)
    assert rules(theirs.reasons) == ["A7"]
    other_purpose = check_access(policy, "agent_42", "complaints", facts(agent="42"), CALL_AT)
    assert not other_purpose.allowed
    assert rules(other_purpose.reasons) == ["P1"]


def test_it_staff_hear_any_recording_during_the_whole_retention_period() -> None:
    """A2: the 8 days; the day after expiry nobody does (D1)."""
    policy = policy_with(ROOT / "policy.toml", OPC_STAFF)
    recording = facts(agent="43")
    assert check_access(
        policy, "it_head", "complaints", recording, CALL_AT + timedelta(days=7)
    ).allowed
    expired = check_access(policy, "it_head", "complaints", recording, CALL_AT + timedelta(days=8))
    assert expired.reasons == (("D1", "the retention period is over"),)
    destroyed = RecordingFacts(CALL_AT, None, True, "43", None)
    assert rules(check_access(policy, "it_head", "quality", destroyed, CALL_AT).reasons) == ["D1"]


def test_hr_hears_only_for_a_disciplinary_measure() -> None:
    """P2: the only HR purpose; curiosity or statistics are not purposes at all."""
    policy = policy_with(
        ROOT / "policy.toml", OPC_STAFF + '\n[people.rh]\nname = "Luc Roy"\nrole = "hr"\n'
    )
    assert check_access(policy, "rh", "discipline", facts(agent="42"), CALL_AT).allowed
    assert rules(check_access(policy, "rh", "quality", facts(agent="42"), CALL_AT).reasons) == [
        "P1"
    ]
    unknown = check_access(policy, "rh", "curiosity", facts(agent="42"), CALL_AT)
    assert not unknown.allowed and "is not a purpose" in unknown.reasons[0][1]


def test_someone_not_on_the_nominative_list_hears_nothing() -> None:
    """A10."""
    policy = policy_with(ROOT / "policy.toml", OPC_STAFF)
    decision = check_access(policy, "intern", "quality", facts(agent="42"), CALL_AT)
    assert decision.reasons == (("A10", "'intern' is not on the nominative list"),)


def test_a_director_hears_their_department_but_not_confidential_staff() -> None:
    """A8: MER's directors: their department's extensions, except the clerk (a lawyer)."""
    policy = policy_with(EXAMPLES["MER"], MER_STAFF)
    own_department = facts(extension="233", days_kept=366)
    assert check_access(policy, "finance_director", "quality", own_department, CALL_AT).allowed
    elsewhere = check_access(policy, "finance_director", "quality", facts(extension="510"), CALL_AT)
    assert rules(elsewhere.reasons) == ["A8"]
    # The clerk's extension is in the Greffe, the director's department, but confidential.
    clerk = check_access(policy, "greffe_director", "quality", facts(extension="252"), CALL_AT)
    assert clerk.reasons == (
        ("A8", "not the calls of staff bound to professional confidentiality"),
    )
    secretary = check_access(policy, "greffe_director", "quality", facts(extension="260"), CALL_AT)
    assert secretary.allowed


def test_complaints_need_two_approvers_where_the_policy_says_so() -> None:
    """A9: MER's complaints are approved jointly; the decision says how many must approve."""
    policy = policy_with(EXAMPLES["MER"], MER_STAFF)
    complaint = check_access(policy, "it_director", "complaints", facts(extension="233"), CALL_AT)
    assert complaint.allowed and complaint.approvers == 2
    assert ("A9", "2 people must approve the request") in complaint.reasons
    quality = check_access(policy, "it_director", "quality", facts(extension="233"), CALL_AT)
    assert quality.approvers == 1


def test_statistics_only_and_override_roles_hear_no_recording() -> None:
    """A11: CCIN's client department sees statistics only; A14: the head gives instructions."""
    ccin = policy_with(
        EXAMPLES["CCIN"], '\n[people.client]\nname = "Eve Morin"\nrole = "client_department"\n'
    )
    stats = check_access(ccin, "client", "quality", facts(agent="42"), CALL_AT)
    assert stats.reasons == (("A11", "role client_department sees statistics only"),)
    mer = policy_with(EXAMPLES["MER"], MER_STAFF)
    mayor = check_access(mer, "mayor", "complaints", facts(extension="233"), CALL_AT)
    assert not mayor.allowed and rules(mayor.reasons) == ["A14"]


def test_every_refusal_is_listed_not_only_the_first() -> None:
    """A team lead asking the next day, for another team, for a purpose not theirs."""
    policy = policy_with(ROOT / "policy.toml", OPC_STAFF)
    decision = check_access(
        policy, "lead_nord", "discipline", facts(agent="43"), CALL_AT + timedelta(days=1)
    )
    assert rules(decision.reasons) == ["P2", "A1", "A1"]
    assert decision.to_json()["allowed"] is False
