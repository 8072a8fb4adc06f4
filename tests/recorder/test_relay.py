"""The relay over real UDP sockets on 127.0.0.1, on the default loop and on uvloop.

Relay ports come from 12000-12399, the fake parties' ports from 12400-12599 (below the
ephemeral range, so that no socket bound to port 0 collides with them).
Nothing sleeps: a test that must show a packet was *not* delivered sends a
packet that must be delivered after it on the same socket, and waits for
that one (the relay handles one socket's datagrams in order).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from recorder.media.ports import PortPool, PortPoolExhausted, RtpSocketPair, bind_rtp_pair
from recorder.media.relay import MediaSession
from recorder.media.rtp import build_packet

HOST = "127.0.0.1"
TIMEOUT = 2.0
Received = tuple[bytes, tuple[Any, ...]]


class Party:
    """A fake phone: an RTP+RTCP socket pair whose datagrams land in queues."""

    def __init__(self, sockets: RtpSocketPair, pool: PortPool) -> None:
        self._sockets = sockets
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self.rtp: asyncio.Queue[Received] = asyncio.Queue()
        self.rtcp: asyncio.Queue[Received] = asyncio.Queue()
        self._loop.add_reader(sockets.rtp.fileno(), self._drain, sockets.rtp, self.rtp)
        self._loop.add_reader(sockets.rtcp.fileno(), self._drain, sockets.rtcp, self.rtcp)

    @staticmethod
    def _drain(sock: Any, queue: asyncio.Queue[Received]) -> None:
        while True:
            try:
                queue.put_nowait(sock.recvfrom(2048))
            except BlockingIOError:
                return

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self._sockets.rtp_port)

    @property
    def rtcp_address(self) -> tuple[str, int]:
        return (HOST, self._sockets.rtcp_port)

    def send_rtp(self, data: bytes, port: int) -> None:
        self._sockets.rtp.sendto(data, (HOST, port))

    def send_rtcp(self, data: bytes, port: int) -> None:
        self._sockets.rtcp.sendto(data, (HOST, port))

    async def next_rtp(self) -> Received:
        return await asyncio.wait_for(self.rtp.get(), TIMEOUT)

    async def next_rtcp(self) -> Received:
        return await asyncio.wait_for(self.rtcp.get(), TIMEOUT)

    def close(self) -> None:
        self._loop.remove_reader(self._sockets.rtp.fileno())
        self._loop.remove_reader(self._sockets.rtcp.fileno())
        self._pool.release_pair(self._sockets)


class Harness:
    """What every relay test starts from: a relay pool, four fake parties, a session."""

    def __init__(self) -> None:
        self.pool = PortPool(12000, 12399)
        self._party_pool = PortPool(12400, 12599)
        self.parties = [Party(self._party_pool.bind_pair(HOST), self._party_pool) for _ in range(4)]
        self._session: MediaSession | None = None

    @property
    def session(self) -> MediaSession:
        if self._session is None:
            self._session = MediaSession(self.pool, HOST, HOST)
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        for party in self.parties:
            party.close()


RelayTest = Callable[[Harness], Coroutine[Any, Any, None]]
LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def on_both_loops(test: RelayTest) -> Callable[[str], None]:
    """Run an async test once on the default loop and once on uvloop.

    Done here rather than through pytest-asyncio, whose per-test loop choice
    needs a conftest hook and whose `event_loop_policy` override is deprecated.
    """

    @pytest.mark.parametrize("loop_name", list(LOOP_FACTORIES))
    def run(loop_name: str) -> None:
        async def main() -> None:
            harness = Harness()
            try:
                await test(harness)
            finally:
                harness.close()
            assert harness.pool.free_count == harness.pool.capacity, "ports leaked"

        with asyncio.Runner(loop_factory=LOOP_FACTORIES[loop_name]) as runner:
            runner.run(main())

    run.__name__ = test.__name__
    run.__qualname__ = test.__qualname__
    run.__doc__ = test.__doc__
    return run


def rtp(seq: int, ssrc: int = 0xA, size: int = 160) -> bytes:
    return build_packet(0, seq, seq * 160, ssrc, bytes([seq & 0xFF]) * size)


RTCP_RR = bytes.fromhex("81C9 0007 0000000A") + bytes(24)


@on_both_loops
async def test_relays_both_ways_and_counts(h: Harness) -> None:
    session, parties = h.session, h.parties
    caller, callee = parties[0], parties[1]
    a, b = session.leg_a, session.leg_b
    a.set_remote(caller.address)
    b.set_remote(callee.address)
    sent_a = [rtp(seq, ssrc=1) for seq in range(20)]
    sent_b = [rtp(seq, ssrc=2, size=80) for seq in range(1000, 1015)]
    for packet in sent_a:
        caller.send_rtp(packet, a.local_rtp_port)
    for packet in sent_b:
        callee.send_rtp(packet, b.local_rtp_port)

    got_b = [await callee.next_rtp() for _ in sent_a]
    got_a = [await caller.next_rtp() for _ in sent_b]

    assert [data for data, _ in got_b] == sent_a
    assert [data for data, _ in got_a] == sent_b
    # Each party only ever sees the relay's socket that faces it.
    assert {source for _, source in got_b} == {(HOST, b.local_rtp_port)}
    assert {source for _, source in got_a} == {(HOST, a.local_rtp_port)}
    assert a.latched_rtp == caller.address
    assert b.latched_rtp == callee.address
    assert (a.stats.rtp_packets, a.stats.rtp_forwarded) == (20, 20)
    assert a.stats.rtp_bytes == sum(len(packet) for packet in sent_a)
    assert (b.stats.rtp_packets, b.stats.rtp_forwarded) == (15, 15)
    assert b.stats.rtp_bytes == sum(len(packet) for packet in sent_b)
    for leg in (a, b):
        assert leg.stats.lost == 0
        assert leg.stats.dropped_wrong_source == leg.stats.dropped_malformed == 0


@on_both_loops
async def test_rtcp_defaults_to_rtp_port_plus_one(h: Harness) -> None:
    session, parties = h.session, h.parties
    caller, callee = parties[0], parties[1]
    a, b = session.leg_a, session.leg_b
    a.set_remote(caller.address)  # RTCP implied: caller's RTP port + 1
    b.set_remote(callee.address, callee.rtcp_address)
    assert a.remote_rtcp == caller.rtcp_address

    caller.send_rtcp(RTCP_RR, a.local_rtcp_port)
    data, source = await callee.next_rtcp()
    assert (data, source) == (RTCP_RR, (HOST, b.local_rtcp_port))
    callee.send_rtcp(b"\x01" + RTCP_RR[1:], b.local_rtcp_port)  # malformed: V=0
    callee.send_rtcp(RTCP_RR, b.local_rtcp_port)
    data, source = await caller.next_rtcp()
    assert (data, source) == (RTCP_RR, (HOST, a.local_rtcp_port))
    assert caller.rtcp.empty()
    assert (a.stats.rtcp_packets, a.stats.rtcp_forwarded) == (1, 1)
    assert (b.stats.rtcp_packets, b.stats.dropped_malformed) == (1, 1)
    assert a.latched_rtcp == caller.rtcp_address
    # RTCP does not go out of the RTP sockets.
    assert caller.rtp.empty()
    assert callee.rtp.empty()


@on_both_loops
async def test_latching_drops_other_sources_and_answers_the_latched_one(h: Harness) -> None:
    session, parties = h.session, h.parties
    caller_sdp, caller_nat, callee, intruder = parties
    a, b = session.leg_a, session.leg_b
    a.set_remote(caller_sdp.address)
    b.set_remote(callee.address)

    # Before the caller has sent anything, its audio goes where its SDP says.
    callee.send_rtp(rtp(1, ssrc=2), b.local_rtp_port)
    assert (await caller_sdp.next_rtp())[0] == rtp(1, ssrc=2)

    # The caller's packets really come from a NAT mapping: latch onto that.
    caller_nat.send_rtp(rtp(1), a.local_rtp_port)
    assert (await callee.next_rtp())[0] == rtp(1)
    assert a.latched_rtp == caller_nat.address

    intruder.send_rtp(rtp(99, ssrc=0xBAD), a.local_rtp_port)
    intruder.send_rtp(rtp(100, ssrc=0xBAD), a.local_rtp_port)
    caller_sdp.send_rtp(rtp(101, ssrc=0xBAD), a.local_rtp_port)
    caller_nat.send_rtp(rtp(2), a.local_rtp_port)
    assert (await callee.next_rtp())[0] == rtp(2)
    assert callee.rtp.empty()
    assert a.stats.dropped_wrong_source == 3
    assert (a.stats.rtp_packets, a.stats.rtp_forwarded) == (2, 2)

    # Replies follow the latch, not the SDP.
    callee.send_rtp(rtp(2, ssrc=2), b.local_rtp_port)
    assert (await caller_nat.next_rtp())[0] == rtp(2, ssrc=2)
    assert caller_sdp.rtp.empty()


@on_both_loops
async def test_set_remote_reopens_latching(h: Harness) -> None:
    session, parties = h.session, h.parties
    old, new, callee = parties[0], parties[1], parties[2]
    a, b = session.leg_a, session.leg_b
    a.set_remote(old.address)
    b.set_remote(callee.address)
    old.send_rtp(rtp(1), a.local_rtp_port)
    await callee.next_rtp()
    assert a.latched_rtp == old.address

    a.set_remote(new.address)  # re-INVITE: the caller moved
    assert a.latched_rtp is None
    assert a.rtp_destination == new.address
    new.send_rtp(rtp(2), a.local_rtp_port)
    assert (await callee.next_rtp())[0] == rtp(2)
    assert a.latched_rtp == new.address

    old.send_rtp(rtp(3), a.local_rtp_port)
    new.send_rtp(rtp(4), a.local_rtp_port)
    assert (await callee.next_rtp())[0] == rtp(4)
    assert callee.rtp.empty()
    assert a.stats.dropped_wrong_source == 1
    callee.send_rtp(rtp(1, ssrc=2), b.local_rtp_port)
    assert (await new.next_rtp())[0] == rtp(1, ssrc=2)


@on_both_loops
async def test_sequence_gaps_are_counted(h: Harness) -> None:
    session, parties = h.session, h.parties
    caller, callee = parties[0], parties[1]
    a = session.leg_a
    a.set_remote(caller.address)
    session.leg_b.set_remote(callee.address)
    sequence = [65530, 65531, 65533, 65534, 1, 2, 6]  # 65532, 65535, 0, 3, 4, 5 missing
    for seq in sequence:
        caller.send_rtp(rtp(seq), a.local_rtp_port)
    for _ in sequence:
        await callee.next_rtp()
    assert a.stats.lost == 6
    assert a.stats.rtp_packets == a.stats.rtp_forwarded == len(sequence)
    assert session.stats()["a"]["rtp_lost"] == 6


@on_both_loops
async def test_malformed_packets_are_dropped_and_do_not_latch(h: Harness) -> None:
    session, parties = h.session, h.parties
    garbage_sender, caller, callee = parties[0], parties[1], parties[2]
    a = session.leg_a
    session.leg_b.set_remote(callee.address)
    garbage_sender.send_rtp(b"\x80\x00\x00\x01", a.local_rtp_port)  # too short
    garbage_sender.send_rtp(b"\x00" * 172, a.local_rtp_port)  # version 0
    caller.send_rtp(rtp(1), a.local_rtp_port)
    assert (await callee.next_rtp())[0] == rtp(1)
    assert callee.rtp.empty()
    assert a.stats.dropped_malformed == 2
    assert a.latched_rtp == caller.address


@on_both_loops
async def test_muted_directions_tap_and_notice(h: Harness) -> None:
    session, parties = h.session, h.parties
    caller, callee = parties[0], parties[1]
    a, b = session.leg_a, session.leg_b
    a.set_remote(caller.address)
    b.set_remote(callee.address)
    # Before the bridge: nothing crosses, the consent listener hears the caller.
    a.forward_enabled = False
    b.forward_enabled = False
    tapped: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()
    a.on_packet = lambda data, arrival: tapped.put_nowait((data, arrival))

    caller.send_rtp(rtp(1), a.local_rtp_port)
    data, arrival = await asyncio.wait_for(tapped.get(), TIMEOUT)
    assert data == rtp(1)
    assert arrival > 0
    assert a.stats.dropped_not_forwarded == 1
    assert a.stats.rtp_forwarded == 0

    notice = build_packet(0, 500, 80000, 0xFEED, b"\xff" * 160)
    assert a.send_rtp(notice)
    assert await caller.next_rtp() == (notice, (HOST, a.local_rtp_port))
    assert a.stats.injected_rtp == 1

    # Bridged: the tap keeps seeing packets that are now also forwarded.
    a.forward_enabled = True
    b.forward_enabled = True
    caller.send_rtp(rtp(2), a.local_rtp_port)
    assert (await callee.next_rtp())[0] == rtp(2)
    assert (await asyncio.wait_for(tapped.get(), TIMEOUT))[0] == rtp(2)
    assert callee.rtp.empty()  # rtp(1) was never forwarded

    a.on_packet = None
    callee.send_rtp(rtp(1, ssrc=2), b.local_rtp_port)
    assert (await caller.next_rtp())[0] == rtp(1, ssrc=2)
    assert tapped.empty()


@on_both_loops
async def test_failing_tap_is_detached_and_audio_flows(h: Harness) -> None:
    session, parties = h.session, h.parties
    caller, callee = parties[0], parties[1]
    a = session.leg_a
    a.set_remote(caller.address)
    session.leg_b.set_remote(callee.address)

    def broken_tap(data: bytes, arrival: float) -> None:
        raise RuntimeError("recorder fell over")

    a.on_packet = broken_tap
    caller.send_rtp(rtp(1), a.local_rtp_port)
    caller.send_rtp(rtp(2), a.local_rtp_port)
    assert (await callee.next_rtp())[0] == rtp(1)
    assert (await callee.next_rtp())[0] == rtp(2)
    assert a.on_packet is None


@on_both_loops
async def test_no_destination_yet_or_on_hold(h: Harness) -> None:
    session, parties = h.session, h.parties
    caller, callee = parties[0], parties[1]
    a, b = session.leg_a, session.leg_b
    tapped: asyncio.Queue[bytes] = asyncio.Queue()
    a.on_packet = lambda data, arrival: tapped.put_nowait(data)
    caller.send_rtp(rtp(1), a.local_rtp_port)  # B-leg not offered yet
    await asyncio.wait_for(tapped.get(), TIMEOUT)
    assert a.stats.dropped_not_forwarded == 1
    assert not b.send_rtp(rtp(1))

    b.set_remote(("0.0.0.0", 5004))  # old-style hold
    assert b.rtp_destination is None
    assert b.rtcp_destination is None
    caller.send_rtp(rtp(2), a.local_rtp_port)
    await asyncio.wait_for(tapped.get(), TIMEOUT)
    assert a.stats.dropped_not_forwarded == 2
    assert callee.rtp.empty()


@on_both_loops
async def test_set_remote_validation(h: Harness) -> None:
    session = h.session
    with pytest.raises(ValueError, match="IP address"):
        session.leg_a.set_remote(("pbx.example.com", 4000))
    with pytest.raises(ValueError, match="IPv6"):
        session.leg_a.set_remote(("2001:db8::1", 4000))
    with pytest.raises(ValueError, match="port"):
        session.leg_a.set_remote((HOST, 0))
    session.leg_a.set_remote((HOST, 65535))
    assert session.leg_a.remote_rtcp is None


@on_both_loops
async def test_stats_are_a_loggable_dict(h: Harness) -> None:
    session, parties = h.session, h.parties
    caller, callee = parties[0], parties[1]
    session.leg_a.set_remote(caller.address)
    session.leg_b.set_remote(callee.address)
    caller.send_rtp(rtp(1), session.leg_a.local_rtp_port)
    await callee.next_rtp()
    stats = session.stats()
    assert json.loads(json.dumps(stats)) == stats
    assert stats["a"]["latched_rtp"] == f"{HOST}:{caller.address[1]}"
    assert stats["a"]["local_rtp"] == f"{HOST}:{session.leg_a.local_rtp_port}"
    assert stats["a"]["rtp_forwarded"] == 1
    assert stats["b"]["rtp_packets"] == 0


@on_both_loops
async def test_200_calls_leak_no_port_and_no_socket(h: Harness) -> None:
    pool, parties = h.pool, h.parties
    caller, callee = parties[0], parties[1]
    seen_ports: set[int] = set()
    for call in range(200):
        session = MediaSession(pool, HOST, HOST)
        seen_ports.update((session.leg_a.local_rtp_port, session.leg_b.local_rtp_port))
        if call % 50 == 0:  # a few of them actually carry audio
            session.leg_a.set_remote(caller.address)
            session.leg_b.set_remote(callee.address)
            caller.send_rtp(rtp(call), session.leg_a.local_rtp_port)
            assert (await callee.next_rtp())[0] == rtp(call)
        session.close()
        session.close()  # idempotent
        assert session.closed
        assert pool.free_count == pool.capacity
    # 200 calls x 2 legs went round the whole 200-pair pool (bar ports another
    # process held): every port was used and given back, its sockets really closed.
    assert len(seen_ports) >= pool.capacity - pool.bind_conflicts
    for port in seen_ports:
        rtp_socket, rtcp_socket = bind_rtp_pair(HOST, port)
        rtp_socket.close()
        rtcp_socket.close()


@on_both_loops
async def test_exhausted_pool_releases_the_first_leg(h: Harness) -> None:
    small = PortPool(12700, 12701)  # one pair
    with pytest.raises(PortPoolExhausted):
        MediaSession(small, HOST, HOST)
    assert small.free_count == 1


@on_both_loops
async def test_closed_session_stops_relaying(h: Harness) -> None:
    pool, parties = h.pool, h.parties
    caller, callee = parties[0], parties[1]
    session = MediaSession(pool, HOST, HOST)
    session.leg_a.set_remote(caller.address)
    session.leg_b.set_remote(callee.address)
    port = session.leg_a.local_rtp_port
    session.close()
    assert not session.leg_a.send_rtp(rtp(1))
    # The port is free again: a new session on it gets fresh counters.
    replacement = MediaSession(pool, HOST, HOST)
    try:
        assert replacement.leg_a.stats.rtp_packets == 0
        assert port not in (replacement.leg_a.local_rtp_port, replacement.leg_b.local_rtp_port)
    finally:
        replacement.close()


# --- SRTP on a leg (issue 21) ---------------------------------------------------------------


def _srtp_pair(suite: str, key: bytes) -> tuple[Any, Any]:
    """(protect side, unprotect side) of one party's key, as that party holds them."""
    from recorder.media.sdes import Crypto
    from recorder.media.srtp import inbound_session, outbound_session

    crypto = Crypto(1, suite, key)
    return outbound_session(crypto), inbound_session(crypto)


