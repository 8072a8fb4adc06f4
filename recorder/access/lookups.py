"""Looking things up through the desk: the recordings a person may ask for, the audit
trail (A10), the reports (T1, T2, X4, A12) and subject access (R2); each lookup audited."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from recorder.access.desk_base import DeskBase, day_bound, item_meta, recipient_key, recording_facts
from recorder.access.reports import build_view
from recorder.access.rules import check_access
from recorder.access.sealing import SealedBundle, seal_bundle
from recorder.access.workflow import (
    REPORT_RULES,
    AccessRefused,
    Caller,
    check_reason,
    may_answer_subject_access,
    may_read_report,
)
from recorder.policy.model import Policy
from storage.models import RecordingState


class DeskLookups(DeskBase):
    def search(
        self,
        policy: Policy,
        caller: Caller,
        now: datetime,
        *,
        since: str | None = None,
        until: str | None = None,
        extension: str | None = None,
        agent: str | None = None,
        number: str | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        """The recordings this person may ask for (A1, A2, A7, A8), never a number (D2).

        By number only for the roles that answer subject access (R2). The search itself is
        audited (A5, A10), with its filters and what it showed, never the number.
        """
        kept: dict[str, Any] = {"from": since, "to": until, "extension": extension}
        kept["agent"] = agent
        kept["by_number"] = number is not None
        with self._step(policy, caller, now, "recordings.searched", "catalog:-") as person:
            role = policy.roles[person.role]
            if role.scope == "statistics":
                raise AccessRefused(
                    "A11", f"role {role.id} sees statistics only, never a recording"
                )
            if not role.purposes:
                raise AccessRefused("A10", f"role {role.id} hears no recording")
            start = day_bound(since, "from", policy.timezone, end=False)
            end = day_bound(until, "to", policy.timezone, end=True)
            if number is not None:
                if not role.subject_access:
                    raise AccessRefused("R2", f"role {role.id} does not search by number")
                found = self._find(policy, number, start, end).recordings
                if extension is not None or agent is not None:
                    calls = {r.call_id: self.catalog.get_call(r.call_id) for r in found}
                    found = [
                        r
                        for r in found
                        if (call := calls[r.call_id]) is not None
                        and (extension is None or call.extension == extension)
                        and (agent is None or call.agent == agent)
                    ]
            else:
                found = self.catalog.list_recordings(
                    since=start, until=end, extension=extension, agent=agent, limit=5000
                )
            rows: list[dict[str, Any]] = []
            for recording in found:
                call = self.catalog.get_call(recording.call_id)
                if call is None:
                    continue
                facts = recording_facts(recording, call)
                purposes = sorted(
                    purpose
                    for purpose in role.purposes
                    if check_access(policy, person.id, purpose, facts, now).allowed
                )
                if not purposes:
                    continue
                rows.append(
                    {
                        "recording": recording.id,
                        "call": call.id,
                        "call_at": call.arrived_at.astimezone(policy.timezone).isoformat(),
                        "direction": call.direction.value,
                        "extension": call.extension,
                        "agent": call.agent,
                        "duration": recording.duration,
                        "state": recording.state.value,
                        "expires_at": None
                        if recording.expires_at is None
                        else recording.expires_at.astimezone(policy.timezone).isoformat(),
                        "purposes": purposes,
                    }
                )
                if len(rows) >= limit:
                    break
            self._trace(
                now,
                self._actor(caller, person),
                "recordings.searched",
                "catalog:-",
                "ok",
                detail={"filters": kept, "shown": [row["recording"] for row in rows]},
            )
            return rows

    def audit_entries(
        self, policy: Policy, caller: Caller, now: datetime, *, limit: int = 200
    ) -> list[dict[str, Any]]:
        """A10: who accessed what, when and why, for the roles the policy lets read it."""
        with self._step(policy, caller, now, "audit.read", "audit:-") as person:
            role = policy.roles[person.role]
            if not role.audit:
                raise AccessRefused("A10", f"role {role.id} does not read the audit trail")
            entries = [entry.to_json() for entry in self.trail.entries(limit=limit)]
            self._trace(
                now,
                self._actor(caller, person),
                "audit.read",
                "audit:-",
                "ok",
                detail={"shown": len(entries)},
            )
            return entries

    def report(
        self,
        policy: Policy,
        caller: Caller,
        now: datetime,
        *,
        kind: str,
        params: Mapping[str, Any],
    ) -> dict[str, Any]:
        """T1, T2, X4, A12: a report the person's role reads, its reading audited (A5)."""
        with self._step(policy, caller, now, "report.read", f"report:{kind}") as person:
            may_read_report(policy, person, kind, bool(params.get("per_agent")))
            kept = _report_params(kind, params)
            view = build_view(
                policy,
                self.catalog,
                kind,
                kept,
                storage_dir=self.storage_dir,
                database=self.database,
                journal=self.journal,
            )
            self._trace(
                now,
                self._actor(caller, person),
                "report.read",
                f"report:{kind}",
                "ok",
                detail={"params": kept, "rows": len(view["rows"])},
            )
            return view

    def subject_access(
        self,
        policy: Policy,
        caller: Caller,
        now: datetime,
        *,
        number: str,
        since: str | None,
        until: str | None,
        recipient: str | None,
        reason: str,
    ) -> tuple[dict[str, Any], SealedBundle | None]:
        """R2: every call and recording held about a number, and the export it is owed."""
        with self._step(
            policy, caller, now, "subject_access", "subject:-", reason=reason
        ) as person:
            may_answer_subject_access(policy, person)
            text = check_reason(reason)
            findings = self._find(
                policy,
                number,
                day_bound(since, "--from", policy.timezone, end=False),
                day_bound(until, "--to", policy.timezone, end=True),
            )
            bundle = None
            exported: list[int] = []
            if recipient is not None:
                key = recipient_key(recipient)
                calls = {call.id: call for call in findings.calls}
                items = []
                for recording in findings.recordings:
                    if recording.path is None or recording.state not in (
                        RecordingState.COMPLETE,
                        RecordingState.INTERRUPTED,
                    ):
                        continue
                    data = self._verified(recording)
                    meta = item_meta(policy, recording, calls[recording.call_id])
                    items.append((recording.name, data, meta))
                    exported.append(recording.id)
                header = {
                    "kind": "subject_access",
                    "made_at": now.isoformat(),
                    "made_by": person.id,
                    "policy": policy.name,
                    "rule": "R2",
                }
                bundle = seal_bundle(items, key, header)
            answer = findings.to_json()
            answer["exported"] = exported
            self._trace(
                now,
                self._actor(caller, person),
                "subject_access",
                "subject:-",
                "ok",
                reason=text,
                detail={
                    "calls": [call.id for call in findings.calls],
                    "recordings": [r.id for r in findings.recordings],
                    "erased": findings.erased,
                    "exported": exported,
                    "recipient": recipient,
                },
            )
            return answer, bundle


def _report_params(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a report takes, checked: what the trail keeps of the reading."""
    rule = REPORT_RULES.get(kind, "T1")
    if kind == "annual":
        year = params.get("year")
        if isinstance(year, bool) or not isinstance(year, int) or not 1970 <= year <= 2999:
            raise AccessRefused(rule, "--year: a year such as 2026")
        return {"year": year}
    if kind == "quality":
        kept: dict[str, Any] = {"per_agent": bool(params.get("per_agent"))}
        for key in ("from", "to"):
            try:
                kept[key] = date.fromisoformat(str(params.get(key))).isoformat()
            except ValueError:
                raise AccessRefused(rule, f"--{key}: not a date (YYYY-MM-DD)") from None
        if kept["to"] < kept["from"]:
            raise AccessRefused(rule, "--to is before --from")
        return kept
    if kind == "people":
        role = params.get("role")
        return {"role": role if isinstance(role, str) else None}
    return {}
