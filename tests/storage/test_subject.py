"""R2: finding every call-log entry and recording of one phone number."""

from __future__ import annotations

import itertools
import json
import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from storage.models import ERASED, WITHHELD, Call, Recording, RecordingState
from storage.repository import Catalog, write_session
from storage.subject import SUBJECT, digits_pattern, find_by_number
from tests.storage.conftest import T0

NUMBER = "+15145550100"
CENTRE = "+15145559000"
_SIP_IDS = itertools.count(1)


def nanp(stored: str) -> str | None:
    """The deployment's rules in miniature: strip punctuation, +1 for 10 national digits."""
    if stored in (WITHHELD, ERASED):
        return None
    digits = re.sub(r"\D", "", stored)
    if stored.strip().startswith("+"):
        return "+" + digits
    if len(digits) == 10:
        return "+1" + digits
    if len(digits) == 11 and digits.startswith("1"):
        return "+" + digits
    return None


def add_call(
    catalog: Catalog,
    caller: str,
    callee: str = CENTRE,
    *,
    at: datetime = T0,
    direction: str = "inbound",
) -> int:
    return catalog.add_call(
        call_id_a=f"a-{next(_SIP_IDS)}@trunk",
        direction=direction,
        side="external",
        caller_number=caller,
        callee_number=callee,
        arrived_at=at,
    )


def add_recording(catalog: Catalog, call_id: int, at: datetime = T0) -> int:
    return catalog.add_recording(
        call_id, name=f"r{call_id}.wav", path=f"/var/r{call_id}.wav", format="pcm16", created_at=at
    )


def test_R2_every_spelling_of_the_number_is_found(catalog: Catalog) -> None:
    formatted = add_call(catalog, "+1 514-555-0100", at=T0)
    national = add_call(catalog, "5145550100", at=T0 + timedelta(hours=1))
    outbound = add_call(
        catalog, CENTRE, "(514) 555-0100", at=T0 + timedelta(hours=2), direction="outbound"
    )
    # Same last seven digits, another area code: a different person.
    other = add_call(catalog, "+1 438-555-0100", at=T0 + timedelta(hours=3))
    suffix = add_call(catalog, "+33155550100", at=T0 + timedelta(hours=4))
    add_call(catalog, WITHHELD, at=T0 + timedelta(hours=5))
    recorded = add_recording(catalog, formatted)
    finished = add_recording(catalog, outbound, T0 + timedelta(hours=2))
    catalog.finalize_recording(finished, at=T0, sha256="ab" * 32, size=1, duration=1.0)
    add_recording(catalog, other)

    findings = find_by_number(catalog, nanp, NUMBER)
    assert [c.id for c in findings.calls] == [formatted, national, outbound]
    assert other not in findings.parties and suffix not in findings.parties
    assert findings.parties == {formatted: "caller", national: "caller", outbound: "callee"}
    assert [r.id for r in findings.recordings] == [recorded, finished]
    assert [r.state for r in findings.recordings] == [
        RecordingState.RECORDING,
        RecordingState.COMPLETE,
    ]
    assert findings.erased == 0 and findings.erased_before is None


def test_R2_destroyed_recordings_are_reported_with_their_state(catalog: Catalog) -> None:
    call_id = add_call(catalog, NUMBER)
    recording_id = add_recording(catalog, call_id)
    catalog.finalize_recording(recording_id, at=T0, sha256="ab" * 32, size=1, duration=1.0)
    catalog.update_recording(recording_id, path=None)
    with write_session(catalog) as session:
        session.execute(
            update(Recording)
            .where(Recording.id == recording_id)
            .values(state=RecordingState.DESTROYED, destroyed_at=T0 + timedelta(days=8))
        )
    findings = find_by_number(catalog, nanp, NUMBER)
    assert [(r.id, r.state) for r in findings.recordings] == [
        (recording_id, RecordingState.DESTROYED)
    ]


def test_R2_the_window_limits_calls_and_erased_rows(catalog: Catalog) -> None:
    early = add_call(catalog, NUMBER, at=T0 - timedelta(days=400))
    late = add_call(catalog, NUMBER, at=T0)
    gone = [
        add_call(catalog, f"+1514555{i:04d}", at=T0 - timedelta(days=d))
        for i, d in ((1, 500), (2, 450))
    ]
    with write_session(catalog) as session:
        session.execute(
            update(Call)
            .where(Call.id.in_([*gone, early]))
            .values(caller_number=ERASED, callee_number=ERASED)
        )
    findings = find_by_number(catalog, nanp, NUMBER)
    assert [c.id for c in findings.calls] == [late]
    assert findings.erased == 3
    assert findings.erased_before == T0 - timedelta(days=400)
    windowed = find_by_number(
        catalog, nanp, NUMBER, since=T0 - timedelta(days=460), until=T0 - timedelta(days=1)
    )
    assert windowed.calls == [] and windowed.erased == 2
    assert windowed.erased_before == T0 - timedelta(days=400)


def test_R2_to_json_never_repeats_the_number(catalog: Catalog) -> None:
    both = add_call(catalog, "5145550100", "+1 (514) 555-0100")
    inbound = add_call(catalog, "+1 514 555 0100", at=T0 + timedelta(minutes=1))
    add_recording(catalog, inbound)
    findings = find_by_number(catalog, nanp, NUMBER)
    assert findings.parties == {both: "both", inbound: "caller"}
    out = findings.to_json()
    text = json.dumps(out)
    assert re.sub(r"\D", "", text).find("5550100") == -1
    assert out["calls"][0]["caller_number"] == out["calls"][0]["callee_number"] == SUBJECT
    assert out["calls"][1]["callee_number"] == CENTRE
    assert out["calls"][1]["subject_party"] == "caller"
    assert len(out["recordings"]) == 1


def test_R2_a_normalize_that_cannot_tell_never_matches(catalog: Catalog) -> None:
    add_call(catalog, "5550100")  # seven digits: no area code, nobody can say whose it is
    assert find_by_number(catalog, nanp, NUMBER).calls == []


def test_R2_the_number_must_be_e164() -> None:
    with pytest.raises(ValueError, match=r"E\.164") as caught:
        find_by_number(None, nanp, "514-555-0100")  # type: ignore[arg-type]
    assert "555" not in str(caught.value)


def test_R2_the_sql_prefilter_is_the_last_seven_digits_in_order() -> None:
    assert digits_pattern(NUMBER) == "%5%5%5%0%1%0%0%"
