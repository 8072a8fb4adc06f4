"""The call log (N3) and recording rows, written through the catalog's worker thread.

Every write is queued in call order on `AsyncCatalog`'s single thread, so a later write
can use the row id an earlier one produced without the event loop ever waiting for it.
While the catalog cannot be reached, the writes go to the catalog journal in the same
order, and a replay puts them in once it answers again (recorder.call.catalog_journal).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from recorder.call.catalog_journal import (
    Entry,
    Journal,
    JournalError,
    catalog_unavailable,
    lock_journal,
)
from recorder.ops.logs import get_logger
from recorder.recording.naming import SUFFIX
from recorder.recording.repair import describe_published
from storage.models import JournalMark, Recording, RecordingState
from storage.repository import (
    AsyncCatalog,
    Catalog,
    RecordingInfo,
    one_transaction,
    read_session,
)

log = get_logger("recorder.call_log")

# How often a replay is tried while the journal holds entries.
RETRY_SECONDS = 2.0

# What one write knew of its call before it ran: restored if the catalog failed it.
_Known = tuple[int | None, int | None, bool, bool]


class CallLog:
    def __init__(
        self, catalog: AsyncCatalog, journal_path: Path | None = None, node: str | None = None
    ) -> None:
        self.catalog = catalog
        # This node's name (issue 19), on every recording row it makes; its start-up
        # reconciliation only touches rows of this node (or of none).
        self.node = node
        # Worker-thread state: our call id -> catalog row ids. A call row stays known while
        # a recording of it is pending, since its file is finalized after the call ends.
        self._rows: dict[str, int] = {}
        self._recordings: dict[str, int] = {}
        self._pending: set[str] = set()
        self._ended: set[str] = set()
        self.failures = 0
        # Issue 20: None = no journal (a write the catalog fails is logged and lost).
        self.journal: Journal | None = None
        self._journal_path = journal_path
        self.outages = 0  # times the catalog became unreachable
        self.replayed = 0  # journal entries put in the catalog
        self.rejected = 0  # journal entries the catalog refused for good (set aside)
        self.outage_since: float | None = None  # time.monotonic() of the outage's start
        self._retry: asyncio.TimerHandle | None = None
        self._replaying = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: int | None = None  # the journal's lock file, held while the service runs

    @property
    def journal_pending(self) -> int:
        return len(self.journal) if self.journal is not None else 0

    async def open_journal(self) -> int:
        """At start-up, before anything else is written: load the journal a previous run
        left, and put what it holds into the catalog. Returns the entries replayed."""
        if self._journal_path is None:
            return 0
        path = self._journal_path
        self._loop = asyncio.get_running_loop()
        return await self.catalog.run(lambda catalog: self._load_and_replay(catalog, path))

    def _load_and_replay(self, catalog: Catalog, path: Path) -> int:
        self._lock = lock_journal(path)
        try:
            return self._replay_left(catalog, path)
        except BaseException:
            os.close(self._lock)
            self._lock = None
            raise

    def _replay_left(self, catalog: Catalog, path: Path) -> int:
        journal = Journal.load(path)
        self.journal = journal
        if journal.torn:
            log.warning("catalog.journal_torn", lines=journal.torn)
        if journal.id is not None:
            try:
                with read_session(catalog) as session:
                    marks = {
                        mark.seq: mark
                        for mark in session.scalars(
                            select(JournalMark).where(JournalMark.journal == journal.id)
                        )
                    }
            except Exception as error:
                if not catalog_unavailable(error):
                    raise
                raise JournalError(
                    f"catalog journal {path}: {len(journal)} entries not replayed"
                    " (catalog unavailable)"
                ) from None
            for entry in journal.skip_applied(marks):
                # Applied before the crash: what it created, the entries after it use.
                self._learn(entry, marks[entry.seq].call_row, marks[entry.seq].recording_row)
        if not len(journal):
            return 0
        log.warning("catalog.journal_found", entries=len(journal))
        self.outage_since = time.monotonic()
        replayed = self._replay(catalog)
        if len(journal):
            raise JournalError(
                f"catalog journal {path}: {len(journal)} entries not replayed (catalog unavailable)"
            )
        return replayed

    # --- one write: to the catalog, or to the journal while the catalog is away --------------

    def _write(self, what: str, call_id: str, args: dict[str, Any]) -> asyncio.Future[Any]:
        return self._run(what, lambda catalog: self._execute(catalog, what, call_id, args))

    def _run(self, what: str, fn: Callable[[Catalog], Any]) -> asyncio.Future[Any]:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        future = self.catalog.run(fn)
        future.add_done_callback(lambda done: self._check(what, done))
        return future

    def _execute(self, catalog: Catalog, what: str, call_id: str, args: dict[str, Any]) -> Any:
        journal = self.journal
        if journal is not None and len(journal):
            # Still away (or not all replayed): after the journal, to keep the order.
            self._to_journal(journal, what, call_id, args, self._known(call_id))
            return None
        known = self._known(call_id)
        try:
            with one_transaction(catalog):
                return self._apply(catalog, what, call_id, args)
        except Exception as error:
            self._restore(call_id, known)
            if journal is None or not catalog_unavailable(error):
                raise
            self.outages += 1
            self.outage_since = time.monotonic()
            log.error("catalog.unavailable", what=what, error=type(error).__name__)
            self._to_journal(journal, what, call_id, args, known)
            self._schedule_replay()
            return None

    def _to_journal(
        self, journal: Journal, what: str, call_id: str, args: dict[str, Any], known: _Known
    ) -> None:
        journal.append(what, call_id, args, call_row=known[0], recording_row=known[1])

    def _check(self, what: str, done: asyncio.Future[Any]) -> None:
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:
            self.failures += 1
            log.error("catalog.write_failed", what=what, error=type(error).__name__)

    def _known(self, call_id: str) -> _Known:
        return (
            self._rows.get(call_id),
            self._recordings.get(call_id),
            call_id in self._pending,
            call_id in self._ended,
        )

    def _restore(self, call_id: str, known: _Known) -> None:
        call_row, recording_row, pending, ended = known
        for mapping, value in ((self._rows, call_row), (self._recordings, recording_row)):
            if value is None:
                mapping.pop(call_id, None)
            else:
                mapping[call_id] = value
        for group, member in ((self._pending, pending), (self._ended, ended)):
            if member:
                group.add(call_id)
            else:
                group.discard(call_id)

    def _learn(self, entry: Entry, call_row: int | None, recording_row: int | None) -> None:
        """What an applied entry left known, as `_apply` would have left it."""
        if call_row is not None:
            self._rows.setdefault(entry.call, call_row)
        if entry.op == "add_recording" and recording_row is not None:
            self._recordings[entry.call] = recording_row
            self._pending.add(entry.call)
        elif entry.op in ("finalize_recording", "destroy_recording"):
            self._recordings.pop(entry.call, None)
            self._pending.discard(entry.call)
        elif entry.op == "end_call":
            self._ended.add(entry.call)

    # --- the replay ------------------------------------------------------------------------

    def _schedule_replay(self) -> None:
        """From the worker thread: try again in RETRY_SECONDS, on the event loop."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._arm_retry)

    def _arm_retry(self) -> None:
        if self._retry is None and not self._replaying:
            assert self._loop is not None
            self._retry = self._loop.call_later(RETRY_SECONDS, self._retry_now)

    async def replay(self) -> int:
        """Put what the journal holds into the catalog now (the timer does it every
        RETRY_SECONDS meanwhile); returns the entries applied."""
        return await self.catalog.run(self._replay)

    def _retry_now(self) -> None:
        self._retry = None
        self._replaying = True
        future = self.catalog.run(self._replay)
        future.add_done_callback(self._replay_done)

    def _replay_done(self, done: asyncio.Future[int]) -> None:
        self._replaying = False
        if not done.cancelled() and done.exception() is not None:
            log.error("catalog.replay_failed", error=type(done.exception()).__name__)
        if self.journal_pending:
            self._arm_retry()

    def _replay(self, catalog: Catalog) -> int:
        """Apply the journal's entries, oldest first, until it is empty or the catalog fails
        again. Each entry and its mark commit together: exactly once."""
        journal = self.journal
        if journal is None:
            return 0
        applied = 0
        while len(journal):
            entry = journal.pending[0]
            if entry.call_row is not None:
                self._rows.setdefault(entry.call, entry.call_row)
            if entry.recording_row is not None and entry.op != "add_recording":
                self._recordings.setdefault(entry.call, entry.recording_row)
            known = self._known(entry.call)
            try:
                with one_transaction(catalog) as session:
                    self._apply(catalog, entry.op, entry.call, entry.args)
                    session.add(
                        JournalMark(
                            journal=journal.id,
                            seq=entry.seq,
                            op=entry.op,
                            applied_at=datetime.now(UTC),
                            call_row=self._rows.get(entry.call) or known[0],
                            recording_row=self._recordings.get(entry.call) or known[1],
                        )
                    )
            except Exception as error:
                self._restore(entry.call, known)
                if catalog_unavailable(error):
                    return applied
                # Refused for good (a bug, not an outage): kept aside, the rest goes on.
                self.rejected += 1
                log.error("catalog.journal_rejected", what=entry.op, error=type(error).__name__)
                journal.set_aside(entry, type(error).__name__)
                continue
            journal.applied(entry)
            applied += 1
            self.replayed += 1
        if self.outage_since is not None:
            log.warning(
                "catalog.available",
                replayed=applied,
                outage_seconds=round(time.monotonic() - self.outage_since, 1),
            )
            self.outage_since = None
        return applied

    # --- the writes ---------------------------------------------------------------------------

    def _apply(self, catalog: Catalog, what: str, call_id: str, args: dict[str, Any]) -> Any:
        return _APPLY[what](self, catalog, call_id, args)

    def _add_call(self, catalog: Catalog, call_id: str, args: dict[str, Any]) -> None:
        self._rows[call_id] = catalog.add_call(**args)

    def _set_consent(self, catalog: Catalog, call_id: str, args: dict[str, Any]) -> None:
        catalog.set_consent(self._rows[call_id], **args)

    def _answer_call(self, catalog: Catalog, call_id: str, args: dict[str, Any]) -> None:
        catalog.answer_call(self._rows[call_id], **args)

    def _add_event(self, catalog: Catalog, call_id: str, args: dict[str, Any]) -> None:
        catalog.add_event(self._rows[call_id], **args)

    def _end_call(self, catalog: Catalog, call_id: str, args: dict[str, Any]) -> None:
        catalog.end_call(self._rows[call_id], **args)
        self._ended.add(call_id)
        self._forget(call_id)

    def _add_recording(self, catalog: Catalog, call_id: str, args: dict[str, Any]) -> None:
        self._pending.add(call_id)
        self._recordings[call_id] = catalog.add_recording(self._rows[call_id], **args)

    def _update_recording(self, catalog: Catalog, call_id: str, args: dict[str, Any]) -> None:
        row = self._recordings.get(call_id)
        if row is not None:
            catalog.update_recording(row, **args)

    def _finalize_recording(self, catalog: Catalog, call_id: str, args: dict[str, Any]) -> None:
        at: datetime = args["at"]
        files: list[dict[str, Any]] = args["files"]
        error: str | None = args["error"]
        expires_at: datetime | None = args["expires_at"]
        first = self._recordings.pop(call_id, None)
        self._pending.discard(call_id)
        if first is not None and not files:
            catalog.fail_recording(first, at=at, reason=error or "nothing written")
        for index, info in enumerate(files):
            row = first if index == 0 and first is not None else None
            if row is None:
                # A writer restart split the call: each further file is a row of its own.
                row = catalog.add_recording(
                    self._rows[call_id],
                    name=info["name"],
                    path=info["path"],
                    format=info["format"],
                    created_at=at,
                    node=self.node,
                )
            finish = (
                catalog.finalize_recording
                if info["state"] == "complete"
                else catalog.interrupt_recording
            )
            finish(
                row,
                at=at,
                sha256=info["sha256"],
                size=info["size"],
                duration=info["duration"],
                pauses=info["pauses"],
                path=info["path"],
                name=info["name"],
                expires_at=expires_at,
            )
            if info["state"] == "truncated":
                # Issue 20: the disk filled; the row is `interrupted`, this says why.
                catalog.add_event(
                    self._rows[call_id],
                    at=at,
                    name="recording.truncated",
                    detail={
                        "recording": row,
                        "name": info["name"],
                        "reason": info.get("reason") or "disk full",
                    },
                )
        self._forget(call_id)

    def _destroy_recording(self, catalog: Catalog, call_id: str, args: dict[str, Any]) -> None:
        at: datetime = args["at"]
        reason: str = args["reason"]
        row = self._recordings.pop(call_id, None)
        self._pending.discard(call_id)
        if row is not None:
            catalog.fail_recording(row, at=at, reason=reason)
            catalog.update_recording(row, path=None, destroyed_at=at, destroy_reason=reason)
        self._forget(call_id)

    # --- what the controller and the recorder call (on the event loop) ------------------------

    def opened(self, call_id: str, **fields: Any) -> None:
        self._write("add_call", call_id, fields)

    def consent(
        self, call_id: str, *, outcome: str, method: str, at: datetime, digit: str | None
    ) -> None:
        args = {"outcome": outcome, "method": method, "at": at, "digit": digit}
        self._write("set_consent", call_id, args)

    def answered(self, call_id: str, *, at: datetime, agent: str | None, codec: str | None) -> None:
        self._write("answer_call", call_id, {"at": at, "agent": agent, "codec": codec})

    def event(
        self, call_id: str, name: str, at: datetime, detail: dict[str, Any] | None = None
    ) -> None:
        self._write("add_event", call_id, {"at": at, "name": name, "detail": detail})

    def ended(self, call_id: str, *, at: datetime, reason: str, media: dict[str, Any]) -> None:
        self._write("end_call", call_id, {"at": at, "reason": reason, "media": media})

    def recording_started(
        self, call_id: str, *, name: str, path: str, format: str, at: datetime
    ) -> asyncio.Future[None]:
        """The recording's row, before its file exists; done once it is written (in the
        catalog, or in the journal while the catalog is away)."""
        args = {"name": name, "path": path, "format": format, "created_at": at}
        if self.node is not None:
            args["node"] = self.node
        return self._write("add_recording", call_id, args)

    def recording_opened(self, call_id: str, *, name: str, path: str) -> None:
        """The writer took another name than the row's (the first was taken)."""
        self._write("update_recording", call_id, {"name": name, "path": path})

    def recording_done(
        self,
        call_id: str,
        *,
        at: datetime,
        files: list[dict[str, Any]],
        error: str | None,
        expires_at: datetime | None,
    ) -> None:
        """`files`: path, name, sha256, size, duration, pauses, state (complete, interrupted,
        truncated: catalogued interrupted, with a `recording.truncated` event), reason."""
        args = {"at": at, "files": files, "error": error, "expires_at": expires_at}
        self._write("finalize_recording", call_id, args)

    def recording_destroyed(self, call_id: str, *, at: datetime, reason: str) -> None:
        """The file is gone (refused mid-call): the row stays, without a path, as destroyed."""
        self._write("destroy_recording", call_id, {"at": at, "reason": reason})

    async def close(self) -> None:
        """At shutdown, once the last write is queued: one last replay, then the file."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self.journal is None:
            return
        if self.journal_pending:
            await self.catalog.run(self._replay)
        if self.journal_pending:
            log.error("catalog.journal_kept", entries=self.journal_pending)
        journal = self.journal
        await self.catalog.run(lambda _catalog: journal.close())
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def reconcile_after_crash(
        self, repaired: list[dict[str, Any]], at: datetime
    ) -> asyncio.Future[dict[str, int]]:
        """At start-up: rows left `recording` by a dead process become `interrupted` (their
        `.part` was repaired: `repaired` items carry final, path, sha256, size, duration; its
        name may be the row's with a `-N` the row had not heard of yet; or the writer had
        already renamed the file into place: `published`) or `failed` (nothing on disk). A
        file of a call whose consent was refused meanwhile is deleted (C5: `refused`).
        Returns counts, and how many files had no row."""

        def reconcile(catalog: Catalog) -> dict[str, int]:
            by_final = {item["final"]: item for item in repaired}
            kinds = ("interrupted", "failed", "uncatalogued", "published", "refused")
            counts = dict.fromkeys(kinds, 0)
            # Another node's `recording` rows are its calls in progress, not ours to close.
            rows = [
                row
                for row in catalog.list_recordings(state="recording")
                if self.node is None or row.node is None or row.node == self.node
            ]
            found = _match_files(catalog, rows, by_final)
            for row in rows:
                item = found.get(row.id)
                counts["published"] += item is not None and item["published"]
                if item is None:
                    catalog.fail_recording(row.id, at=at, reason="service stopped; no file left")
                    counts["failed"] += 1
                    continue
                call = catalog.get_call(row.call_id)
                if call is not None and call.consent_outcome == "refused":
                    # Refused during the call, killed before the file was destroyed (C5).
                    Path(item["path"]).unlink(missing_ok=True)
                    reason = "refused during the call (C5); destroyed at restart"
                    catalog.fail_recording(row.id, at=at, reason=reason)
                    catalog.update_recording(
                        row.id, path=None, destroyed_at=at, destroy_reason=reason
                    )
                    counts["refused"] += 1
                    continue
                catalog.interrupt_recording(
                    row.id,
                    at=at,
                    sha256=item["sha256"],
                    size=item["size"],
                    duration=item["duration"],
                    path=item["path"],
                    name=item["name"],
                )
                counts["interrupted"] += 1
            counts["uncatalogued"] = len(by_final)
            return counts

        return self._run("reconcile", reconcile)

    def _forget(self, call_id: str) -> None:
        if call_id in self._ended and call_id not in self._pending:
            self._ended.discard(call_id)
            self._rows.pop(call_id, None)

    def row_of(self, call_id: str) -> asyncio.Future[int]:
        """The catalog id of a call, once the writes queued before are done."""
        return self.catalog.run(lambda _c: self._rows[call_id])


_APPLY: dict[str, Callable[[CallLog, Catalog, str, dict[str, Any]], Any]] = {
    "add_call": CallLog._add_call,
    "set_consent": CallLog._set_consent,
    "answer_call": CallLog._answer_call,
    "add_event": CallLog._add_event,
    "end_call": CallLog._end_call,
    "add_recording": CallLog._add_recording,
    "update_recording": CallLog._update_recording,
    "finalize_recording": CallLog._finalize_recording,
    "destroy_recording": CallLog._destroy_recording,
}


def _match_files(
    catalog: Catalog, rows: list[RecordingInfo], repaired: dict[str, dict[str, Any]]
) -> dict[int, dict[str, Any]]:
    """Which file each row left `recording` owns; the repaired items it takes leave `repaired`.

    A row whose path is a repaired `.part`'s final name owns it. The others hold the writer's
    first choice of name, which it may have changed (`naming.claim`: `-2`, `-3`... when the
    name was taken; the kill came before `recording_opened` reached the row): the rows of one
    first choice, oldest first as the writer claimed them, take that name and its `-N` in
    order, skipping files another live row holds. A file may be a repaired `.part`, or
    whole: the writer had renamed it into place, the kill came before the catalog heard of
    it (`published`; failing its row would leave it unhashed and never purged).
    """
    owned: dict[int, dict[str, Any]] = {}
    groups: dict[str, list[RecordingInfo]] = {}
    for row in rows:
        item = repaired.pop(row.path or "", None)
        if item is not None:
            owned[row.id] = item | {"published": False}
        elif row.path is not None:
            groups.setdefault(row.path, []).append(row)
    for path, group in groups.items():
        ids = {row.id for row in group}
        held = _held_paths(catalog, _variants(Path(path)), ids)
        candidates = [c for c in _variants(Path(path)) if str(c) not in held]
        for row, candidate in zip(group, candidates, strict=False):
            item = repaired.pop(str(candidate), None)
            if item is not None:
                owned[row.id] = item | {"published": False}
            elif (whole := _published(candidate)) is not None:
                owned[row.id] = whole | {"published": True}
    return owned


def _variants(first: Path) -> list[Path]:
    """`first` and the `-N` names the writer tries after it, those on disk, in order."""
    stem = first.name.removesuffix(SUFFIX)
    pattern = re.compile(re.escape(stem) + r"(?:-([0-9]+))?" + re.escape(SUFFIX))
    found: list[tuple[int, Path]] = []
    try:
        names = [entry.name for entry in os.scandir(first.parent)]
    except OSError:
        return []
    for name in names:
        match = pattern.fullmatch(name)
        if match is not None:
            found.append((int(match.group(1) or 1), first.parent / name))
    return [path for _, path in sorted(found)]


def _held_paths(catalog: Catalog, paths: list[Path], group: set[int]) -> set[str]:
    """Of `paths`, those a live row outside `group` names (a failed row names no file)."""
    if not paths:
        return set()
    live = (
        RecordingState.COMPLETE,
        RecordingState.INTERRUPTED,
        RecordingState.DESTROYING,
        RecordingState.RECORDING,
    )
    query = select(Recording.path).where(
        Recording.path.in_([str(path) for path in paths]),
        Recording.id.not_in(group),
        Recording.state.in_(live),
    )
    with read_session(catalog) as session:
        return {path for path in session.scalars(query) if path is not None}


def _published(path: Path) -> dict[str, Any] | None:
    """A final file a dead service never catalogued, as `reconcile_after_crash` takes it."""
    try:
        found = describe_published(path)
    except (OSError, ValueError):
        return None
    return {
        "path": str(found.path),
        "name": found.path.name,
        "sha256": found.sha256,
        "size": found.size,
        "duration": found.duration_s,
    }
