"""`recorder catalog verify`: do the catalog and the recordings directory agree? (X1, C5, D1)

Read-only checks over one catalog and this node's storage directory:

- every `.wav` under the directory has a live catalog row (the `training/` subdirectory holds
  training copies: those are checked against `training_copies` instead);
- every live recording (`complete`, `interrupted`) has its file, with the catalogued size and
  SHA-256 (X1); likewise every training copy not destroyed;
- no `.part` older than the running service's start is left (the service repairs them when
  it starts), and no row is left `recording` by a service that is gone;
- no recording of a call whose consent was refused holds a file (C5);
- the audit trail's hash chain verifies against its anchor file.

With several nodes on one catalog and one storage root (`node`), a node checks its own rows
(and those of no node) and leaves the other nodes' directories (`storage_dir/OTHER/`) alone:
their `.part` files and `recording` rows may be calls in progress there.

Rows in `destroying` are a purge that was interrupted: the next purge finishes them, so they
are reported as notes, not problems.

The service may be running while this runs (finishing a recording, purging): a problem seen
in the first pass is confirmed against a fresh read of the catalog and the disk before it is
reported, so a row that moved on meanwhile is not mistaken for a fault.

Pure-ish: `verify_catalog` reads the catalog and the files and returns a report; it writes
nothing (the CLI audits the run). It never imports `recorder`: whether a service is running,
and since when, is the caller's knowledge (`service_started`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select

from storage.audit import AuditTrail
from storage.audit import VerifyReport as AuditReport
from storage.models import Call, Recording, RecordingState, TrainingCopy
from storage.repository import Catalog, read_session
from storage.retention import check_file

TRAINING_DIR = "training"
WAV = ".wav"
PART = ".wav.part"

LIVE_STATES = frozenset({RecordingState.COMPLETE, RecordingState.INTERRUPTED})
# A file at the path of a row in one of these states is catalogued (in progress, or going).
_CATALOGUED_STATES = LIVE_STATES | {RecordingState.RECORDING, RecordingState.DESTROYING}

# Problem kinds (stable: `--json` consumers and tests match on them).
UNCATALOGUED = "uncatalogued_file"
MISSING = "missing_file"
SIZE = "size_mismatch"
SHA256 = "sha256_mismatch"
UNREADABLE = "unreadable_file"
OUTSIDE = "outside_storage"
PART_LEFT = "part_unrepaired"
LEFT_OPEN = "recording_left_open"
REFUSED = "refused_call_recorded"
AUDIT = "audit_chain_broken"
# Note kinds (not problems).
PURGE_INTERRUPTED = "purge_interrupted"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem (exit 1) or note, with what it is about."""

    kind: str
    message: str
    path: str | None = None
    recording_id: int | None = None
    training_copy_id: int | None = None
    audit_seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "path": self.path,
            "recording_id": self.recording_id,
            "training_copy_id": self.training_copy_id,
            "audit_seq": self.audit_seq,
        }

    def line(self) -> str:
        label = "NOTE" if self.kind == PURGE_INTERRUPTED else "PROBLEM"
        return f"{label} {self.kind}: {self.message}"


@dataclass(slots=True)
class CatalogReport:
    storage_dir: Path
    checked_at: datetime
    service_started: datetime | None
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    audit: AuditReport | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem_kinds(self) -> dict[str, int]:
        return dict(Counter(problem.kind for problem in self.problems))

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "storage_dir": str(self.storage_dir),
            "checked_at": self.checked_at.astimezone(UTC).isoformat(),
            "service_started": (
                None
                if self.service_started is None
                else self.service_started.astimezone(UTC).isoformat()
            ),
            "counts": dict(self.counts),
            "problems": [problem.to_json() for problem in self.problems],
            "notes": [note.to_json() for note in self.notes],
            "audit": None if self.audit is None else self.audit.to_json(),
        }


# --- snapshots ---


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    path: str | None
    state: RecordingState
    sha256: str | None
    size: int | None
    created_at: datetime
    refused: bool


@dataclass(frozen=True, slots=True)
class _Copy:
    id: int
    path: str | None
    sha256: str
    size: int
    expires_at: datetime | None


