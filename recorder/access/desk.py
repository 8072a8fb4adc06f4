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

import hashlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from recorder.access.deidentify import deidentified_wav, month_name
from recorder.access.reports import build_view
from recorder.access.rules import RecordingFacts, check_access
from recorder.access.sealing import RecipientError, SealedBundle, parse_recipient, seal_bundle
from recorder.access.workflow import (
    REPORT_RULES,
    AccessRefused,
    Caller,
    RequestView,
    check_reason,
    check_use,
    identify,
    may_answer_subject_access,
    may_read_report,
    plan_request,
    verdict_outcome,
)
from recorder.policy.model import Person, Policy
from recorder.policy.numbers import e164
from recorder.policy.periods import local_midnight
from storage import audit
from storage.models import RecordingState, RequestState
from storage.register import BadRequestId, Outcome, Register, RequestInfo
from storage.repository import CallInfo, Catalog, InvalidState, NotFound, RecordingInfo
from storage.subject import SubjectFindings, find_by_number

FILE_MODE = 0o640
DIR_MODE = 0o750
MAX_SELECTION = 200  # recordings in one request: a request names calls, not a whole year
MAX_SUMMARY = 4000


def recording_facts(recording: RecordingInfo, call: CallInfo) -> RecordingFacts:
    """What access depends on, from the catalog's rows."""
    gone = recording.state in (RecordingState.DESTROYING, RecordingState.DESTROYED)
    return RecordingFacts(
        call_at=call.arrived_at,
        expires_at=recording.expires_at,
        destroyed=gone or recording.destroyed_at is not None or recording.path is None,
        agent=call.agent,
        extension=call.extension,
    )


def _view(info: RequestInfo) -> RequestView:
    return RequestView(
        public_id=info.public_id,
        requester=info.requester,
        purpose=info.purpose,
        state=info.state.value,
        approvals_needed=info.approvals_needed,
        approved_by=tuple(v.person for v in info.verdicts if v.verdict == "approved"),
        valid_until=info.valid_until,
        recording_ids=info.recording_ids,
    )


def _day(text: object, option: str, zone: Any, *, end: bool) -> datetime | None:
    if text is None or text == "":
        return None
    try:
        day = date.fromisoformat(str(text))
    except ValueError:
        raise AccessRefused("R2", f"{option}: not a date (YYYY-MM-DD)") from None
    return local_midnight(day + timedelta(days=1) if end else day, zone)


@dataclass(frozen=True, slots=True)
class ReadCopy:
    """One recording handed to its requester: the catalog row and the verified bytes."""

    recording: RecordingInfo
    data: bytes


