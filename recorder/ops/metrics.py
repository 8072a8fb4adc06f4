"""Prometheus metrics: read from the service's live state when scraped, never on the hot path.

Nothing here runs per packet or per SIP message. The relay, the B2BUA, the call
controller, the writer client and the SIP endpoints already keep plain integer
counters; `RecorderCollector` walks them at scrape time and turns them into
metric families. RTP counters are the sum of the live calls' `LegStats` and of
`MediaTotals`, the running total of ended calls that the B2BUA's
`on_call_ended` feeds: a call's counters move from one to the other in the same
loop iteration, so the sum never goes backwards.

The HTTP server is a small asyncio handler rather than prometheus_client's
threaded `start_http_server`: a scrape then runs on the event loop, between two
callbacks, and reads dicts that the loop mutates without a lock and without the
"dictionary changed size during iteration" that a thread would hit.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Protocol, runtime_checkable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from recorder.media.stats import LegStats, StatsValue
from recorder.ops.logs import get_logger

Address = tuple[str, int]
log = get_logger("recorder.metrics")

# LegStats fields summed into the RTP counters, under the name of `LegStats.as_dict()`.
MEDIA_FIELDS: Final = (
    "rtp_packets",
    "rtp_forwarded",
    "injected_rtp",
    "rtp_lost",
    "dropped_wrong_source",
    "dropped_malformed",
    "dropped_not_forwarded",
    "dropped_filtered",
    "dropped_send",
    "dropped_srtp_auth",
)
_DROP_REASONS: Final = (
    ("dropped_wrong_source", "wrong_source"),
    ("dropped_malformed", "malformed"),
    ("dropped_not_forwarded", "not_forwarded"),
    ("dropped_filtered", "filtered"),
    ("dropped_send", "send_failed"),
    ("dropped_srtp_auth", "srtp_auth_failed"),
)

# Loop lag worth telling apart: a healthy loop stays under 5 ms; 100 ms is audible jitter.
LAG_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


# --- what the collector reads: the service, seen through read-only protocols ------------------


class LegView(Protocol):
    @property
    def stats(self) -> LegStats: ...


class SessionView(Protocol):
    @property
    def leg_a(self) -> LegView: ...
    @property
    def leg_b(self) -> LegView: ...


@runtime_checkable
class AnchoredMedia(Protocol):
    """A call's media that the relay anchors (`recorder.service.RelayAnchor`)."""

    @property
    def session(self) -> SessionView: ...


class CallView(Protocol):
    @property
    def direction(self) -> str: ...
    @property
    def media(self) -> object: ...


class EndedCall(Protocol):
    @property
    def info(self) -> Mapping[str, Any]: ...


class B2buaView(Protocol):
    @property
    def calls(self) -> Mapping[str, CallView]: ...
    @property
    def counters(self) -> Mapping[str, int]: ...
    @property
    def accepting(self) -> bool: ...


class ControllerView(Protocol):
    @property
    def counters(self) -> Mapping[str, int]: ...
    # (direction, "record" | "no_record") -> calls the policy decided.
    @property
    def decisions(self) -> Mapping[tuple[str, str], int]: ...
    # (outcome, method) -> consent decisions, e.g. ("refused", "rfc4733").
    @property
    def consents(self) -> Mapping[tuple[str, str], int]: ...


class PoolView(Protocol):
    @property
    def capacity(self) -> int: ...
    @property
    def free_count(self) -> int: ...
    @property
    def allocated_count(self) -> int: ...


class WriterView(Protocol):
    def stats(self) -> Mapping[str, int]: ...


class StorageView(Protocol):
    """`recorder.recording.space.StorageSpace`: storage.dir's free space, as last measured."""

    @property
    def full(self) -> bool: ...
    @property
    def free_bytes(self) -> int | None: ...
    @property
    def became_full(self) -> int: ...


class CallLogView(Protocol):
    """`recorder.call.call_log.CallLog`: its writes' failures and the catalog journal."""

    @property
    def journal_pending(self) -> int: ...
    @property
    def outages(self) -> int: ...
    @property
    def replayed(self) -> int: ...
    @property
    def rejected(self) -> int: ...
    @property
    def failures(self) -> int: ...


class EndpointView(Protocol):
    # ("in" | "out", method, status) -> messages; status 0 for requests, and for
    # responses the method is the one of their CSeq.
    @property
    def messages(self) -> Mapping[tuple[str, str, int], int]: ...
    @property
    def parse_errors(self) -> int: ...
    @property
    def tls_failures(self) -> int: ...