def _key(path: str | Path) -> str:
    return os.path.realpath(path)


def _mine(column: Any, node: str) -> Any:
    return or_(column.is_(None), column == node)


def _recording_rows(catalog: Catalog, node: str | None) -> list[_Row]:
    query = (
        select(
            Recording.id,
            Recording.path,
            Recording.state,
            Recording.sha256,
            Recording.size,
            Recording.created_at,
            Call.consent_outcome,
        )
        .join(Call, Recording.call_id == Call.id)
        .order_by(Recording.id)
    )
    if node is not None:
        query = query.where(_mine(Recording.node, node))
    with read_session(catalog) as session:
        return [
            _Row(
                row.id,
                row.path,
                row.state,
                row.sha256,
                row.size,
                row.created_at,
                row.consent_outcome == "refused",
            )
            for row in session.execute(query)
        ]


def _training_rows(catalog: Catalog, node: str | None) -> list[_Copy]:
    query = (
        select(
            TrainingCopy.id,
            TrainingCopy.path,
            TrainingCopy.sha256,
            TrainingCopy.size,
            TrainingCopy.expires_at,
        )
        .where(TrainingCopy.destroyed_at.is_(None), TrainingCopy.path.is_not(None))
        .order_by(TrainingCopy.id)
    )
    if node is not None:
        query = query.where(_mine(TrainingCopy.node, node))
    with read_session(catalog) as session:
        return [
            _Copy(row.id, row.path, row.sha256, row.size, row.expires_at)
            for row in session.execute(query)
        ]


@dataclass(frozen=True, slots=True)
class _Files:
    recordings: list[Path]  # .wav outside training/
    training: list[Path]  # .wav under training/
    parts: list[Path]


def _other_nodes(catalog: Catalog, node: str | None) -> frozenset[str]:
    """Names of the other nodes that wrote recordings into this catalog: their directories
    (`storage.dir/NODE/`) are theirs to verify (a `.part` there may be a call in progress)."""
    if node is None:
        return frozenset()
    query = select(Recording.node).where(Recording.node.is_not(None)).distinct()
    with read_session(catalog) as session:
        return frozenset(name for name in session.scalars(query) if name and name != node)


def _walk(storage_dir: Path, skip: frozenset[str] = frozenset()) -> _Files:
    recordings: list[Path] = []
    training: list[Path] = []
    parts: list[Path] = []
    training_root = storage_dir / TRAINING_DIR
    for directory, subdirs, names in os.walk(storage_dir):
        here = Path(directory)
        if here == storage_dir:
            subdirs[:] = [name for name in subdirs if name not in skip]
        subdirs.sort()
        in_training = here == training_root or training_root in here.parents
        for name in sorted(names):
            path = here / name
            if name.endswith(PART):
                parts.append(path)
            elif name.endswith(WAV) and path.is_file():
                (training if in_training else recordings).append(path)
    return _Files(recordings, training, parts)


# --- checks, one item at a time (so that a problem can be confirmed by running it again) ---


def _file_problem(
    kind_id: tuple[str, int], path: str | None, sha256: str | None, size: int | None, root: Path
) -> Finding | None:
    """X1: the file is where the row says, with the row's size and hash."""
    table, item = kind_id
    what = f"{table} {item}"
    ids: dict[str, Any] = (
        {"recording_id": item} if table == "recording" else {"training_copy_id": item}
    )
    check = check_file(path, sha256, root)
    if check.problem == "missing":
        where = path or "(no path in the catalog)"
        return Finding(MISSING, f"{what}: its file {where} is missing", path, **ids)
    if check.problem == "outside_storage":
        return Finding(OUTSIDE, f"{what}: {check.detail}", path, **ids)
    if check.problem == "unreadable":
        return Finding(UNREADABLE, f"{what}: {path} cannot be read: {check.detail}", path, **ids)
    if check.problem == "sha256_mismatch":
        return Finding(
            SHA256,
            f"{what}: {path} has SHA-256 {check.found_sha256}, the catalog says {sha256}",
            path,
            **ids,
        )
    assert path is not None
    if sha256 is None:
        return Finding(SHA256, f"{what}: the catalog holds no SHA-256 for {path}", path, **ids)
    try:
        found = os.stat(path).st_size
    except FileNotFoundError:
        return Finding(MISSING, f"{what}: its file {path} is missing", path, **ids)
    if size is not None and found != size:
        return Finding(
            SIZE, f"{what}: {path} is {found} bytes, the catalog says {size}", path, **ids
        )
    return None


