"""The audit chain: clean trails verify, every kind of tampering is named."""

from __future__ import annotations

import itertools
from datetime import UTC, timedelta

import pytest
from sqlalchemy import text

from storage.audit import (
    GENESIS,
    Anchor,
    AnchorFile,
    AuditTrail,
    contains_phone_number,
    entry_hash,
    read_anchor_file,
    record_hash,
    verify_chain,
    write_anchor,
)
from tests.retention.conftest import Store, local

T0 = local(2026, 11, 23, 10, 0)


def fill(store: Store, count: int = 6) -> AuditTrail:
    trail = store.trail()
    for index in range(count):
        trail.record(
            at=T0 + timedelta(minutes=index),
            actor="alice",
            action="recording.read",
            object=f"recording:{index + 1}",
            purpose="quality",
            reason=f"quality check {index}",
            detail={"n": index, "nested": {"ok": True}},
        )
    return trail


def sql(store: Store, statement: str, **params: object) -> None:
    with store.catalog.engine.begin() as connection:
        connection.execute(text(statement), params)


def rehash(store: Store, seq: int) -> None:
    """What a careful forger does after editing entry `seq`: make its own hash match."""
    record = next(e for e in store.trail().entries() if e.seq == seq)
    sql(
        store, "UPDATE audit_entries SET hash = :h WHERE seq = :seq", h=record_hash(record), seq=seq
    )


def test_a_clean_trail_verifies_and_chains(store: Store) -> None:
    trail = fill(store)
    entries = trail.entries()
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    report = trail.verify()
    assert report.ok, report.problems
    assert (report.entries, report.anchors_checked) == (6, 6)
    anchors = read_anchor_file(store.anchor).anchors
    assert anchors[-1].seq == 6 and anchors[-1].hash == entries[-1].hash


def test_an_edited_entry_is_named(store: Store) -> None:
    trail = fill(store)
    sql(store, "UPDATE audit_entries SET reason = 'nothing to see' WHERE seq = 3")
    report = trail.verify()
    assert not report.ok
    assert report.first_bad is not None and report.first_bad.seq == 3
    assert "edited" in report.first_bad.message


def test_an_edited_and_rehashed_entry_breaks_the_next_link(store: Store) -> None:
    trail = fill(store)
    sql(store, "UPDATE audit_entries SET actor = 'mallory' WHERE seq = 3")
    rehash(store, 3)
    # The chain alone sees the next link break...
    chain = verify_chain(trail.iter_entries(), AnchorFile(()))
    assert chain.first_bad is not None and chain.first_bad.seq == 4
    assert "entry 3 was rewritten" in chain.first_bad.message
    # ...and the anchor of entry 3 names the entry itself.
    report = trail.verify()
    assert report.first_bad is not None and report.first_bad.seq == 3
    assert "anchored" in report.first_bad.message


def test_a_deleted_entry_is_named(store: Store) -> None:
    trail = fill(store)
    sql(store, "DELETE FROM audit_entries WHERE seq = 3")
    report = trail.verify()
    assert report.first_bad is not None and report.first_bad.seq == 3
    assert "entry 3 missing" in report.first_bad.message


def test_an_inserted_entry_is_named(store: Store) -> None:
    trail = fill(store)
    # Make room at 3 and forge an entry that chains correctly onto entry 2.
    for seq in range(6, 2, -1):
        sql(store, "UPDATE audit_entries SET seq = :new WHERE seq = :old", new=seq + 1, old=seq)
    two = trail.entries()[1]
    forged = entry_hash(
        seq=3,
        at=T0,
        actor="mallory",
        action="hold.release",
        object="recording:9",
        purpose=None,
        reason=None,
        outcome="ok",
        detail={},
        prev_hash=two.hash,
    )
    # As each backend stores it: naive UTC text on SQLite, a timestamptz on PostgreSQL (where
    # naive text would be read in the server's time zone and the forgery would not hash).
    at: object = T0.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    if store.catalog.engine.dialect.name == "postgresql":
        at = T0
    sql(
        store,
        "INSERT INTO audit_entries (seq, at, actor, action, object, outcome, detail, prev_hash,"
        " hash) VALUES (3, :at, 'mallory', 'hold.release', 'recording:9', 'ok', '{}', :prev, :h)",
        at=at,
        prev=two.hash,
        h=forged,
    )
    chain = verify_chain(trail.iter_entries(), AnchorFile(()))
    assert chain.first_bad is not None and chain.first_bad.seq == 4
    assert "entry 3 was rewritten or inserted" in chain.first_bad.message
    report = trail.verify()
    assert report.first_bad is not None and report.first_bad.seq == 3


