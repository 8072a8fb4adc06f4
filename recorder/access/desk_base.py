"""What every desk step shares: who is asking, the one audit path, the catalog's facts.

`DeskBase` identifies the caller (A12), runs a step so that a refusal is audited then
raised, writes the trail, reads recordings and requests from the catalog, and hands out a
recording's bytes only after checking them against the catalogued SHA-256 (X1). The
steps themselves are in `desk.py` (requests, listening, exports), `copies.py` (training
copies, summary sheets) and `lookups.py` (search, audit trail, reports, subject access).
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

from recorder.access.rules import RecordingFacts
from recorder.access.sealing import RecipientError, parse_recipient
from recorder.access.workflow import (
    AccessRefused,
    Caller,
    RequestView,
    check_use,
    identify,
)
from recorder.policy.model import Person, Policy
from recorder.policy.numbers import e164
from recorder.policy.periods import local_midnight
from storage import audit
from storage.models import RecordingState
from storage.register import BadRequestId, Register, RequestInfo
from storage.repository import CallInfo, Catalog, NotFound, RecordingInfo
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


def request_view(info: RequestInfo) -> RequestView:
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


def day_bound(text: object, option: str, zone: Any, *, end: bool) -> datetime | None:
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


class DeskBase:
    """The desk's state and the helpers every step uses."""

    def __init__(
        self,
        catalog: Catalog,
        anchor_path: Path | None,
        storage_dir: Path,
        database: str,
        journal: Path | None = None,
    ) -> None:
        self.catalog = catalog
        self.database = database
        # The catalog journal (issue 20): personal data while it waits, in the inventory (X4).
        self.journal = journal
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
            since = day_bound(selector.get("from"), "--from", policy.timezone, end=False)
            until = day_bound(selector.get("to"), "--to", policy.timezone, end=True)
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
                policy,
                request_view(info),
                person,
                recording_id,
                recording_facts(recording, call),
                now,
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


def recipient_key(text: str) -> Any:
    try:
        return parse_recipient(text)
    except RecipientError as exc:
        raise AccessRefused("X2", str(exc)) from None


def item_meta(policy: Policy, recording: RecordingInfo, call: CallInfo) -> dict[str, Any]:
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


def export_header(
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


def write_private(directory: Path, name: str, data: bytes) -> Path:
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
