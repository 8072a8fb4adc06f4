"""The catalog repository: what the service and the CLI do with calls, recordings and events.

`Catalog` is synchronous and hands out frozen snapshots (`CallInfo`, `RecordingInfo`,
`EventInfo`), never ORM objects, so that results can cross threads and be printed or
serialised without a session. `AsyncCatalog` runs the same methods in one dedicated worker
thread, so that the event loop never waits on the database and SQLite sees a single writer.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, Select, select
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from storage.db import IMMEDIATE, make_engine, make_sessionmaker, upgrade_engine
from storage.models import (
    DEFAULT_CHANNEL_MAP,
    Call,
    CallEvent,
    CallStatus,
    Direction,
    Recording,
    RecordingState,
)

T = TypeVar("T")


class CatalogError(Exception):
    """Misuse of the catalog: an unknown row, or a transition its state forbids."""


class NotFound(CatalogError, LookupError):
    pass


class InvalidState(CatalogError):
    pass


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


@dataclass(frozen=True, slots=True)
class CallInfo:
    id: int
    call_id_a: str
    call_id_b: str | None
    direction: Direction
    side: str
    caller_number: str
    callee_number: str
    extension: str | None
    agent: str | None
    site: str | None
    arrived_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    setup_seconds: float | None
    talk_seconds: float | None
    codec: str | None
    media: dict[str, Any] | None
    policy_record: bool
    policy_rules: list[str]
    policy_hash: str | None
    consent_outcome: str | None
    consent_method: str | None
    consent_digit: str | None
    consent_at: datetime | None
    end_reason: str | None
    status: CallStatus

    def to_json(self) -> dict[str, Any]:
        return {key: _json_value(value) for key, value in _as_dict(self).items()}


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    id: int
    call_id: int
    path: str | None
    name: str
    node: str | None
    sha256: str | None
    size: int | None
    duration: float | None
    format: str
    channel_map: dict[str, str]
    pauses: list[list[float]]
    state: RecordingState
    created_at: datetime
    finalized_at: datetime | None
    expires_at: datetime | None
    destroyed_at: datetime | None
    destroy_reason: str | None

    def to_json(self) -> dict[str, Any]:
        return {key: _json_value(value) for key, value in _as_dict(self).items()}


@dataclass(frozen=True, slots=True)
class EventInfo:
    id: int
    call_id: int
    at: datetime
    name: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {key: _json_value(value) for key, value in _as_dict(self).items()}


def _as_dict(info: Any) -> dict[str, Any]:
    # Shallow on purpose: dataclasses.asdict would deep-copy the JSON columns for nothing.
    return {field.name: getattr(info, field.name) for field in dataclasses.fields(info)}


_SnapshotT = TypeVar("_SnapshotT", CallInfo, RecordingInfo, EventInfo)


def _snapshot(cls: type[_SnapshotT], row: Any) -> _SnapshotT:
    return cls(**{field.name: getattr(row, field.name) for field in dataclasses.fields(cls)})


_CALL_FIELDS = frozenset(Call.__table__.columns.keys()) - {"id"}
_RECORDING_FIELDS = frozenset(Recording.__table__.columns.keys()) - {"id", "call_id", "state"}


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


def _pauses(pauses: Iterable[Sequence[float]]) -> list[list[float]]:
    result = [[float(start), float(end)] for start, end in pauses]
    for start, end in result:
        if end < start:
            raise ValueError(f"pause ends before it starts: [{start}, {end}]")
    return result


class Catalog:
    """Synchronous access to the catalog. Use from one thread at a time (see AsyncCatalog)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = make_sessionmaker(engine)
        # The transaction of `one_transaction()`, which every write and read joins meanwhile.
        self._unit: Session | None = None

    @classmethod
    def open(cls, url: str | URL, *, create: bool = True, migrate: bool = False) -> Catalog:
        """Connect to the catalog at `url`.

        `migrate=True` brings the schema to the latest revision first (the service does
        this at start). `create=False` raises storage.db.CatalogMissing for a SQLite file
        that does not exist, instead of creating an empty one (the CLI's reading commands).
        """
        engine = make_engine(url, create=create)
        try:
            if migrate:
                upgrade_engine(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        if self._unit is not None:
            yield self._unit
            return
        with self._sessions() as session, session.begin():
            # Acquire the connection now, with the option, so that the BEGIN hook sees it.
            session.connection(execution_options={IMMEDIATE: True})
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        if self._unit is not None:
            yield self._unit
            return
        with self._sessions() as session, session.begin():
            yield session

    @staticmethod
    def _call(session: Session, call_id: int) -> Call:
        call = session.get(Call, call_id)
        if call is None:
            raise NotFound(f"no call {call_id}")
        return call

    @staticmethod
    def _recording(session: Session, recording_id: int) -> Recording:
        recording = session.get(Recording, recording_id)
        if recording is None:
            raise NotFound(f"no recording {recording_id}")
        return recording

    # --- calls (the call log, N3) ---

    def add_call(
        self,
        *,
        call_id_a: str,
        direction: Direction | str,
        side: str,
        caller_number: str,
        callee_number: str,
        arrived_at: datetime,
        call_id_b: str | None = None,
        extension: str | None = None,
        agent: str | None = None,
        site: str | None = None,
        codec: str | None = None,
        policy_record: bool = False,
        policy_rules: Sequence[str] = (),
        policy_hash: str | None = None,
    ) -> int:
        """Log a call as it arrives; returns its catalog id. Numbers as given, or WITHHELD."""
        call = Call(
            call_id_a=call_id_a,
            call_id_b=call_id_b,
            direction=Direction(direction),
            side=side,
            caller_number=caller_number,
            callee_number=callee_number,
            extension=extension,
            agent=agent,
            site=site,
            arrived_at=arrived_at,
            codec=codec,
            policy_record=policy_record,
            policy_rules=list(policy_rules),
            policy_hash=policy_hash,
            status=CallStatus.SETUP,
        )
        with self._write() as session:
            session.add(call)
            session.flush()
            return call.id

    def update_call(self, call_id: int, **changes: Any) -> None:
        """Set any call-log columns (e.g. call_id_b, agent, codec, policy_*); not `id`."""
        unknown = set(changes) - _CALL_FIELDS
        if unknown:
            raise TypeError(f"not call columns: {', '.join(sorted(unknown))}")
        if "direction" in changes:
            changes["direction"] = Direction(changes["direction"])
        if "status" in changes:
            changes["status"] = CallStatus(changes["status"])
        with self._write() as session:
            call = self._call(session, call_id)
            for key, value in changes.items():
                setattr(call, key, value)

    def answer_call(
        self,
        call_id: int,
        *,
        at: datetime,
        agent: str | None = None,
        call_id_b: str | None = None,
        codec: str | None = None,
    ) -> None:
        """The PBX (or far end) answered; the agent code comes from its answer (N1)."""
        with self._write() as session:
            call = self._call(session, call_id)
            call.answered_at = at
            call.setup_seconds = _seconds(call.arrived_at, at)
            call.status = CallStatus.ANSWERED
            if agent is not None:
                call.agent = agent
            if call_id_b is not None:
                call.call_id_b = call_id_b
            if codec is not None:
                call.codec = codec

    def set_consent(
        self,
        call_id: int,
        *,
        outcome: str,
        method: str,
        at: datetime,
        digit: str | None = None,
    ) -> None:
        """Store the caller's decision (C3-C5): outcome accepted|refused, and how it was given."""
        with self._write() as session:
            call = self._call(session, call_id)
            call.consent_outcome = outcome
            call.consent_method = method
            call.consent_digit = digit
            call.consent_at = at

    def end_call(
        self,
        call_id: int,
        *,
        at: datetime,
        reason: str,
        media: Mapping[str, Any] | None = None,
    ) -> None:
        """Close the call-log row. Talk time runs from the answer; an unanswered call's
        setup time runs to its end (time lost before hanging up, T2)."""
        with self._write() as session:
            call = self._call(session, call_id)
            call.ended_at = at
            call.end_reason = reason
            call.status = CallStatus.ENDED
            if call.answered_at is not None:
                call.talk_seconds = _seconds(call.answered_at, at)
            else:
                call.setup_seconds = _seconds(call.arrived_at, at)
            if media is not None:
                call.media = dict(media)

    def get_call(self, call_id: int) -> CallInfo | None:
        with self._read() as session:
            call = session.get(Call, call_id)
            return None if call is None else _snapshot(CallInfo, call)

    def get_calls(self, call_ids: Iterable[int]) -> dict[int, CallInfo]:
        ids = sorted(set(call_ids))
        if not ids:
            return {}
        with self._read() as session:
            rows = session.scalars(select(Call).where(Call.id.in_(ids)))
            return {row.id: _snapshot(CallInfo, row) for row in rows}

    def find_call(self, sip_call_id: str) -> CallInfo | None:
        """The latest call whose A-leg or B-leg SIP Call-ID is `sip_call_id`."""
        query = (
            select(Call)
            .where((Call.call_id_a == sip_call_id) | (Call.call_id_b == sip_call_id))
            .order_by(Call.arrived_at.desc(), Call.id.desc())
            .limit(1)
        )
        with self._read() as session:
            row = session.scalars(query).first()
            return None if row is None else _snapshot(CallInfo, row)

    def list_calls(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        extension: str | None = None,
        agent: str | None = None,
        direction: Direction | str | None = None,
        limit: int | None = None,
    ) -> list[CallInfo]:
        """Calls that arrived in [since, until), oldest first."""
        query = _call_filters(select(Call), extension, agent, direction)
        query = query.where(*_range(Call.arrived_at, since, until))
        query = query.order_by(Call.arrived_at, Call.id).limit(limit)
        with self._read() as session:
            return [_snapshot(CallInfo, row) for row in session.scalars(query)]

    # --- recordings ---

    def add_recording(
        self,
        call_id: int,
        *,
        name: str,
        path: str,
        format: str,
        created_at: datetime,
        channel_map: Mapping[str, str] | None = None,
        node: str | None = None,
    ) -> int:
        """Catalog a recording as it starts (state `recording`), before the first byte is
        written, so that a crash leaves a row to repair the `.part` against."""
        recording = Recording(
            call_id=call_id,
            name=name,
            path=path,
            format=format,
            created_at=created_at,
            channel_map=dict(channel_map if channel_map is not None else DEFAULT_CHANNEL_MAP),
            pauses=[],
            node=node,
            state=RecordingState.RECORDING,
        )
        with self._write() as session:
            self._call(session, call_id)
            session.add(recording)
            session.flush()
            return recording.id

    def update_recording(self, recording_id: int, **changes: Any) -> None:
        """Set recording columns other than id, call_id and state (e.g. `pauses` as they
        happen, so that a crash keeps them). State changes go through the methods below."""
        unknown = set(changes) - _RECORDING_FIELDS
        if unknown:
            raise TypeError(f"not settable recording columns: {', '.join(sorted(unknown))}")
        if "pauses" in changes:
            changes["pauses"] = _pauses(changes["pauses"])
        with self._write() as session:
            recording = self._recording(session, recording_id)
            for key, value in changes.items():
                setattr(recording, key, value)

    def _close_recording(
        self,
        recording_id: int,
        state: RecordingState,
        *,
        at: datetime,
        sha256: str,
        size: int,
        duration: float,
        pauses: Iterable[Sequence[float]] | None,
        path: str | None,
        name: str | None,
        expires_at: datetime | None,
    ) -> None:
        with self._write() as session:
            recording = self._recording(session, recording_id)
            if recording.state is not RecordingState.RECORDING:
                raise InvalidState(
                    f"recording {recording_id} is {recording.state.value}, not recording"
                )
            recording.state = state
            recording.finalized_at = at
            recording.sha256 = sha256
            recording.size = size
            recording.duration = duration
            if pauses is not None:
                recording.pauses = _pauses(pauses)
            if path is not None:
                recording.path = path
            if name is not None:
                recording.name = name
            if expires_at is not None:
                recording.expires_at = expires_at

    def finalize_recording(
        self,
        recording_id: int,
        *,
        at: datetime,
        sha256: str,
        size: int,
        duration: float,
        pauses: Iterable[Sequence[float]] | None = None,
        path: str | None = None,
        name: str | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        """The file was renamed into place: state `complete`. `path`/`name` if a collision
        suffix changed them; `expires_at` from the retention policy (issue 7)."""
        self._close_recording(
            recording_id,
            RecordingState.COMPLETE,
            at=at,
            sha256=sha256,
            size=size,
            duration=duration,
            pauses=pauses,
            path=path,
            name=name,
            expires_at=expires_at,
        )

    def interrupt_recording(
        self,
        recording_id: int,
        *,
        at: datetime,
        sha256: str,
        size: int,
        duration: float,
        pauses: Iterable[Sequence[float]] | None = None,
        path: str | None = None,
        name: str | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        """A `.part` left by a crash was repaired and renamed: state `interrupted`."""
        self._close_recording(
            recording_id,
            RecordingState.INTERRUPTED,
            at=at,
            sha256=sha256,
            size=size,
            duration=duration,
            pauses=pauses,
            path=path,
            name=name,
            expires_at=expires_at,
        )

    def fail_recording(self, recording_id: int, *, at: datetime, reason: str) -> None:
        """Nothing usable was written: state `failed`, and the reason as a call event."""
        with self._write() as session:
            recording = self._recording(session, recording_id)
            if recording.state is not RecordingState.RECORDING:
                raise InvalidState(
                    f"recording {recording_id} is {recording.state.value}, not recording"
                )
            recording.state = RecordingState.FAILED
            recording.finalized_at = at
            session.add(
                CallEvent(
                    call_id=recording.call_id,
                    at=at,
                    name="recording.failed",
                    detail={"recording": recording_id, "reason": reason},
                )
            )

    def get_recording(self, recording_id: int) -> RecordingInfo | None:
        with self._read() as session:
            row = session.get(Recording, recording_id)
            return None if row is None else _snapshot(RecordingInfo, row)

    def list_recordings(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        extension: str | None = None,
        agent: str | None = None,
        direction: Direction | str | None = None,
        state: RecordingState | str | None = None,
        call_id: int | None = None,
        limit: int | None = None,
    ) -> list[RecordingInfo]:
        """Recordings started in [since, until), oldest first; extension, agent and
        direction are those of their call."""
        query = select(Recording)
        if extension is not None or agent is not None or direction is not None:
            query = query.join(Call, Recording.call_id == Call.id)
            query = _call_filters(query, extension, agent, direction)
        query = query.where(*_range(Recording.created_at, since, until))
        if state is not None:
            query = query.where(Recording.state == RecordingState(state))
        if call_id is not None:
            query = query.where(Recording.call_id == call_id)
        query = query.order_by(Recording.created_at, Recording.id).limit(limit)
        with self._read() as session:
            return [_snapshot(RecordingInfo, row) for row in session.scalars(query)]

    # --- events ---

    def add_event(
        self,
        call_id: int,
        *,
        at: datetime,
        name: str,
        detail: Mapping[str, Any] | None = None,
    ) -> int:
        """Append an event (`consent.refused`, `recording.paused`...) to a call.

        Never put a phone number in `detail`: only the call row's number columns are
        erased after their period (D2)."""
        event = CallEvent(call_id=call_id, at=at, name=name, detail=dict(detail or {}))
        with self._write() as session:
            self._call(session, call_id)
            session.add(event)
            session.flush()
            return event.id

    def list_events(self, call_id: int) -> list[EventInfo]:
        query = (
            select(CallEvent)
            .where(CallEvent.call_id == call_id)
            .order_by(CallEvent.at, CallEvent.id)
        )
        with self._read() as session:
            return [_snapshot(EventInfo, row) for row in session.scalars(query)]


# For the modules that extend the catalog with their own tables (storage.retention,
# storage.audit): the same transactions as Catalog's methods, committed on exit. Functions
# rather than methods, so that AsyncCatalog's mirror of Catalog's methods stays exact.


@contextmanager
def write_session(catalog: Catalog) -> Iterator[Session]:
    """A write transaction; on SQLite it holds the write lock from its first statement."""
    with catalog._write() as session:
        yield session


@contextmanager
def read_session(catalog: Catalog) -> Iterator[Session]:
    with catalog._read() as session:
        yield session


@contextmanager
def one_transaction(catalog: Catalog) -> Iterator[Session]:
    """Every Catalog call inside commits together, or not at all (the catalog journal's
    replay: an entry's writes and the mark that it was applied, issue 20)."""
    if catalog._unit is not None:
        yield catalog._unit
        return
    with catalog._write() as session:
        catalog._unit = session
        try:
            yield session
        finally:
            catalog._unit = None


def _range(column: Any, since: datetime | None, until: datetime | None) -> list[Any]:
    clauses = []
    if since is not None:
        clauses.append(column >= since)
    if until is not None:
        clauses.append(column < until)
    return clauses


_SelectT = TypeVar("_SelectT", bound=Select[Any])


def _call_filters(
    query: _SelectT,
    extension: str | None,
    agent: str | None,
    direction: Direction | str | None,
) -> _SelectT:
    if extension is not None:
        query = query.where(Call.extension == extension)
    if agent is not None:
        query = query.where(Call.agent == agent)
    if direction is not None:
        query = query.where(Call.direction == Direction(direction))
    return query


class AsyncCatalog:
    """The Catalog for asyncio code: every call runs in one dedicated worker thread.

    Methods return an asyncio Future (await it, or not). The work is queued when the method
    is called, not when the future is awaited, and runs in call order: an `end_call` issued
    after an `add_event` is applied after it, and `close()` waits for everything queued
    before it. One thread means one SQLite writer in this process, and no write ever holds
    the event loop.
    """

    def __init__(self, catalog: Catalog, executor: ThreadPoolExecutor) -> None:
        self._catalog = catalog
        self._executor = executor

    @classmethod
    async def open(
        cls, url: str | URL, *, create: bool = True, migrate: bool = False
    ) -> AsyncCatalog:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog")
        loop = asyncio.get_running_loop()
        try:
            catalog = await loop.run_in_executor(
                executor, functools.partial(Catalog.open, url, create=create, migrate=migrate)
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(catalog, executor)

    @property
    def catalog(self) -> Catalog:
        """The synchronous catalog; only for use inside `run()`."""
        return self._catalog

    def run(self, fn: Callable[[Catalog], T]) -> asyncio.Future[T]:
        """Run `fn(catalog)` in the worker thread: several operations in one go."""
        return asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(fn, self._catalog)
        )

    def _submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(fn, *args, **kwargs)
        )

    async def close(self) -> None:
        try:
            await self._submit(self._catalog.close)
        finally:
            self._executor.shutdown(wait=True)

    # Explicit signatures (not __getattr__) so that mypy checks the service's calls; a test
    # keeps them identical to Catalog's.

    def add_call(
        self,
        *,
        call_id_a: str,
        direction: Direction | str,
        side: str,
        caller_number: str,
        callee_number: str,
        arrived_at: datetime,
        call_id_b: str | None = None,
        extension: str | None = None,
        agent: str | None = None,
        site: str | None = None,
        codec: str | None = None,
        policy_record: bool = False,
        policy_rules: Sequence[str] = (),
        policy_hash: str | None = None,
    ) -> asyncio.Future[int]:
        return self._submit(
            self._catalog.add_call,
            call_id_a=call_id_a,
            direction=direction,
            side=side,
            caller_number=caller_number,
            callee_number=callee_number,
            arrived_at=arrived_at,
            call_id_b=call_id_b,
            extension=extension,
            agent=agent,
            site=site,
            codec=codec,
            policy_record=policy_record,
            policy_rules=tuple(policy_rules),
            policy_hash=policy_hash,
        )

    def update_call(self, call_id: int, **changes: Any) -> asyncio.Future[None]:
        return self._submit(self._catalog.update_call, call_id, **copy.deepcopy(changes))

    def answer_call(
        self,
        call_id: int,
        *,
        at: datetime,
        agent: str | None = None,
        call_id_b: str | None = None,
        codec: str | None = None,
    ) -> asyncio.Future[None]:
        return self._submit(
            self._catalog.answer_call, call_id, at=at, agent=agent, call_id_b=call_id_b, codec=codec
        )

    def set_consent(
        self,
        call_id: int,
        *,
        outcome: str,
        method: str,
        at: datetime,
        digit: str | None = None,
    ) -> asyncio.Future[None]:
        return self._submit(
            self._catalog.set_consent, call_id, outcome=outcome, method=method, at=at, digit=digit
        )

    def end_call(
        self,
        call_id: int,
        *,
        at: datetime,
        reason: str,
        media: Mapping[str, Any] | None = None,
    ) -> asyncio.Future[None]:
        # Copied now: the caller keeps updating its counters while the write is queued.
        frozen = None if media is None else copy.deepcopy(dict(media))
        return self._submit(self._catalog.end_call, call_id, at=at, reason=reason, media=frozen)

    def get_call(self, call_id: int) -> asyncio.Future[CallInfo | None]:
        return self._submit(self._catalog.get_call, call_id)

    def get_calls(self, call_ids: Iterable[int]) -> asyncio.Future[dict[int, CallInfo]]:
        return self._submit(self._catalog.get_calls, list(call_ids))

    def find_call(self, sip_call_id: str) -> asyncio.Future[CallInfo | None]:
        return self._submit(self._catalog.find_call, sip_call_id)

    def list_calls(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        extension: str | None = None,
        agent: str | None = None,
        direction: Direction | str | None = None,
        limit: int | None = None,
    ) -> asyncio.Future[list[CallInfo]]:
        return self._submit(
            self._catalog.list_calls,
            since=since,
            until=until,
            extension=extension,
            agent=agent,
            direction=direction,
            limit=limit,
        )

    def add_recording(
        self,
        call_id: int,
        *,
        name: str,
        path: str,
        format: str,
        created_at: datetime,
        channel_map: Mapping[str, str] | None = None,
        node: str | None = None,
    ) -> asyncio.Future[int]:
        return self._submit(
            self._catalog.add_recording,
            call_id,
            name=name,
            path=path,
            format=format,
            created_at=created_at,
            channel_map=None if channel_map is None else dict(channel_map),
            node=node,
        )

    def update_recording(self, recording_id: int, **changes: Any) -> asyncio.Future[None]:
        return self._submit(self._catalog.update_recording, recording_id, **copy.deepcopy(changes))

    def finalize_recording(
        self,
        recording_id: int,
        *,
        at: datetime,
        sha256: str,
        size: int,
        duration: float,
        pauses: Iterable[Sequence[float]] | None = None,
        path: str | None = None,
        name: str | None = None,
        expires_at: datetime | None = None,
    ) -> asyncio.Future[None]:
        return self._submit(
            self._catalog.finalize_recording,
            recording_id,
            at=at,
            sha256=sha256,
            size=size,
            duration=duration,
            pauses=None if pauses is None else [list(p) for p in pauses],
            path=path,
            name=name,
            expires_at=expires_at,
        )

    def interrupt_recording(
        self,
        recording_id: int,
        *,
        at: datetime,
        sha256: str,
        size: int,
        duration: float,
        pauses: Iterable[Sequence[float]] | None = None,
        path: str | None = None,
        name: str | None = None,
        expires_at: datetime | None = None,
    ) -> asyncio.Future[None]:
        return self._submit(
            self._catalog.interrupt_recording,
            recording_id,
            at=at,
            sha256=sha256,
            size=size,
            duration=duration,
            pauses=None if pauses is None else [list(p) for p in pauses],
            path=path,
            name=name,
            expires_at=expires_at,
        )

    def fail_recording(
        self, recording_id: int, *, at: datetime, reason: str
    ) -> asyncio.Future[None]:
        return self._submit(self._catalog.fail_recording, recording_id, at=at, reason=reason)

    def get_recording(self, recording_id: int) -> asyncio.Future[RecordingInfo | None]:
        return self._submit(self._catalog.get_recording, recording_id)

    def list_recordings(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        extension: str | None = None,
        agent: str | None = None,
        direction: Direction | str | None = None,
        state: RecordingState | str | None = None,
        call_id: int | None = None,
        limit: int | None = None,
    ) -> asyncio.Future[list[RecordingInfo]]:
        return self._submit(
            self._catalog.list_recordings,
            since=since,
            until=until,
            extension=extension,
            agent=agent,
            direction=direction,
            state=state,
            call_id=call_id,
            limit=limit,
        )

    def add_event(
        self,
        call_id: int,
        *,
        at: datetime,
        name: str,
        detail: Mapping[str, Any] | None = None,
    ) -> asyncio.Future[int]:
        frozen = None if detail is None else copy.deepcopy(dict(detail))
        return self._submit(self._catalog.add_event, call_id, at=at, name=name, detail=frozen)

    def list_events(self, call_id: int) -> asyncio.Future[list[EventInfo]]:
        return self._submit(self._catalog.list_events, call_id)
