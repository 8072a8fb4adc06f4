"""`recorder serve`: the asyncio service that wires the SIP sides, the B2BUA and the relay."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consent.voice import VoiceRefusalSpotter, VoiceUnavailable
from recorder.access.commands import AccessServer, access_socket_path
from recorder.call.b2bua import B2bua, SipSideRuntime
from recorder.call.call_log import CallLog
from recorder.call.catalog_journal import JournalError
from recorder.call.controller import CallController
from recorder.call.limits import Admission
from recorder.call.media_plane import MediaPlane
from recorder.call.recording_glue import Recorder
from recorder.config import Config, ConfigError, SipSide, load_config
from recorder.console.server import ConsoleServer
from recorder.media.ports import PortPool
from recorder.ops.control import ControlServer, service_socket_path
from recorder.ops.logs import get_logger
from recorder.ops.metrics import (
    LoopLagMonitor,
    MediaTotals,
    RecorderCollector,
    start_metrics_server,
)
from recorder.ops.retention import anchor_path, purge_once
from recorder.ops.sdnotify import Notifier, start_watchdog, stop_watchdog
from recorder.policy import Policy, PolicyError, load_policy
from recorder.recording.layout import node_directory, repair_node
from recorder.recording.space import StorageSpace
from recorder.recording.writer import RecordingWriterClient
from sip.asyncio.endpoint import SipEndpoint
from sip.transaction import TimerConfig, TransactionEvent
from storage import audit
from storage.db import upgrade
from storage.repository import AsyncCatalog
from storage.retention import PurgeError

Address = tuple[str, int]
log = get_logger("recorder.service")
PURGE_INTERVAL = 3600.0  # seconds between retention passes


def _advertised(side: SipSide, fallback: str) -> Address:
    host, port = side.listen
    if host in ("0.0.0.0", "::", ""):
        host = fallback
    return host, port


def _listening(side: SipSide) -> str:
    tls = f", TLS on {side.tls.listen[0]}:{side.tls.listen[1]}" if side.tls is not None else ""
    return f"{side.listen[0]}:{side.listen[1]} (UDP, TCP{tls})"


class Service:
    """One running recorder: two SIP endpoints, the B2BUA, the media port pool."""

    def __init__(self, config: Config, policy: Policy) -> None:
        self.config = config
        self.policy = policy
        self.controller: CallController | None = None
        self.notifier = Notifier()
        self._status_calls = -1
        self.pool = PortPool(config.media.port_first, config.media.port_last)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self.endpoints: dict[str, SipEndpoint] = {}
        self.b2bua: B2bua | None = None
        self.stopped = asyncio.Event()
        self.catalog: AsyncCatalog | None = None
        self.writer: RecordingWriterClient | None = None
        self.call_log: CallLog | None = None
        # Free space of storage.dir (issue 20: full disk), read by the controller and metrics.
        self.storage = StorageSpace(
            config.storage.dir, min_free_bytes=config.storage.min_free_bytes
        )
        # Ended calls' RTP counters, and retention deletions by kind, for the metrics.
        self.media_totals = MediaTotals()
        self.purge_deleted: dict[str, int] = {}
        self.control: ControlServer | None = None
        self.access: AccessServer | None = None
        self.console: ConsoleServer | None = None
        self._purge_task: asyncio.Task[None] | None = None
        self.media: MediaPlane | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        config = self.config
        # Recordings live under storage.dir, 0750 (N4); the audit anchors too.
        config.storage.dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        # The catalog is migrated before the first call can be logged into it.
        await loop.run_in_executor(None, upgrade, config.storage.database)
        self.catalog = await AsyncCatalog.open(config.storage.database)
        call_log = CallLog(
            self.catalog, journal_path=config.storage.journal_path, node=config.service.node
        )
        self.call_log = call_log
        # What a previous run left in the catalog journal goes in before anything new.
        replayed = await call_log.open_journal()
        if replayed:
            log.warning("catalog.journal_replayed", entries=replayed)
        await self._recover_recordings(call_log)
        self.writer = RecordingWriterClient()
        await self.writer.start()
        timers = TimerConfig(t1=config.timers.t1, t2=config.timers.t2, t4=config.timers.t4)
        runtimes: dict[str, SipSideRuntime] = {}

        def handler_for(name: str) -> Callable[[SipEndpoint, TransactionEvent], None]:
            def deliver(event: TransactionEvent) -> None:
                assert self.b2bua is not None and self.media is not None
                with self.media.handling():
                    self.b2bua.handle_event(runtimes[name], event, loop.time())
                self._rearm()
                self._report_status()

            def on_event(_endpoint: SipEndpoint, event: TransactionEvent) -> None:
                assert self.media is not None
                # With rtpengine, a new call's ports are asked for first (the factory is
                # synchronous): the event is delivered once they are known.
                if not self.media.route(event, runtimes[name].config, self.b2bua, deliver):
                    deliver(event)

            return on_event

        for side in (config.external, config.internal):
            advertised = _advertised(side, config.media.address)
            endpoint = SipEndpoint(handler_for(side.name), timers, sent_by=advertised)
            tls = side.tls.settings(advertised[0]) if side.tls is not None else None
            await endpoint.start(*side.listen, tls=tls)
            self.endpoints[side.name] = endpoint
            runtimes[side.name] = SipSideRuntime(side, endpoint, advertised)

        self.media = MediaPlane(
            self.pool,
            config.media,
            srtp_sides=config.srtp_sides,
            on_lost=self._media_lost,
            loop=loop,
        )
        await self.media.start()

        recorder = Recorder(
            self.writer,
            call_log,
            node_directory(config.storage.dir, config.service.node),
            lambda: self.policy,
            self.media.legs_of,
            lambda: datetime.now(UTC),
            space=self.storage,
            fence_of=self.media.fence_of,
        )
        recorder.storage_full()  # a disk already full at start is said (storage.full) at once

        self.controller = CallController(
            self.policy,
            policy_dir=config.path.resolve().parent,
            media_of=self.media.media_of,
            on_change=self._rearm,
            call_log=call_log,
            recording_factory=self.media.wrap_recording(recorder.start),
            storage_full=recorder.storage_full,
            when_full=config.storage.when_full,
        )
        self.b2bua = B2bua(
            runtimes["external"],
            runtimes["internal"],
            self.media.factory,
            media_address=config.media.address,
            ring_timeout=config.service.ring_timeout,
            user_agent=config.service.user_agent,
            hooks=self.controller,
            on_call_ended=self.media_totals.call_ended,
        )
        self.controller.b2bua = self.b2bua
        self.b2bua.admission = Admission(config.limits)
        await self._check_voice()
        control_path = service_socket_path(config.storage.dir.parent)
        self.control = ControlServer(control_path, self.controller)
        await self.control.start()
        self.access = await AccessServer.start(
            access_socket_path(config.service.access_socket, control_path),
            config.storage.database,
            config.storage.dir,
            lambda: self.policy,
            journal=config.storage.journal_path,
        )
        self.console = await ConsoleServer.start(config.console, self.access, lambda: self.policy)
        # Retention runs in the service (D1-D5): once now, which also finishes a purge that
        # was killed half-way, then every hour.
        self._purge_task = asyncio.ensure_future(self._purge_every(PURGE_INTERVAL))
        log.info(
            "service.started",
            node=config.service.node,
            external=_listening(config.external),
            internal=_listening(config.internal),
            media_ports=f"{config.media.port_first}-{config.media.port_last}",
            media_engine=config.media.engine,
        )

    async def _check_voice(self) -> None:
        """C4: a policy asking for spoken refusal without a usable model is said loudly at
        start; key refusal keeps working."""
        voice = self.policy.consent.voice
        if voice is None or self.controller is None:
            return
        assert self._loop is not None
        phrases, model_dir = dict(voice.phrases), voice.model_dir

        def probe() -> None:
            VoiceRefusalSpotter(phrases, model_dir=model_dir).close()

        try:
            await self._loop.run_in_executor(None, probe)
        except VoiceUnavailable as exc:
            self.controller.voice_unavailable = True
            log.error("voice.unavailable", language=voice.language, error=str(exc))

    async def _purge_every(self, interval: float) -> None:
        while True:
            await self.purge()
            await asyncio.sleep(interval)

    async def purge(self) -> None:
        assert self._loop is not None
        config, policy, now = self.config, self.policy, datetime.now(UTC)
        try:
            report = await self._loop.run_in_executor(None, purge_once, config, policy, now)
        except PurgeError as exc:
            log.error("purge.failed", error=str(exc))
            return
        counts = report.counts()
        for kind, count in counts.items():
            self.purge_deleted[kind] = self.purge_deleted.get(kind, 0) + count
        for failure in report.integrity_failures:
            log.error("purge.integrity_failure", detail=failure.to_json())
        for error in report.errors:
            log.error("purge.error", error=error)
        if any(counts.values()):
            log.info("purge.completed", **counts)

    def _audit(self, action: str, object_: str, outcome: str, reason: str | None = None) -> None:
        """An audit-trail entry written on the catalog's thread (A10)."""
        if self.catalog is None:
            return
        anchor = anchor_path(self.config)
        at = datetime.now(UTC)

        def write(catalog: Any) -> None:
            audit.record(
                catalog,
                anchor,
                at=at,
                actor="service",
                action=action,
                object=object_,
                outcome=outcome,
                reason=reason,
            )

        def check(done: asyncio.Future[None]) -> None:
            if not done.cancelled() and done.exception() is not None:
                log.error("audit.write_failed", action=action)

        self.catalog.run(write).add_done_callback(check)

    async def _recover_recordings(self, call_log: CallLog) -> None:
        """Nothing recorded is lost to a crash: repair every `.part`, then fix the catalog."""
        assert self._loop is not None
        storage, node = self.config.storage.dir, self.config.service.node
        report = await self._loop.run_in_executor(None, repair_node, storage, node)
        for part, error in report.errors:
            log.error("recording.repair_failed", part=str(part), error=error)
        repaired = [
            {
                "final": str(Path(str(item.part).removesuffix(".part"))),
                "path": str(item.path),
                "name": item.path.name,
                "sha256": item.sha256,
                "size": item.size,
                "duration": item.duration_s,
            }
            for item in report.repaired
        ]
        counts = await call_log.reconcile_after_crash(repaired, datetime.now(UTC))
        if report.repaired or any(counts.values()):
            log.warning("recording.recovered", repaired=len(report.repaired), **counts)

    def _media_lost(self, call_id: str) -> None:
        """A media worker died under this call: end it (BYE both ways); its recording, if
        any, is kept as `interrupted` (`recording_glue`)."""
        b2bua = self.b2bua
        call = b2bua.calls.get(call_id) if b2bua is not None else None
        if b2bua is None or call is None or self._loop is None:
            return
        call.info["media_lost"] = True
        b2bua.hangup(call, self._loop.time(), "media_lost")
        self._rearm()
        self._report_status()

    def _rearm(self) -> None:
        assert self._loop is not None and self.b2bua is not None
        when = self.b2bua.get_timer()
        if when == self._timer_when and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_when = when
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        assert self._loop is not None and self.b2bua is not None
        self._timer = None
        now = max(self._loop.time(), self._timer_when or 0.0)
        self._timer_when = None
        if self.media is not None:
            with self.media.handling():
                self.b2bua.handle_timer(now)
        else:
            self.b2bua.handle_timer(now)
        self._rearm()

    def _report_status(self) -> None:
        assert self.b2bua is not None
        active = self.b2bua.active_calls()
        if active != self._status_calls:
            self._status_calls = active
            self.notifier.status(f"{active} active calls")

    def reload(self) -> None:
        """SIGHUP: re-read the policy; allow lists, next hops and rules change for new calls."""
        self.notifier.reloading()
        try:
            self._reload()
        finally:
            self.notifier.ready()

    def _reload(self) -> None:
        try:
            new = load_config(self.config.path)
            policy = load_policy(self.config.path)
        except ConfigError as exc:
            log.error("service.reload_failed", problems=exc.problems)
            self._audit("policy.reload", f"policy:{self.policy.content_hash[:12]}", "failed")
            return
        except PolicyError as exc:
            log.error("service.reload_failed", problems=exc.problems)
            self._audit("policy.reload", f"policy:{self.policy.content_hash[:12]}", "failed")
            return
        assert self.b2bua is not None
        for runtime, side in (
            (self.b2bua.external, new.external),
            (self.b2bua.internal, new.internal),
        ):
            if side.listen != runtime.config.listen:
                log.warning("service.reload_listen_ignored", side=side.name)
            runtime.config = side
        self.b2bua.ring_timeout = new.service.ring_timeout
        if new.limits != self.config.limits:
            self.b2bua.admission = Admission(new.limits)
        self.config = new
        self.policy = policy
        self.storage.min_free_bytes = new.storage.min_free_bytes
        if self.controller is not None:
            self.controller.policy = policy
            self.controller.when_full = new.storage.when_full
        log.info("service.reloaded", policy_hash=policy.content_hash[:12])
        self._audit("policy.reload", f"policy:{policy.content_hash[:12]}", "ok")

    async def drain(self) -> None:
        """Stop taking calls, let calls in progress finish, then end them."""
        assert self._loop is not None and self.b2bua is not None
        self.b2bua.accepting = False
        deadline = self._loop.time() + self.config.service.drain_seconds
        log.info("service.draining", active_calls=self.b2bua.active_calls())
        while self.b2bua.active_calls() and self._loop.time() < deadline:
            await asyncio.sleep(0.2)
        if self.b2bua.active_calls():
            self.b2bua.hangup_all(self._loop.time())
            self._rearm()
            # Let the BYEs leave before the sockets close.
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._purge_task is not None:
            self._purge_task.cancel()
            await asyncio.gather(self._purge_task, return_exceptions=True)
        if self.control is not None:
            await self.control.close()
        if self.console is not None:
            await self.console.close()
        if self.access is not None:
            await self.access.close()
        for endpoint in self.endpoints.values():
            endpoint.close()
        for endpoint in self.endpoints.values():
            await endpoint.wait_closed()
        if self.media is not None:
            await self.media.aclose()
        if self.writer is not None:
            await self.writer.aclose()
        if self.call_log is not None:
            # After the writer: its last recordings' rows may still go to the journal.
            await self.call_log.close()
        if self.catalog is not None:
            await self.catalog.close()
        log.info("service.stopped", ports_in_use=self.pool.allocated_count)


