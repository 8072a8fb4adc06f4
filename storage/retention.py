"""Retention and destruction (D1-D5, S6, X1): what the purge decides, and how it does it.

Decisions are pure functions of catalog snapshots, the policy's expiry function and `now`
(no clock is read here). Execution is crash-safe by ordering, not by hope:

1. the file's integrity is checked (SHA-256 against the catalog, X1), outside any
   transaction, because hashing is slow;
2. one transaction re-checks that the recording is still due and unheld, moves it to
   `destroying` with its reason, and audits any integrity failure;
3. the file is unlinked and its directory fsynced;
4. one transaction marks the row `destroyed` (time, reason, no path) and audits it.

A SIGKILL anywhere leaves either the untouched row and file, or a `destroying` row (whose
file may or may not still exist), which the next run finishes before anything else. No step
deletes a row, so no file is ever left without one; no row outside `destroying` ever points
to a file that was deleted on purpose.

With several nodes on one PostgreSQL catalog, rows are taken `FOR UPDATE SKIP LOCKED` and a
node only touches recordings whose `node` is its own (or unset).

Derived data (issue 15) expires too: training copies (P5, D3) lose their file the same way,
file first and row second (see `Purger._destroy_training_copies`), and summary sheets (P6,
D5) lose their text. Both rows stay, with `destroyed_at`, like recordings.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from time import sleep
from typing import Any

from sqlalchemy import ColumnElement, exists, func, or_, select, update
from sqlalchemy.orm import Session

from storage.audit import AuditTrail, append, default_anchor_path
from storage.models import (
    ERASED,
    WITHHELD,
    AuditEntry,
    Call,
    Hold,
    Recording,
    RecordingState,
    SamplePick,
    SamplingDraw,
    SummarySheet,
    TrainingCopy,
)
from storage.repository import Catalog, NotFound, read_session, write_session

FINAL_STATES = (RecordingState.COMPLETE, RecordingState.INTERRUPTED)
# The rule each retention class cites by default (a policy may cite another).
DEFAULT_RULES: Mapping[str, str] = {
    "recordings": "D1",
    "sampled_recordings": "S6",
    "call_logs": "D4",
    "call_log_numbers": "D2",
    "access_trace": "A5",
    "training_copies": "P5",
    "summary_sheets": "P6",
}
_HASH_CHUNK = 1 << 20
# Rows another run holds while this one finishes them: tried again this often (2 s in all).
_FINISH_ATTEMPTS = 100
_FINISH_RETRY_S = 0.02


class PurgeError(Exception):
    """The purge cannot run safely (e.g. the storage directory is not there)."""


class HoldRefused(Exception):
    """A hold request the policy or the recording's state does not allow (audited)."""


Expiry = Callable[[str, datetime], "datetime | None"]


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """What the purge needs from the policy (storage/ does not import recorder/).

    `expiry(retention_class, at)` is `Policy.expiry`: the first instant data of that class
    created at `at` must be gone, or None when the policy sets no period.
    """

    timezone: tzinfo
    expiry: Expiry
    holds_allowed: bool = False
    sample_fraction: float | None = None  # S6 daily pass; None: no daily sampling
    rules: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_RULES))

    def rule(self, retention_class: str) -> str:
        return self.rules.get(retention_class, DEFAULT_RULES.get(retention_class, "?"))


# --- pure decisions ---


