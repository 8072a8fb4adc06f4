"""Media worker processes (issue 18): the wire, and real workers relaying real sockets.

The workers are real processes (`python -m recorder.media.worker`) given sockets the test's
pool bound, exactly as the service does; the parties are UDP sockets of this process.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import pytest

from recorder.media.ports import PortPool
from recorder.media.rtp import build_packet
from recorder.media.worker_wire import (
    CONTROL,
    HELD,
    MAX_MESSAGE,
    PACKETS,
    RECORD_HEAD,
    TAP,
    PacketBatch,
    control,
    read_control,
    records,
)
from recorder.media.workers import MediaWorkers, WorkerSession
from recorder.recording.timeline import RECORD
from tests.recorder.test_relay import HOST, Party, rtp

TIMEOUT = 10.0


# --- the wire, sans IO ---------------------------------------------------------------------


def test_batch_round_trips_records_and_splits_under_the_message_size() -> None:
    batch = PacketBatch()
    sent = [
        (n, n % 2, TAP if n % 3 else HELD, 1000.0 + n / 50, bytes([n % 256]) * 172)
        for n in range(900)
    ]
    for record in sent:
        batch.add(*record)
    messages = batch.take()
    assert len(messages) > 1 and all(len(m) <= MAX_MESSAGE for m in messages)
    assert all(m[0] == PACKETS for m in messages)
    assert [r for m in messages for r in records(m)] == sent
    assert not batch and batch.take() == []


def test_torn_records_are_refused() -> None:
    batch = PacketBatch()
    batch.add(7, 0, TAP, 1.5, b"x" * 20)
    (message,) = batch.take()
    with pytest.raises(ValueError, match="payload cut short"):
        list(records(message[:-1]))
    with pytest.raises(ValueError, match="header cut short"):
        list(records(message[: RECORD_HEAD.size - 2]))


def test_control_messages_round_trip() -> None:
    message = control("remote", 3, "a", ("127.0.0.1", 4000), None)
    assert message[0] == CONTROL
    assert read_control(message) == ("remote", 3, "a", ("127.0.0.1", 4000), None)
    with pytest.raises(ValueError):
        read_control(bytes((CONTROL,)) + b"\x80\x05K\x01.")  # a pickled 1, not a tuple


# --- real workers ----------------------------------------------------------------------------


class Rig:
    def __init__(self, workers: MediaWorkers, parties: list[Party], pool: PortPool) -> None:
        self.workers = workers
        self.parties = parties
        self.pool = pool
        self.lost: list[str] = []

    def call(self, call_id: str) -> tuple[WorkerSession, Party, Party]:
        """A call whose leg a faces parties[0] and leg b parties[1]... (two parties per call)."""
        session = self.workers.open(call_id)
        index = len([s for w in self.workers.live for s in w.sessions.values()]) - 1
        a, b = self.parties[2 * index], self.parties[2 * index + 1]
        session.set_remote("a", a.address, None)
        session.set_remote("b", b.address, None)
        return session, a, b


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    pool = PortPool(12600, 12799)
    party_pool = PortPool(12800, 12999)
    parties = [Party(party_pool.bind_pair(HOST), party_pool) for _ in range(8)]
    lost: list[str] = []
    workers = MediaWorkers(2, pool, HOST, on_lost=lost.append)
    await workers.start()
    rig = Rig(workers, parties, pool)
    rig.lost = lost
    try:
        yield rig
    finally:
        await workers.aclose()
        for party in parties:
            party.close()
        for worker in workers.workers:
            assert worker is None or worker.process.poll() is not None, "a worker outlived aclose"
    assert pool.allocated_count == 0, "ports leaked"


async def finished(session: WorkerSession) -> dict[str, dict[str, int]]:
    done: asyncio.Future[dict[str, dict[str, int]]] = asyncio.get_running_loop().create_future()
    session.finish(done.set_result)
    return await asyncio.wait_for(done, TIMEOUT)


async def test_calls_spread_over_workers_and_relay_both_ways_with_exact_counters(rig: Rig) -> None:
    one, a1, b1 = rig.call("call-1")
    two, a2, b2 = rig.call("call-2")
    assert one.worker is not two.worker  # least loaded first
    for seq in range(1, 21):
        a1.send_rtp(rtp(seq), one.local_port("a"))
        b2.send_rtp(rtp(seq, ssrc=0xB), two.local_port("b"))
        data, _ = await b1.next_rtp()
        assert data == rtp(seq)
        data, _ = await a2.next_rtp()
        assert data == rtp(seq, ssrc=0xB)
    stats = await finished(one)
    assert stats["a"]["rtp_packets"] == 20 and stats["a"]["rtp_forwarded"] == 20
    assert stats["b"]["rtp_packets"] == 0
    stats = await finished(two)
    assert stats["b"]["rtp_forwarded"] == 20


async def test_tap_notice_forwarding_and_the_fence(rig: Rig) -> None:
    session, a, b = rig.call("call-1")
    heard: list[tuple[bytes, float]] = []
    session.set_tap("a", lambda data, arrival: heard.append((data, arrival)))
    session.set_forwarding("a", False)  # the caller is not bridged during the notice
    await asyncio.sleep(0)  # the tap reaches the worker at the end of this loop iteration
    session.send_rtp("a", rtp(1, ssrc=0x5))  # the notice, to the caller
    data, _ = await a.next_rtp()
    assert data == rtp(1, ssrc=0x5)
    # The caller's packets reach the tap (not the callee), all of them by the fence.
    for seq in range(1, 31):
        a.send_rtp(rtp(seq), session.local_port("a"))
    await asyncio.wait_for(session.flushed(), TIMEOUT)
    while len(heard) < 30:  # sent on loopback before the fence, but maybe not yet read then
        await asyncio.wait_for(session.flushed(), TIMEOUT)
    assert [d for d, _ in heard] == [rtp(seq) for seq in range(1, 31)]
    loop_now = asyncio.get_running_loop().time()
    assert all(0 <= loop_now - at < TIMEOUT for _, at in heard)  # the shared monotonic clock
    assert b.rtp.empty()
    stats = await finished(session)
    assert stats["a"]["dropped_not_forwarded"] == 30 and stats["a"]["injected_rtp"] == 1


async def test_agent_filter_judges_only_its_payload_type(rig: Rig) -> None:
    session, a, b = rig.call("call-1")
    judged: list[bytes] = []

    def keep(data: bytes, _arrival: float) -> bool:
        judged.append(data)
        return data[12] != 0x0B  # swallow the events whose digit is 11 (#)

    session.set_filter("b", keep, payload_type=101)
    await asyncio.sleep(0)
    hash_key = build_packet(101, 1, 160, 0xB, bytes([0x0B, 0x0A, 0, 160]))
    star_key = build_packet(101, 2, 320, 0xB, bytes([0x0A, 0x0A, 0, 160]))
    b.send_rtp(rtp(1, ssrc=0xB), session.local_port("b"))
    b.send_rtp(hash_key, session.local_port("b"))
    b.send_rtp(star_key, session.local_port("b"))
    b.send_rtp(rtp(2, ssrc=0xB), session.local_port("b"))
    got = [(await a.next_rtp())[0] for _ in range(3)]
    assert sorted(got) == sorted([rtp(1, ssrc=0xB), star_key, rtp(2, ssrc=0xB)])
    assert judged == [hash_key, star_key]  # the audio was never sent to be judged
    stats = await finished(session)
    assert stats["b"]["dropped_filtered"] == 1 and stats["b"]["rtp_forwarded"] == 3


async def test_a_killed_worker_ends_its_calls_only_and_is_replaced(rig: Rig) -> None:
    one, _, _ = rig.call("call-1")
    two, a2, b2 = rig.call("call-2")
    victim = one.worker
    os.kill(victim.pid, signal.SIGKILL)
    await asyncio.wait_for(victim.gone, TIMEOUT)
    assert rig.lost == ["call-1"] and one.lost
    assert (await finished(one)) == {"a": {}, "b": {}}  # no counters came back: none made up
    assert rig.workers.deaths == 1 and rig.workers.calls_lost == 1
    # The other worker's call never noticed.
    a2.send_rtp(rtp(1), two.local_port("a"))
    assert (await b2.next_rtp())[0] == rtp(1)
    # A new worker took the slot, and takes calls.
    replacement = rig.workers.workers[victim.slot]
    assert replacement is not None and replacement is not victim
    await asyncio.wait_for(replacement.ready, TIMEOUT)
    assert rig.workers.restarts == 1
    three = rig.workers.open("call-3")
    assert three.worker is replacement
    await finished(two)
    await finished(three)
    assert rig.pool.allocated_count == 0  # the dead worker's ports went back at once


async def test_no_worker_left_refuses_new_calls(rig: Rig) -> None:
    rig.workers.restart_limit = 0
    for worker in list(rig.workers.live):
        os.kill(worker.pid, signal.SIGKILL)
        await asyncio.wait_for(worker.gone, TIMEOUT)
    assert rig.workers.workers == [None, None]
    with pytest.raises(RuntimeError, match="no media worker"):
        rig.workers.open("call-1")


async def test_a_recording_tap_takes_the_workers_packed_records_whole(rig: Rig) -> None:
    session, a, _b = rig.call("call-1")
    chunks: list[tuple[bytes, int]] = []
    one_by_one: list[bytes] = []

    def tap(data: bytes, _arrival: float) -> None:
        one_by_one.append(data)

    tap.record_channel = 1  # type: ignore[attr-defined]  # as RecordingHandle.tap(1)
    tap.append_records = lambda records, count: chunks.append((bytes(records), count))  # type: ignore[attr-defined]
    session.set_tap("a", tap)
    await asyncio.sleep(0)
    for seq in range(1, 13):
        a.send_rtp(rtp(seq), session.local_port("a"))
    while sum(count for _, count in chunks) < 12:
        await asyncio.wait_for(session.flushed(), TIMEOUT)
    assert one_by_one == []  # no Python call per packet on the service's side
    packed = b"".join(chunk for chunk, _ in chunks)
    got = []
    offset = 0
    while offset < len(packed):
        channel, _arrival, length = RECORD.unpack_from(packed, offset)
        offset += RECORD.size
        got.append((channel, packed[offset : offset + length]))
        offset += length
    assert got == [(1, rtp(seq)) for seq in range(1, 13)]
    await finished(session)


async def test_a_stuck_worker_is_killed_and_its_calls_ended() -> None:
    pool = PortPool(12600, 12799)
    lost: list[str] = []
    workers = MediaWorkers(2, pool, HOST, on_lost=lost.append, silence_limit=2.5)
    await workers.start()
    try:
        one = workers.open("call-1")
        two = workers.open("call-2")
        # Idle but healthy workers are not taken for stuck: their heartbeat goes on.
        await asyncio.sleep(4 * workers.silence_limit)
        assert workers.deaths == 0 and lost == []
        stuck = one.worker
        os.kill(stuck.pid, signal.SIGSTOP)  # its loop stops turning: no heartbeat
        await asyncio.wait_for(stuck.gone, TIMEOUT)
        assert lost == ["call-1"] and stuck.process.returncode == -signal.SIGKILL
        assert not two.lost and workers.deaths == 1
    finally:
        await workers.aclose()
    assert pool.allocated_count == 0