class ServiceView(Protocol):
    @property
    def b2bua(self) -> B2buaView | None: ...
    @property
    def controller(self) -> ControllerView | None: ...
    @property
    def pool(self) -> PoolView: ...
    @property
    def writer(self) -> WriterView | None: ...
    @property
    def endpoints(self) -> Mapping[str, EndpointView]: ...
    @property
    def media_totals(self) -> MediaTotals: ...
    # kind ("recordings", "calls", ...) -> rows or files the retention purge deleted.
    @property
    def purge_deleted(self) -> Mapping[str, int]: ...
    @property
    def storage(self) -> StorageView | None: ...
    @property
    def call_log(self) -> CallLogView | None: ...
    @property
    def media(self) -> MediaPlaneView | None: ...


class WorkersView(Protocol):
    deaths: int
    restarts: int
    calls_lost: int

    def calls_per_worker(self) -> list[int]: ...
    @property
    def live(self) -> Sequence[object]: ...


class MediaPlaneView(Protocol):
    @property
    def workers(self) -> WorkersView | None: ...


# --- ended calls' media ------------------------------------------------------------------------


class MediaTotals:
    """Running RTP totals of the calls that have ended; `call_ended` is the B2BUA's
    `on_call_ended` callback and reads the stats `_end_call` left in `call.info`."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = dict.fromkeys(MEDIA_FIELDS, 0)
        self.calls = 0

    def call_ended(self, call: EndedCall) -> None:
        stats = call.info.get("media_stats")
        if stats:
            self.add(stats)

    def add(self, stats: Mapping[str, Mapping[str, StatsValue]]) -> None:
        """Adds one call's `MediaSession.stats()` (legs 'a' and 'b')."""
        self.calls += 1
        totals = self.totals
        for leg in stats.values():
            for name in MEDIA_FIELDS:
                value = leg.get(name)
                if isinstance(value, int):
                    totals[name] += value


def _add_leg(totals: dict[str, int], stats: LegStats) -> None:
    totals["rtp_packets"] += stats.rtp_packets
    totals["rtp_forwarded"] += stats.rtp_forwarded
    totals["injected_rtp"] += stats.injected_rtp
    totals["rtp_lost"] += stats.lost
    totals["dropped_wrong_source"] += stats.dropped_wrong_source
    totals["dropped_malformed"] += stats.dropped_malformed
    totals["dropped_not_forwarded"] += stats.dropped_not_forwarded
    totals["dropped_filtered"] += stats.dropped_filtered
    totals["dropped_send"] += stats.dropped_send
    totals["dropped_srtp_auth"] += stats.dropped_srtp_auth


# --- event-loop lag ----------------------------------------------------------------------------