def local_midnight(day: date, tz: tzinfo) -> datetime:
    """00:00 of `day` in `tz`, normalised through UTC (as recorder.policy.periods does)."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC).astimezone(tz)


def local_day(at: datetime, tz: tzinfo) -> date:
    return at.astimezone(tz).date()


def end_of_day(day: date, tz: tzinfo) -> datetime:
    """The first instant after `day` (a hold `--until DAY` keeps the recording through it)."""
    return local_midnight(day + timedelta(days=1), tz)


def expired_before(
    settings: RetentionSettings, retention_class: str, now: datetime
) -> datetime | None:
    """The instant before which data of `retention_class` is past its period at `now`.

    Expiry is calendar-based and never decreases with the creation day, so the last expired
    day is found by bisection over days; rows are then selected with one indexed range
    (`created < cutoff`) instead of computing an expiry per row. None: no period set.
    """
    tz = settings.timezone
    today = local_day(now, tz)

    def expired(day: date) -> bool:
        when = settings.expiry(retention_class, datetime.combine(day, time(12), tzinfo=tz))
        return when is not None and when <= now

    if settings.expiry(retention_class, now) is None:
        return None
    low = today - timedelta(days=366 * 200)
    if not expired(low):
        return local_midnight(low, tz)
    high = today  # a period is at least one day: data created today is never expired
    while (high - low).days > 1:
        middle = low + timedelta(days=(high - low).days // 2)
        if expired(middle):
            low = middle
        else:
            high = middle
    return end_of_day(low, tz)


def draw_sample(ids: Iterable[int], fraction: float, rng: random.Random) -> frozenset[int]:
    """S6: each id kept independently with probability `fraction`.

    Ids are drawn in sorted order so that a seed always picks the same ones whatever order
    the catalog returned; nothing about a call or its agent enters the draw ("random with
    respect to calls and agents").
    """
    return frozenset(item for item in sorted(ids) if rng.random() < fraction)


def day_rng(seed: int | None, day: str) -> random.Random:
    """The draw's random source: the OS's, or (tests) one seeded per day, so that a purge
    killed between two days' draws redraws the second day exactly as it would have."""
    if seed is None:
        return random.SystemRandom()
    return random.Random(f"{seed}:{day}")


@dataclass(frozen=True, slots=True)
class HoldInfo:
    id: int
    recording_id: int
    reason: str
    created_by: str
    created_at: datetime
    until: datetime | None
    released_at: datetime | None
    released_by: str | None

    def active(self, now: datetime) -> bool:
        """A hold applies until released or until its `until` instant (exclusive)."""
        return self.released_at is None and (self.until is None or now < self.until)

    def to_json(self) -> dict[str, Any]:
        iso = _iso
        return {
            "id": self.id,
            "recording_id": self.recording_id,
            "reason": self.reason,
            "created_by": self.created_by,
            "created_at": iso(self.created_at),
            "until": iso(self.until),
            "released_at": iso(self.released_at),
            "released_by": self.released_by,
        }


def _hold_info(row: Hold) -> HoldInfo:
    return HoldInfo(
        id=row.id,
        recording_id=row.recording_id,
        reason=row.reason,
        created_by=row.created_by,
        created_at=row.created_at,
        until=row.until,
        released_at=row.released_at,
        released_by=row.released_by,
    )


def _active_hold_clause(now: datetime) -> ColumnElement[bool]:
    return (Hold.released_at.is_(None)) & (or_(Hold.until.is_(None), Hold.until > now))


def _held_ids(session: Session, ids: Sequence[int], now: datetime) -> set[int]:
    if not ids:
        return set()
    query = select(Hold.recording_id).where(Hold.recording_id.in_(ids), _active_hold_clause(now))
    return set(session.scalars(query))


# --- the file side ---


@dataclass(frozen=True, slots=True)
class FileCheck:
    problem: str | None  # None, "missing", "sha256_mismatch", "unreadable", "outside_storage"
    found_sha256: str | None = None
    detail: str | None = None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return False
    return True


def check_file(path: str | None, sha256: str | None, root: Path) -> FileCheck:
    """X1: the recording is where the catalog says, with the bytes the catalog hashed."""
    if path is None:
        return FileCheck("missing", detail="the catalog holds no path")
    file = Path(path)
    # A catalog row must never make the purge delete a file elsewhere on the machine.
    if not _inside(file, root):
        return FileCheck("outside_storage", detail=f"{path} is outside {root}")
    try:
        found = sha256_file(file)
    except FileNotFoundError:
        return FileCheck("missing")
    except OSError as exc:
        return FileCheck("unreadable", detail=str(exc))
    if sha256 is not None and found != sha256:
        return FileCheck("sha256_mismatch", found)
    return FileCheck(None, found)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reports ---


@dataclass(frozen=True, slots=True)
class Destruction:
    recording_id: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"recording_id": self.recording_id, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class IntegrityFailure:
    recording_id: int
    problem: str
    path: str | None
    expected_sha256: str | None
    found_sha256: str | None
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "recording_id": self.recording_id,
            "problem": self.problem,
            "path": self.path,
            "expected_sha256": self.expected_sha256,
            "found_sha256": self.found_sha256,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class SampleDraw:
    day: str
    candidates: int
    kept: tuple[int, ...]
    dropped: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "candidates": self.candidates,
            "kept": list(self.kept),
            "dropped": list(self.dropped),
        }


@dataclass(slots=True)
class PurgeReport:
    now: datetime
    dry_run: bool
    destroyed: list[Destruction] = field(default_factory=list)
    resumed: list[int] = field(default_factory=list)  # finished for a run that died
    held: list[int] = field(default_factory=list)  # due, but kept by a hold
    expiry_set: list[int] = field(default_factory=list)
    sampling: list[SampleDraw] = field(default_factory=list)
    integrity_failures: list[IntegrityFailure] = field(default_factory=list)
    numbers_erased: int = 0
    audit_pruned: int = 0
    errors: list[str] = field(default_factory=list)
    training_copies_destroyed: list[int] = field(default_factory=list)  # P5, D3
    summaries_destroyed: list[int] = field(default_factory=list)  # P6, D5

    @property
    def ok(self) -> bool:
        return not self.integrity_failures and not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "now": _iso(self.now),
            "dry_run": self.dry_run,
            "ok": self.ok,
            "destroyed": [d.to_json() for d in self.destroyed],
            "resumed": self.resumed,
            "held": self.held,
            "expiry_set": self.expiry_set,
            "sampling": [s.to_json() for s in self.sampling],
            "integrity_failures": [f.to_json() for f in self.integrity_failures],
            "numbers_erased": self.numbers_erased,
            "audit_pruned": self.audit_pruned,
            "errors": self.errors,
            "training_copies_destroyed": self.training_copies_destroyed,
            "summaries_destroyed": self.summaries_destroyed,
        }

    def counts(self) -> dict[str, int]:
        return {
            "destroyed": len(self.destroyed),
            "resumed": len(self.resumed),
            "held": len(self.held),
            "expiry_set": len(self.expiry_set),
            "sampled_days": len(self.sampling),
            "integrity_failures": len(self.integrity_failures),
            "numbers_erased": self.numbers_erased,
            "audit_pruned": self.audit_pruned,
            "errors": len(self.errors),
            "training_copies_destroyed": len(self.training_copies_destroyed),
            "summaries_destroyed": len(self.summaries_destroyed),
        }


