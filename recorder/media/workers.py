"""The service's side of its media worker processes (issue 18).

`MediaWorkers` starts `[media] workers` processes (`recorder.media.worker`) and gives each
new call to the one with the fewest calls. The service binds the call's four sockets from
its own `PortPool` (so the ports are known at once, for the SDP, and the pool stays one
range) and passes them to the worker, which owns them from then on; their ports go back to
the pool when the worker says the call is closed.

`WorkerSession` is a call's media seen from the service: the same `MediaAnchor` and
`ControllableMedia` interface as the in-process relay (`recorder.media.anchor`), so the
B2BUA, the controller and the recording taps do not know where the packets flow. What
crosses to the worker is one control message per change (a remote, a tap, a key...) and
batched packets for the few packets the service makes or judges (the notice, ringback,
agent DTMF codes); what comes back is the packets of tapped legs (the consent listener,
recordings), in batches.

A worker that dies (crash, OOM kill, kill -9): each of its calls is handed to `on_lost`
(the service ends it with a BYE to both parties and keeps its recording as `interrupted`),
its ports go back to the pool, the death is logged (`media.worker_died`) and counted, and a
new worker takes its place; a worker silent for `SILENCE_LIMIT` (its loop stuck) is killed
first (`media.worker_stuck`); other workers' calls are not touched. After `restart_limit`
deaths in `restart_window` seconds a worker slot is left empty (`media.worker_given_up`);
with no worker left, new calls are refused (the factory raises RuntimeError -> 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

import structlog

from recorder.media.ports import PortPool, RtpSocketPair
from recorder.media.relay import PacketTap, check_remote
from recorder.media.rtp import RECORD
from recorder.media.sdes import LegKeys, SdesNegotiator
from recorder.media.stats import StatsValue
from recorder.media.worker_wire import (
    CONTROL,
    DROP,
    HELD,
    INJECT,
    PACKETS,
    PASS,
    RECORDS,
    RECORDS_COUNT,
    TAP,
    VERSION,
    Channel,
    PacketBatch,
    control,
    read_control,
    records,
    socket_pair,
)

Address = tuple[str, int]
LegFilter = Callable[[bytes, float], bool]

log = structlog.get_logger("recorder.media.workers")

START_TIMEOUT: Final = 20.0
WATCH_INTERVAL: Final = 2.0
SILENCE_LIMIT: Final = 10.0  # a worker silent this long (its heartbeat is 1 s) is stuck
STOP_TIMEOUT: Final = 5.0
_HOLD_HOSTS: Final = frozenset({"0.0.0.0", "::"})


class StatsSnapshot:
    """A leg's counters as the worker last sent them, read like `LegStats` by the metrics."""

    __slots__ = ("values",)

    def __init__(self, values: Mapping[str, StatsValue] | None = None) -> None:
        self.values: Mapping[str, StatsValue] = values or {}

    def __getattr__(self, name: str) -> int:
        value = self.values.get("rtp_lost" if name == "lost" else name, 0)
        return value if isinstance(value, int) else 0