async def serve(config: Config, policy: Policy) -> int:
    loop = asyncio.get_running_loop()
    service = Service(config, policy)
    # systemd counts the watchdog from process start, so ping from the first moment.
    watchdog = start_watchdog(loop, service.notifier)
    # Signals are ours before the sockets listen: a SIGHUP or SIGTERM that arrives while the
    # service is still starting must not kill it with the default action.
    stop = asyncio.Event()
    started = False

    def on_hangup() -> None:
        if started:
            service.reload()
        else:
            log.warning("service.reload_ignored", reason="still starting")

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    lag: LoopLagMonitor | None = None
    metrics_server = None
    try:
        try:
            await service.start()
        except JournalError as exc:
            # Said in one line (systemd restarts the unit); no call is taken meanwhile.
            log.error("service.start_failed", error=str(exc))
            return 1
        started = True
        if config.metrics.listen is not None:
            lag = LoopLagMonitor()
            lag.start()
            metrics_server = await start_metrics_server(
                config.metrics.listen, RecorderCollector(service, lag)
            )
        service.notifier.ready("0 active calls")
        await stop.wait()
        log.info("service.stopping")
        service.notifier.stopping()
        await service.drain()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        if metrics_server is not None:
            await metrics_server.aclose()
        if lag is not None:
            await lag.stop()
        await service.close()
        await stop_watchdog(watchdog)
    return 0


def run_service(config: Config, policy: Policy) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(config, policy))
    return int(uvloop.run(serve(config, policy)))
