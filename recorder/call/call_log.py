"""The call log (N3) and recording rows, written through the catalog's worker thread.

Every write is queued in call order on `AsyncCatalog`'s single thread, so a later write
can use the row id an earlier one produced without the event loop ever waiting for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from recorder.ops.logs import get_logger
from storage.repository import AsyncCatalog, Catalog

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
    ) -> None:
        def add(catalog: Catalog) -> None:
            self._pending.add(call_id)
            self._recordings[call_id] = catalog.add_recording(
                self._rows[call_id], name=name, path=path, format=format, created_at=at
            )

        self._run("add_recording", add)

    def recording_done(
        self,
        call_id: str,
        *,
        at: datetime,
        files: list[dict[str, Any]],
        error: str | None,
        expires_at: datetime | None,
    ) -> None:
        """`files`: path, name, sha256, size, duration, pauses, state of each file written."""

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
        `.part` was repaired: `repaired` items carry part, path, sha256, size, duration) or
        `failed` (nothing on disk). Returns counts, and how many files had no row."""

        def reconcile(catalog: Catalog) -> dict[str, int]:
            by_final = {item["final"]: item for item in repaired}
            counts = {"interrupted": 0, "failed": 0, "uncatalogued": 0}
            for row in catalog.list_recordings(state="recording"):
                item = by_final.pop(row.path or "", None)
                if item is None:
                    catalog.fail_recording(row.id, at=at, reason="service stopped; no file left")
                    counts["failed"] += 1
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
