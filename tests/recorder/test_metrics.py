"""The metrics collector against a stand-in service, the loop-lag monitor, the /metrics server."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client.registry import CollectorRegistry

from recorder.media.rtp import build_packet
from recorder.media.stats import LegStats
from recorder.ops.metrics import (
    LoopLagMonitor,
    MediaTotals,
    RecorderCollector,
    start_metrics_server,
)

# --- a stand-in service with the shape RecorderCollector reads ----------------------------------


@dataclass
class FakeLeg:
    stats: LegStats = field(default_factory=LegStats)


@dataclass
class FakeSession:
    leg_a: FakeLeg = field(default_factory=FakeLeg)
    leg_b: FakeLeg = field(default_factory=FakeLeg)

    def stats(self) -> dict[str, dict[str, Any]]:
        return {"a": self.leg_a.stats.as_dict(), "b": self.leg_b.stats.as_dict()}


@dataclass
class FakeAnchor:
    session: FakeSession = field(default_factory=FakeSession)


@dataclass
class FakeCall:
    direction: str
    media: object = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeB2bua:
    calls: dict[str, FakeCall] = field(default_factory=dict)
    counters: dict[str, int] = field(
        default_factory=lambda: {
            "calls": 0,
            "rejected": 0,
            "answered": 0,
            "failed": 0,
            "bad_requests": 0,
        }
    )
    accepting: bool = True


@dataclass
class FakeController:
    counters: dict[str, int] = field(
        default_factory=lambda: {"refused": 0, "accepted": 0, "notices": 0, "recorded": 0}
    )
    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)
    consents: Counter[tuple[str, str]] = field(default_factory=Counter)


@dataclass
class FakePool:
    capacity: int = 10
    allocated_count: int = 0

    @property
    def free_count(self) -> int:
        return self.capacity - self.allocated_count


@dataclass
class FakeWriter:
    values: dict[str, int] = field(default_factory=dict)

    def stats(self) -> Mapping[str, int]:
        return self.values


@dataclass
class FakeEndpoint:
    messages: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    parse_errors: int = 0
    tls_failures: int = 0


@dataclass
class FakeStorage:
    full: bool = False
    free_bytes: int | None = None
    became_full: int = 0


@dataclass
class FakeCallLog:
    journal_pending: int = 0
    outages: int = 0
    replayed: int = 0
    rejected: int = 0
    failures: int = 0


@dataclass
class FakeService:
    b2bua: FakeB2bua | None = field(default_factory=FakeB2bua)
    controller: FakeController | None = field(default_factory=FakeController)
    pool: FakePool = field(default_factory=FakePool)
    writer: FakeWriter | None = field(default_factory=FakeWriter)
    endpoints: dict[str, FakeEndpoint] = field(
        default_factory=lambda: {"external": FakeEndpoint(), "internal": FakeEndpoint()}
    )
    media_totals: MediaTotals = field(default_factory=MediaTotals)
    purge_deleted: Counter[str] = field(default_factory=Counter)
    storage: FakeStorage | None = None
    call_log: FakeCallLog | None = None
    media: FakePlane | None = None


@dataclass
class FakeWorkers:
    deaths: int = 1
    restarts: int = 1
    calls_lost: int = 3
    live: list[object] = field(default_factory=lambda: [object(), object()])

    def calls_per_worker(self) -> list[int]:
        return [4, 5]


@dataclass
class FakePlane:
    workers: FakeWorkers | None = field(default_factory=FakeWorkers)


def scrape(service: FakeService, lag: LoopLagMonitor | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(RecorderCollector(service, lag))
    return registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def rtp(seq: int, ssrc: int = 0xA) -> bytes:
    return build_packet(0, seq, seq * 160, ssrc, b"\xff" * 160)


def feed(stats: LegStats, seqs: list[int], forwarded: bool = True) -> None:
    for seq in seqs:
        assert stats.on_rtp(rtp(seq), 0.02 * seq)
        if forwarded:
            stats.rtp_forwarded += 1


# --- calls, consent, recordings, SIP -----------------------------------------------------------


def test_a_service_not_started_yet_reads_as_zero() -> None:
    service = FakeService(b2bua=None, controller=None, writer=None, endpoints={})
    registry = scrape(service)
    assert value(registry, "recorder_active_calls") == 0
    assert value(registry, "recorder_accepting_calls") == 0
    assert value(registry, "recorder_calls_received_total") == 0
    assert value(registry, "recorder_rtp_packets_relayed_total") == 0
    assert value(registry, "recorder_recordings_total", outcome="complete") == 0
    assert value(registry, "recorder_media_port_pairs", state="free") == 10
    # No loop-lag monitor given: no loop-lag family.
    assert value(registry, "recorder_event_loop_lag_seconds_count") is None


def test_calls_decisions_and_consent_outcomes() -> None:
    service = FakeService()
    assert service.b2bua is not None and service.controller is not None
    b2bua, controller = service.b2bua, service.controller
    b2bua.calls = {"c1": FakeCall("inbound"), "c2": FakeCall("inbound"), "c3": FakeCall("outbound")}
    b2bua.counters.update(calls=7, rejected=2, answered=5, failed=1, bad_requests=3)
    b2bua.accepting = False
    controller.decisions.update({("inbound", "record"): 4, ("outbound", "no_record"): 3})
    controller.consents.update({("accepted", "timeout"): 3, ("refused", "rfc4733"): 1})
    controller.counters.update(notices=4, recorded=3)
    registry = scrape(service)
    assert value(registry, "recorder_active_calls") == 3
    assert value(registry, "recorder_accepting_calls") == 0
    assert value(registry, "recorder_active_calls_by_direction", direction="inbound") == 2
    assert value(registry, "recorder_active_calls_by_direction", direction="outbound") == 1
    assert value(registry, "recorder_calls_received_total") == 7
    assert value(registry, "recorder_calls_rejected_total") == 2
    assert value(registry, "recorder_calls_answered_total") == 5
    assert value(registry, "recorder_calls_failed_total") == 1
    assert value(registry, "recorder_sip_bad_requests_total") == 3
    assert value(registry, "recorder_calls_total", direction="inbound", decision="record") == 4
    assert value(registry, "recorder_calls_total", direction="outbound", decision="no_record") == 3
    assert (
        value(registry, "recorder_calls_total", direction="inbound", decision="no_record") is None
    )
    assert value(registry, "recorder_consent_total", outcome="accepted", method="timeout") == 3
    assert value(registry, "recorder_consent_total", outcome="refused", method="rfc4733") == 1
    assert value(registry, "recorder_notices_played_total") == 4
    assert value(registry, "recorder_recordings_started_total") == 3


def test_recordings_from_the_writer_stats() -> None:
    service = FakeService(
        writer=FakeWriter(
            {
                "calls": 2,
                "bytes_sent": 999,
                "buffered_bytes": 512,
                "max_buffered_bytes": 4096,
                "dropped_packets": 6,
                "dropped_batches": 1,
                "restarts": 1,
                "recordings_complete": 8,
                "recordings_failed": 2,
                "files_complete": 8,
                "files_interrupted": 3,
                "bytes_written": 1_234_567,
            }
        )
    )
    registry = scrape(service)
    assert value(registry, "recorder_recordings_total", outcome="complete") == 8
    assert value(registry, "recorder_recordings_total", outcome="failed") == 2
    assert value(registry, "recorder_recording_files_total", state="complete") == 8
    assert value(registry, "recorder_recording_files_total", state="interrupted") == 3
    assert value(registry, "recorder_recording_bytes_written_total") == 1_234_567
    assert value(registry, "recorder_recordings_open") == 2
    assert value(registry, "recorder_recording_packets_dropped_total") == 6
    assert value(registry, "recorder_writer_buffered_bytes") == 512
    assert value(registry, "recorder_writer_restarts_total") == 1


def test_full_disk_truncations_state_and_calls() -> None:
    service = FakeService(
        writer=FakeWriter({"files_truncated": 3, "recordings_truncated": 2}),
        storage=FakeStorage(full=True, free_bytes=4096, became_full=1),
    )
    assert service.controller is not None
    service.controller.counters.update(storage_rejected=4, storage_unrecorded=5)
    registry = scrape(service)
    assert value(registry, "recorder_recording_files_total", state="truncated") == 3
    assert value(registry, "recorder_recordings_truncated_total") == 2
    assert value(registry, "recorder_storage_full") == 1
    assert value(registry, "recorder_storage_free_bytes") == 4096
    assert value(registry, "recorder_storage_full_events_total") == 1
    assert value(registry, "recorder_calls_storage_full_total", action="rejected") == 4
    assert value(registry, "recorder_calls_storage_full_total", action="unrecorded") == 5
    # Not measured yet: no free-bytes sample rather than a made-up one.
    registry = scrape(FakeService())
    assert value(registry, "recorder_storage_full") == 0
    assert value(registry, "recorder_storage_free_bytes") is None


def test_catalog_outage_and_journal() -> None:
    """Issue 20: while the catalog is away its writes wait in the journal, and it shows."""
    service = FakeService(call_log=FakeCallLog(journal_pending=7, outages=2, replayed=11))
    registry = scrape(service)
    assert value(registry, "recorder_catalog_available") == 0
    assert value(registry, "recorder_catalog_journal_entries") == 7
    assert value(registry, "recorder_catalog_outages_total") == 2
    assert value(registry, "recorder_catalog_journal_replayed_total") == 11
    assert value(registry, "recorder_catalog_journal_rejected_total") == 0
    registry = scrape(FakeService(call_log=FakeCallLog(replayed=11)))
    assert value(registry, "recorder_catalog_available") == 1
    # Before the service has a call log (still starting): no made-up figures.
    assert value(scrape(FakeService()), "recorder_catalog_available") is None


def test_sip_messages_by_side_direction_method_status() -> None:
    service = FakeService()
    external = service.endpoints["external"]
    external.messages.update(
        {
            ("in", "INVITE", 0): 2,
            ("out", "INVITE", 100): 2,
            ("out", "INVITE", 200): 1,
            ("out", "INVITE", 503): 1,
            ("in", "ACK", 0): 1,
        }
    )
    external.parse_errors = 4
    external.tls_failures = 2
    service.endpoints["internal"].messages[("out", "BYE", 0)] = 1
    registry = scrape(service)
    labels = {"side": "external", "direction": "in"}
    assert value(registry, "recorder_sip_requests_total", method="INVITE", **labels) == 2
    assert value(registry, "recorder_sip_requests_total", method="ACK", **labels) == 1
    out = {"side": "external", "direction": "out", "method": "INVITE"}
    assert value(registry, "recorder_sip_responses_total", status="200", **out) == 1
    assert value(registry, "recorder_sip_responses_total", status="503", **out) == 1
    # A request is never shown as a response with status "0".
    assert (
        value(registry, "recorder_sip_responses_total", status="0", **labels, method="ACK") is None
    )
    internal = {"side": "internal", "direction": "out", "method": "BYE"}
    assert value(registry, "recorder_sip_requests_total", **internal) == 1
    assert value(registry, "recorder_sip_parse_errors_total", side="external") == 4
    assert value(registry, "recorder_sip_parse_errors_total", side="internal") == 0
    assert value(registry, "recorder_sip_tls_failures_total", side="external") == 2
    assert value(registry, "recorder_sip_tls_failures_total", side="internal") == 0


def test_purge_deletions_and_port_pool() -> None:
    service = FakeService(pool=FakePool(capacity=16, allocated_count=6))
    service.purge_deleted.update(recordings=5, calls=2)
    registry = scrape(service)
    assert value(registry, "recorder_purge_deleted_total", kind="recordings") == 5
    assert value(registry, "recorder_purge_deleted_total", kind="calls") == 2
    assert value(registry, "recorder_media_port_pairs", state="allocated") == 6
    assert value(registry, "recorder_media_port_pairs", state="free") == 10
    assert value(registry, "recorder_media_port_pairs_capacity") == 16


# --- RTP: live calls plus the running total of ended ones --------------------------------------


def test_rtp_counts_sum_live_calls_and_survive_the_call_end() -> None:
    service = FakeService()
    assert service.b2bua is not None
    anchor = FakeAnchor()
    feed(anchor.session.leg_a.stats, [1, 2, 4, 5])  # 3 missing
    feed(anchor.session.leg_b.stats, [10, 11, 12], forwarded=False)
    anchor.session.leg_b.stats.dropped_not_forwarded += 3
    anchor.session.leg_a.stats.dropped_wrong_source += 2
    anchor.session.leg_a.stats.injected_rtp += 50
    anchor.session.leg_b.stats.dropped_filtered += 5
    call = FakeCall("inbound", anchor)
    service.b2bua.calls["c1"] = call
    # A call whose media the relay does not anchor counts for nothing.
    service.b2bua.calls["c2"] = FakeCall("outbound", None)

    def rtp_counts() -> dict[str, float | None]:
        registry = scrape(service)
        return {
            "received": value(registry, "recorder_rtp_packets_received_total"),
            "relayed": value(registry, "recorder_rtp_packets_relayed_total"),
            "injected": value(registry, "recorder_rtp_packets_injected_total"),
            "lost": value(registry, "recorder_rtp_packets_lost_total"),
            "wrong_source": value(
                registry, "recorder_rtp_packets_dropped_total", reason="wrong_source"
            ),
            "not_forwarded": value(
                registry, "recorder_rtp_packets_dropped_total", reason="not_forwarded"
            ),
            "send_failed": value(
                registry, "recorder_rtp_packets_dropped_total", reason="send_failed"
            ),
            "filtered": value(registry, "recorder_rtp_packets_dropped_total", reason="filtered"),
        }

    live = rtp_counts()
    assert live == {
        "received": 7,
        "relayed": 4,
        "injected": 50,
        "lost": 1,
        "wrong_source": 2,
        "not_forwarded": 3,
        "send_failed": 0,
        "filtered": 5,
    }
    # What B2bua._end_call does: stats into call.info, media gone, call gone, callback.
    call.info["media_stats"] = anchor.session.stats()
    call.media = None
    del service.b2bua.calls["c1"]
    service.media_totals.call_ended(call)
    assert rtp_counts() == live
    assert service.media_totals.calls == 1

    second = FakeAnchor()
    feed(second.session.leg_a.stats, [100, 101])
    service.b2bua.calls["c3"] = FakeCall("inbound", second)
    after = rtp_counts()
    assert after["received"] == 9 and after["relayed"] == 6 and after["lost"] == 1


def test_ended_call_without_media_adds_nothing() -> None:
    totals = MediaTotals()
    totals.call_ended(FakeCall("inbound"))
    totals.add({"a": {"rtp_packets": None, "rtp_forwarded": "x", "rtp_lost": 2}})
    assert totals.calls == 1
    assert totals.totals["rtp_lost"] == 2
    assert totals.totals["rtp_packets"] == 0 and totals.totals["rtp_forwarded"] == 0


# --- event-loop lag ----------------------------------------------------------------------------


def test_lag_histogram_buckets_are_cumulative() -> None:
    monitor = LoopLagMonitor(buckets=(0.01, 0.1, 1.0))
    for lag in (0.0, 0.005, 0.01, 0.05, 0.5, 3.0, -0.001):
        monitor.record(lag)
    assert monitor.cumulative() == [
        ("0.01", 4.0),  # 0, 0.005, 0.01 (le is inclusive) and the negative one, read as 0
        ("0.1", 5.0),
        ("1.0", 6.0),
        ("+Inf", 7.0),
    ]
    assert monitor.last == 0.0 and monitor.max == 3.0
    assert monitor.sum == pytest.approx(3.565)
    registry = scrape(FakeService(), monitor)
    assert value(registry, "recorder_event_loop_lag_seconds_bucket", le="0.1") == 5
    assert value(registry, "recorder_event_loop_lag_seconds_bucket", le="+Inf") == 7
    assert value(registry, "recorder_event_loop_lag_seconds_count") == 7
    assert value(registry, "recorder_event_loop_lag_seconds_sum") == pytest.approx(3.565)
    assert value(registry, "recorder_event_loop_lag_last_seconds") == 0.0


async def test_lag_is_the_overshoot_of_each_sleep() -> None:
    now = [100.0]
    overshoots = iter([0.0, 0.002, 0.3])

    class Done(Exception):
        pass

    async def sleep(seconds: float) -> None:
        try:
            now[0] += seconds + next(overshoots)
        except StopIteration:
            raise Done from None

    monitor = LoopLagMonitor(0.5, clock=lambda: now[0], sleep=sleep)
    with pytest.raises(Done):
        await monitor.run()
    assert monitor.count == 3
    assert monitor.last == pytest.approx(0.3)
    assert monitor.sum == pytest.approx(0.302)


async def test_lag_monitor_measures_a_blocked_loop() -> None:
    monitor = LoopLagMonitor(0.01)
    monitor.start()
    monitor.start()  # idempotent: still one task
    while monitor.count == 0:
        await asyncio.sleep(0.005)
    # Block the loop past the next wake-up: that measurement must show it.
    seen = monitor.count
    blocked_until = asyncio.get_running_loop().time() + 0.1
    while asyncio.get_running_loop().time() < blocked_until:
        pass
    while monitor.count == seen:
        await asyncio.sleep(0.005)
    await monitor.stop()
    assert monitor.max >= 0.05
    count = monitor.count
    await asyncio.sleep(0.03)
    assert monitor.count == count  # stopped
    await monitor.stop()  # idempotent


def test_lag_monitor_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        LoopLagMonitor(0)
    with pytest.raises(ValueError):
        LoopLagMonitor(buckets=(1.0, 0.1))


# --- the /metrics endpoint ---------------------------------------------------------------------


async def http(address: tuple[str, int], request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(request)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, val = line.partition(":")
        headers[name.strip().lower()] = val.strip()
    return int(lines[0].split(" ")[1]), headers, body


async def test_server_serves_the_collector_over_http() -> None:
    service = FakeService()
    assert service.b2bua is not None
    service.b2bua.calls["c1"] = FakeCall("inbound")
    server = await start_metrics_server(("127.0.0.1", 0), RecorderCollector(service))
    try:
        assert server.address[1] > 0
        get = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        status, headers, body = await http(server.address, get)
        assert status == 200
        assert headers["content-type"].startswith("text/plain")
        assert int(headers["content-length"]) == len(body)
        text = body.decode()
        assert "recorder_active_calls 1.0" in text
        assert "process_resident_memory_bytes" in text
        # Read at scrape time: a change shows in the next scrape without any update call.
        service.b2bua.calls["c2"] = FakeCall("outbound")
        _, _, body = await http(server.address, get)
        assert "recorder_active_calls 2.0" in body.decode()

        status, headers, body = await http(
            server.address,
            b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
        )
        assert status == 200 and headers["content-type"].startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")

        status, headers, body = await http(server.address, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
        status, _, _ = await http(server.address, b"GET / HTTP/1.1\r\n\r\n")
        assert status == 404
        status, _, _ = await http(server.address, b"POST /metrics HTTP/1.1\r\n\r\n")
        assert status == 405
        status, _, _ = await http(server.address, b"nonsense\r\n\r\n")
        assert status == 400
    finally:
        await server.aclose()
    with pytest.raises(OSError):
        await asyncio.open_connection(*server.address)


async def test_a_failing_collection_answers_500_and_the_server_lives_on() -> None:
    service = FakeService()
    broken = FakeService()
    broken.endpoints = None  # type: ignore[assignment]
    collector = RecorderCollector(broken)
    server = await start_metrics_server(("127.0.0.1", 0), collector, process_metrics=False)
    try:
        status, _, _ = await http(server.address, b"GET /metrics HTTP/1.0\r\n\r\n")
        assert status == 500
        collector.service = service
        status, _, body = await http(server.address, b"GET /metrics HTTP/1.0\r\n\r\n")
        assert status == 200 and b"recorder_active_calls 0.0" in body
        assert b"process_" not in body
    finally:
        await server.aclose()


def test_media_worker_metrics_issue_18() -> None:
    registry = scrape(FakeService(media=FakePlane()))
    assert registry.get_sample_value("recorder_media_workers") == 2
    assert registry.get_sample_value("recorder_media_worker_calls", {"worker": "1"}) == 5
    assert registry.get_sample_value("recorder_media_worker_deaths_total") == 1
    assert registry.get_sample_value("recorder_media_worker_restarts_total") == 1
    assert registry.get_sample_value("recorder_media_calls_lost_total") == 3
    # workers = 0: the service's loop relays, and no worker metric is made up
    plain = scrape(FakeService(media=FakePlane(workers=None)))
    assert plain.get_sample_value("recorder_media_workers") is None