# --- the purge ---


@dataclass(frozen=True, slots=True)
class _Candidate:
    id: int
    path: str | None
    sha256: str | None


class Purger:
    """One purge run over one catalog and the recordings directory of this node."""

    def __init__(
        self,
        catalog: Catalog,
        storage_dir: Path,
        settings: RetentionSettings,
        *,
        actor: str = "service",
        node: str | None = None,
        anchor_path: Path | None = None,
        seed: int | None = None,
        batch: int = 500,
    ) -> None:
        self.catalog = catalog
        self.storage_dir = Path(storage_dir)
        self.settings = settings
        self.actor = actor
        self.node = node
        self.anchor_path = (
            anchor_path if anchor_path is not None else default_anchor_path(self.storage_dir)
        )
        self.trail = AuditTrail(catalog, self.anchor_path)
        # The production draw comes from the OS; a seeded one only where a test asks for it.
        self.seed = seed
        self.batch = batch
        self.root = self.storage_dir.resolve()

    def run(self, now: datetime, *, dry_run: bool = False) -> PurgeReport:
        if now.tzinfo is None:
            raise ValueError("the purge needs a timezone-aware `now`")
        if not self.storage_dir.is_dir():
            # Every file would look missing: refuse rather than report (and destroy) them all.
            raise PurgeError(f"storage directory {self.storage_dir} does not exist")
        report = PurgeReport(now=now, dry_run=dry_run)
        self._resume(now, report)
        self._fill_missing_expiry(now, report)
        fraction = self.settings.sample_fraction
        if fraction is not None and fraction < 1.0:
            self._sample(now, fraction, report)
        self._expire(now, report)
        self._destroy_training_copies(now, report)
        self._destroy_summaries(now, report)
        self._erase_numbers(now, report)
        self._prune_audit(now, report)
        outcome = "dry_run" if dry_run else ("ok" if report.ok else "integrity_failures")
        self.trail.record(
            at=now,
            actor=self.actor,
            action="retention.purge",
            object="catalog",
            outcome=outcome,
            detail=report.counts(),
        )
        return report

    # -- helpers --

    def _mine(self) -> ColumnElement[bool]:
        if self.node is None:
            return Recording.id.is_not(None)
        return or_(Recording.node.is_(None), Recording.node == self.node)

    def _record_failure(
        self, session: Session, candidate: _Candidate, check: FileCheck, now: datetime
    ) -> None:
        assert check.problem is not None
        append(
            session,
            at=now,
            actor=self.actor,
            action="recording.integrity_failure",
            object=f"recording:{candidate.id}",
            outcome=check.problem,
            reason="X1: the file is not what the catalog recorded",
            detail={
                "expected_sha256": candidate.sha256,
                "found_sha256": check.found_sha256,
                "detail": check.detail,
            },
        )

    def _checks(
        self, candidates: Sequence[_Candidate], report: PurgeReport
    ) -> dict[int, FileCheck]:
        """Hash the files (slow: outside any transaction). A dry run reports the failures at
        once; a real one when `_mark_destroying` confirms them under the row's lock (another
        run may have destroyed the file meanwhile, which is no failure)."""
        checks: dict[int, FileCheck] = {}
        for candidate in candidates:
            check = check_file(candidate.path, candidate.sha256, self.root)
            checks[candidate.id] = check
            if check.problem is not None and report.dry_run:
                report.integrity_failures.append(_failure(candidate, check))
        return checks

    def _mark_destroying(
        self,
        session: Session,
        row: Recording,
        reason: str,
        check: FileCheck,
        now: datetime,
        report: PurgeReport,
    ) -> bool:
        candidate = _Candidate(row.id, row.path, row.sha256)
        if check.problem is not None:
            self._record_failure(session, candidate, check, now)
            report.integrity_failures.append(_failure(candidate, check))
        if check.problem == "outside_storage":
            return False  # left as it is, and reported on every run until someone looks
        if check.problem is not None:
            reason = f"{reason} (integrity: {check.problem})"
        row.state = RecordingState.DESTROYING
        row.destroy_reason = reason[:255]
        return True

    def _unlink_and_finish(
        self,
        targets: Sequence[tuple[int, str | None]],
        now: datetime,
        report: PurgeReport,
        *,
        resumed: bool,
    ) -> None:
        done: list[int] = []
        directories: set[Path] = set()
        for recording_id, path in targets:
            if path is not None:
                file = Path(path)
                if not _inside(file, self.root):
                    report.errors.append(f"recording {recording_id}: {path} is outside the storage")
                    continue
                try:
                    file.unlink()
                    directories.add(file.parent)
                except FileNotFoundError:
                    pass  # a previous run got this far, or the integrity failure was audited
                except OSError as exc:
                    report.errors.append(f"recording {recording_id}: cannot delete {path}: {exc}")
                    continue
            done.append(recording_id)
        # The unlink is durable before any row says `destroyed`.
        for directory in directories:
            _fsync_dir(directory)
        pending = done
        for _ in range(_FINISH_ATTEMPTS):
            pending = self._finish(pending, now, report, resumed=resumed)
            if not pending:
                return
            sleep(_FINISH_RETRY_S)
        # Still held by another run after that: left `destroying`; the next run's `_resume`
        # finishes them (their files are already gone).

    def _finish(
        self, ids: Sequence[int], now: datetime, report: PurgeReport, *, resumed: bool
    ) -> list[int]:
        """Mark `destroying` rows `destroyed`; returns the ids another transaction held.

        SKIP LOCKED: another run (a second node, or `recorder purge` beside the service) may
        hold a row for a moment without finishing it (it read the row as due before this run
        marked it, and lets go once it sees `destroying`): those are tried again, or no run
        would ever finish them. Whoever gets a row second finds it done."""
        skipped: list[int] = []
        for start in range(0, len(ids), self.batch):
            chunk = ids[start : start + self.batch]
            with write_session(self.catalog) as session:
                rows = session.scalars(
                    select(Recording)
                    .where(Recording.id.in_(chunk))
                    .with_for_update(skip_locked=True)
                ).all()
                got = {row.id for row in rows}
                skipped.extend(i for i in chunk if i not in got)
                for row in rows:
                    if row.state is not RecordingState.DESTROYING:
                        continue
                    reason = row.destroy_reason or "retention"
                    row.state = RecordingState.DESTROYED
                    row.destroyed_at = now
                    row.path = None
                    append(
                        session,
                        at=now,
                        actor=self.actor,
                        action="recording.destroyed",
                        object=f"recording:{row.id}",
                        reason=reason,
                        detail={"resumed": resumed, "expired_at": _iso(row.expires_at)},
                    )
                    if resumed:
                        report.resumed.append(row.id)
                    else:
                        report.destroyed.append(Destruction(row.id, reason))
        return skipped

    # -- steps --

    def _resume(self, now: datetime, report: PurgeReport) -> None:
        """Finish what a killed run committed to."""
        query = (
            select(Recording.id, Recording.path)
            .where(Recording.state == RecordingState.DESTROYING, self._mine())
            .order_by(Recording.id)
        )
        with read_session(self.catalog) as session:
            targets = [(row.id, row.path) for row in session.execute(query)]
        if report.dry_run:
            report.resumed.extend(recording_id for recording_id, _ in targets)
            return
        self._unlink_and_finish(targets, now, report, resumed=True)

    def _fill_missing_expiry(self, now: datetime, report: PurgeReport) -> None:
        """A finished recording without an expiry (e.g. repaired after a crash) would be kept
        forever; give it the one the policy gives its call, and say so in the trail."""
        kept = select(SamplePick.kept).where(SamplePick.recording_id == Recording.id)
        query = (
            select(Recording.id, Call.arrived_at, kept.scalar_subquery().label("sampled"))
            .join(Call, Recording.call_id == Call.id)
            .where(Recording.state.in_(FINAL_STATES), Recording.expires_at.is_(None), self._mine())
            .order_by(Recording.id)
        )
        with read_session(self.catalog) as session:
            rows = [(row.id, row.arrived_at, row.sampled) for row in session.execute(query)]
        updates: list[tuple[int, datetime, str]] = []
        for recording_id, arrived_at, sampled in rows:
            retention_class = "sampled_recordings" if sampled else "recordings"
            expires = self.settings.expiry(retention_class, arrived_at)
            if expires is not None:
                updates.append((recording_id, expires, retention_class))
        report.expiry_set.extend(recording_id for recording_id, _, _ in updates)
        if report.dry_run:
            return
        for start in range(0, len(updates), self.batch):
            chunk = updates[start : start + self.batch]
            with write_session(self.catalog) as session:
                locked = {
                    row.id: row
                    for row in session.scalars(
                        select(Recording)
                        .where(Recording.id.in_([recording_id for recording_id, _, _ in chunk]))
                        .with_for_update(skip_locked=True)
                    )
                }
                for recording_id, expires, retention_class in chunk:
                    row = locked.get(recording_id)
                    if row is None or row.expires_at is not None:
                        continue  # another run has it, or set it meanwhile
                    row.expires_at = expires
                    append(
                        session,
                        at=now,
                        actor=self.actor,
                        action="recording.expiry_set",
                        object=f"recording:{recording_id}",
                        reason=f"{self.settings.rule(retention_class)}: no expiry was stored",
                        detail={"expires_at": _iso(expires), "class": retention_class},
                    )

    def _sample(self, now: datetime, fraction: float, report: PurgeReport) -> None:
        """S6: one draw per past calendar day over its recordings not drawn yet."""
        tz = self.settings.timezone
        today = local_midnight(local_day(now, tz), tz)
        drawn = exists().where(SamplePick.recording_id == Recording.id)
        query = (
            select(Recording.id, Call.arrived_at)
            .join(Call, Recording.call_id == Call.id)
            .where(
                Recording.state.in_(FINAL_STATES),
                Call.arrived_at < today,
                ~drawn,
                self._mine(),
            )
            .order_by(Recording.id)
        )
        with read_session(self.catalog) as session:
            rows = list(session.execute(query))
        by_day: dict[str, list[int]] = defaultdict(list)
        for row in rows:
            by_day[local_day(row.arrived_at, tz).isoformat()].append(row.id)
        for day in sorted(by_day):
            ids = by_day[day]
            if report.dry_run:
                # The draw itself is not previewed: it is random and happens once.
                report.sampling.append(SampleDraw(day, len(ids), (), ()))
                continue
            kept = draw_sample(ids, fraction, day_rng(self.seed, day))
            self._apply_draw(now, day, fraction, ids, kept, report)

    def _apply_draw(
        self,
        now: datetime,
        day: str,
        fraction: float,
        ids: Sequence[int],
        kept: frozenset[int],
        report: PurgeReport,
    ) -> None:
        with read_session(self.catalog) as session:
            info = {
                row.id: _Candidate(row.id, row.path, row.sha256)
                for row in session.execute(
                    select(Recording.id, Recording.path, Recording.sha256).where(
                        Recording.id.in_([i for i in ids if i not in kept])
                    )
                )
            }
        checks = self._checks(list(info.values()), report)
        rule = self.settings.rule("sampled_recordings")
        targets: list[tuple[int, str | None]] = []
        kept_ids: list[int] = []
        dropped_ids: list[int] = []
        with write_session(self.catalog) as session:
            draw = SamplingDraw(
                at=now, day=day, fraction=fraction, candidates=len(ids), kept=len(kept)
            )
            session.add(draw)
            session.flush()
            for start in range(0, len(ids), self.batch):
                chunk = list(ids[start : start + self.batch])
                held = _held_ids(session, chunk, now)
                rows = session.scalars(
                    select(Recording)
                    .where(Recording.id.in_(chunk))
                    .with_for_update(skip_locked=True)
                ).all()
                arrivals = {
                    row.id: row.arrived_at
                    for row in session.execute(
                        select(Recording.id, Call.arrived_at)
                        .join(Call, Recording.call_id == Call.id)
                        .where(Recording.id.in_(chunk))
                    )
                }
                # Under the lock: rows another run drew meanwhile are its own.
                drawn_now = set(
                    session.scalars(
                        select(SamplePick.recording_id).where(SamplePick.recording_id.in_(chunk))
                    )
                )
                for row in rows:
                    if row.state not in FINAL_STATES or row.id in drawn_now:
                        continue
                    keep = row.id in kept
                    session.add(SamplePick(recording_id=row.id, draw_id=draw.id, kept=keep))
                    if keep:
                        kept_ids.append(row.id)
                        expires = self.settings.expiry("sampled_recordings", arrivals[row.id])
                        if expires is not None:
                            row.expires_at = expires
                        continue
                    dropped_ids.append(row.id)
                    if row.id in held:
                        # The hold wins; once released, the next purge finds it expired
                        # (the expiry pass below reports it as held meanwhile).
                        row.expires_at = now
                        continue
                    reason = f"{rule}: not kept by the daily sample of {day}"
                    if self._mark_destroying(session, row, reason, checks[row.id], now, report):
                        targets.append((row.id, row.path))
            draw.kept = len(kept_ids)
            if not kept_ids and not dropped_ids:
                session.delete(draw)  # another run drew every one of them: no second draw
                return
            append(
                session,
                at=now,
                actor=self.actor,
                action="sampling.draw",
                object=f"day:{day}",
                reason=f"{rule}: keep a uniformly random {fraction:.4g} of the day's recordings",
                detail={
                    "draw": draw.id,
                    "fraction": fraction,
                    "candidates": len(kept_ids) + len(dropped_ids),
                    "kept": sorted(kept_ids),
                    "dropped": len(dropped_ids),
                    "seeded": self.seed is not None,
                },
            )
        report.sampling.append(SampleDraw(day, len(ids), tuple(kept_ids), tuple(dropped_ids)))
        self._unlink_and_finish(targets, now, report, resumed=False)

    def _expire(self, now: datetime, report: PurgeReport) -> None:
        """D1, D4, D5, S6: recordings whose stored expiry has come."""
        after = 0
        while True:
            query = (
                select(Recording.id, Recording.path, Recording.sha256)
                .where(
                    Recording.state.in_(FINAL_STATES),
                    Recording.expires_at <= now,
                    Recording.id > after,
                    self._mine(),
                )
                .order_by(Recording.id)
                .limit(self.batch)
            )
            with read_session(self.catalog) as session:
                candidates = [_Candidate(r.id, r.path, r.sha256) for r in session.execute(query)]
                held = _held_ids(session, [c.id for c in candidates], now)
            if not candidates:
                return
            after = candidates[-1].id
            report.held.extend(c.id for c in candidates if c.id in held)
            due = [c for c in candidates if c.id not in held]
            checks = self._checks(due, report)
            if report.dry_run:
                for candidate in due:
                    report.destroyed.append(Destruction(candidate.id, "retention over"))
                continue
            self._destroy_expired(due, checks, now, report)

    def _destroy_expired(
        self,
        due: Sequence[_Candidate],
        checks: Mapping[int, FileCheck],
        now: datetime,
        report: PurgeReport,
    ) -> None:
        targets: list[tuple[int, str | None]] = []
        with write_session(self.catalog) as session:
            ids = [c.id for c in due]
            held = _held_ids(session, ids, now)
            sampled = set(
                session.scalars(
                    select(SamplePick.recording_id).where(
                        SamplePick.recording_id.in_(ids), SamplePick.kept.is_(True)
                    )
                )
            )
            rows = session.scalars(
                select(Recording).where(Recording.id.in_(ids)).with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                # Re-checked under the write lock: a hold may have arrived since the read.
                still_due = row.expires_at is not None and row.expires_at <= now
                if row.state not in FINAL_STATES or not still_due or row.id in held:
                    continue
                retention_class = "sampled_recordings" if row.id in sampled else "recordings"
                rule = self.settings.rule(retention_class)
                assert row.expires_at is not None
                local = row.expires_at.astimezone(self.settings.timezone).isoformat()
                reason = f"{rule}: retention over at {local}"
                if self._mark_destroying(session, row, reason, checks[row.id], now, report):
                    targets.append((row.id, row.path))
        self._unlink_and_finish(targets, now, report, resumed=False)

    def _my_training_copies(self) -> ColumnElement[bool]:
        if self.node is None:
            return TrainingCopy.id.is_not(None)
        return or_(TrainingCopy.node.is_(None), TrainingCopy.node == self.node)

    def _destroy_training_copies(self, now: datetime, report: PurgeReport) -> None:
        """P5, D3: a training copy past its `expires_at` loses its file, then its path.

        There is no `destroying` state to go through: a training copy is never held and its
        expiry never moves, so an expired row without `destroyed_at` already says "to be
        destroyed". The file goes first (unlinked, its directory fsynced), the row second:
        a run killed in between leaves an expired row whose file is gone, which the next run
        finishes (the file is then "missing" in the audit entry). No row ever says destroyed
        while its file is still there.
        """
        after = 0
        while True:
            query = (
                select(TrainingCopy.id, TrainingCopy.path)
                .where(
                    TrainingCopy.destroyed_at.is_(None),
                    TrainingCopy.expires_at <= now,
                    TrainingCopy.id > after,
                    self._my_training_copies(),
                )
                .order_by(TrainingCopy.id)
                .limit(self.batch)
            )
            with read_session(self.catalog) as session:
                due = [(row.id, row.path) for row in session.execute(query)]
            if not due:
                return
            after = due[-1][0]
            if report.dry_run:
                report.training_copies_destroyed.extend(copy_id for copy_id, _ in due)
                continue
            files = self._unlink_training_copies(due, report)
            self._finish_training_copies(files, now, report)

    def _unlink_training_copies(
        self, due: Sequence[tuple[int, str | None]], report: PurgeReport
    ) -> dict[int, str]:
        """Delete the files; returns what became of each (`deleted`, `missing`, `no_path`)."""
        files: dict[int, str] = {}
        directories: set[Path] = set()
        for copy_id, path in due:
            if path is None:
                files[copy_id] = "no_path"
                continue
            file = Path(path)
            # As for recordings: a catalog row never makes the purge delete a file elsewhere.
            if not _inside(file, self.root):
                report.errors.append(f"training copy {copy_id}: {path} is outside the storage")
                continue
            try:
                file.unlink()
            except FileNotFoundError:
                files[copy_id] = "missing"  # a previous run got this far, or it was lost
                continue
            except OSError as exc:
                report.errors.append(f"training copy {copy_id}: cannot delete {path}: {exc}")
                continue
            files[copy_id] = "deleted"
            directories.add(file.parent)
        # The unlink is durable before any row says destroyed.
        for directory in directories:
            _fsync_dir(directory)
        return files

    def _finish_training_copies(
        self, files: Mapping[int, str], now: datetime, report: PurgeReport
    ) -> None:
        if not files:
            return
        rule = self.settings.rule("training_copies")
        with write_session(self.catalog) as session:
            rows = session.scalars(
                select(TrainingCopy)
                .where(TrainingCopy.id.in_(list(files)))
                .with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                if row.destroyed_at is not None:
                    continue  # another node finished it meanwhile
                assert row.expires_at is not None
                local = row.expires_at.astimezone(self.settings.timezone).isoformat()
                row.path = None
                row.destroyed_at = now
                append(
                    session,
                    at=now,
                    actor=self.actor,
                    action="training_copy.destroyed",
                    object=f"training_copy:{row.id}",
                    reason=f"{rule}: retention over at {local}",
                    detail={"expired_at": _iso(row.expires_at), "file": files[row.id]},
                )
                report.training_copies_destroyed.append(row.id)

    def _destroy_summaries(self, now: datetime, report: PurgeReport) -> None:
        """P6, D5: a summary sheet past its `expires_at` loses its text; the row stays.

        One transaction per batch: emptying the text and auditing it commit together, so
        there is no half-way state to resume. Sheets have no node (they are rows, not files):
        whichever node purges first does it, SKIP LOCKED keeps two from doing it twice.
        """
        due = (SummarySheet.destroyed_at.is_(None)) & (SummarySheet.expires_at <= now)
        if report.dry_run:
            with read_session(self.catalog) as session:
                report.summaries_destroyed.extend(
                    session.scalars(select(SummarySheet.id).where(due).order_by(SummarySheet.id))
                )
            return
        rule = self.settings.rule("summary_sheets")
        while True:
            with write_session(self.catalog) as session:
                rows = session.scalars(
                    select(SummarySheet)
                    .where(due)
                    .order_by(SummarySheet.id)
                    .limit(self.batch)
                    .with_for_update(skip_locked=True)
                ).all()
                if not rows:
                    return
                for row in rows:
                    assert row.expires_at is not None
                    local = row.expires_at.astimezone(self.settings.timezone).isoformat()
                    row.text = ""
                    row.destroyed_at = now
                    append(
                        session,
                        at=now,
                        actor=self.actor,
                        action="summary.destroyed",
                        object=f"summary:{row.id}",
                        reason=f"{rule}: retention over at {local}",
                        detail={"recording": row.recording_id, "expired_at": _iso(row.expires_at)},
                    )
                    report.summaries_destroyed.append(row.id)

    def _erase_numbers(self, now: datetime, report: PurgeReport) -> None:
        """D2: the call log keeps its rows (statistics) but loses its numbers."""
        cutoff = expired_before(self.settings, "call_log_numbers", now)
        if cutoff is None:
            return
        keep = (ERASED, WITHHELD)
        due = (Call.arrived_at < cutoff) & (
            Call.caller_number.not_in(keep) | Call.callee_number.not_in(keep)
        )
        if report.dry_run:
            with read_session(self.catalog) as session:
                report.numbers_erased = int(
                    session.scalar(select(func.count()).select_from(Call).where(due)) or 0
                )
            return
        rule = self.settings.rule("call_log_numbers")
        while True:
            with write_session(self.catalog) as session:
                ids = list(
                    session.scalars(
                        select(Call.id)
                        .where(due)
                        .order_by(Call.id)
                        .limit(self.batch)
                        .with_for_update(skip_locked=True)
                    )
                )
                if not ids:
                    return
                for column in (Call.caller_number, Call.callee_number):
                    session.execute(
                        update(Call)
                        .where(Call.id.in_(ids), column.not_in(keep))
                        .values({column: ERASED})
                    )
                append(
                    session,
                    at=now,
                    actor=self.actor,
                    action="calls.numbers_erased",
                    object=f"calls:{min(ids)}-{max(ids)}",
                    reason=f"{rule}: numbers of calls that arrived before {_iso(cutoff)}",
                    detail={"count": len(ids), "arrived_before": _iso(cutoff)},
                )
                report.numbers_erased += len(ids)

    def _prune_audit(self, now: datetime, report: PurgeReport) -> None:
        """A5: the trail (the access trace) is kept until N months after the fiscal year."""
        cutoff = expired_before(self.settings, "access_trace", now)
        if cutoff is None:
            return
        if report.dry_run:
            with read_session(self.catalog) as session:
                report.audit_pruned = int(
                    session.scalar(
                        select(func.count()).select_from(AuditEntry).where(AuditEntry.at < cutoff)
                    )
                    or 0
                )
            return
        report.audit_pruned = self.trail.prune(
            cutoff, at=now, actor=self.actor, rule=self.settings.rule("access_trace")
        )


def _failure(candidate: _Candidate, check: FileCheck) -> IntegrityFailure:
    assert check.problem is not None
    return IntegrityFailure(
        candidate.id,
        check.problem,
        candidate.path,
        candidate.sha256,
        check.found_sha256,
        check.detail,
    )


def _iso(value: datetime | None) -> str | None:
    # UTC in JSON and in the trail, like the catalog CLI's --json.
    return None if value is None else value.astimezone(UTC).isoformat()


def purge_once(
    catalog_url: str,
    storage_dir: Path,
    settings: RetentionSettings,
    now: datetime,
    *,
    dry_run: bool = False,
    actor: str = "service",
    node: str | None = None,
    anchor_path: Path | None = None,
    seed: int | None = None,
) -> PurgeReport:
    """One purge with its own connection: what the service runs hourly in an executor."""
    catalog = Catalog.open(catalog_url, create=False)
    try:
        purger = Purger(
            catalog,
            storage_dir,
            settings,
            actor=actor,
            node=node,
            anchor_path=anchor_path,
            seed=seed,
        )
        return purger.run(now, dry_run=dry_run)
    finally:
        catalog.close()


# --- holds (D4, P4) ---


def add_hold(
    catalog: Catalog,
    recording_id: int,
    *,
    reason: str,
    actor: str,
    now: datetime,
    settings: RetentionSettings,
    until: datetime | None = None,
    purpose: str | None = None,
    anchor_path: Path | None = None,
) -> HoldInfo:
    """Keep a recording past its expiry until released or `until`; refusals are audited too.

    Refused when the policy allows no holds (OPC D1: "cannot be requested after"), when the
    recording has no file to keep, or when its retention is already over.
    """
    refusal: str | None = None
    created: HoldInfo | None = None
    with write_session(catalog) as session:
        row = session.get(Recording, recording_id)
        if not settings.holds_allowed:
            refusal = "the policy allows no holds (retention.holds = false)"
        elif row is None:
            refusal = f"no recording {recording_id}"
        elif row.state in (RecordingState.DESTROYING, RecordingState.DESTROYED):
            refusal = f"recording {recording_id} is {row.state.value}"
        elif row.state is RecordingState.FAILED:
            refusal = f"recording {recording_id} failed: there is no file to keep"
        elif row.expires_at is not None and row.expires_at <= now:
            local = row.expires_at.astimezone(settings.timezone).isoformat()
            refusal = f"recording {recording_id}'s retention ended at {local}"
        elif until is not None and until <= now:
            refusal = "--until is not in the future"
        elif not reason.strip():
            refusal = "a hold needs a reason"
        if refusal is None:
            hold = Hold(
                recording_id=recording_id,
                reason=reason,
                created_by=actor,
                created_at=now,
                until=until,
            )
            session.add(hold)
            session.flush()
            created = _hold_info(hold)
        append(
            session,
            at=now,
            actor=actor,
            action="hold.add",
            object=f"recording:{recording_id}",
            purpose=purpose,
            reason=reason if refusal is None else f"{refusal} (asked: {reason})"[:1024],
            outcome="ok" if refusal is None else "refused",
            detail={
                "hold": None if created is None else created.id,
                "until": _iso(until),
                "holds_allowed": settings.holds_allowed,
            },
        )
    AuditTrail(catalog, anchor_path).anchor(now)
    if refusal is not None:
        raise HoldRefused(refusal)
    assert created is not None
    return created


def release_holds(
    catalog: Catalog,
    recording_id: int,
    *,
    actor: str,
    now: datetime,
    reason: str | None = None,
    anchor_path: Path | None = None,
) -> list[HoldInfo]:
    """Release every active hold on a recording; the next purge applies its expiry."""
    released: list[HoldInfo] = []
    with write_session(catalog) as session:
        if session.get(Recording, recording_id) is None:
            raise NotFound(f"no recording {recording_id}")
        rows = session.scalars(
            select(Hold)
            .where(Hold.recording_id == recording_id, _active_hold_clause(now))
            .order_by(Hold.id)
        ).all()
        for hold in rows:
            hold.released_at = now
            hold.released_by = actor
            append(
                session,
                at=now,
                actor=actor,
                action="hold.release",
                object=f"recording:{recording_id}",
                reason=reason,
                detail={"hold": hold.id},
            )
            released.append(_hold_info(hold))
    if not released:
        raise HoldRefused(f"recording {recording_id} has no active hold")
    AuditTrail(catalog, anchor_path).anchor(now)
    return released


def list_holds(
    catalog: Catalog,
    *,
    now: datetime,
    include_inactive: bool = False,
    recording_id: int | None = None,
) -> list[HoldInfo]:
    query = select(Hold).order_by(Hold.id)
    if not include_inactive:
        query = query.where(_active_hold_clause(now))
    if recording_id is not None:
        query = query.where(Hold.recording_id == recording_id)
    with read_session(catalog) as session:
        return [_hold_info(row) for row in session.scalars(query)]


# --- explicit expiry recomputation after a policy change ---


@dataclass(frozen=True, slots=True)
class ExpiryChange:
    recording_id: int
    old: datetime | None
    new: datetime

    def to_json(self) -> dict[str, Any]:
        return {"recording_id": self.recording_id, "old": _iso(self.old), "new": _iso(self.new)}


def recompute_expiry(
    catalog: Catalog,
    settings: RetentionSettings,
    *,
    now: datetime,
    actor: str,
    dry_run: bool = False,
    anchor_path: Path | None = None,
    policy_hash: str | None = None,
) -> list[ExpiryChange]:
    """Apply the current policy's periods to recordings still kept; each change audited.

    Expiry is otherwise fixed at finalize: a policy edit must not silently shorten or
    lengthen what was announced, so this only happens when an admin asks.
    """
    kept = select(SamplePick.kept).where(SamplePick.recording_id == Recording.id)
    query = (
        select(
            Recording.id,
            Recording.expires_at,
            Call.arrived_at,
            kept.scalar_subquery().label("sampled"),
        )
        .join(Call, Recording.call_id == Call.id)
        .where(Recording.state.in_(FINAL_STATES))
        .order_by(Recording.id)
    )
    with read_session(catalog) as session:
        rows = list(session.execute(query))
    changes: list[ExpiryChange] = []
    for row in rows:
        retention_class = "sampled_recordings" if row.sampled else "recordings"
        new = settings.expiry(retention_class, row.arrived_at)
        if new is not None and new != row.expires_at:
            changes.append(ExpiryChange(row.id, row.expires_at, new))
    trail = AuditTrail(catalog, anchor_path)
    if dry_run:
        return changes
    with write_session(catalog) as session:
        for change in changes:
            recording = session.get(Recording, change.recording_id)
            if recording is None or recording.state not in FINAL_STATES:
                continue
            recording.expires_at = change.new
            append(
                session,
                at=now,
                actor=actor,
                action="recording.expiry_recomputed",
                object=f"recording:{change.recording_id}",
                reason="explicit recomputation after a policy change",
                detail={"old": _iso(change.old), "new": _iso(change.new), "policy": policy_hash},
            )
        append(
            session,
            at=now,
            actor=actor,
            action="retention.recompute_expiry",
            object="recordings",
            detail={"changed": len(changes), "examined": len(rows), "policy": policy_hash},
        )
    trail.anchor(now)
    return changes