class WorkerLeg:
    """One leg of a `WorkerSession`: what a recording or the consent listener taps."""

    def __init__(self, session: WorkerSession, role: str, pair: RtpSocketPair) -> None:
        self.session = session
        self.side = role
        self.index = 0 if role == "a" else 1
        self.local_address = pair.host
        self.local_rtp_port = pair.rtp_port
        self.local_rtcp_port = pair.rtcp_port
        self.family = pair.rtp.family
        self.stats = StatsSnapshot()
        self._tap: PacketTap | None = None
        self._tapping: int | None = None  # the tap mode the worker was last told
        self._since = 0.0  # when the current tap was attached (CLOCK_MONOTONIC)
        self._sync: asyncio.Handle | None = None
        self.filter: LegFilter | None = None

    @property
    def on_packet(self) -> PacketTap | None:
        return self._tap

    @on_packet.setter
    def on_packet(self, tap: PacketTap | None) -> None:
        # The worker hears the state this leg ends the loop iteration in: a recording that
        # swaps its taps (detach, attach) must not open a gap in which the worker, running
        # on another core, stops tapping between the two.
        # A tap attached now gets the packets the worker takes from now on (its backlog
        # covers the time the message takes), as the in-process relay would give them.
        if self._tap is None and tap is not None:
            owner = self.session.worker.owner
            self._since = owner.event_time if owner.event_time is not None else time.monotonic()
        self._tap = tap
        if self._sync is None:
            self._sync = self.session.worker.owner.loop.call_soon(self._tell_worker)

    def _tell_worker(self) -> None:
        self._sync = None
        tap = self._tap
        # A recording's tap (`RecordingHandle.tap`) takes the worker's RECORDS whole; any
        # other tap (the consent listener, taps chained on one leg) is called per packet.
        wanted = None if tap is None else getattr(tap, "record_channel", -1)
        if wanted != self._tapping:
            self._tapping = wanted
            self.session._control("tap", self.side, wanted, self._since)

    def deliver_records(self, chunk: bytes) -> None:
        """A recorded leg's packets in the writer's batch format, after their count."""
        tap = self._tap
        if tap is None:
            return
        (count,) = RECORDS_COUNT.unpack_from(chunk)
        channel = getattr(tap, "record_channel", None)
        append = getattr(tap, "append_records", None)
        if append is not None and chunk[RECORDS_COUNT.size] == channel:
            append(memoryview(chunk)[RECORDS_COUNT.size :], count)
            return
        # The tap changed since the worker packed these (rare): one packet at a time.
        view = memoryview(chunk)
        offset = RECORDS_COUNT.size
        for _ in range(count):
            _channel, arrival, length = RECORD.unpack_from(view, offset)
            offset += RECORD.size
            self.deliver(bytes(view[offset : offset + length]), arrival)
            offset += length

    def deliver(self, data: bytes, arrival: float) -> None:
        tap = self._tap
        if tap is None:
            return
        try:
            tap(data, arrival)
        except Exception:
            # As the in-process relay does: a failing tap is detached and said once.
            self.on_packet = None
            log.exception("media.tap_failed", side=self.side)


