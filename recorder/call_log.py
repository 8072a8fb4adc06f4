"""The call log (N3) and recording rows, written through the catalog's worker thread.

Every write is queued in call order on `AsyncCatalog`'s single thread, so a later write
can use the row id an earlier one produced without the event loop ever waiting for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from recorder.logs import get_logger
from storage.repository import AsyncCatalog, Catalog

log = get_logger("recorder.call_log")


class CallLog:
    def __init__(self, catalog: AsyncCatalog) -> None:
        self.catalog = catalog
        self._rows: dict[str, int] = {}  # our call id -> catalog row id (worker thread only)
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
            row = self._rows.pop(call_id)
            catalog.end_call(row, at=at, reason=reason, media=media)

        self._run("end_call", end)

    def row_of(self, call_id: str) -> asyncio.Future[int]:
        """The catalog id of a call, once the writes queued before are done."""
        return self.catalog.run(lambda _c: self._rows[call_id])