@on_both_loops
async def test_srtp_legs_decrypt_record_and_reencrypt(h: Harness) -> None:
    from recorder.media.sdes import SUITES

    session, parties = h.session, h.parties
    caller, callee = parties[0], parties[1]
    a, b = session.leg_a, session.leg_b
    a.set_remote(caller.address)
    b.set_remote(callee.address)
    negotiator = session.srtp_negotiator({"a": ("external", "mirror"), "b": ("internal", "mirror")})
    # What the SDP exchange would have set: the caller's key and ours on A (AES_CM_80), the
    # PBX's and ours on B (GCM); see test_sdes for the exchange itself.
    caller_key, pbx_key = bytes(range(30)), bytes(range(100, 128))
    from recorder.media.sdes import Crypto

    keys_a, keys_b = negotiator.legs["a"], negotiator.legs["b"]
    keys_a.secure = keys_b.secure = True
    keys_a.inbound = Crypto(1, "AES_CM_128_HMAC_SHA1_80", caller_key)
    keys_a.outbound = Crypto(1, "AES_CM_128_HMAC_SHA1_80", bytes([7]) * 30)
    keys_b.inbound = Crypto(3, "AEAD_AES_128_GCM", pbx_key)
    keys_b.outbound = Crypto(3, "AEAD_AES_128_GCM", bytes([9]) * 28)
    session._keys_changed(keys_a)
    session._keys_changed(keys_b)
    assert set(SUITES) >= {"AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"}
    caller_tx, _ = _srtp_pair("AES_CM_128_HMAC_SHA1_80", caller_key)
    _, caller_rx = _srtp_pair("AES_CM_128_HMAC_SHA1_80", bytes([7]) * 30)
    pbx_tx, _ = _srtp_pair("AEAD_AES_128_GCM", pbx_key)
    _, pbx_rx = _srtp_pair("AEAD_AES_128_GCM", bytes([9]) * 28)
    tapped: list[bytes] = []
    a.on_packet = lambda data, _arrival: tapped.append(data)

    # A forged packet first (right header, wrong tag): dropped, counted, and not latched on.
    forged = bytearray(caller_tx.protect(rtp(99, ssrc=1)))
    forged[-1] ^= 0xFF
    caller_tx = _srtp_pair("AES_CM_128_HMAC_SHA1_80", caller_key)[0]  # a fresh index for seq 99
    parties[2].send_rtp(bytes(forged), a.local_rtp_port)
    sent = [rtp(seq, ssrc=1) for seq in range(10)]
    for packet in sent:
        caller.send_rtp(caller_tx.protect(packet), a.local_rtp_port)
    got = [pbx_rx.unprotect((await callee.next_rtp())[0]) for _ in sent]
    assert got == sent
    assert tapped == sent  # the recording sees plain RTP
    assert a.stats.dropped_srtp_auth == 1
    assert a.latched_rtp == caller.address

    back = [rtp(seq, ssrc=2) for seq in range(500, 505)]
    for packet in back:
        callee.send_rtp(pbx_tx.protect(packet), b.local_rtp_port)
    assert [caller_rx.unprotect((await caller.next_rtp())[0]) for _ in back] == back

    # The notice we inject is encrypted for the caller too.
    notice = build_packet(0, 40, 6400, 0xFEED, b"\xff" * 160)
    assert a.send_rtp(notice)
    assert caller_rx.unprotect((await caller.next_rtp())[0]) == notice

    # A replayed packet is dropped like a forged one.
    replay = caller_tx.protect(rtp(10, ssrc=1))
    caller.send_rtp(replay, a.local_rtp_port)
    caller.send_rtp(replay, a.local_rtp_port)
    caller.send_rtp(caller_tx.protect(rtp(11, ssrc=1)), a.local_rtp_port)
    assert pbx_rx.unprotect((await callee.next_rtp())[0]) == rtp(10, ssrc=1)
    assert pbx_rx.unprotect((await callee.next_rtp())[0]) == rtp(11, ssrc=1)
    assert a.stats.dropped_srtp_auth == 2
    assert session.stats()["a"]["srtp"] == 1


@on_both_loops
async def test_an_srtp_leg_without_its_key_yet_passes_nothing(h: Harness) -> None:
    from recorder.media.srtp import NO_KEY

    session, parties = h.session, h.parties
    caller, callee = parties[0], parties[1]
    a, b = session.leg_a, session.leg_b
    a.set_remote(caller.address)
    b.set_remote(callee.address)
    b.set_srtp(NO_KEY, NO_KEY)  # the PBX's answer (its key) has not arrived yet
    callee.send_rtp(rtp(1, ssrc=2), b.local_rtp_port)
    caller.send_rtp(rtp(1), a.local_rtp_port)  # cannot be encrypted for B: dropped

    async def both_dropped() -> None:
        while b.stats.dropped_srtp_auth + a.stats.dropped_send < 2:
            await asyncio.sleep(0)

    await asyncio.wait_for(both_dropped(), TIMEOUT)
    b.set_srtp(None, None)
    callee.send_rtp(rtp(2, ssrc=2), b.local_rtp_port)
    assert (await caller.next_rtp())[0] == rtp(2, ssrc=2)
    assert b.stats.dropped_srtp_auth == 1
    assert a.stats.dropped_send == 1
