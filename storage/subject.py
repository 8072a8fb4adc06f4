"""R2: every call-log entry and recording of one phone number, for a person's access request.

The call log stores numbers as they arrived ("+1 514-555-0100", "5145550100", "sip:..."), so
equality cannot find them all; the caller's `normalize` (the deployment's dialling rules,
which storage/ does not know) maps a stored number to E.164. Normalising the whole call log
in Python would read a year of numbers into memory for one person, so SQL narrows it first:
a LIKE pattern with the last seven digits of the number in order, anything between them
(`%5%5%5%0%1%0%0%`), keeps every spelling of the number whatever its punctuation, and only
those few rows are normalised and compared.

Numbers erased by the D2 purge (models.ERASED) can no longer be matched to anyone: the
findings say how many such rows exist and up to when, so that the answer to the person can
say that older calls exist in the log without numbers, rather than that there are none.

The findings hold the searched number's rows, and so the number itself: `to_json` replaces
it by a marker wherever it appears, so that the answer can be logged or shown to an officer
without repeating it; the person receives the data through a channel that checked who they
are (R2), not through this module.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import func, or_, select

from storage.models import ERASED, Call, Recording
from storage.repository import CallInfo, Catalog, RecordingInfo, read_session

# The marker written instead of the searched number in `SubjectFindings.to_json`.
SUBJECT = "(subject)"
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_SUFFIX = 7  # digits matched in SQL; enough to leave a handful of rows to normalise
_CHUNK = 500  # ids per IN (...), well under every backend's parameter limit

Normalize = Callable[[str], "str | None"]
_InfoT = TypeVar("_InfoT", CallInfo, RecordingInfo)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class SubjectFindings:
    """What the catalog holds about one number (R2), in [since, until) of call arrival.

    `parties` says, per call id, which side was the number: "caller", "callee" or "both".
    `recordings` include destroyed ones (their state says so: the person may ask what
    existed, not only what is left). `erased` counts the calls in the window whose numbers
    the D2 purge erased, `erased_before` is the newest arrival among them.
    """

    calls: list[CallInfo]
    recordings: list[RecordingInfo]
    erased: int
    erased_before: datetime | None
    parties: dict[int, str]
    since: datetime | None = None
    until: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        calls = []
        for call in self.calls:
            entry = call.to_json()
            party = self.parties.get(call.id)
            if party in ("caller", "both"):
                entry["caller_number"] = SUBJECT
            if party in ("callee", "both"):
                entry["callee_number"] = SUBJECT
            entry["subject_party"] = party
            calls.append(entry)
        return {
            "since": _iso(self.since),
            "until": _iso(self.until),
            "calls": calls,
            "recordings": [recording.to_json() for recording in self.recordings],
            "erased": self.erased,
            "erased_before": _iso(self.erased_before),
        }


def _snapshot(cls: type[_InfoT], row: Any) -> _InfoT:
    # The repository's own snapshots, built inside this module's single read transaction.
    return cls(**{field.name: getattr(row, field.name) for field in dataclasses.fields(cls)})


def digits_pattern(number: str) -> str:
    """The LIKE pattern of the last digits of `number`, any characters around and between."""
    digits = re.sub(r"\D", "", number)[-_SUFFIX:]
    return "%" + "%".join(digits) + "%"


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def find_by_number(
    catalog: Catalog,
    normalize: Normalize,
    number: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> SubjectFindings:
    """Calls (either side) and recordings of `number`, an E.164 number ("+15145550100").

    A stored number counts when `normalize(stored) == number`; None from `normalize`
    (cannot tell) never matches. One read transaction, so calls and recordings agree.
    ValueError if `number` is not E.164 (the message does not repeat it).
    """
    if _E164.fullmatch(number) is None:
        raise ValueError("the number to search is not in E.164 form (+ and 7-15 digits)")
    window = []
    if since is not None:
        window.append(Call.arrived_at >= since)
    if until is not None:
        window.append(Call.arrived_at < until)
    pattern = digits_pattern(number)
    candidates = (
        select(Call)
        .where(or_(Call.caller_number.like(pattern), Call.callee_number.like(pattern)), *window)
        .order_by(Call.arrived_at, Call.id)
    )
    erased_rows = select(func.count(), func.max(Call.arrived_at)).where(
        or_(Call.caller_number == ERASED, Call.callee_number == ERASED), *window
    )
    calls: list[CallInfo] = []
    parties: dict[int, str] = {}
    recordings: list[RecordingInfo] = []
    with read_session(catalog) as session:
        for row in session.scalars(candidates):
            caller = normalize(row.caller_number) == number
            callee = normalize(row.callee_number) == number
            if not (caller or callee):
                continue
            calls.append(_snapshot(CallInfo, row))
            parties[row.id] = "both" if caller and callee else ("caller" if caller else "callee")
        for chunk in _chunks([call.id for call in calls]):
            query = (
                select(Recording)
                .where(Recording.call_id.in_(chunk))
                .order_by(Recording.created_at, Recording.id)
            )
            recordings.extend(_snapshot(RecordingInfo, row) for row in session.scalars(query))
        erased_count, erased_newest = session.execute(erased_rows).one()
    recordings.sort(key=lambda r: (r.created_at, r.id))
    return SubjectFindings(
        calls=calls,
        recordings=recordings,
        erased=int(erased_count or 0),
        erased_before=erased_newest,
        parties=parties,
        since=since,
        until=until,
    )