def _open_before(row: _Row, service_started: datetime | None) -> bool:
    return service_started is None or row.created_at < service_started


def _row_findings(row: _Row, root: Path, service_started: datetime | None) -> Iterator[Finding]:
    if row.state is RecordingState.DESTROYING:
        there = row.path is not None and os.path.exists(row.path)
        yield Finding(
            PURGE_INTERRUPTED,
            f"recording {row.id}: purge interrupted (state destroying, file"
            f" {'still there' if there else 'already gone'}); the next purge finishes it",
            row.path,
            recording_id=row.id,
        )
        return
    if row.state in LIVE_STATES:
        problem = _file_problem(("recording", row.id), row.path, row.sha256, row.size, root)
        if problem is not None:
            yield problem
    if row.state is RecordingState.RECORDING and _open_before(row, service_started):
        since = "no service is running" if service_started is None else "the service restarted"
        yield Finding(
            LEFT_OPEN,
            f"recording {row.id}: still `recording` but {since}; the service's start"
            " reconciles it (interrupted or failed)",
            row.path,
            recording_id=row.id,
        )
    if row.refused:
        holds_file = row.path is not None and os.path.exists(row.path)
        if row.state in LIVE_STATES or row.state is RecordingState.RECORDING or holds_file:
            yield Finding(
                REFUSED,
                f"recording {row.id}: the call's consent was refused, yet the recording is"
                f" {row.state.value}"
                + (f" and {row.path} exists" if holds_file else "")
                + " (C5: a refusal leaves no file)",
                row.path,
                recording_id=row.id,
            )


def _copy_findings(copy: _Copy, root: Path, now: datetime) -> Iterator[Finding]:
    problem = _file_problem(("training copy", copy.id), copy.path, copy.sha256, copy.size, root)
    if problem is None:
        return
    if problem.kind == MISSING and copy.expires_at is not None and copy.expires_at <= now:
        # Training copies lose their file first and their path second (storage/retention.py).
        yield Finding(
            PURGE_INTERRUPTED,
            f"training copy {copy.id}: purge interrupted (expired, file already gone);"
            " the next purge finishes it",
            copy.path,
            training_copy_id=copy.id,
        )
        return
    yield problem


def _uncatalogued_file(path: Path, rows: dict[str, list[_Row]]) -> Finding | None:
    found = rows.get(_key(path), [])
    if any(row.state in _CATALOGUED_STATES for row in found):
        return None
    if found:
        row = found[-1]
        return Finding(
            UNCATALOGUED,
            f"{path}: its catalog row (recording {row.id}) is {row.state.value}, not a live"
            " recording: the file is neither hashed nor ever purged",
            str(path),
            recording_id=row.id,
        )
    return Finding(UNCATALOGUED, f"{path}: a recording file with no catalog row", str(path))


def _uncatalogued_copy(path: Path, copies: dict[str, _Copy]) -> Finding | None:
    if _key(path) in copies:
        return None
    return Finding(
        UNCATALOGUED,
        f"{path}: a training-copy file with no training_copies row (or one marked destroyed)",
        str(path),
    )


def _part_problem(part: Path, service_started: datetime | None) -> Finding | None:
    try:
        modified = datetime.fromtimestamp(part.stat().st_mtime, UTC)
    except FileNotFoundError:
        return None  # repaired or published meanwhile
    if service_started is not None and modified >= service_started:
        return None  # a recording in progress
    when = "no service is running" if service_started is None else "written before the start"
    return Finding(
        PART_LEFT,
        f"{part}: a .part left unrepaired ({when}, last written {modified.isoformat()});"
        " the service repairs it when it starts",
        str(part),
    )


