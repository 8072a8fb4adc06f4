"""A media worker process (issue 18): relays the RTP of the calls the service gives it.

    python -m recorder.media.worker FD [LOG_FORMAT LOG_LEVEL]

FD is the worker's end of the service's SOCK_SEQPACKET pair (`recorder.media.worker_wire`).
The worker runs the same relay as the single-process service (`recorder.media.relay`, on
uvloop when installed) over sockets the service bound and passed along: it never binds a
port, never touches the catalog or a file, and knows a call only by a session number.

It sends the service only what the service listens to: the packets of a tapped leg (the
consent listener, a recording), the telephone-events an agent-code filter holds for a
verdict, each call's counters when it closes and, every `STATS_INTERVAL`, those of its
calls in progress (for the metrics; sent even with no call, as a heartbeat). Tapped packets
leave in batches every `FLUSH_INTERVAL` (a recording's every `RECORDS_INTERVAL`), or sooner
when a batch fills.

It ignores SIGINT, SIGTERM and SIGHUP: the service drains its calls on those and says when
to stop; a worker whose service is gone (EOF on the pair) closes its calls and exits.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections import deque
from typing import Any, Final

import structlog

from recorder.media.ports import RtpSocketPair
from recorder.media.relay import MediaLeg, MediaSession
from recorder.media.rtp import RECORD
from recorder.media.srtp import NO_KEY, inbound_session, outbound_session
from recorder.media.worker_wire import (
    CONTROL,
    DROP,
    HELD,
    INJECT,
    PACKETS,
    PASS,
    RECORDS,
    RECORDS_COUNT,
    ROLES,
    TAP,
    VERSION,
    Channel,
    PacketBatch,
    control,
    read_control,
    records,
)

FLUSH_INTERVAL: Final = 0.02  # a tapped packet reaches the service within this
# A recorded leg's packets wait longer: the recording writer batches every 150 ms anyway,
# and a fuller chunk costs the service less (a recording's stop fences, so nothing is lost).
RECORDS_INTERVAL: Final = 0.1
RECORDS_CHUNK: Final = 16 * 1024  # a leg's chunk leaves at once past this (a burst, a flood)
STATS_INTERVAL: Final = 1.0
BACKLOG_PACKETS: Final = 25  # an untapped leg's last half second (G.711, 20 ms)


class _Backlog:
    """An untapped leg's last packets. The service attaches a tap (a recording starting) at
    some moment; the worker, on another core, hears of it a little later, and the packets
    it took in between belong to the tap: the in-process relay would have given them."""

    __slots__ = ("packets",)

    def __init__(self) -> None:
        self.packets: deque[tuple[bytes, float]] = deque(maxlen=BACKLOG_PACKETS)

    def __call__(self, data: bytes, arrival: float) -> None:
        self.packets.append((data, arrival))


class _Records:
    """A recorded leg's packets since the last flush, in the writer's batch format."""

    __slots__ = ("buffer", "count")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.count = 0


log = structlog.get_logger("recorder.media.worker")


class _Releaser:
    """A closed session's sockets: closed here; the service frees the ports on "closed"."""

    def release_pair(self, pair: RtpSocketPair) -> None:
        pair.close()


def _pair(host: str, rtp_port: int, rtp_fd: int, rtcp_fd: int) -> RtpSocketPair:
    rtp = socket.socket(fileno=rtp_fd)
    rtcp = socket.socket(fileno=rtcp_fd)
    rtp.setblocking(False)
    rtcp.setblocking(False)
    return RtpSocketPair(host, rtp_port, rtp, rtcp)