class LoopLagMonitor:
    """How late the event loop runs a callback: sleeps `interval`, measures the overshoot.

    Every late RTP packet waits as long as this lag, so it is the relay's jitter floor.
    `clock` and `sleep` default to the running loop's; tests pass their own.
    """

    def __init__(
        self,
        interval: float = 0.5,
        *,
        buckets: Sequence[float] = LAG_BUCKETS,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        if list(buckets) != sorted(buckets) or not buckets:
            raise ValueError("buckets must be a non-empty ascending sequence")
        self.interval = interval
        self.buckets = tuple(float(b) for b in buckets)
        self.last = 0.0
        self.max = 0.0
        self.count = 0
        self.sum = 0.0
        # Per-bucket counts (not cumulative); the last slot is above the largest bound.
        self._counts = [0] * (len(self.buckets) + 1)
        self._clock = clock
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None

    def record(self, lag: float) -> None:
        lag = max(0.0, lag)
        self.last = lag
        self.max = max(self.max, lag)
        self.count += 1
        self.sum += lag
        self._counts[bisect.bisect_left(self.buckets, lag)] += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus histogram buckets: (upper bound, observations <= bound), then +Inf."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.buckets, self._counts, strict=False):
            running += count
            out.append((repr(bound), float(running)))
        out.append(("+Inf", float(self.count)))
        return out

    async def run(self) -> None:
        clock = self._clock or asyncio.get_running_loop().time
        while True:
            due = clock() + self.interval
            await self._sleep(self.interval)
            self.record(clock() - due)

    def start(self) -> None:
        """Starts measuring on the running loop; idempotent."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- the collector -----------------------------------------------------------------------------


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class RecorderCollector(Collector):
    """Reads `service` (see `ServiceView`) and `lag` at each scrape."""

    def __init__(self, service: ServiceView, lag: LoopLagMonitor | None = None) -> None:
        self.service = service
        self.lag = lag

    def collect(self) -> Iterable[Metric]:
        yield from self._calls()
        yield from self._media()
        yield from self._recordings()
        yield from self._sip()
        yield from self._purge()
        yield from self._loop()

    def _calls(self) -> Iterator[Metric]:
        b2bua = self.service.b2bua
        controller = self.service.controller
        counters: Mapping[str, int] = b2bua.counters if b2bua is not None else {}
        yield _gauge(
            "recorder_active_calls",
            "Calls in progress (ringing, in the notice, or bridged).",
            len(b2bua.calls) if b2bua is not None else 0,
        )
        yield _gauge(
            "recorder_accepting_calls",
            "1 while new calls are taken, 0 while draining for shutdown.",
            1 if b2bua is not None and b2bua.accepting else 0,
        )
        active = GaugeMetricFamily(
            "recorder_active_calls_by_direction", "Calls in progress.", labels=["direction"]
        )
        by_direction = {"inbound": 0, "outbound": 0}
        for call in b2bua.calls.values() if b2bua is not None else ():
            by_direction[call.direction] = by_direction.get(call.direction, 0) + 1
        for direction, count in sorted(by_direction.items()):
            active.add_metric([direction], count)
        yield active
        for key, name, doc in (
            ("calls", "recorder_calls_received", "New INVITEs taken as calls."),
            ("rejected", "recorder_calls_rejected", "INVITEs from a source not allowed (403)."),
            ("answered", "recorder_calls_answered", "Calls the far side answered."),
            ("failed", "recorder_calls_failed", "Calls the far side refused or never answered."),
            ("bad_requests", "recorder_sip_bad_requests", "Requests refused as malformed."),
            ("throttled", "recorder_calls_throttled", "INVITEs refused by [limits] (503)."),
        ):
            yield _counter(name, doc, counters.get(key, 0))
        decided = CounterMetricFamily(
            "recorder_calls",
            "Calls by direction and the policy's decision (record / no_record).",
            labels=["direction", "decision"],
        )
        consent = CounterMetricFamily(
            "recorder_consent",
            "Consent decisions by outcome (accepted / refused) and method.",
            labels=["outcome", "method"],
        )
        notices = 0
        started = 0
        if controller is not None:
            for (direction, decision), count in sorted(controller.decisions.items()):
                decided.add_metric([direction, decision], count)
            for (outcome, method), count in sorted(controller.consents.items()):
                consent.add_metric([outcome, method], count)
            notices = controller.counters.get("notices", 0)
            started = controller.counters.get("recorded", 0)
        yield decided
        yield consent
        yield _counter("recorder_notices_played", "Recording notices played to callers.", notices)
        yield _counter("recorder_recordings_started", "Recordings started.", started)

    def _media(self) -> Iterator[Metric]:
        service = self.service
        totals = dict(service.media_totals.totals)
        b2bua = service.b2bua
        for call in b2bua.calls.values() if b2bua is not None else ():
            media = call.media
            if isinstance(media, AnchoredMedia):
                session = media.session
                _add_leg(totals, session.leg_a.stats)
                _add_leg(totals, session.leg_b.stats)
        yield _counter(
            "recorder_rtp_packets_received",
            "RTP packets received from the parties (valid, from the latched source).",
            totals["rtp_packets"],
        )
        yield _counter(
            "recorder_rtp_packets_relayed",
            "RTP packets relayed to the other party.",
            totals["rtp_forwarded"],
        )
        yield _counter(
            "recorder_rtp_packets_injected",
            "RTP packets the recorder made itself (notice, ringback).",
            totals["injected_rtp"],
        )
        yield _counter(
            "recorder_rtp_packets_lost",
            "RTP packets missing from the sequence numbers received.",
            totals["rtp_lost"],
        )
        dropped = CounterMetricFamily(
            "recorder_rtp_packets_dropped",
            "RTP and RTCP packets the relay dropped, by reason.",
            labels=["reason"],
        )
        for field, reason in _DROP_REASONS:
            dropped.add_metric([reason], totals[field])
        yield dropped
        pool = service.pool
        ports = GaugeMetricFamily(
            "recorder_media_port_pairs", "RTP/RTCP port pairs of the media range.", labels=["state"]
        )
        ports.add_metric(["allocated"], pool.allocated_count)
        ports.add_metric(["free"], pool.free_count)
        yield ports
        yield _gauge(
            "recorder_media_port_pairs_capacity",
            "RTP/RTCP port pairs in the configured range.",
            pool.capacity,
        )
        yield from self._workers()

    def _workers(self) -> Iterator[Metric]:
        plane = self.service.media
        workers = plane.workers if plane is not None else None
        if workers is None:
            return  # [media] workers = 0: the service's loop relays
        yield _gauge("recorder_media_workers", "Media worker processes running.", len(workers.live))
        calls = GaugeMetricFamily(
            "recorder_media_worker_calls", "Calls each media worker relays.", labels=["worker"]
        )
        for slot, count in enumerate(workers.calls_per_worker()):
            calls.add_metric([str(slot)], count)
        yield calls
        yield _counter(
            "recorder_media_worker_deaths",
            "Media workers that died (each of their calls was ended, its recording kept).",
            workers.deaths,
        )
        yield _counter(
            "recorder_media_worker_restarts", "Media workers started again.", workers.restarts
        )
        yield _counter(
            "recorder_media_calls_lost",
            "Calls ended because their media worker died.",
            workers.calls_lost,
        )

    def _recordings(self) -> Iterator[Metric]:
        writer = self.service.writer
        stats: Mapping[str, int] = writer.stats() if writer is not None else {}
        recordings = CounterMetricFamily(
            "recorder_recordings",
            "Recordings closed, by outcome: complete, or failed (an error or a cut file).",
            labels=["outcome"],
        )
        recordings.add_metric(["complete"], stats.get("recordings_complete", 0))
        recordings.add_metric(["failed"], stats.get("recordings_failed", 0))
        yield recordings
        files = CounterMetricFamily(
            "recorder_recording_files", "WAV files finalized, by state.", labels=["state"]
        )
        files.add_metric(["complete"], stats.get("files_complete", 0))
        files.add_metric(["interrupted"], stats.get("files_interrupted", 0))
        files.add_metric(["truncated"], stats.get("files_truncated", 0))
        yield files
        yield _counter(
            "recorder_recordings_truncated",
            "Recordings cut short by a full disk (kept up to there, catalogued with the reason).",
            stats.get("recordings_truncated", 0),
        )
        yield _counter(
            "recorder_recording_bytes_written",
            "Bytes of finalized WAV files.",
            stats.get("bytes_written", 0),
        )
        yield _gauge(
            "recorder_recordings_open", "Recordings being written now.", stats.get("calls", 0)
        )
        yield _counter(
            "recorder_recording_packets_dropped",
            "Packets lost to the writer's back-pressure or death.",
            stats.get("dropped_packets", 0),
        )
        yield _gauge(
            "recorder_writer_buffered_bytes",
            "Bytes waiting for the writer process.",
            stats.get("buffered_bytes", 0),
        )
        yield _counter(
            "recorder_writer_restarts", "Writer process restarts.", stats.get("restarts", 0)
        )
        yield from self._storage()
        yield from self._catalog_journal()

    def _catalog_journal(self) -> Iterator[Metric]:
        """Issue 20: the catalog's outages and the call-log writes waiting for it."""
        call_log = self.service.call_log
        if call_log is None:
            return
        yield _gauge(
            "recorder_catalog_available",
            "0 while call-log writes go to the catalog journal (the catalog is unavailable).",
            0 if call_log.journal_pending else 1,
        )
        yield _gauge(
            "recorder_catalog_journal_entries",
            "Call-log writes in the catalog journal, waiting for the catalog.",
            call_log.journal_pending,
        )
        yield _counter(
            "recorder_catalog_outages",
            "Times a call-log write found the catalog unavailable.",
            call_log.outages,
        )
        yield _counter(
            "recorder_catalog_journal_replayed",
            "Catalog-journal entries put into the catalog once it answered again.",
            call_log.replayed,
        )
        yield _counter(
            "recorder_catalog_journal_rejected",
            "Catalog-journal entries the catalog refused for good (kept in the .rejected file).",
            call_log.rejected,
        )
        yield _counter(
            "recorder_catalog_write_failures",
            "Call-log writes lost: failed with no journal to take them.",
            call_log.failures,
        )

    def _storage(self) -> Iterator[Metric]:
        storage = self.service.storage
        yield _gauge(
            "recorder_storage_full",
            "1 while storage.dir counts as full (below storage.min_free_mb, or out of space).",
            1 if storage is not None and storage.full else 0,
        )
        yield _counter(
            "recorder_storage_full_events",
            "Times storage.dir became full.",
            storage.became_full if storage is not None else 0,
        )
        if storage is not None and storage.free_bytes is not None:
            yield _gauge(
                "recorder_storage_free_bytes",
                "Bytes free in storage.dir at the last measure.",
                storage.free_bytes,
            )
        controller = self.service.controller
        counters: Mapping[str, int] = controller.counters if controller is not None else {}
        skipped = CounterMetricFamily(
            "recorder_calls_storage_full",
            "Calls to record while storage was full: refused (503) or connected unrecorded.",
            labels=["action"],
        )
        skipped.add_metric(["rejected"], counters.get("storage_rejected", 0))
        skipped.add_metric(["unrecorded"], counters.get("storage_unrecorded", 0))
        yield skipped

    def _sip(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "recorder_sip_requests",
            "SIP requests by side, direction (in / out) and method.",
            labels=["side", "direction", "method"],
        )
        responses = CounterMetricFamily(
            "recorder_sip_responses",
            "SIP responses by side, direction (in / out), CSeq method and status.",
            labels=["side", "direction", "method", "status"],
        )
        errors = CounterMetricFamily(
            "recorder_sip_parse_errors",
            "Messages that could not be parsed, by side.",
            labels=["side"],
        )
        tls = CounterMetricFamily(
            "recorder_sip_tls_failures",
            "TLS handshakes that failed (inbound and towards next_hop), by side.",
            labels=["side"],
        )
        for side, endpoint in sorted(self.service.endpoints.items()):
            for (direction, method, status), count in sorted(endpoint.messages.items()):
                if status == 0:
                    requests.add_metric([side, direction, method], count)
                else:
                    responses.add_metric([side, direction, method, str(status)], count)
            errors.add_metric([side], endpoint.parse_errors)
            tls.add_metric([side], endpoint.tls_failures)
        yield requests
        yield responses
        yield errors
        yield tls

    def _purge(self) -> Iterator[Metric]:
        purged = CounterMetricFamily(
            "recorder_purge_deleted", "Items the retention purge deleted, by kind.", labels=["kind"]
        )
        for kind, count in sorted(self.service.purge_deleted.items()):
            purged.add_metric([kind], count)
        yield purged

    def _loop(self) -> Iterator[Metric]:
        lag = self.lag
        if lag is None:
            return
        yield HistogramMetricFamily(
            "recorder_event_loop_lag_seconds",
            f"How late the event loop woke up, measured every {lag.interval:g} s.",
            buckets=lag.cumulative(),
            sum_value=lag.sum,
        )
        yield _gauge(
            "recorder_event_loop_lag_last_seconds", "The last loop lag measured.", lag.last
        )


# --- the HTTP endpoint -------------------------------------------------------------------------

_HEAD_LIMIT: Final = 8192
_READ_TIMEOUT: Final = 5.0


class MetricsServer:
    """The /metrics listener; `address` is the bound one (port 0 resolved)."""

    def __init__(self, server: asyncio.Server, registry: CollectorRegistry) -> None:
        self.server = server
        self.registry = registry
        host, port = server.sockets[0].getsockname()[:2]
        self.address: Address = (str(host), int(port))

    async def aclose(self) -> None:
        self.server.close()
        await self.server.wait_closed()


def _response(status: str, content_type: str, body: bytes, *, head: bool = False) -> bytes:
    lines = [
        f"HTTP/1.1 {status}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("ascii") + (b"" if head else body)


def _answer(registry: CollectorRegistry, head: bytes) -> bytes:
    text = head.decode("latin-1")
    request_line, _, header_block = text.partition("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return _response("400 Bad Request", "text/plain", b"bad request\n")
    method, target, _ = parts
    if method not in ("GET", "HEAD"):
        return _response("405 Method Not Allowed", "text/plain", b"GET only\n")
    if target.split("?", 1)[0] != "/metrics":
        return _response("404 Not Found", "text/plain", b"see /metrics\n")
    accept = ""
    for line in header_block.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "accept":
            accept = value.strip()
    encoder, content_type = choose_encoder(accept)
    try:
        body = encoder(registry)
    except Exception:
        log.exception("metrics.collect_failed")
        return _response("500 Internal Server Error", "text/plain", b"collection failed\n")
    return _response("200 OK", content_type, body, head=method == "HEAD")


async def start_metrics_server(
    address: Address, collector: Collector, *, process_metrics: bool = True
) -> MetricsServer:
    """Serves `collector` (and the process_* metrics) on http://ADDRESS/metrics.

    One request per connection (`Connection: close`), which is what Prometheus does
    anyway; requests with a head over 8 KiB or slower than 5 s are dropped.
    """
    registry = CollectorRegistry()
    registry.register(collector)
    if process_metrics:
        ProcessCollector(registry=registry)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            writer.write(_answer(registry, head))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    host, port = address
    server = await asyncio.start_server(handle, host, port, limit=_HEAD_LIMIT)
    metrics = MetricsServer(server, registry)
    log.info("metrics.listening", address=f"{metrics.address[0]}:{metrics.address[1]}")
    return metrics