class AccessDesk:
    """Requests, verdicts, listening, exports, training copies, summaries, subject access."""

    def __init__(
        self,
        catalog: Catalog,
        anchor_path: Path | None,
        storage_dir: Path,
        database: str,
    ) -> None:
        self.catalog = catalog
        self.database = database
        self.register = Register(catalog)
        self.trail = audit.AuditTrail(catalog, anchor_path)
        self.storage_dir = storage_dir

    # --- the one audit path ---

    def _actor(self, caller: Caller, person: Person | None) -> str:
        return str(caller) if person is None else f"{person.id} ({caller})"

    @contextmanager
    def _step(
        self,
        policy: Policy,
        caller: Caller,
        now: datetime,
        action: str,
        object: str,
        *,
        purpose: str | None = None,
        reason: str | None = None,
    ) -> Iterator[Person]:
        """Identify the caller and run one step; a refusal is audited, then re-raised.

        The step audits its own success (in its transaction where it writes the register),
        so that no answer leaves without its trace and no trace claims what did not happen.
        """
        person: Person | None = None
        try:
            person = identify(policy, caller)
            yield person
        except AccessRefused as refusal:
            self._trace(
                now,
                self._actor(caller, person),
                action,
                object,
                "refused",
                purpose=purpose,
                reason=_storable(reason),
                detail={"rule": refusal.rule, "message": refusal.message},
            )
            raise

    def _trace(
        self,
        now: datetime,
        actor: str,
        action: str,
        object: str,
        outcome: str,
        *,
        purpose: str | None = None,
        reason: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        self.trail.record(
            at=now,
            actor=actor,
            action=action,
            object=object,
            outcome=outcome,
            purpose=purpose,
            reason=reason,
            detail=detail,
        )

    def _hook(
        self,
        now: datetime,
        actor: str,
        action: str,
        detail: Callable[[RequestInfo], Mapping[str, Any]],
        outcome: Callable[[RequestInfo], str] = lambda _info: "ok",
    ) -> Callable[[Any, RequestInfo], None]:
        def write(session: Any, info: RequestInfo) -> None:
            audit.append(
                session,
                at=now,
                actor=actor,
                action=action,
                object=f"request:{info.id}",
                outcome=outcome(info),
                purpose=info.purpose,
                reason=info.reason,
                detail=detail(info),
            )

        return write

    def trace_login(
        self, policy: Policy, person: str, now: datetime, outcome: str, why: str | None = None
    ) -> None:
        """A10: a console login, whoever it claims to be (an id not on the list is not kept)."""
        known = person if person in policy.people else "(unknown)"
        self._trace(
            now,
            f"{known} (console)",
            "console.login",
            f"person:{known}",
            outcome,
            detail={} if why is None else {"why": why},
        )

    # --- reading the catalog ---

    def _recordings(self, ids: Sequence[int]) -> dict[int, tuple[RecordingInfo, CallInfo]]:
        found: dict[int, tuple[RecordingInfo, CallInfo]] = {}
        for recording_id in ids:
            recording = self.catalog.get_recording(recording_id)
            call = None if recording is None else self.catalog.get_call(recording.call_id)
            if recording is None or call is None:
                raise AccessRefused("A3", f"no recording {recording_id}")
            found[recording_id] = (recording, call)
        return found

    def _facts(self, ids: Sequence[int]) -> dict[int, RecordingFacts]:
        return {
            rid: recording_facts(rec, call) for rid, (rec, call) in self._recordings(ids).items()
        }

    def _request(self, public_id: str) -> RequestInfo:
        try:
            return self.register.get(public_id)
        except BadRequestId as exc:
            raise AccessRefused("A4", str(exc).removesuffix(" (A4)")) from None
        except NotFound:
            raise AccessRefused("A4", f"no request {public_id!r} in the register") from None

    def _select(
        self, policy: Policy, selector: Mapping[str, Any]
    ) -> tuple[list[int], dict[str, Any]]:
        """The recordings a request names, and what the register keeps of the selector."""
        if "recordings" in selector:
            ids = _ids(selector["recordings"], "recordings")
            return ids, {"recordings": ids}
        if "calls" in selector:
            calls = _ids(selector["calls"], "calls")
            ids = []
            for call_id in calls:
                if self.catalog.get_call(call_id) is None:
                    raise AccessRefused("A3", f"no call {call_id}")
                ids += [r.id for r in self.catalog.list_recordings(call_id=call_id)]
            return ids, {"calls": calls}
        if "number" in selector:
            since = _day(selector.get("from"), "--from", policy.timezone, end=False)
            until = _day(selector.get("to"), "--to", policy.timezone, end=True)
            if since is None or until is None:
                raise AccessRefused("A3", "a request by number needs --from and --to dates")
            findings = self._find(policy, str(selector["number"]), since, until)
            ids = [r.id for r in findings.recordings]
            # The register and the trail never hold the number (D2): only that one was used.
            return ids, {"by_number": True, "from": selector.get("from"), "to": selector.get("to")}
        raise AccessRefused("A3", "a request names recordings, calls, or a number and dates")

    def _find(
        self, policy: Policy, number: str, since: datetime | None, until: datetime | None
    ) -> SubjectFindings:
        wanted = e164(number, policy.number_region)
        if wanted is None:
            raise AccessRefused("R2", "not a phone number this policy's numbering plan knows")
        region = policy.number_region
        return find_by_number(
            self.catalog, lambda stored: e164(stored, region), wanted, since=since, until=until
        )

    # --- the workflow ---

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
                plan = verdict_outcome(policy, _view(info), person, verdict, facts, now)
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

    def _granted(
        self,
        policy: Policy,
        person: Person,
        now: datetime,
        request_id: str,
        recording_ids: Sequence[int] | None,
    ) -> tuple[RequestInfo, dict[int, tuple[RecordingInfo, CallInfo]]]:
        info = self._request(request_id)
        ids = list(info.recording_ids) if not recording_ids else list(recording_ids)
        rows = self._recordings(ids)
        for recording_id, (recording, call) in rows.items():
            check_use(
                policy, _view(info), person, recording_id, recording_facts(recording, call), now
            )
        return info, rows

    def _verified(self, recording: RecordingInfo) -> bytes:
        """The file's bytes, checked against the catalog's SHA-256 (X1)."""
        if recording.path is None:
            raise AccessRefused("D1", f"recording {recording.id} was destroyed")
        try:
            data = Path(recording.path).read_bytes()
        except OSError:
            raise AccessRefused(
                "X1", f"recording {recording.id}: its file cannot be read"
            ) from None
        if recording.sha256 is None or hashlib.sha256(data).hexdigest() != recording.sha256:
            raise AccessRefused("X1", f"recording {recording.id} fails its integrity check")
        return data

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
            key = _recipient(recipient)
            info, rows = self._granted(policy, person, now, request_id, None)
            items = []
            for _recording_id, (recording, call) in sorted(rows.items()):
                data = self._verified(recording)
                items.append((recording.name, data, _item_meta(policy, recording, call)))
            bundle = seal_bundle(items, key, _export_header(policy, info, person, now))
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

    def training_copy(
        self,
        policy: Policy,
        caller: Caller,
        now: datetime,
        *,
        request_id: str,
        recording_id: int,
        mute: Sequence[tuple[float, float]] = (),
    ) -> dict[str, Any]:
        """P5: a copy kept for training, the caller's identifying parts silenced, no number,
        no agent, no date finer than the month; its own retention (training_copies)."""
        with self._step(
            policy, caller, now, "training_copy.make", f"request:{request_id}"
        ) as person:
            info, rows = self._granted(policy, person, now, request_id, [recording_id])
            purpose = policy.purposes[info.purpose]
            if not purpose.deidentify:
                raise AccessRefused(
                    "P5", f"{info.purpose} is not a purpose that keeps training copies"
                )
            expires = policy.expiry("training_copies", now)
            if expires is None:
                raise AccessRefused("P5", "the policy sets no retention.training_copies")
            recording = rows[recording_id][0]
            self._verified(recording)
            assert recording.path is not None  # _verified refuses a destroyed recording
            ranges = [*purpose.mute_seconds, *mute]
            try:
                data = deidentified_wav(Path(recording.path), ranges, channels="left")
            except ValueError as exc:
                raise AccessRefused("P5", str(exc)) from None
            month = now.astimezone(policy.timezone)
            directory = self.storage_dir / "training" / f"{month:%Y-%m}"
            index = len(self.register.training_copies()) + 1
            # A file without its row (a crash between the two) keeps its name: never replaced.
            while (directory / month_name(month, index)).exists():
                index += 1
            name = month_name(month, index)
            path = _write_private(directory, name, data)
            digest = hashlib.sha256(data).hexdigest()
            copy = self.register.add_training_copy(
                at=now,
                name=name,
                month=f"{month:%Y-%m}",
                path=str(path),
                node=None,
                sha256=digest,
                size=len(data),
                duration=recording.duration or 0.0,
                expires_at=expires,
            )
            # Provenance lives in the trail only: the copy's row cannot lead back to the call.
            self._trace(
                now,
                self._actor(caller, person),
                "training_copy.make",
                f"training_copy:{copy.id}",
                "ok",
                purpose=info.purpose,
                reason=info.reason,
                detail={"request": info.public_id, "recording": recording_id, "muted": ranges},
            )
            return copy.to_json()

    def summary(
        self,
        policy: Policy,
        caller: Caller,
        now: datetime,
        *,
        request_id: str,
        recording_id: int,
        text: str,
    ) -> dict[str, Any]:
        """P6: a written summary sheet derived from a recording, with its own retention."""
        with self._step(policy, caller, now, "summary.add", f"request:{request_id}") as person:
            info, _rows = self._granted(policy, person, now, request_id, [recording_id])
            body = text.strip()
            if not body:
                raise AccessRefused("P6", "a summary sheet needs a text")
            if len(body) > MAX_SUMMARY:
                raise AccessRefused("P6", f"a summary sheet is at most {MAX_SUMMARY} characters")
            if audit.contains_phone_number(body):
                raise AccessRefused("D2", "a summary sheet must not hold a phone number")
            expires = policy.expiry("summary_sheets", now)
            if expires is None:
                raise AccessRefused("P6", "the policy sets no retention.summary_sheets")
            sheet = self.register.add_summary(
                at=now,
                author=person.id,
                recording_id=recording_id,
                request_id=info.id,
                text=body,
                expires_at=expires,
            )
            self._trace(
                now,
                self._actor(caller, person),
                "summary.add",
                f"summary:{sheet.id}",
                "ok",
                purpose=info.purpose,
                reason=info.reason,
                detail={"request": info.public_id, "recording": recording_id},
            )
            return sheet.to_json()

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
            start = _day(since, "from", policy.timezone, end=False)
            end = _day(until, "to", policy.timezone, end=True)
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
                _day(since, "--from", policy.timezone, end=False),
                _day(until, "--to", policy.timezone, end=True),
            )
            bundle = None
            exported: list[int] = []
            if recipient is not None:
                key = _recipient(recipient)
                calls = {call.id: call for call in findings.calls}
                items = []
                for recording in findings.recordings:
                    if recording.path is None or recording.state not in (
                        RecordingState.COMPLETE,
                        RecordingState.INTERRUPTED,
                    ):
                        continue
                    data = self._verified(recording)
                    meta = _item_meta(policy, recording, calls[recording.call_id])
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


