"""The append-only, hash-chained audit trail (A5, A10, X1), and its anchor file.

Every entry carries the SHA-256 of the entry before it (`prev_hash`) and its own hash over
all of its columns, so that editing, inserting or deleting an entry breaks the chain where it
happened. A chain alone cannot show that its *tail* was cut off, nor that it was rewritten
wholesale by someone with write access to the database (there is no secret here); hence the
anchor file, outside the database: after each write the chain head (seq, hash) is appended to
it, and `verify` checks that every anchored head is still in the chain with the same hash.
Keep that file where the database's writers cannot rewrite it (another disk, a shipped log);
by default it lives in the recordings directory, which the service can always write.

Several nodes on one catalog (issue 19) write one chain (appends take a PostgreSQL advisory
lock, so seq and prev_hash never fork) and share one anchor file, in their shared storage
root, each append made under an exclusive `flock`: `verify` on any node checks the whole
chain against the heads every node anchored. Heads from different nodes may be out of seq
order in the file; nothing here needs them in order.

Retention of the trail itself (A5: "until 3 months after the end of the fiscal year") deletes
a *prefix* of the chain. Before the deletion commits, the anchor file receives a prune mark,
`kept_from` and the hash of the last deleted entry (`boundary`); the first surviving entry's
`prev_hash` must equal it. The deletion is also an entry in the chain (`audit.pruned`). So a
legitimate prune verifies, while deleting old entries without the anchor file's knowledge
is reported like any other deletion.

Module layout, sans-IO first: `entry_hash` and `verify_chain` are pure; `append` works inside
a caller's transaction (so that an entry commits or rolls back with what it describes);
`AuditTrail` adds the file I/O and the transactions for callers that have none.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from storage.models import AuditEntry
from storage.repository import Catalog, read_session, write_session

GENESIS = "0" * 64
ANCHOR_NAME = "audit-anchors.jsonl"

# Serialises appends across nodes sharing one PostgreSQL catalog (SQLite's write lock already
# does it); taken per transaction, released at commit.
_PG_AUDIT_LOCK = 7216452

# Phone numbers must never reach the trail: only the call log's number columns are erased
# after their period (D2). A standalone run of 7-15 digits, a +E.164, or a NANP grouping.
_PHONE = re.compile(
    r"\+\d{7,15}(?!\w)|(?<![\w:#/.+-])\d{7,15}(?!\w)|\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b"
)
_FILE_MODE = 0o640


class AuditError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    at: datetime
    actor: str
    action: str
    object: str
    purpose: str | None
    reason: str | None
    outcome: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["at"] = _canonical_time(self.at)
        return out


def _canonical_time(at: datetime) -> str:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at.isoformat()} given to the audit trail")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    object: str,
    purpose: str | None,
    reason: str | None,
    outcome: str,
    detail: Mapping[str, Any],
    prev_hash: str,
) -> str:
    """SHA-256 over every column but the hash itself, in a form both backends round-trip."""
    body = {
        "seq": seq,
        "at": _canonical_time(at),
        "actor": actor,
        "action": action,
        "object": object,
        "purpose": purpose,
        "reason": reason,
        "outcome": outcome,
        "detail": detail,
        "prev": prev_hash,
    }
    return hashlib.sha256(_canonical_json(body).encode()).hexdigest()


def record_hash(record: AuditRecord) -> str:
    return entry_hash(
        seq=record.seq,
        at=record.at,
        actor=record.actor,
        action=record.action,
        object=record.object,
        purpose=record.purpose,
        reason=record.reason,
        outcome=record.outcome,
        detail=record.detail,
        prev_hash=record.prev_hash,
    )


def contains_phone_number(value: Any) -> bool:
    if isinstance(value, str):
        return _PHONE.search(value) is not None
    if isinstance(value, Mapping):
        return any(contains_phone_number(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(contains_phone_number(v) for v in value)
    return False


def _snapshot(row: AuditEntry) -> AuditRecord:
    return AuditRecord(
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        action=row.action,
        object=row.object,
        purpose=row.purpose,
        reason=row.reason,
        outcome=row.outcome,
        detail=row.detail,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def lock_trail(session: Session) -> None:
    """Hold the trail's lock until `session` commits: on PostgreSQL an advisory lock shared by
    every node (SQLite's single writer already serialises). Taken again by the same
    transaction, it is a no-op."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_AUDIT_LOCK})


def append(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    object: str,
    outcome: str = "ok",
    purpose: str | None = None,
    reason: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> AuditRecord:
    """Add an entry inside the caller's write transaction; it commits with it.

    Raises ValueError for a phone number in any field: the trail outlives the call log's
    numbers (D2), so one written here could never be erased.
    """
    fields = {"actor": actor, "action": action, "object": object, "purpose": purpose}
    fields |= {"reason": reason, "outcome": outcome}
    # A JSON round trip now, so that the hash covers exactly what the database gives back.
    plain = json.loads(_canonical_json(dict(detail or {})))
    for name, value in (*fields.items(), ("detail", plain)):
        if contains_phone_number(value):
            raise ValueError(f"audit entries never hold a phone number (in {name})")
    lock_trail(session)
    last = session.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).first()
    seq = 1 if last is None else last.seq + 1
    prev = GENESIS if last is None else last.hash
    digest = entry_hash(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        object=object,
        purpose=purpose,
        reason=reason,
        outcome=outcome,
        detail=plain,
        prev_hash=prev,
    )
    row = AuditEntry(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        object=object,
        purpose=purpose,
        reason=reason,
        outcome=outcome,
        detail=plain,
        prev_hash=prev,
        hash=digest,
    )
    session.add(row)
    session.flush()
    return _snapshot(row)


# --- the anchor file ---


@dataclass(frozen=True, slots=True)
class Anchor:
    """A chain head seen at `at` (`kind="head"`), or a prune mark (`kind="prune"`: entries
    before `seq` were deleted on purpose and entry `seq - 1` had hash `hash`)."""

    at: datetime
    seq: int
    hash: str
    kind: str = "head"
    line: int = 0

    def to_line(self) -> str:
        body: dict[str, Any] = {"at": _canonical_time(self.at), "seq": self.seq}
        if self.kind == "prune":
            body |= {"kept_from": self.seq, "boundary": self.hash}
            del body["seq"]
        else:
            body["hash"] = self.hash
        return _canonical_json(body) + "\n"


@dataclass(frozen=True, slots=True)
class AnchorFile:
    anchors: tuple[Anchor, ...]
    errors: tuple[str, ...] = ()
    present: bool = True


def default_anchor_path(storage_dir: Path) -> Path:
    return Path(storage_dir) / ANCHOR_NAME


def parse_anchor_lines(lines: Iterable[str]) -> AnchorFile:
    anchors: list[Anchor] = []
    errors: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            body = json.loads(line)
            at = datetime.fromisoformat(body["at"])
            if "kept_from" in body:
                anchor = Anchor(at, int(body["kept_from"]), str(body["boundary"]), "prune", number)
            else:
                anchor = Anchor(at, int(body["seq"]), str(body["hash"]), "head", number)
        except (ValueError, KeyError, TypeError) as exc:
            errors.append(f"anchor file line {number} unreadable: {exc}")
            continue
        anchors.append(anchor)
    return AnchorFile(tuple(anchors), tuple(errors))


def read_anchor_file(path: Path) -> AnchorFile:
    """Read under a shared lock: a line another node is appending is read whole or not."""
    try:
        with path.open("rb") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_SH)
            data = file.read()
    except FileNotFoundError:
        return AnchorFile((), (), present=False)
    return parse_anchor_lines(data.decode("utf-8").splitlines())


