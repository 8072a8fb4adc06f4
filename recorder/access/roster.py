"""The nominative list of people with access, as the policy enforces it (A10, A12).

The policy's `[people.*]` joined with their `[roles.*]`: who each person is and what the
policy lets them hear, so that the list an auditor gets is the one the recorder applies.
"""

from __future__ import annotations

from typing import Any

from recorder.policy import Policy
from recorder.policy.model import Person, Role


def _row(person: Person, role: Role | None) -> dict[str, Any]:
    return {
        "id": person.id,
        "name": person.name,
        "role": person.role,
        "role_description": role.description if role else None,
        "team": person.team,
        "department": person.department,
        "extension": person.extension,
        "agent_code": person.agent_code,
        "confidential": person.confidential,
        "purposes": sorted(role.purposes) if role else [],
        "scope": role.scope if role else None,
        "window": role.window if role else None,
        "exclude_confidential": role.exclude_confidential if role else False,
        "can_override": role.can_override if role else False,
        "approves": sorted(role.approves) if role else [],
        "subject_access": role.subject_access if role else False,
        "reports": sorted(role.reports) if role else [],
        "has_account": person.uid is not None or person.account is not None,
    }


def people_rows(policy: Policy, role: str | None = None) -> list[dict[str, Any]]:
    """The list, ordered by role then person id, optionally of one role."""
    people = sorted(policy.people.values(), key=lambda person: (person.role, person.id))
    return [
        _row(person, policy.roles.get(person.role))
        for person in people
        if role is None or person.role == role
    ]