def _storable(reason: str | None) -> str | None:
    """A refused step's reason, if the trail may keep it (never a phone number, D2)."""
    if reason is None:
        return None
    if audit.contains_phone_number(reason):
        return "(withheld: the reason held a phone number)"
    return reason[:1000]


def _ids(value: object, field: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise AccessRefused("A3", f"{field}: a list of catalog ids")
    ids = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item <= 0:
            raise AccessRefused("A3", f"{field}: {item!r} is not a catalog id")
        ids.append(item)
    return sorted(set(ids))


def _recipient(text: str) -> Any:
    try:
        return parse_recipient(text)
    except RecipientError as exc:
        raise AccessRefused("X2", str(exc)) from None


def _item_meta(policy: Policy, recording: RecordingInfo, call: CallInfo) -> dict[str, Any]:
    zone = policy.timezone
    return {
        "recording": recording.id,
        "call": call.id,
        "call_at": call.arrived_at.astimezone(zone).isoformat(),
        "duration": recording.duration,
        "channels": recording.channel_map,
        "pauses": recording.pauses,
        "catalog_sha256": recording.sha256,
    }


def _export_header(
    policy: Policy, info: RequestInfo, person: Person, now: datetime
) -> dict[str, Any]:
    return {
        "kind": "request",
        "request": info.public_id,
        "purpose": info.purpose,
        "reason": info.reason,
        "requester": person.id,
        "approved_by": [v.person for v in info.verdicts if v.verdict == "approved"],
        "made_at": now.isoformat(),
        "policy": policy.name,
        # D3: the holder of a copy destroys it when no longer needed, or at its retention's end.
        "destroy_by": None if info.valid_until is None else info.valid_until.isoformat(),
    }


def _write_private(directory: Path, name: str, data: bytes) -> Path:
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    target = directory / name
    # Not *.wav.part: the start-up repair would take it for a recording cut by a crash.
    temporary = directory / f".{name}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target