class MediaWorker:
    """The worker's loop side: sessions by number, the channel to the service."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sessions: dict[int, MediaSession] = {}
        self.done: asyncio.Future[None] = loop.create_future()
        self._releaser = _Releaser()
        self._batch = PacketBatch()
        self._flush_at: asyncio.Handle | None = None
        self._records: dict[tuple[int, int], _Records] = {}
        self._records_at: asyncio.TimerHandle | None = None
        self.channel = Channel(sock, loop, self._on_message, self._on_service_gone)
        self.channel.send(control("hello", VERSION))
        self._stats_timer = loop.call_later(STATS_INTERVAL, self._send_stats)

    # --- from the service ---------------------------------------------------------------

    def _on_message(self, data: bytes, fds: list[int]) -> None:
        kind = data[0]
        if kind == PACKETS:
            self._on_packets(data)
        elif kind == CONTROL:
            self._on_control(read_control(data), fds)
        else:
            raise ValueError(f"unknown message kind {kind:#x}")

    def _on_control(self, message: tuple[Any, ...], fds: list[int]) -> None:
        name = message[0]
        if name == "open":
            _, number, host, port_a, port_b = message
            a = _pair(host, port_a, fds[0], fds[1])
            b = _pair(host, port_b, fds[2], fds[3])
            opened = MediaSession.from_pairs(self._releaser, a, b, loop=self.loop)
            self.sessions[number] = opened
            for each in (opened.leg_a, opened.leg_b):
                each.on_packet = _Backlog()
            return
        if name == "stop":
            self._stop()
            return
        if name == "flush":
            # What was tapped until now goes before the answer (the service's fence).
            self._flush()
            self.channel.send(control("flushed", message[1]))
            return
        number, role = message[1], message[2] if len(message) > 2 else None
        session = self.sessions.get(number)
        if session is None:
            return  # closed meanwhile: what was meant for it no longer matters
        if name == "close":
            self._flush()  # its last tapped packets go before its counters
            session.close()
            del self.sessions[number]
            self._records.pop((number, 0), None)
            self._records.pop((number, 1), None)
            self.channel.send(control("closed", number, session.stats()))
            return
        leg = session.leg_a if role == "a" else session.leg_b
        if name == "remote":
            leg.set_remote(message[3], message[4])
        elif name == "codec":
            leg.set_codec(message[3], message[4])
        elif name == "forward":
            leg.forward_enabled = bool(message[3])
        elif name == "tap":
            # None: off; -1: each packet to the service; a channel: a recording's RECORDS.
            # `since`: when the service attached the tap; what this leg took since then,
            # before this message came, is in its backlog.
            mode, since = message[3], message[4]
            self._flush()  # what the old tap took goes first
            self._records.pop((number, ROLES.index(leg.side)), None)
            previous = leg.on_packet
            if mode is None:
                leg.on_packet = _Backlog()
                return
            tap = self._tap(number, leg) if mode < 0 else self._record(number, leg, mode)
            leg.on_packet = tap
            if isinstance(previous, _Backlog):
                for data, arrival in previous.packets:
                    if arrival >= since:
                        tap(data, arrival)
        elif name == "filter":
            selector = message[3]
            leg.forward_filter = None if selector is None else self._filter(number, leg, selector)
        elif name == "srtp":
            secure, inbound, outbound = message[3], message[4], message[5]
            if not secure:
                leg.set_srtp(None, None)
            else:
                leg.set_srtp(
                    inbound_session(inbound) if inbound is not None else NO_KEY,
                    outbound_session(outbound) if outbound is not None else NO_KEY,
                )
        else:
            raise ValueError(f"unknown control message {name!r}")

    def _on_packets(self, data: bytes) -> None:
        sessions = self.sessions
        for number, leg_index, kind, _arrival, payload in records(data):
            session = sessions.get(number)
            if session is None:
                continue
            leg = session.leg_a if leg_index == 0 else session.leg_b
            if kind == INJECT:
                leg.send_rtp(payload)
            elif kind == PASS:
                # The filter counted it dropped when it held it; the verdict says otherwise.
                leg.stats.dropped_filtered -= 1
                leg.relay_held(payload)
            elif kind != DROP:
                raise ValueError(f"unknown packet kind {kind}")

    def _on_service_gone(self) -> None:
        self._stop()

    # --- to the service -----------------------------------------------------------------

    def _tap(self, number: int, leg: MediaLeg) -> Any:
        add = self._batch.add
        index = ROLES.index(leg.side)

        def on_packet(data: bytes, arrival: float) -> None:
            add(number, index, TAP, arrival, data)
            if self._flush_at is None:
                self._flush_at = self.loop.call_later(FLUSH_INTERVAL, self._flush)

        return on_packet

    def _record(self, number: int, leg: MediaLeg, channel: int) -> Any:
        records = _Records()
        self._records[(number, ROLES.index(leg.side))] = records
        buffer = records.buffer
        pack = RECORD.pack

        def on_packet(data: bytes, arrival: float) -> None:
            nonlocal buffer
            buffer += pack(channel, arrival, len(data))
            buffer += data
            records.count += 1
            if self._records_at is None:
                self._records_at = self.loop.call_later(RECORDS_INTERVAL, self._flush)
            elif len(buffer) > RECORDS_CHUNK:
                self._flush()

        return on_packet

    def _filter(self, number: int, leg: MediaLeg, selector: int) -> Any:
        """Hold the packets the service judges: those of payload type `selector`, or every
        packet when `selector` is -1; the rest pass at once."""
        add = self._batch.add
        index = ROLES.index(leg.side)

        def keep(data: bytes, arrival: float) -> bool:
            if selector >= 0 and (len(data) < 2 or data[1] & 0x7F != selector):
                return True
            add(number, index, HELD, arrival, data)
            if self._flush_at is None:
                # A held digit waits for its verdict: no batching delay for it.
                self._flush_at = self.loop.call_soon(self._flush)
            return False

        return keep

    def _flush(self) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        if self._records_at is not None:
            self._records_at.cancel()
            self._records_at = None
        add = self._batch.add
        for (number, index), pending in self._records.items():
            if pending.count:
                add(number, index, RECORDS, 0.0, RECORDS_COUNT.pack(pending.count) + pending.buffer)
                pending.buffer.clear()
                pending.count = 0
        for message in self._batch.take():
            self.channel.send(message)

    def _send_stats(self) -> None:
        self._stats_timer = self.loop.call_later(STATS_INTERVAL, self._send_stats)
        # Sent with no call too: it is the service's proof that this worker's loop turns.
        snapshot = {number: s.stats() for number, s in self.sessions.items()}
        self.channel.send(control("stats", snapshot))

    def _stop(self) -> None:
        self._stats_timer.cancel()
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        if self._records_at is not None:
            self._records_at.cancel()
            self._records_at = None
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()
        self.channel.close()
        if not self.done.done():
            self.done.set_result(None)


async def _run(fd: int) -> None:
    loop = asyncio.get_running_loop()
    worker = MediaWorker(socket.socket(fileno=fd), loop)
    await worker.done


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 4) or not argv[1].isdigit():
        print("usage: python -m recorder.media.worker FD [LOG_FORMAT LOG_LEVEL]", file=sys.stderr)
        return 2
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    # The process entry point is the one place here that reaches outside recorder.media: the
    # worker logs as the service does.
    from recorder.ops.logs import configure_logging

    configure_logging(*argv[2:4])
    try:
        import uvloop
    except ImportError:
        asyncio.run(_run(int(argv[1])))
    else:
        uvloop.run(_run(int(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