def write_anchor(path: Path, anchor: Anchor) -> None:
    """Append one line, durably, under an exclusive lock on the file.

    Several nodes sharing one storage root share this file (one chain, one anchor file).
    O_APPEND alone keeps lines whole on a local disk but not on NFS; the lock (flock, which
    Linux's NFS client maps to byte-range locks the server arbitrates) does on both. Lines
    from different nodes may come out of seq order: `verify_chain` does not need them in
    order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, _FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, anchor.to_line().encode())
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock


# --- verification (pure) ---


@dataclass(frozen=True, slots=True)
class Problem:
    seq: int | None  # the entry at fault (None: the anchor file itself)
    message: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    entries: int
    first_seq: int | None
    last_seq: int | None
    anchors_checked: int
    problems: tuple[Problem, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> Problem | None:
        """The earliest problem in chain order (anchor-file problems first)."""
        if not self.problems:
            return None
        return min(self.problems, key=lambda p: -1 if p.seq is None else p.seq)

    def to_json(self) -> dict[str, Any]:
        bad = self.first_bad
        return {
            "ok": self.ok,
            "entries": self.entries,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "anchors_checked": self.anchors_checked,
            "first_bad": None if bad is None else {"seq": bad.seq, "problem": bad.message},
            "problems": [{"seq": p.seq, "problem": p.message} for p in self.problems],
        }


def verify_chain(records: Iterable[AuditRecord], anchor_file: AnchorFile) -> VerifyReport:
    """Check the chain in seq order against itself and against the anchor file."""
    problems: list[Problem] = [Problem(None, message) for message in anchor_file.errors]
    bases = {a.seq: a.hash for a in anchor_file.anchors if a.kind == "prune"}
    heads = [a for a in anchor_file.anchors if a.kind == "head"]
    wanted = {a.seq for a in heads}
    seen: dict[int, str] = {}
    count = 0
    first: AuditRecord | None = None
    previous: AuditRecord | None = None
    for record in records:
        count += 1
        if previous is None:
            first = record
            if record.seq == 1:
                expected = GENESIS
            elif record.seq in bases:
                expected = bases[record.seq]
            else:
                problems.append(
                    Problem(
                        record.seq,
                        f"entry {record.seq}: the trail starts here, but entries before it"
                        " were deleted without an anchored prune",
                    )
                )
                expected = record.prev_hash
            if record.prev_hash != expected:
                problems.append(
                    Problem(
                        record.seq,
                        f"entry {record.seq}: previous-hash does not match the anchored"
                        " prune boundary (an entry before it was rewritten or inserted)",
                    )
                )
        elif record.seq != previous.seq + 1:
            missing = f"{previous.seq + 1}" + (
                f"..{record.seq - 1}" if record.seq - 1 > previous.seq + 1 else ""
            )
            problems.append(
                Problem(previous.seq + 1, f"entry {missing} missing (deleted from the trail)")
            )
        elif record.prev_hash != previous.hash:
            problems.append(
                Problem(
                    record.seq,
                    f"entry {record.seq}: previous-hash is not the hash of entry {previous.seq}"
                    f" (entry {previous.seq} was rewritten or inserted)",
                )
            )
        if record_hash(record) != record.hash:
            problems.append(
                Problem(record.seq, f"entry {record.seq}: content does not match its hash (edited)")
            )
        if record.seq in wanted:
            seen[record.seq] = record.hash
        previous = record
    last_seq = None if previous is None else previous.seq
    first_seq = None if first is None else first.seq
    if not anchor_file.present and count:
        problems.append(
            Problem(None, "anchor file missing: a truncated or rewritten tail cannot be ruled out")
        )
    for anchor in heads:
        if first_seq is not None and anchor.seq < first_seq:
            continue  # pruned (or deleted, which the start-of-trail check reports)
        if last_seq is None or anchor.seq > last_seq:
            end = "is empty" if last_seq is None else f"ends at entry {last_seq}"
            problems.append(
                Problem(
                    (last_seq or 0) + 1,
                    f"truncated: the anchor of {anchor.at.isoformat()} (line {anchor.line}) saw"
                    f" entry {anchor.seq}, but the trail {end}",
                )
            )
        elif anchor.seq in seen and seen[anchor.seq] != anchor.hash:
            problems.append(
                Problem(
                    anchor.seq,
                    f"entry {anchor.seq}: hash differs from the one anchored at"
                    f" {anchor.at.isoformat()} (the chain was rewritten from there or before)",
                )
            )
    return VerifyReport(count, first_seq, last_seq, len(heads), tuple(problems))


# --- the trail over a catalog ---


class AuditTrail:
    """Write, anchor, verify and prune the audit trail of one catalog.

    `anchor_path=None` turns anchoring off (tests of the chain alone); the service and the CLI
    always pass `default_anchor_path(storage_dir)` or the configured file.
    """

    def __init__(self, catalog: Catalog, anchor_path: Path | None) -> None:
        self.catalog = catalog
        self.anchor_path = anchor_path

    def record(
        self,
        *,
        at: datetime,
        actor: str,
        action: str,
        object: str,
        outcome: str = "ok",
        purpose: str | None = None,
        reason: str | None = None,
        detail: Mapping[str, Any] | None = None,
        anchor: bool = True,
    ) -> AuditRecord:
        """Append one entry in its own transaction, then anchor the new head."""
        with write_session(self.catalog) as session:
            entry = append(
                session,
                at=at,
                actor=actor,
                action=action,
                object=object,
                outcome=outcome,
                purpose=purpose,
                reason=reason,
                detail=detail,
            )
        if anchor:
            self._anchor_head(entry, at)
        return entry

    def head(self) -> AuditRecord | None:
        with read_session(self.catalog) as session:
            row = session.scalars(
                select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)
            ).first()
            return None if row is None else _snapshot(row)

    def anchor(self, at: datetime) -> AuditRecord | None:
        """Write the current head to the anchor file; returns it (None: empty trail)."""
        head = self.head()
        if head is not None:
            self._anchor_head(head, at)
        return head

    def _anchor_head(self, head: AuditRecord, at: datetime) -> None:
        if self.anchor_path is not None:
            write_anchor(self.anchor_path, Anchor(at, head.seq, head.hash))

    def iter_entries(self, batch: int = 1000) -> Iterator[AuditRecord]:
        """All entries in seq order, read in batches (the trail may hold a year of reads)."""
        after = 0
        while True:
            with read_session(self.catalog) as session:
                rows = session.scalars(
                    select(AuditEntry)
                    .where(AuditEntry.seq > after)
                    .order_by(AuditEntry.seq)
                    .limit(batch)
                ).all()
                records = [_snapshot(row) for row in rows]
            if not records:
                return
            yield from records
            after = records[-1].seq

    def entries(self, *, limit: int | None = None) -> list[AuditRecord]:
        with read_session(self.catalog) as session:
            rows = session.scalars(
                select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(limit)
            ).all()
            return [_snapshot(row) for row in reversed(rows)]

    def verify(self) -> VerifyReport:
        if self.anchor_path is None:
            anchors = AnchorFile((), ("no anchor file configured",), present=False)
        else:
            anchors = read_anchor_file(self.anchor_path)
        return verify_chain(self.iter_entries(), anchors)

    def prune(self, before: datetime, *, at: datetime, actor: str, rule: str = "A5") -> int:
        """Delete the oldest entries made before `before` (A5); returns how many.

        Only a prefix is deleted (up to the first entry at or after `before`), so that what
        remains is one unbroken chain.
        """
        with write_session(self.catalog) as session:
            # Before reading the bounds: two nodes pruning at once take turns, and the second
            # finds nothing left to prune instead of auditing a prune of zero entries.
            lock_trail(session)
            first_seq: int | None = session.scalar(select(func.min(AuditEntry.seq)))
            last_seq: int | None = session.scalar(select(func.max(AuditEntry.seq)))
            if first_seq is None or last_seq is None:
                return 0
            young: int | None = session.scalar(
                select(func.min(AuditEntry.seq)).where(AuditEntry.at >= before)
            )
            # The head always stays, however old: the audit.pruned entry chains onto it.
            keep_seq = last_seq if young is None else min(young, last_seq)
            if keep_seq <= first_seq:
                return 0
            boundary_row = session.get(AuditEntry, keep_seq - 1)
            if boundary_row is None:
                raise AuditError(f"audit entry {keep_seq - 1} missing: run `audit verify`")
            boundary = boundary_row.hash
            # The mark goes out before the deletion commits: a crash in between leaves
            # entries the mark says may be gone, which verifies; the reverse would not.
            if self.anchor_path is not None:
                write_anchor(self.anchor_path, Anchor(at, keep_seq, boundary, "prune"))
            result = session.execute(delete(AuditEntry).where(AuditEntry.seq < keep_seq))
            count = int(getattr(result, "rowcount", 0) or 0)
            entry = append(
                session,
                at=at,
                actor=actor,
                action="audit.pruned",
                object=f"audit:{first_seq}-{keep_seq - 1}",
                reason=f"{rule}: audit entries made before {_canonical_time(before)}",
                detail={"kept_from": keep_seq, "boundary": boundary, "count": count},
            )
        self._anchor_head(entry, at)
        return count


def record(
    catalog: Catalog,
    anchor_path: Path | None,
    *,
    at: datetime,
    actor: str,
    action: str,
    object: str,
    outcome: str = "ok",
    purpose: str | None = None,
    reason: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> AuditRecord:
    """One audited act, committed and anchored: policy reloads, consent overrides (A14),
    listings and readings of recordings. `object` names what was touched ("recording:12",
    "policy:<hash>"), never a person's number."""
    return AuditTrail(catalog, anchor_path).record(
        at=at,
        actor=actor,
        action=action,
        object=object,
        outcome=outcome,
        purpose=purpose,
        reason=reason,
        detail=detail,
    )
