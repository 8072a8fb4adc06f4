"""The access desk: the one audited path by which people use recordings (A1-A14, P5, P6, R2, X1).

Every act of lawful use goes through here, whoever the front end is (the `recorder` CLI over
the access socket, reports, a console): identify the caller from the nominative list (A12),
let `recorder.access.workflow` judge the step, write it to the register (A4) and to the
hash-chained audit trail (A5, A10), and only then touch a file. A refusal is audited too,
and writes nothing else. Files are read here, checked against their catalogued SHA-256
(X1), and leave only as bytes to the requester or as age-encrypted copies (X2).

Blocking: the service runs it on a thread of its own, with a catalog connection of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from recorder.access.copies import DeskCopies
from recorder.access.desk_base import (
    MAX_SELECTION,
    ReadCopy,
    export_header,
    item_meta,
    recipient_key,
    recording_facts,
    request_view,
)
from recorder.access.lookups import DeskLookups
from recorder.access.sealing import SealedBundle, seal_bundle
from recorder.access.workflow import (
    AccessRefused,
    Caller,
    check_reason,
    plan_request,
    verdict_outcome,
)
from recorder.policy.model import Policy
from storage.models import RequestState
from storage.register import BadRequestId, Outcome, RequestInfo
from storage.repository import InvalidState

__all__ = ["AccessDesk", "ReadCopy", "recording_facts"]


class AccessDesk(DeskCopies, DeskLookups):
    """Requests, verdicts, listening, exports, training copies, summaries, subject access."""

    def whoami(self, policy: Policy, caller: Caller, now: datetime) -> dict[str, Any]:
        with self._step(policy, caller, now, "access.whoami", "person:-") as person:
            role = policy.roles[person.role]
            return {
                "person": person.id,
                "name": person.name,
                "role": role.id,
                "purposes": sorted(role.purposes),
                "approves": sorted(role.approves),
                "scope": role.scope,
                "window": role.window,
                "grant_hours": role.grant_hours,
                "subject_access": role.subject_access,
            }

    def request(
        self,
        policy: Policy,
        caller: Caller,
        now: datetime,
        *,
        purpose: str,
        reason: str,
        selector: Mapping[str, Any],
    ) -> RequestInfo:
        """A3, A4, A7, A8: a motivated request, in the register once the policy allows it."""
        with self._step(
            policy, caller, now, "access.request", "request:-", purpose=purpose, reason=reason
        ) as person:
            ids, kept = self._select(policy, selector)
            if len(ids) > MAX_SELECTION:
                raise AccessRefused("A3", f"over {MAX_SELECTION} recordings in one request")
            plan = plan_request(policy, person, purpose, reason, self._facts(ids), now)
            actor = self._actor(caller, person)
            info = self.register.open(
                at=now,
                requester=person.id,
                role=plan.role.id,
                purpose=plan.purpose.id,
                reason=plan.reason,
                selector=kept,
                approvals_needed=plan.approvals_needed,
                recording_ids=plan.recording_ids,
                policy_hash=policy.content_hash,
                audit=self._hook(
                    now,
                    actor,
                    "access.request",
                    lambda info: {
                        "request": info.public_id,
                        "recordings": list(info.recording_ids),
                        "approvals_needed": info.approvals_needed,
                        "selector": info.selector,
                    },
                ),
            )
            self.trail.anchor(now)
            return info

    def verdict(
        self,
        policy: Policy,
        caller: Caller,
        now: datetime,
        *,
        request_id: str,
        verdict: str,
        reason: str | None,
    ) -> RequestInfo:
        """A3, A9: one person's approval or denial; the request is approved at the last one."""
        action = "access.approve" if verdict == "approved" else "access.deny"
        with self._step(
            policy, caller, now, action, f"request:{request_id}", reason=reason
        ) as person:
            text = check_reason(reason or "") if verdict == "denied" or reason else None
            current = self._request(request_id)
            facts = self._facts(current.recording_ids)

            def judge(info: RequestInfo) -> Outcome:
                plan = verdict_outcome(policy, request_view(info), person, verdict, facts, now)
                return Outcome(
                    verdict="approved" if plan.verdict == "approved" else "denied",
                    reason=text,
                    new_state=None if plan.new_state is None else RequestState(plan.new_state),
                    valid_until=plan.valid_until,
                )

            try:
                info = self.register.decide(
                    request_id,
                    person.id,
                    now,
                    judge,
                    audit=self._hook(
                        now,
                        self._actor(caller, person),
                        action,
                        lambda info: {
                            "request": info.public_id,
                            "approvals": info.approvals,
                            "approvals_needed": info.approvals_needed,
                            "state": info.state.value,
                            "valid_until": None
                            if info.valid_until is None
                            else info.valid_until.isoformat(),
                            "verdict_reason": text,
                        },
                    ),
                )
            except InvalidState:
                raise AccessRefused(
                    "A4", f"request {request_id} is already {current.state.value}"
                ) from None
            except BadRequestId as exc:
                raise AccessRefused("A4", str(exc).removesuffix(" (A4)")) from None
            self.trail.anchor(now)
            return info

    def requests(
        self, policy: Policy, caller: Caller, now: datetime, *, state: str | None = None
    ) -> list[RequestInfo]:
        """The register as this person may see it: their own requests, and those they answer."""
        with self._step(policy, caller, now, "access.requests_listed", "register:-") as person:
            role = policy.roles[person.role]
            rows = [
                info
                for info in self.register.list(state=state, limit=500)
                if info.requester == person.id or info.purpose in role.approves
            ]
            self._trace(
                now,
                self._actor(caller, person),
                "access.requests_listed",
                "register:-",
                "ok",
                detail={"state": state, "shown": [info.id for info in rows]},
            )
            return rows

    def read(
        self,
        policy: Policy,
        caller: Caller,
        now: datetime,
        *,
        request_id: str,
        recording_id: int | None,
        action: str = "recording.listen",
    ) -> ReadCopy:
        """Listening: one approved recording's bytes to its requester, within the grant.

        `action` names the use in the trail: a listen, or the console drawing its waveform.
        """
        with self._step(policy, caller, now, action, f"request:{request_id}") as person:
            info = self._request(request_id)
            if recording_id is None:
                if len(info.recording_ids) != 1:
                    listed = ", ".join(map(str, info.recording_ids))
                    raise AccessRefused("A3", f"{request_id} holds several recordings ({listed})")
                recording_id = info.recording_ids[0]
            info, rows = self._granted(policy, person, now, request_id, [recording_id])
            recording = rows[recording_id][0]
            data = self._verified(recording)
            self._trace(
                now,
                self._actor(caller, person),
                action,
                f"recording:{recording_id}",
                "ok",
                purpose=info.purpose,
                reason=info.reason,
                detail={"request": info.public_id, "sha256": recording.sha256, "bytes": len(data)},
            )
            return ReadCopy(recording, data)

    def export(
        self,
        policy: Policy,
        caller: Caller,
        now: datetime,
        *,
        request_id: str,
        recipient: str,
    ) -> SealedBundle:
        """X1, X2: every recording of an approved request, sealed with age to `recipient`."""
        with self._step(policy, caller, now, "recording.export", f"request:{request_id}") as person:
            key = recipient_key(recipient)
            info, rows = self._granted(policy, person, now, request_id, None)
            items = []
            for _recording_id, (recording, call) in sorted(rows.items()):
                data = self._verified(recording)
                items.append((recording.name, data, item_meta(policy, recording, call)))
            bundle = seal_bundle(items, key, export_header(policy, info, person, now))
            self._trace(
                now,
                self._actor(caller, person),
                "recording.export",
                f"request:{info.id}",
                "ok",
                purpose=info.purpose,
                reason=info.reason,
                detail={
                    "request": info.public_id,
                    "recipient": recipient,
                    "recordings": sorted(rows),
                    "files": {f.name: f.sealed_sha256 for f in bundle.files},
                },
            )
            return bundle