def _audit_findings(report: AuditReport) -> list[Finding]:
    return [
        Finding(
            AUDIT,
            "audit trail broken at "
            + ("the anchor file" if problem.seq is None else f"entry {problem.seq}")
            + f": {problem.message}",
            audit_seq=problem.seq,
        )
        for problem in report.problems
    ]


# --- the run ---


class _Pass:
    """One look at the catalog and the disk."""

    def __init__(
        self,
        catalog: Catalog,
        storage_dir: Path,
        service_started: datetime | None,
        node: str | None,
        now: datetime,
    ) -> None:
        self.catalog = catalog
        self.storage_dir = storage_dir
        self.root = storage_dir.resolve()
        self.service_started = service_started
        self.node = node
        self.now = now
        # The catalog first, then the disk: a file made meanwhile may look uncatalogued
        # (the confirmation pass sees its row), a row never points at a file not yet seen.
        self.rows = _recording_rows(catalog, node)
        self.copies = _training_rows(catalog, node)
        self.files = _walk(storage_dir, _other_nodes(catalog, node))
        self.by_path: dict[str, list[_Row]] = {}
        for row in self.rows:
            if row.path is not None:
                self.by_path.setdefault(_key(row.path), []).append(row)
        self.copies_by_path = {_key(c.path): c for c in self.copies if c.path is not None}

    def findings(self) -> list[Finding]:
        out: list[Finding] = []
        for row in self.rows:
            out.extend(_row_findings(row, self.root, self.service_started))
        for copy in self.copies:
            out.extend(_copy_findings(copy, self.root, self.now))
        for path in self.files.recordings:
            if (found := _uncatalogued_file(path, self.by_path)) is not None:
                out.append(found)
        for path in self.files.training:
            if (found := _uncatalogued_copy(path, self.copies_by_path)) is not None:
                out.append(found)
        for part in self.files.parts:
            if (found := _part_problem(part, self.service_started)) is not None:
                out.append(found)
        return out

    def counts(self) -> dict[str, int]:
        return {
            "recording_files": len(self.files.recordings),
            "training_files": len(self.files.training),
            "part_files": len(self.files.parts),
            "recordings": len(self.rows),
            "live_recordings": sum(row.state in LIVE_STATES for row in self.rows),
            "training_copies": len(self.copies),
        }


def _identity(finding: Finding) -> tuple[Any, ...]:
    return (finding.kind, finding.path, finding.recording_id, finding.training_copy_id)


def verify_catalog(
    catalog: Catalog,
    storage_dir: Path,
    *,
    anchor_path: Path | None,
    service_started: datetime | None,
    now: datetime,
    node: str | None = None,
) -> CatalogReport:
    """Check `catalog` against `storage_dir` and the audit trail (see the module docstring).

    `service_started`: when the running service started (a `.part` or a `recording` row
    older than that was left by a process that is gone), or None when no service runs.
    `node`: with several nodes on one catalog, only rows of this node (or of none) are
    checked, and the directories of the other nodes (`storage_dir/OTHER/`) are not walked;
    None checks every row and every file.
    """
    storage_dir = Path(storage_dir)
    report = CatalogReport(storage_dir, now, service_started)
    if not storage_dir.is_dir():
        report.problems.append(
            Finding(MISSING, f"storage directory {storage_dir} does not exist", str(storage_dir))
        )
        report.counts = {"recordings": len(_recording_rows(catalog, node))}
    else:
        first = _Pass(catalog, storage_dir, service_started, node, now)
        findings = first.findings()
        report.counts = first.counts()
        if any(f.kind != PURGE_INTERRUPTED for f in findings):
            # Confirm: whatever moved on meanwhile (a recording finalized, a purge step) is
            # not a problem. Only what both looks agree on is reported.
            again = {
                _identity(f)
                for f in _Pass(catalog, storage_dir, service_started, node, now).findings()
            }
            findings = [f for f in findings if f.kind == PURGE_INTERRUPTED or _identity(f) in again]
        for finding in findings:
            (report.notes if finding.kind == PURGE_INTERRUPTED else report.problems).append(finding)
    audit = AuditTrail(catalog, anchor_path).verify()
    report.audit = audit
    report.counts["audit_entries"] = audit.entries
    report.problems.extend(_audit_findings(audit))
    return report