class WorkerSession:
    """A call's media on a worker; made by `MediaWorkers.open`."""

    def __init__(
        self,
        worker: _Worker,
        number: int,
        call_id: str,
        pairs: tuple[RtpSocketPair, RtpSocketPair],
        negotiator_args: tuple[dict[str, tuple[str, str]], bool] | None,
    ) -> None:
        self.worker = worker
        self.number = number
        self.call_id = call_id
        self.leg_a = WorkerLeg(self, "a", pairs[0])
        self.leg_b = WorkerLeg(self, "b", pairs[1])
        self.ports = (pairs[0].rtp_port, pairs[1].rtp_port)
        self.srtp: SdesNegotiator | None = None
        if negotiator_args is not None:
            sides, allow_mixed = negotiator_args
            self.srtp = SdesNegotiator(sides, allow_mixed=allow_mixed, on_change=self._keys)
        self.closed = False
        self.lost = False  # the worker died under it
        self._finish: Callable[[dict[str, Any]], None] | None = None

    @property
    def session(self) -> WorkerSession:
        """The metrics read `media.session.leg_a.stats`, as of the in-process relay."""
        return self

    def _leg(self, role: str) -> WorkerLeg:
        return self.leg_a if role == "a" else self.leg_b

    def _control(self, name: str, *args: Any) -> None:
        if not self.closed:
            self.worker.channel_send(control(name, self.number, *args))

    # --- MediaAnchor ---------------------------------------------------------------------

    def local_port(self, role: str) -> int:
        return self._leg(role).local_rtp_port

    def crypto(self, from_role: str, to_role: str | None) -> Any:
        return self.srtp.rewriter(from_role, to_role) if self.srtp is not None else None

    def set_remote(self, role: str, rtp: Address | None, rtcp: Address | None) -> None:
        leg = self._leg(role)
        if rtp is not None and rtp[0] in _HOLD_HOSTS:
            rtp = None
        if rtp is None:
            rtcp = None
        try:
            if rtp is not None:
                check_remote(rtp, leg.family, "RTP remote")
                if rtcp is not None:
                    check_remote(rtcp, leg.family, "RTCP remote")
        except ValueError as exc:
            # A hostname or a foreign address family in c=: wait for the party's first packet
            # and latch onto it rather than fail the call.
            log.warning("media.unusable_remote", leg=role, error=str(exc))
            rtp = rtcp = None
        self._control("remote", role, rtp, rtcp)

    def stats(self) -> dict[str, Any]:
        return {"a": dict(self.leg_a.stats.values), "b": dict(self.leg_b.stats.values)}

    def close(self) -> None:
        if self.closed:
            return
        self._control("close", None)
        self.closed = True

    def finish(self, done: Callable[[dict[str, Any]], None]) -> None:
        if self.closed or self.lost:
            done(self.stats())
            return
        self._finish = done
        self.close()

    def flushed(self) -> asyncio.Future[None]:
        """Resolves once every packet the worker took for this call until now has reached
        the taps (a recording's `fence`)."""
        return self.worker.fence()

    # --- ControllableMedia ---------------------------------------------------------------

    def send_rtp(self, role: str, data: bytes) -> bool:
        if self.closed:
            return False
        self.worker.packet(self.number, self._leg(role).index, INJECT, data)
        return True

    def set_forwarding(self, role: str, enabled: bool) -> None:
        self._control("forward", role, enabled)

    def set_tap(self, role: str, tap: PacketTap | None) -> None:
        self._leg(role).on_packet = tap

    def set_filter(
        self, role: str, keep: LegFilter | None, *, payload_type: int | None = None
    ) -> None:
        """`payload_type`: the only packets `keep` judges (the rest pass in the worker,
        unseen here); None makes the worker hold every packet for a verdict."""
        leg = self._leg(role)
        leg.filter = keep
        selector = None if keep is None else (-1 if payload_type is None else payload_type)
        self._control("filter", role, selector)

    # --- from the worker -----------------------------------------------------------------

    def _keys(self, keys: LegKeys) -> None:
        self._control("srtp", keys.role, keys.secure, keys.inbound, keys.outbound)

    def held(self, leg: WorkerLeg, data: bytes, arrival: float) -> None:
        keep = leg.filter
        verdict = True
        if keep is not None:
            try:
                verdict = keep(data, arrival)
            except Exception:
                log.exception("media.filter_failed", side=leg.side)
        self.worker.packet(
            self.number, leg.index, PASS if verdict else DROP, data if verdict else b""
        )

    def update(self, stats: Mapping[str, Mapping[str, StatsValue]]) -> None:
        self.leg_a.stats = StatsSnapshot(stats.get("a"))
        self.leg_b.stats = StatsSnapshot(stats.get("b"))

    def ended(self, stats: Mapping[str, Mapping[str, StatsValue]] | None) -> None:
        """The worker closed the sockets (`stats`: its last counters), or died (None)."""
        if stats is not None:
            self.update(stats)
        self.closed = True
        self.leg_a._tap = self.leg_b._tap = None
        finish, self._finish = self._finish, None
        if finish is not None:
            finish(self.stats())