def test_a_truncated_tail_is_caught_by_the_anchor(store: Store) -> None:
    trail = fill(store)
    sql(store, "DELETE FROM audit_entries WHERE seq >= 5")
    report = trail.verify()
    assert report.first_bad is not None and report.first_bad.seq == 5
    assert "truncated" in report.first_bad.message
    # Without the anchor file the same trail looks whole: that is what the file is for.
    alone = verify_chain(trail.iter_entries(), AnchorFile(()))
    assert alone.ok


def test_an_emptied_table_is_caught(store: Store) -> None:
    trail = fill(store)
    sql(store, "DELETE FROM audit_entries")
    report = trail.verify()
    assert report.first_bad is not None and "trail is empty" in report.first_bad.message


def test_a_chain_rewritten_wholesale_is_caught_by_the_anchor(store: Store) -> None:
    trail = fill(store)
    sql(store, "UPDATE audit_entries SET reason = 'rewritten' WHERE seq >= 4")
    for seq in range(4, 7):
        if seq > 4:
            previous = next(e for e in trail.entries() if e.seq == seq - 1)
            sql(
                store,
                "UPDATE audit_entries SET prev_hash = :p WHERE seq = :s",
                p=previous.hash,
                s=seq,
            )
        rehash(store, seq)
    assert verify_chain(trail.iter_entries(), AnchorFile(())).ok  # the chain alone is fooled
    report = trail.verify()
    assert report.first_bad is not None and report.first_bad.seq == 4
    assert "anchored" in report.first_bad.message


def test_deleting_the_oldest_entries_without_a_prune_is_caught(store: Store) -> None:
    trail = fill(store)
    sql(store, "DELETE FROM audit_entries WHERE seq <= 2")
    report = trail.verify()
    assert report.first_bad is not None and report.first_bad.seq == 3
    assert "without an anchored prune" in report.first_bad.message


def test_a_prune_verifies_and_so_does_a_prune_killed_before_its_commit(store: Store) -> None:
    trail = fill(store)
    assert trail.prune(T0 + timedelta(minutes=3), at=T0 + timedelta(days=200), actor="svc") == 3
    entries = trail.entries()
    assert [e.seq for e in entries] == [4, 5, 6, 7]
    assert entries[-1].action == "audit.pruned"
    assert entries[-1].detail["kept_from"] == 4
    assert trail.verify().ok
    # The mark for a later prune went out but its transaction never committed.
    write_anchor(store.anchor, Anchor(T0 + timedelta(days=300), 6, entries[1].hash, "prune"))
    assert trail.verify().ok
    # ...and a prefix deleted to match a mark that points elsewhere is still caught.
    sql(store, "DELETE FROM audit_entries WHERE seq <= 4")
    report = trail.verify()
    assert report.first_bad is not None and report.first_bad.seq == 5


def test_pruning_everything_keeps_the_head(store: Store) -> None:
    trail = fill(store, 3)
    assert trail.prune(T0 + timedelta(days=1), at=T0 + timedelta(days=2), actor="svc") == 2
    assert [e.seq for e in trail.entries()] == [3, 4]
    assert trail.verify().ok


def test_a_missing_anchor_file_fails(store: Store) -> None:
    trail = fill(store, 2)
    store.anchor.unlink()
    report = trail.verify()
    assert report.first_bad is not None and report.first_bad.seq is None
    assert "anchor file missing" in report.first_bad.message


def test_a_garbled_anchor_line_fails(store: Store) -> None:
    trail = fill(store, 2)
    with store.anchor.open("a") as f:
        f.write("{not json\n")
    report = trail.verify()
    assert report.first_bad is not None and "line 3 unreadable" in report.first_bad.message


@pytest.mark.parametrize(
    "reason",
    ["caller +15145550100 complained", "call from (514) 555-0100", "number 5145550100"],
)
def test_phone_numbers_never_enter_the_trail(store: Store, reason: str) -> None:
    with pytest.raises(ValueError, match="phone number"):
        store.trail().record(
            at=T0, actor="a", action="hold.add", object="recording:1", reason=reason
        )
    assert store.trail().entries() == []


@pytest.mark.parametrize(
    "value",
    ["recording:1234567", "complaint of 2026-11-23 10:42", "sha " + "1234567890" * 6 + "abcd"],
)
def test_ids_dates_and_hashes_are_not_phone_numbers(value: str) -> None:
    assert not contains_phone_number(value)
