"""May this person hear this recording, for this purpose, now? (A1-A3, A7, A8, A10, A11, P1-P3)

`check_access(policy, person, purpose, facts, now)` is pure like `decide()`: the policy's
people, roles and purposes, what the catalog knows of the recording, and the wall clock in;
a frozen `AccessDecision` out, with every rule that refuses, so that the answer can be
shown to the person asking and written to the audit trail as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from recorder.policy.model import Person, Policy

Reason = tuple[str, str]


@dataclass(frozen=True, slots=True)
class RecordingFacts:
    """What the catalog knows of a recording that access depends on."""

    call_at: datetime  # when the call arrived (timezone-aware)
    expires_at: datetime | None
    destroyed: bool
    agent: str | None
    extension: str | None


@dataclass(frozen=True, slots=True)
class AccessDecision:
    allowed: bool
    reasons: tuple[Reason, ...]  # (rule ID, why): the grounds, or every refusal
    approvers: int = 1  # A9: how many people must approve the request

    def to_json(self) -> dict[str, object]:
        return {
            "allowed": self.allowed,
            "approvers": self.approvers,
            "reasons": [{"rule": rule, "text": text} for rule, text in self.reasons],
        }


def _party(policy: Policy, facts: RecordingFacts) -> Person | None:
    """The person on the list who took the call: by agent code, else by extension."""
    for person in policy.people.values():
        if facts.agent is not None and person.agent_code == facts.agent:
            return person
    for person in policy.people.values():
        if facts.extension is not None and person.extension == facts.extension:
            return person
    return None


def _department_of(policy: Policy, facts: RecordingFacts, party: Person | None) -> str | None:
    if facts.extension is not None and facts.extension in policy.extensions:
        return policy.extensions[facts.extension].department
    return party.department if party is not None else None


def scope_refusals(
    policy: Policy, person: Person, scope: str, exclude_confidential: bool, facts: RecordingFacts
) -> list[Reason]:
    party = _party(policy, facts)
    refusals: list[Reason] = []
    if scope == "own":
        mine = (facts.agent is not None and facts.agent == person.agent_code) or (
            facts.extension is not None and facts.extension == person.extension
        )
        if not mine:
            refusals.append(("A7", "only their own calls, and this call is not theirs"))
    elif scope == "team":
        if party is None or party.team is None or party.team != person.team:
            refusals.append(("A1", f"only the calls of team {person.team}'s agents"))
    elif scope == "department":
        department = _department_of(policy, facts, party)
        if department is None or department != person.department:
            refusals.append(("A8", f"only the extensions of {person.department}"))
    if exclude_confidential and party is not None and party.confidential and party != person:
        refusals.append(("A8", "not the calls of staff bound to professional confidentiality"))
    return refusals


def check_access(
    policy: Policy, person_id: str, purpose_id: str, facts: RecordingFacts, now: datetime
) -> AccessDecision:
    person = policy.people.get(person_id)
    if person is None:
        return AccessDecision(False, (("A10", f"{person_id!r} is not on the nominative list"),))
    role = policy.roles[person.role]
    purpose = policy.purposes.get(purpose_id)
    if purpose is None:
        known = ", ".join(sorted(policy.purposes)) or "none"
        return AccessDecision(False, (("P1", f"{purpose_id!r} is not a purpose ({known})"),))
    if role.scope == "statistics":
        return AccessDecision(False, (("A11", f"role {role.id} sees statistics only"),))
    if role.scope == "none":
        why = "may give instructions (A14), not hear" if role.can_override else "hears none"
        return AccessDecision(
            False, (("A14" if role.can_override else "A10", f"role {role.id} {why}"),)
        )
    refusals: list[Reason] = []
    purpose_rule = purpose.rule_id or "P1"
    if purpose_id not in role.purposes:
        allowed = ", ".join(sorted(role.purposes)) or "none"
        refusals.append((purpose_rule, f"role {role.id} may not for {purpose_id} ({allowed})"))
    refusals += scope_refusals(policy, person, role.scope, role.exclude_confidential, facts)
    zone = policy.timezone
    if facts.destroyed:
        refusals.append(("D1", "the recording was destroyed"))
    elif role.window == "call_day":
        day = facts.call_at.astimezone(zone).date()
        if now.astimezone(zone).date() != day:
            refusals.append(("A1", f"only on the day of the call ({day.isoformat()})"))
    elif facts.expires_at is not None and now >= facts.expires_at:
        refusals.append(("D1", "the retention period is over"))
    if refusals:
        return AccessDecision(False, tuple(refusals), purpose.approvers)
    grounds: list[Reason] = [
        ("A10", f"{person.name} ({role.id}) is on the nominative list"),
        (purpose_rule, f"{purpose_id}: {purpose.description}"),
        ("A1" if role.window == "call_day" else "A2", f"within the {role.window} window"),
    ]
    if purpose.approvers > 1:
        grounds.append(("A9", f"{purpose.approvers} people must approve the request"))
    return AccessDecision(True, tuple(grounds), purpose.approvers)
