"""AsyncCatalog: one worker thread, call order kept, the event loop never waits."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from storage.models import RecordingState
from storage.repository import AsyncCatalog, Catalog, NotFound
from tests.storage.conftest import T0


async def open_catalog(db_url: str) -> AsyncCatalog:
    return await AsyncCatalog.open(db_url, migrate=True)


async def test_a_recorded_call_through_the_async_catalog(db_url: str) -> None:
    catalog = await open_catalog(db_url)
    try:
        call_id = await catalog.add_call(
            call_id_a="a@trunk",
            direction="inbound",
            side="external",
            caller_number="+15145550100",
            callee_number="235",
            arrived_at=T0,
            extension="235",
            policy_record=True,
            policy_rules=["S1"],
        )
        await catalog.answer_call(call_id, at=T0 + timedelta(seconds=2), agent="4711")
        recording_id = await catalog.add_recording(
            call_id, name="r.wav", path="/r.wav", format="pcm16", created_at=T0
        )
        media = {"a": {"packets": 10}}
        ended = catalog.end_call(call_id, at=T0 + timedelta(seconds=12), reason="bye", media=media)
        media["a"]["packets"] = 99  # the service keeps counting; the queued write must not
        finalized = catalog.finalize_recording(
            recording_id, at=T0 + timedelta(seconds=12), sha256="0" * 64, size=44, duration=10.0
        )
        await asyncio.gather(ended, finalized)

        recordings = await catalog.list_recordings(agent="4711")
        call = await catalog.get_call(call_id)
        assert [r.state for r in recordings] == [RecordingState.COMPLETE]
        assert call is not None and call.talk_seconds == 10.0
        assert call.media == {"a": {"packets": 10}}
        with pytest.raises(NotFound):
            await catalog.answer_call(999, at=T0)
    finally:
        await catalog.close()


async def test_every_operation_runs_in_one_thread_that_is_not_the_loop(db_url: str) -> None:
    catalog = await open_catalog(db_url)
    try:
        idents = await asyncio.gather(
            *(catalog.run(lambda _: threading.get_ident()) for _ in range(20))
        )
    finally:
        await catalog.close()
    assert len(set(idents)) == 1
    assert idents[0] != threading.get_ident()


async def test_operations_apply_in_call_order_without_awaiting(db_url: str) -> None:
    catalog = await open_catalog(db_url)
    call_id = await catalog.add_call(
        call_id_a="a",
        direction="outbound",
        side="internal",
        caller_number="235",
        callee_number="+15145550100",
        arrived_at=T0,
    )
    # Fire and forget, as the service does on the hot path; all at the same timestamp, so
    # only the insertion order distinguishes them.
    pending: list[asyncio.Future[Any]] = [
        catalog.add_event(call_id, at=T0, name=f"e{i}") for i in range(50)
    ]
    pending.append(catalog.update_call(call_id, codec="last"))
    await catalog.close()  # waits for everything queued before it
    for future in pending:
        assert future.done() and future.exception() is None
    reopened = Catalog.open(db_url)
    try:
        assert [e.name for e in reopened.list_events(call_id)] == [f"e{i}" for i in range(50)]
        call = reopened.get_call(call_id)
        assert call is not None and call.codec == "last"
    finally:
        reopened.close()


async def test_a_slow_catalog_does_not_hold_the_event_loop(db_url: str) -> None:
    catalog = await open_catalog(db_url)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await catalog.run(lambda _: time.sleep(0.3))  # a stalled disk or a locked database
    finally:
        task.cancel()
        await catalog.close()
    assert ticks >= 20


def test_async_signatures_match_the_catalog() -> None:
    """AsyncCatalog spells out Catalog's parameters for mypy: they must not drift apart."""
    public = [
        name
        for name, member in inspect.getmembers(Catalog, inspect.isfunction)
        if not name.startswith("_") and name not in ("open", "close")
    ]
    assert public
    for name in public:
        sync = inspect.signature(getattr(Catalog, name))
        wrapped = inspect.signature(getattr(AsyncCatalog, name))
        assert list(sync.parameters.values()) == list(wrapped.parameters.values()), name
