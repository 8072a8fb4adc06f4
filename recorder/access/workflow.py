"""The motivated-request workflow as pure rules (A1-A4, A9, A10, A12, A13, P1-P5, R2).

Who is asking (`identify`), whether they may ask (`plan_request`), whether this person may
approve or deny it now (`verdict_outcome`), until when an approved request may be used
(`grant_until`) and whether it may be used for this recording now (`check_use`). Policy,
facts from the catalog and `now` in; a value out, or `AccessRefused` naming the rule. The
desk (`recorder.access.desk`) stores and audits what these decide; nothing here reads a
clock, a file or the catalog.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from recorder.access.rules import RecordingFacts, check_access, scope_refusals
from recorder.policy.model import Person, Policy, Purpose, Role
from recorder.policy.periods import local_midnight
from storage.audit import contains_phone_number

MAX_REASON = 1000


class AccessRefused(Exception):
    """A step the policy does not allow. `rule` is the rule ID; the message names no one."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{message} ({rule})")
        self.rule = rule
        self.message = message

    def to_json(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: on the access socket, SO_PEERCRED's uid and its login name; in the
    web console, the person its nominative account (A12) logged in as."""

    uid: int | None
    account: str | None
    console_person: str | None = None

    def __str__(self) -> str:
        if self.console_person is not None:
            return "console"
        return "uid=unknown" if self.uid is None else f"uid={self.uid}"


@dataclass(frozen=True, slots=True)
class RequestPlan:
    """A request the policy allows: what to write in the register."""

    person: Person
    role: Role
    purpose: Purpose
    reason: str
    approvals_needed: int
    recording_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RequestView:
    """What the workflow needs of a request in the register."""

    public_id: str
    requester: str
    purpose: str
    state: str  # pending | approved | denied
    approvals_needed: int
    approved_by: tuple[str, ...]
    valid_until: datetime | None
    recording_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class VerdictPlan:
    verdict: str  # approved | denied
    new_state: str | None  # approved | denied, or None while more approvals are due
    valid_until: datetime | None


def identify(policy: Policy, caller: Caller) -> Person:
    """The person of the nominative list behind a uid (A12): by `uid`, else by `account`;
    a console session's person while the policy still lists them."""
    if caller.console_person is not None:
        person = policy.people.get(caller.console_person)
        if person is None:
            raise AccessRefused("A12", "this account's person is no longer on the list")
        return person
    if caller.uid is not None:
        for person in policy.people.values():
            if person.uid == caller.uid:
                return person
    if caller.account is not None:
        for person in policy.people.values():
            if person.account == caller.account:
                return person
    raise AccessRefused("A12", f"{caller} is not on the nominative list")


def check_reason(reason: str) -> str:
    """A3: a written reason, which the register and the audit trail can keep."""
    text = " ".join(reason.split())
    if not text:
        raise AccessRefused("A3", "a request needs a written reason")
    if len(text) > MAX_REASON:
        raise AccessRefused("A3", f"the reason is over {MAX_REASON} characters")
    # The register and the audit trail outlive the call log's D2 erasure: no number there,
    # by the trail's own definition of one.
    if contains_phone_number(text):
        raise AccessRefused("D2", "the reason must not hold a phone number")
    return text


def _first_refusal(recording_id: int, reasons: Sequence[tuple[str, str]]) -> AccessRefused:
    rule, text = reasons[0]
    return AccessRefused(rule, f"recording {recording_id}: {text}")


def plan_request(
    policy: Policy,
    person: Person,
    purpose_id: str,
    reason: str,
    recordings: Mapping[int, RecordingFacts],
    now: datetime,
) -> RequestPlan:
    """May `person` ask for these recordings, for this purpose, now? (A1-A3, A7-A11, P1-P4)"""
    text = check_reason(reason)
    role = policy.roles[person.role]
    purpose = policy.purposes.get(purpose_id)
    if purpose is None:
        known = ", ".join(sorted(policy.purposes)) or "none"
        raise AccessRefused("P1", f"{purpose_id!r} is not a purpose of the policy ({known})")
    if role.scope == "statistics":
        raise AccessRefused("A11", f"role {role.id} sees statistics only, never a recording")
    if purpose_id not in role.purposes:
        allowed = ", ".join(sorted(role.purposes)) or "none"
        raise AccessRefused(
            purpose.rule_id or "P1", f"role {role.id} may not ask for {purpose_id} ({allowed})"
        )
    if not recordings:
        raise AccessRefused("A3", "no recording matches the request")
    for recording_id, facts in sorted(recordings.items()):
        decision = check_access(policy, person.id, purpose_id, facts, now)
        if not decision.allowed:
            raise _first_refusal(recording_id, decision.reasons)
    return RequestPlan(
        person=person,
        role=role,
        purpose=purpose,
        reason=text,
        approvals_needed=purpose.approvers,
        recording_ids=tuple(sorted(recordings)),
    )


def grant_until(
    policy: Policy, requester: Person, recordings: Mapping[int, RecordingFacts], now: datetime
) -> datetime:
    """The end of an approved request: its role's grant (A13), never past a window (A1, D1)."""
    role = policy.roles[requester.role]
    until = now + timedelta(hours=role.grant_hours)
    for facts in recordings.values():
        if role.window == "call_day":
            day = facts.call_at.astimezone(policy.timezone).date()
            until = min(until, local_midnight(day + timedelta(days=1), policy.timezone))
        if facts.expires_at is not None:
            until = min(until, facts.expires_at)
    return until


def verdict_outcome(
    policy: Policy,
    request: RequestView,
    person: Person,
    verdict: str,
    recordings: Mapping[int, RecordingFacts],
    now: datetime,
) -> VerdictPlan:
    """May `person` approve or deny `request` now, and what does it change? (A3, A9)"""
    if request.state != "pending":
        raise AccessRefused("A4", f"request {request.public_id} is already {request.state}")
    if person.id == request.requester:
        raise AccessRefused("A3", "nobody approves or denies their own request")
    role = policy.roles[person.role]
    if request.purpose not in role.approves:
        raise AccessRefused("A3", f"role {role.id} does not approve {request.purpose} requests")
    if role.scope in ("team", "department", "own"):
        # A team lead answers for their own agents' calls (3.5), a director for their
        # department's: an approver's scope covers what they approve.
        for recording_id, facts in sorted(recordings.items()):
            refusals = scope_refusals(policy, person, role.scope, role.exclude_confidential, facts)
            if refusals:
                raise _first_refusal(recording_id, refusals)
    if verdict == "denied":
        return VerdictPlan("denied", "denied", None)
    if person.id in request.approved_by:
        raise AccessRefused("A9", "a second approval must come from a different person")
    requester = policy.people.get(request.requester)
    if requester is None:
        raise AccessRefused("A12", "the requester is no longer on the nominative list")
    # The windows run on while a request waits: approving one the requester could no longer
    # ask for would hand out what the policy no longer allows.
    for recording_id, facts in sorted(recordings.items()):
        decision = check_access(policy, requester.id, request.purpose, facts, now)
        if not decision.allowed:
            raise _first_refusal(recording_id, decision.reasons)
    if len(request.approved_by) + 1 < request.approvals_needed:
        return VerdictPlan("approved", None, None)
    return VerdictPlan("approved", "approved", grant_until(policy, requester, recordings, now))


def check_use(
    policy: Policy,
    request: RequestView,
    person: Person,
    recording_id: int,
    facts: RecordingFacts,
    now: datetime,
) -> None:
    """May `person` hear or export `recording_id` under `request` now? Raises if not."""
    if person.id != request.requester:
        raise AccessRefused("A10", f"request {request.public_id} is not this person's")
    if request.state != "approved":
        raise AccessRefused("A3", f"request {request.public_id} is {request.state}, not approved")
    if recording_id not in request.recording_ids:
        raise AccessRefused("A3", f"recording {recording_id} is not in {request.public_id}")
    if request.valid_until is None or now >= request.valid_until:
        raise AccessRefused("A13", f"the grant of {request.public_id} has ended")
    decision = check_access(policy, person.id, request.purpose, facts, now)
    if not decision.allowed:
        raise _first_refusal(recording_id, decision.reasons)


def may_answer_subject_access(policy: Policy, person: Person) -> None:
    """R2: only a role the policy names answers a person's request for their own data."""
    role = policy.roles[person.role]
    if not role.subject_access:
        raise AccessRefused("R2", f"role {role.id} does not answer subject-access requests")


REPORT_RULES: Mapping[str, str] = {
    "annual": "T1",
    "quality": "T2",
    "inventory": "X4",
    "people": "A12",
}


def may_read_report(policy: Policy, person: Person, kind: str, per_agent: bool) -> None:
    """T1, T2, X4, A12: the reports a role reads; per-agent figures only where allowed (A11)."""
    rule = REPORT_RULES.get(kind)
    if rule is None:
        raise AccessRefused("T1", f"no report {kind!r} ({', '.join(REPORT_RULES)})")
    role = policy.roles[person.role]
    if kind not in role.reports:
        raise AccessRefused(rule, f"role {role.id} does not read the {kind} report")
    if per_agent and not role.per_agent:
        raise AccessRefused("A11", f"role {role.id} sees team figures only, not per agent")
