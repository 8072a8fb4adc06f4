"""Port pool bookkeeping (pure) and binding of RTP/RTCP pairs (real sockets, no waiting)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from recorder.media.ports import PortPool, PortPoolExhausted, bind_rtp_pair

# 41000-41999 is reserved for the media tests; this file uses 41600-41699.
FIRST, LAST = 12600, 12699


def test_pairs_are_even_rtp_with_rtcp_inside_the_range() -> None:
    pool = PortPool(41000, 41009)
    ports = [pool.allocate() for _ in range(pool.capacity)]
    assert ports == [41000, 41002, 41004, 41006, 41008]
    odd_bounds = PortPool(41001, 41010)
    assert odd_bounds.capacity == 4  # 41002..41008; 41010 would need 41011
    assert odd_bounds.allocate() == 41002


@pytest.mark.parametrize(("first", "last"), [(0, 10), (10, 9), (41000, 70000), (41001, 41002)])
def test_invalid_ranges(first: int, last: int) -> None:
    with pytest.raises(ValueError):
        PortPool(first, last)


def test_exhaustion_is_a_clear_error() -> None:
    pool = PortPool(41000, 41003)
    pool.allocate()
    pool.allocate()
    assert pool.free_count == 0
    with pytest.raises(PortPoolExhausted, match="41000-41003 exhausted"):
        pool.allocate()


def test_release_errors() -> None:
    pool = PortPool(41000, 41009)
    port = pool.allocate()
    pool.release(port)
    with pytest.raises(ValueError, match="not allocated"):
        pool.release(port)
    with pytest.raises(ValueError, match="not in this pool"):
        pool.release(41001)


def test_released_ports_are_reused_last() -> None:
    pool = PortPool(41000, 41005)  # 41000, 41002, 41004
    first = pool.allocate()
    pool.release(first)
    assert [pool.allocate() for _ in range(3)] == [41002, 41004, 41000]


def test_pool_is_full_after_200_call_cycles() -> None:
    pool = PortPool(41000, 41099)
    live_calls: list[tuple[int, int]] = []
    for call in range(200):
        live_calls.append((pool.allocate(), pool.allocate()))
        if len(live_calls) > 10 + call % 7:  # calls overlap and end out of step
            for a_port, b_port in live_calls[:3]:
                pool.release(a_port)
                pool.release(b_port)
            del live_calls[:3]
        allocated = [port for call_ports in live_calls for port in call_ports]
        assert len(set(allocated)) == len(allocated)
        assert pool.free_count == pool.capacity - len(allocated)
    for a_port, b_port in live_calls:
        pool.release(a_port)
        pool.release(b_port)
    assert pool.free_count == pool.capacity == 50
    assert pool.allocated_count == 0
    assert sorted(pool.allocate() for _ in range(50)) == list(range(41000, 41099, 2))


# --- binding ---------------------------------------------------------------


@pytest.fixture
def pool() -> Iterator[PortPool]:
    pool = PortPool(FIRST, LAST)
    yield pool
    assert pool.allocated_count == 0, "a test leaked a port"


def occupy(port: int) -> socket.socket:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", port))
    return blocker


def test_bind_pair_binds_rtp_and_rtcp(pool: PortPool) -> None:
    pair = pool.bind_pair("127.0.0.1")
    try:
        assert pair.rtp.getsockname() == ("127.0.0.1", pair.rtp_port)
        assert pair.rtcp.getsockname() == ("127.0.0.1", pair.rtp_port + 1)
        assert pair.rtcp_port == pair.rtp_port + 1
        assert pair.rtp_port % 2 == 0
        assert not pair.rtp.getblocking()
        assert not pair.rtcp.getblocking()
    finally:
        pool.release_pair(pair)
    assert pair.rtp.fileno() == -1
    assert pair.rtcp.fileno() == -1


@pytest.mark.parametrize("busy_offset", [0, 1], ids=["rtp-busy", "rtcp-busy"])
def test_bind_pair_skips_ports_in_use(pool: PortPool, busy_offset: int) -> None:
    blocker = occupy(FIRST + busy_offset)
    try:
        pair = pool.bind_pair("127.0.0.1")
        try:
            assert pair.rtp_port != FIRST
            assert pool.bind_conflicts >= 1
            # The busy port went back to the pool, not out of it.
            assert pool.free_count == pool.capacity - 1
        finally:
            pool.release_pair(pair)
    finally:
        blocker.close()


def test_bind_pair_exhausted_when_every_port_is_busy() -> None:
    pool = PortPool(FIRST, FIRST + 3)
    blockers = [occupy(FIRST), occupy(FIRST + 3)]
    try:
        with pytest.raises(PortPoolExhausted, match="busy"):
            pool.bind_pair("127.0.0.1")
        assert pool.free_count == pool.capacity == 2
    finally:
        for blocker in blockers:
            blocker.close()


def test_bind_rtp_pair_leaves_nothing_open_on_failure() -> None:
    blocker = occupy(FIRST + 1)
    try:
        with pytest.raises(OSError):
            bind_rtp_pair("127.0.0.1", FIRST)
    finally:
        blocker.close()
    # Had the RTP socket stayed open, this would fail with EADDRINUSE.
    rtp, rtcp = bind_rtp_pair("127.0.0.1", FIRST)
    rtp.close()
    rtcp.close()


def test_bind_pair_rejects_host_names_and_foreign_addresses(pool: PortPool) -> None:
    with pytest.raises(ValueError, match="IP address"):
        pool.bind_pair("localhost")
    with pytest.raises(OSError):
        pool.bind_pair("192.0.2.1")  # TEST-NET-1: not an address of this machine
    assert pool.free_count == pool.capacity
