"""The request register (A4, A9), summary sheets (P6) and training copies (P5) on SQLite."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session

from storage.audit import AuditTrail, append
from storage.db import alembic_config, current_revision, head_revision, make_engine, upgrade
from storage.models import AccessVerdict, RequestState
from storage.register import (
    TOKEN_ALPHABET,
    BadRequestId,
    Outcome,
    Register,
    RequestInfo,
    parse_public_id,
)
from storage.repository import Catalog, InvalidState, NotFound, read_session
from tests.storage.conftest import T0

POLICY = "cd" * 32


def recording(catalog: Catalog, at: datetime = T0) -> int:
    call_id = catalog.add_call(
        call_id_a=f"a-{at.timestamp()}",
        direction="inbound",
        side="external",
        caller_number="+15145550100",
        callee_number="+15145559000",
        arrived_at=at,
    )
    return catalog.add_recording(
        call_id, name="r.wav", path="/var/r.wav", format="pcm16", created_at=at
    )


def open_request(
    register: Register,
    recording_ids: list[int],
    *,
    at: datetime = T0,
    requester: str = "alice",
    approvals_needed: int = 2,
) -> RequestInfo:
    return register.open(
        at=at,
        requester=requester,
        role="quality",
        purpose="complaint",
        reason="the caller complained about the answer given",
        selector={"recordings": recording_ids},
        approvals_needed=approvals_needed,
        recording_ids=recording_ids,
        policy_hash=POLICY,
    )


def returning(outcome: Outcome) -> Callable[[RequestInfo], Outcome]:
    return lambda _info: outcome


def approve_pending(_info: RequestInfo) -> Outcome:
    return Outcome("approved", "first look")


def verdict_count(catalog: Catalog) -> int:
    with read_session(catalog) as session:
        return int(session.scalar(select(func.count()).select_from(AccessVerdict)) or 0)


def test_A4_open_then_get_returns_the_same_request(catalog: Catalog) -> None:
    register = Register(catalog)
    first, second = recording(catalog), recording(catalog, T0 + timedelta(minutes=1))
    montreal = timezone(timedelta(hours=-5))
    opened = open_request(register, [second, first, second], at=T0.astimezone(montreal))
    assert opened.state is RequestState.PENDING
    assert opened.recording_ids == (first, second)
    assert opened.verdicts == () and opened.decided_at is None
    request_id, token = parse_public_id(opened.public_id)
    assert opened.public_id == f"R{opened.id}-{token}" and request_id == opened.id
    assert len(token) == 6 and set(token) <= set(TOKEN_ALPHABET)

    got = register.get(opened.public_id)
    assert got == opened
    assert got.created_at.tzinfo is UTC
    assert got.to_json()["created_at"] == T0.isoformat()
    assert got.to_json()["state"] == "pending"
    assert got.to_json()["recording_ids"] == [first, second]
    # Base32 is case-insensitive, and so is the id.
    assert register.get(opened.public_id.upper()) == got


def test_A4_a_tampered_token_does_not_verify(catalog: Catalog) -> None:
    register = Register(catalog)
    opened = open_request(register, [recording(catalog)])
    request_id, token = parse_public_id(opened.public_id)
    other = "".join("b" if c == "a" else "a" for c in token)
    with pytest.raises(BadRequestId, match="does not verify"):
        register.get(f"R{request_id}-{other}")
    with pytest.raises(BadRequestId):
        register.decide(f"R{request_id}-{other}", "bob", T0, approve_pending)
    assert verdict_count(catalog) == 0


@pytest.mark.parametrize(
    "text",
    ["", "R1", "12-abcdef", "R1-abcde", "R1-abcdefg", "R1-abcde1", "R0-abcdef", "+15145550100"],
)
def test_A4_a_malformed_id_is_refused_without_repeating_it(text: str) -> None:
    with pytest.raises(BadRequestId) as caught:
        parse_public_id(text)
    assert text not in str(caught.value) or not text


def test_A4_an_unknown_id_is_not_found(catalog: Catalog) -> None:
    with pytest.raises(NotFound):
        Register(catalog).get("R99-abcdef")


def test_A4_open_refuses_what_the_register_must_not_hold(catalog: Catalog) -> None:
    register = Register(catalog)
    rec = recording(catalog)
    fields: dict[str, object] = {
        "at": T0,
        "requester": "alice",
        "role": "quality",
        "purpose": "complaint",
        "reason": "complaint about the answer",
        "selector": {"recordings": [rec]},
        "approvals_needed": 1,
        "recording_ids": [rec],
        "policy_hash": POLICY,
    }
    for change in (
        {"reason": "  "},
        {"reason": "x" * 1025},
        {"reason": "the caller +15145550100 complained"},
        {"selector": {"number": "+15145550100"}},
        {"requester": "a" * 65},
    ):
        with pytest.raises(ValueError):
            register.open(**(fields | change))  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="no recording 999"):
        register.open(**(fields | {"recording_ids": [rec, 999]}))  # type: ignore[arg-type]
    assert register.list() == []
    register.open(**(fields | {"reason": "x" * 1024}))  # type: ignore[arg-type]


def test_A4_list_is_newest_first_and_filters(catalog: Catalog) -> None:
    register = Register(catalog)
    rec = recording(catalog)
    old = open_request(register, [rec], at=T0, requester="alice")
    mid = open_request(register, [rec], at=T0 + timedelta(hours=1), requester="bob")
    new = open_request(register, [rec], at=T0 + timedelta(hours=2), requester="alice")
    register.decide(
        mid.public_id,
        "carol",
        T0 + timedelta(hours=3),
        lambda _: Outcome("denied", "no", RequestState.DENIED),
    )
    assert [r.id for r in register.list()] == [new.id, mid.id, old.id]
    assert [r.id for r in register.list(requester="alice")] == [new.id, old.id]
    assert [r.id for r in register.list(state="denied")] == [mid.id]
    assert [r.id for r in register.list(state=RequestState.PENDING)] == [new.id, old.id]
    since, until = T0 + timedelta(minutes=30), T0 + timedelta(hours=2)
    assert [r.id for r in register.list(since=since, until=until)] == [mid.id]
    assert [r.id for r in register.list(limit=1)] == [new.id]
    assert register.list()[1].verdicts[0].person == "carol"


def test_A9_two_verdicts_then_approved(catalog: Catalog) -> None:
    register = Register(catalog)
    opened = open_request(register, [recording(catalog)], approvals_needed=2)
    seen: list[RequestInfo] = []

    def two_people(info: RequestInfo) -> Outcome:
        # What recorder.access would do: count distinct approvers, decide at the second.
        seen.append(info)
        if info.approvals + 1 >= info.approvals_needed:
            return Outcome("approved", None, RequestState.APPROVED, T0 + timedelta(days=7))
        return Outcome("approved", "IT: ok")

    first = register.decide(opened.public_id, "it-bob", T0 + timedelta(minutes=5), two_people)
    assert first.state is RequestState.PENDING and first.decided_at is None
    assert [v.person for v in first.verdicts] == ["it-bob"]
    later = T0 + timedelta(minutes=9)
    second = register.decide(opened.public_id, "clerk-carol", later, two_people)
    assert second.state is RequestState.APPROVED
    assert second.decided_at == later and second.valid_until == T0 + timedelta(days=7)
    assert [(v.person, v.verdict) for v in second.verdicts] == [
        ("it-bob", "approved"),
        ("clerk-carol", "approved"),
    ]
    # apply saw the request as it was under the lock, the first verdict included.
    assert [len(info.verdicts) for info in seen] == [0, 1]
    assert register.get(opened.public_id) == second
    assert second.to_json()["verdicts"][0]["reason"] == "IT: ok"


def test_A9_an_apply_that_refuses_writes_nothing(catalog: Catalog) -> None:
    register = Register(catalog)
    opened = open_request(register, [recording(catalog)])
    audited: list[RequestInfo] = []

    def refuse(_info: RequestInfo) -> Outcome:
        raise PermissionError("bob may not approve his own request")

    with pytest.raises(PermissionError):
        register.decide(
            opened.public_id, "bob", T0, refuse, audit=lambda _s, info: audited.append(info)
        )
    assert verdict_count(catalog) == 0 and audited == []
    assert register.get(opened.public_id) == opened


def test_A9_an_inconsistent_outcome_writes_nothing(catalog: Catalog) -> None:
    register = Register(catalog)
    opened = open_request(register, [recording(catalog)])
    for outcome in (
        Outcome("maybe", None),  # type: ignore[arg-type]
        Outcome("denied", None, RequestState.APPROVED),
        Outcome("approved", None, RequestState.PENDING),
        Outcome("approved", None, None, T0 + timedelta(days=1)),
        Outcome("denied", "call +15145550100 back"),
    ):
        with pytest.raises(ValueError):
            register.decide(opened.public_id, "bob", T0, returning(outcome))
    assert verdict_count(catalog) == 0


def test_A9_a_decided_request_takes_no_more_verdicts(catalog: Catalog) -> None:
    register = Register(catalog)
    opened = open_request(register, [recording(catalog)], approvals_needed=1)
    denied = register.decide(
        opened.public_id,
        "bob",
        T0,
        lambda _: Outcome("denied", "curiosity (P2)", RequestState.DENIED),
    )
    assert denied.state is RequestState.DENIED and denied.valid_until is None
    called: list[RequestInfo] = []

    def apply(info: RequestInfo) -> Outcome:
        called.append(info)
        return Outcome("approved", None, RequestState.APPROVED)

    with pytest.raises(InvalidState, match="denied, not pending"):
        register.decide(opened.public_id, "carol", T0 + timedelta(minutes=1), apply)
    assert called == [] and verdict_count(catalog) == 1


def test_A10_audit_hooks_commit_with_the_register(catalog: Catalog, tmp_path: Path) -> None:
    register = Register(catalog)
    trail = AuditTrail(catalog, tmp_path / "anchors.jsonl")

    def audit(action: str) -> Callable[[Session, RequestInfo], None]:
        def hook(session: Session, info: RequestInfo) -> None:
            append(
                session,
                at=T0,
                actor=info.requester,
                action=action,
                object=f"request:{info.public_id}",
                purpose=info.purpose,
                reason=info.reason,
                detail={"state": info.state.value, "verdicts": len(info.verdicts)},
            )

        return hook

    rec = recording(catalog)
    opened = register.open(
        at=T0,
        requester="alice",
        role="quality",
        purpose="complaint",
        reason="a complaint",
        selector={"calls": [1]},
        approvals_needed=1,
        recording_ids=[rec],
        policy_hash=POLICY,
        audit=audit("request.opened"),
    )

    def failing_hook(session: Session, info: RequestInfo) -> None:
        raise RuntimeError("trail unavailable")

    with pytest.raises(RuntimeError):
        register.decide(
            opened.public_id,
            "bob",
            T0,
            lambda _: Outcome("approved", None, RequestState.APPROVED),
            audit=failing_hook,
        )
    # The hook failed inside the transaction: no verdict either.
    assert verdict_count(catalog) == 0
    register.decide(
        opened.public_id,
        "bob",
        T0,
        lambda _: Outcome("approved", None, RequestState.APPROVED),
        audit=audit("request.decided"),
    )
    entries = trail.entries()
    assert [e.action for e in entries] == ["request.opened", "request.decided"]
    assert entries[1].detail == {"state": "approved", "verdicts": 1}
    trail.anchor(T0)
    assert trail.verify().ok


def test_P6_summary_sheets(catalog: Catalog) -> None:
    register = Register(catalog)
    rec = recording(catalog)
    opened = open_request(register, [rec])
    expires = T0 + timedelta(days=365)
    sheet = register.add_summary(
        at=T0,
        author="alice",
        recording_id=rec,
        request_id=opened.id,
        text="Caller asked about a refund; agent explained the delay.",
        expires_at=expires,
    )
    assert sheet.destroyed_at is None and sheet.expires_at == expires
    assert register.summaries(rec) == [sheet]
    assert register.summaries(rec + 1) == []
    assert sheet.to_json()["expires_at"] == expires.isoformat()
    register.add_summary(
        at=T0, author="bob", recording_id=rec, request_id=None, text="x" * 4000, expires_at=None
    )
    assert len(register.summaries(rec)) == 2
    with pytest.raises(ValueError, match="4000"):
        register.add_summary(
            at=T0, author="bob", recording_id=rec, request_id=None, text="x" * 4001, expires_at=None
        )
    with pytest.raises(NotFound):
        register.add_summary(
            at=T0, author="bob", recording_id=999, request_id=None, text="x", expires_at=None
        )
    with pytest.raises(NotFound):
        register.add_summary(
            at=T0, author="bob", recording_id=rec, request_id=999, text="x", expires_at=None
        )


def test_P5_training_copy_keeps_only_the_month(catalog: Catalog) -> None:
    register = Register(catalog)
    made = datetime(2026, 12, 3, 23, 30, tzinfo=timezone(timedelta(hours=-5)))  # Dec 4 UTC
    copy = register.add_training_copy(
        at=made,
        name="training-2026-11-0001.wav",
        month="2026-11",
        path="/var/recordings/training/2026-11/0001.wav",
        node="rec1",
        sha256="ab" * 32,
        size=1000,
        duration=12.5,
        expires_at=None,
    )
    assert copy.created_at == datetime(2026, 12, 1, tzinfo=UTC)
    assert register.training_copies() == [copy]
    assert register.training_copies()[0].created_at == datetime(2026, 12, 1, tzinfo=UTC)
    assert copy.to_json()["month"] == "2026-11"
    fields: dict[str, object] = {
        "at": made,
        "name": "t.wav",
        "month": "2026-11",
        "path": "/var/t.wav",
        "node": None,
        "sha256": "ab" * 32,
        "size": 1,
        "duration": 1.0,
        "expires_at": None,
    }
    for change in (
        {"month": "2026-11-03"},
        {"month": "2026-13"},
        {"sha256": "xyz"},
        {"name": "call from 5145550100.wav"},
        {"size": -1},
    ):
        with pytest.raises(ValueError):
            register.add_training_copy(**(fields | change))  # type: ignore[arg-type]
    assert len(register.training_copies()) == 1


def test_A4_revision_0003_adds_the_register_to_a_0002_catalog(db_url: str) -> None:
    upgrade(db_url, "0002")
    catalog = Catalog.open(db_url, migrate=True)
    try:
        rec = recording(catalog)
        opened = open_request(Register(catalog), [rec])
        assert Register(catalog).get(opened.public_id).recording_ids == (rec,)
    finally:
        catalog.close()
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0002")
        tables = set(inspect(engine).get_table_names())
        assert not tables & {"access_requests", "summary_sheets", "training_copies"}
        assert {"recordings", "holds", "audit_entries"} <= tables
    finally:
        engine.dispose()