class _Worker:
    """One worker process and its channel."""

    def __init__(self, owner: MediaWorkers, slot: int) -> None:
        self.owner = owner
        self.slot = slot
        loop = owner.loop
        ours, theirs = socket_pair()
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "recorder.media.worker",
                    str(theirs.fileno()),
                    *owner.log_settings,
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()  # so that the worker's death reads as EOF here
        self.pid = self.process.pid
        self.sessions: dict[int, WorkerSession] = {}
        self.ready: asyncio.Future[None] = loop.create_future()
        self.gone: asyncio.Future[None] = loop.create_future()  # its channel reached EOF
        self.heard = time.monotonic()  # its last message (a heartbeat comes every second)
        self.alive = True
        self._batch = PacketBatch()
        self._flush_handle: asyncio.Handle | None = None
        self._fences: dict[int, asyncio.Future[None]] = {}
        self._fence_numbers = 0
        self.channel = Channel(ours, loop, self._on_message, self._on_gone)

    def fence(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.owner.loop.create_future()
        if not self.alive:
            future.set_result(None)
            return future
        self._fence_numbers += 1
        self._fences[self._fence_numbers] = future
        self.channel_send(control("flush", self._fence_numbers))
        return future

    def release_fences(self) -> None:
        fences, self._fences = self._fences, {}
        for future in fences.values():
            if not future.done():
                future.set_result(None)

    def channel_send(self, message: bytes, attach: list[Any] | None = None) -> None:
        self._flush()  # packets already batched go first: the order of the call's life holds
        self.channel.send(message, attach)

    def packet(self, number: int, leg: int, kind: int, data: bytes) -> None:
        self._batch.add(number, leg, kind, 0.0, data)
        if self._flush_handle is None:
            self._flush_handle = self.owner.loop.call_soon(self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._batch:
            for message in self._batch.take():
                self.channel.send(message)

    def _on_message(self, data: bytes, _fds: list[int]) -> None:
        self.heard = time.monotonic()
        for fd in _fds:  # the worker never sends descriptors; never leak one if it did
            os.close(fd)
        kind = data[0]
        if kind == PACKETS:
            sessions = self.sessions
            for number, leg_index, record_kind, arrival, payload in records(data):
                session = sessions.get(number)
                if session is None:
                    continue
                leg = session.leg_a if leg_index == 0 else session.leg_b
                if record_kind == RECORDS:
                    leg.deliver_records(payload)
                elif record_kind == TAP:
                    leg.deliver(payload, arrival)
                elif record_kind == HELD:
                    session.held(leg, payload, arrival)
            return
        if kind != CONTROL:
            log.error("media.worker_protocol", slot=self.slot, error=f"message kind {kind:#x}")
            return
        message = read_control(data)
        name = message[0]
        if name == "hello":
            if message[1] != VERSION:
                log.error("media.worker_protocol", slot=self.slot, error="version mismatch")
                self.kill()
            elif not self.ready.done():
                self.ready.set_result(None)
        elif name == "closed":
            session = self.sessions.pop(message[1], None)
            if session is not None:
                self.owner._release(session)
                session.ended(message[2])
        elif name == "flushed":
            future = self._fences.pop(message[1], None)
            if future is not None and not future.done():
                future.set_result(None)
        elif name == "stats":
            for number, stats in message[1].items():
                session = self.sessions.get(number)
                if session is not None:
                    session.update(stats)

    def _on_gone(self) -> None:
        self.owner._died(self)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()


class MediaWorkers:
    """N media worker processes, and the calls they carry."""

    def __init__(
        self,
        count: int,
        pool: PortPool,
        address: str,
        *,
        on_lost: Callable[[str], None],
        loop: asyncio.AbstractEventLoop | None = None,
        restart_limit: int = 5,
        restart_window: float = 60.0,
        silence_limit: float = SILENCE_LIMIT,
        log_settings: tuple[str, str] = ("auto", "info"),
    ) -> None:
        """`log_settings`: the service's log format and level, for the workers' own lines."""
        if count < 1:
            raise ValueError(f"media workers must be at least 1, got {count}")
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.count = count
        self.pool = pool
        self.address = address
        self.on_lost = on_lost
        self.restart_limit = restart_limit
        self.restart_window = restart_window
        self.silence_limit = silence_limit
        self.log_settings = log_settings
        self._watch_interval = min(WATCH_INTERVAL, silence_limit / 2)
        self.workers: list[_Worker | None] = [None] * count
        self._deaths: list[deque[float]] = [deque() for _ in range(count)]
        self._numbers = 0
        self._watch: asyncio.TimerHandle | None = None
        self._checked = time.monotonic()
        self.closing = False
        # When the SIP event or timer being handled came in (`MediaPlane.handling`).
        self.event_time: float | None = None
        # For the metrics.
        self.deaths = 0
        self.restarts = 0
        self.calls_lost = 0

    async def start(self) -> None:
        for slot in range(self.count):
            self.workers[slot] = _Worker(self, slot)
        await self._wait_ready([w for w in self.workers if w is not None])
        self._checked = time.monotonic()
        self._watch = self.loop.call_later(self._watch_interval, self._check_stuck)
        log.info(
            "media.workers_started",
            workers=self.count,
            pids=[w.pid for w in self.workers if w is not None],
        )

    async def _wait_ready(self, workers: list[_Worker]) -> None:
        try:
            await asyncio.wait_for(asyncio.gather(*(w.ready for w in workers)), START_TIMEOUT)
        except (TimeoutError, asyncio.CancelledError):
            for worker in workers:
                worker.kill()
            raise RuntimeError("a media worker did not start") from None

    @property
    def live(self) -> list[_Worker]:
        return [w for w in self.workers if w is not None and w.alive]

    def calls_per_worker(self) -> list[int]:
        return [len(w.sessions) if w is not None and w.alive else 0 for w in self.workers]

    def open(
        self,
        call_id: str,
        srtp: tuple[dict[str, tuple[str, str]], bool] | None = None,
    ) -> WorkerSession:
        """A new call's media on the least loaded worker; RuntimeError if none is up, and
        the pool's PortPoolExhausted (a RuntimeError) when the ports run out."""
        live = [w for w in self.live if w.ready.done()]
        if not live:
            raise RuntimeError("no media worker is running")
        worker = min(live, key=lambda w: len(w.sessions))
        pair_a = self.pool.bind_pair(self.address)
        try:
            pair_b = self.pool.bind_pair(self.address)
        except BaseException:
            self.pool.release_pair(pair_a)
            raise
        self._numbers += 1
        number = self._numbers
        session = WorkerSession(worker, number, call_id, (pair_a, pair_b), srtp)
        worker.sessions[number] = session
        worker.channel_send(
            control("open", number, self.address, pair_a.rtp_port, pair_b.rtp_port),
            [pair_a.rtp, pair_a.rtcp, pair_b.rtp, pair_b.rtcp],  # closed here once sent
        )
        log.debug("media.call_placed", call_id=call_id, worker=worker.slot, pid=worker.pid)
        return session

    def _check_stuck(self) -> None:
        """A worker whose loop stopped turning (a hang, a livelock) relays nothing while it
        holds calls: it is killed, and handled as any dead worker."""
        self._watch = self.loop.call_later(self._watch_interval, self._check_stuck)
        now = time.monotonic()
        late = now - self._checked > 2 * self._watch_interval
        self._checked = now
        if late:
            return  # this loop stalled itself: the heartbeats may be waiting unread
        for worker in self.live:
            if worker.ready.done() and now - worker.heard > self.silence_limit:
                log.error("media.worker_stuck", slot=worker.slot, pid=worker.pid,
                          silent_s=round(now - worker.heard, 1))  # fmt: skip
                worker.kill()  # its EOF comes next: `_died`

    def _release(self, session: WorkerSession) -> None:
        for port in session.ports:
            self.pool.release(port)

    def _died(self, worker: _Worker) -> None:
        if not worker.alive:
            return
        worker.alive = False
        if not worker.gone.done():
            worker.gone.set_result(None)
        if self.closing:
            code = worker.process.wait()  # it was told to stop: it is exiting
        else:
            worker.kill()  # EOF without an exit (a broken channel): make sure it is gone
            code = worker.process.wait()
        worker.release_fences()
        sessions = list(worker.sessions.values())
        worker.sessions.clear()
        for session in sessions:
            self._release(session)
            session.lost = True
            session.ended(None)
        if self.closing:
            return
        self.deaths += 1
        self.calls_lost += len(sessions)
        log.error(
            "media.worker_died",
            slot=worker.slot,
            pid=worker.pid,
            exit_code=code,
            calls=len(sessions),
        )
        for session in sessions:
            self.on_lost(session.call_id)
        self._restart(worker.slot)

    def _restart(self, slot: int) -> None:
        now = time.monotonic()
        deaths = self._deaths[slot]
        deaths.append(now)
        while deaths and deaths[0] < now - self.restart_window:
            deaths.popleft()
        if len(deaths) > self.restart_limit:
            self.workers[slot] = None
            log.error("media.worker_given_up", slot=slot, deaths=len(deaths))
            return
        worker = _Worker(self, slot)
        self.workers[slot] = worker
        self.restarts += 1
        worker.ready.add_done_callback(
            lambda _f: log.info("media.worker_restarted", slot=slot, pid=worker.pid)
        )

    async def aclose(self) -> None:
        """Stop every worker once it has answered what it was sent (its last calls' counters
        come back before its EOF)."""
        self.closing = True
        if self._watch is not None:
            self._watch.cancel()
        workers = [w for w in self.workers if w is not None and w.alive]
        for worker in workers:
            worker.channel_send(control("stop"))
        try:
            await asyncio.wait_for(asyncio.gather(*(w.gone for w in workers)), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("media.workers_stop_timeout", workers=len(workers))
        for worker in workers:
            worker.kill()
            await self.loop.run_in_executor(None, worker.process.wait)
            worker.channel.close()
            worker.alive = False
