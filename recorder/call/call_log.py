"""The call log (N3) and recording rows, written through the catalog's worker thread.

Every write is queued in call order on `AsyncCatalog`'s single thread, so a later write
can use the row id an earlier one produced without the event loop ever waiting for it.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from recorder.ops.logs import get_logger
from recorder.recording.naming import SUFFIX
from recorder.recording.repair import describe_published
from storage.models import Recording, RecordingState
from storage.repository import AsyncCatalog, Catalog, RecordingInfo, read_session

log = get_logger("recorder.call_log")


class CallLog:
    def __init__(self, catalog: AsyncCatalog) -> None:
        self.catalog = catalog
        # Worker-thread state: our call id -> catalog row ids. A call row stays known while
        # a recording of it is pending, since its file is finalized after the call ends.
        self._rows: dict[str, int] = {}
        self._recordings: dict[str, int] = {}
        self._pending: set[str] = set()
        self._ended: set[str] = set()
        self.failures = 0

    def _run(self, what: str, fn: Callable[[Catalog], Any]) -> asyncio.Future[Any]:
        future = self.catalog.run(fn)
        future.add_done_callback(lambda done: self._check(what, done))
        return future

    def _check(self, what: str, done: asyncio.Future[Any]) -> None:
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:
            self.failures += 1
            log.error("catalog.write_failed", what=what, error=type(error).__name__)

    def opened(self, call_id: str, **fields: Any) -> None:
        def add(catalog: Catalog) -> None:
            self._rows[call_id] = catalog.add_call(**fields)

        self._run("add_call", add)

    def consent(
        self, call_id: str, *, outcome: str, method: str, at: datetime, digit: str | None
    ) -> None:
        self._run(
            "set_consent",
            lambda c: c.set_consent(
                self._rows[call_id], outcome=outcome, method=method, at=at, digit=digit
            ),
        )

    def answered(self, call_id: str, *, at: datetime, agent: str | None, codec: str | None) -> None:
        self._run(
            "answer_call",
            lambda c: c.answer_call(self._rows[call_id], at=at, agent=agent, codec=codec),
        )

    def event(
        self, call_id: str, name: str, at: datetime, detail: dict[str, Any] | None = None
    ) -> None:
        self._run(
            "add_event",
            lambda c: c.add_event(self._rows[call_id], at=at, name=name, detail=detail),
        )

    def ended(self, call_id: str, *, at: datetime, reason: str, media: dict[str, Any]) -> None:
        def end(catalog: Catalog) -> None:
            catalog.end_call(self._rows[call_id], at=at, reason=reason, media=media)
            self._ended.add(call_id)
            self._forget(call_id)

        self._run("end_call", end)

    def recording_started(
        self, call_id: str, *, name: str, path: str, format: str, at: datetime
    ) -> asyncio.Future[None]:
        """The recording's row, before its file exists; done once it is written."""

        def add(catalog: Catalog) -> None:
            self._pending.add(call_id)
            self._recordings[call_id] = catalog.add_recording(
                self._rows[call_id], name=name, path=path, format=format, created_at=at
            )

        return self._run("add_recording", add)

    def recording_opened(self, call_id: str, *, name: str, path: str) -> None:
        """The writer took another name than the row's (the first was taken)."""

        def rename(catalog: Catalog) -> None:
            row = self._recordings.get(call_id)
            if row is not None:
                catalog.update_recording(row, name=name, path=path)

        self._run("update_recording", rename)

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

        def done(catalog: Catalog) -> None:
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

        self._run("finalize_recording", done)

    def recording_destroyed(self, call_id: str, *, at: datetime, reason: str) -> None:
        """The file is gone (refused mid-call): the row stays, without a path, as destroyed."""

        def destroy(catalog: Catalog) -> None:
            row = self._recordings.pop(call_id, None)
            self._pending.discard(call_id)
            if row is not None:
                catalog.fail_recording(row, at=at, reason=reason)
                catalog.update_recording(row, path=None, destroyed_at=at, destroy_reason=reason)
            self._forget(call_id)

        self._run("destroy_recording", destroy)

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
            rows = catalog.list_recordings(state="recording")
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
