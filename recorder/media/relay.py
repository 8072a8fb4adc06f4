"""The anchored RTP/RTCP relay: one `MediaSession` per call, two `MediaLeg`s.

Leg A faces the caller, leg B the callee. What arrives on A's RTP socket
leaves by B's RTP socket towards B's remote, and the other way round; RTCP
likewise between the RTCP sockets.

Why the socket handling looks like this (measured, see DESIGN.md): the
default `DatagramProtocol` reads with `recvfrom(262144)` and costs ~3x more
per packet, and draining a socket until `BlockingIOError` raises once per
packet; so each wakeup does exactly one `recvfrom(2048)` from a reader
registered with `loop.add_reader`, and sends are plain non-blocking
`sendto`s whose failures are dropped and counted rather than queued (a late
voice packet is worthless). Both the default loop and uvloop support this.

Symmetric latching (comedia): the first valid packet a leg receives fixes the
source it accepts from then on, and replies go to that source rather than to
the SDP address, which is what gets media through NATs. A new SDP from the
party (`set_remote`) re-opens latching.

SRTP (`set_srtp`): a leg that is SRTP decrypts what it receives before anything else
looks at it (so a packet that fails authentication is dropped and counted, and never
latched onto, relayed or recorded), and encrypts what it sends; a plain leg pays one
attribute test per packet for it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from recorder.media.ports import PortPool, RtpSocketPair
from recorder.media.sdes import LegKeys, SdesNegotiator
from recorder.media.srtp import (
    NO_KEY,
    SrtpError,
    SrtpTransform,
    inbound_session,
    outbound_session,
)
from recorder.media.stats import LegStats, StatsValue, format_address

Address = tuple[str, int]
SocketAddress = tuple[Any, ...]  # what recvfrom returns: 2-tuple (IPv4) or 4-tuple (IPv6)
PacketTap = Callable[[bytes, float], None]

_log = structlog.get_logger(__name__)

_RECV_SIZE = 2048  # an RTP datagram over Ethernet fits; larger ones are truncated, not split

_monotonic = time.monotonic

_HOLD_HOSTS = frozenset({"0.0.0.0", "::"})


def check_remote(address: Address, family: socket.AddressFamily, what: str) -> None:
    host, port = address
    try:
        parsed = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"{what} host must be an IP address, got {host!r}") from exc
    expected = 6 if family == socket.AF_INET6 else 4
    if parsed.version != expected:
        raise ValueError(f"{what} {host} is IPv{parsed.version}, the leg's socket is IPv{expected}")
    if not 0 < port < 65536:
        raise ValueError(f"{what} port out of range: {port}")


class MediaLeg:
    """One side of the relay: local RTP+RTCP sockets and the party they face.

    `on_packet`, when set, receives every accepted RTP packet (latched source,
    valid header) with its monotonic arrival time, whether or not it is
    forwarded: the consent listener must hear the caller while the caller is
    not yet bridged. `forward_enabled` says whether packets received on this
    leg are relayed to the other leg.
    """

    _peer: MediaLeg

    def __init__(
        self,
        side: str,
        sockets: RtpSocketPair,
        *,
        clock_rate: int = 8000,
        telephone_event_pt: int | None = None,
    ) -> None:
        self.side = side
        self.stats = LegStats(clock_rate, telephone_event_pt)
        self.on_packet: PacketTap | None = None
        # Decides, per accepted RTP packet, whether it may reach the other party (agent DTMF
        # codes are swallowed this way); None costs one attribute check per packet.
        self.forward_filter: Callable[[bytes, float], bool] | None = None
        self.forward_enabled = True
        self.remote_rtp: Address | None = None
        self.remote_rtcp: Address | None = None
        self.latched_rtp: SocketAddress | None = None
        self.latched_rtcp: SocketAddress | None = None
        self.closed = False
        self._sockets = sockets
        self._family = sockets.rtp.family
        self._rtp_socket = sockets.rtp
        self._rtcp_socket = sockets.rtcp
        # Where this leg's socket sends: the latched source, else the SDP address.
        self._rtp_destination: SocketAddress | None = None
        self._rtcp_destination: SocketAddress | None = None
        # SRTP with this leg's party: None = plain RTP.
        self._srtp_in: SrtpTransform | None = None
        self._srtp_out: SrtpTransform | None = None

    @property
    def local_address(self) -> str:
        return self._sockets.host

    @property
    def local_rtp_port(self) -> int:
        return self._sockets.rtp_port

    @property
    def local_rtcp_port(self) -> int:
        return self._sockets.rtcp_port

    @property
    def rtp_destination(self) -> SocketAddress | None:
        return self._rtp_destination

    @property
    def rtcp_destination(self) -> SocketAddress | None:
        return self._rtcp_destination

    def set_remote(self, rtp: Address | None, rtcp: Address | None = None) -> None:
        """Where the party wants media, from its SDP; re-opens latching.

        `rtcp` defaults to the RTP port + 1. `None`, or the old-style hold
        address 0.0.0.0 / ::, means nowhere: packets for this party are
        dropped and counted instead of being sent (Linux would deliver a
        datagram to 0.0.0.0 to the local host).
        """
        if rtp is not None and rtp[0] in _HOLD_HOSTS:
            rtp = None
        if rtp is None:
            rtcp = None
        else:
            check_remote(rtp, self._family, "RTP remote")
            if rtcp is None:
                rtcp = (rtp[0], rtp[1] + 1) if rtp[1] < 65535 else None
            if rtcp is not None:
                check_remote(rtcp, self._family, "RTCP remote")
        self.remote_rtp = rtp
        self.remote_rtcp = rtcp
        self.latched_rtp = None
        self.latched_rtcp = None
        self._rtp_destination = rtp
        self._rtcp_destination = rtcp

    def set_codec(self, clock_rate: int, telephone_event_pt: int | None = None) -> None:
        """Clock rate of the audio this leg receives, for jitter in milliseconds."""
        if clock_rate <= 0:
            raise ValueError(f"clock rate must be positive, got {clock_rate}")
        self.stats.clock_rate = clock_rate
        self.stats.telephone_event_pt = telephone_event_pt

    def set_srtp(self, inbound: SrtpTransform | None, outbound: SrtpTransform | None) -> None:
        """Decrypt what the party sends with `inbound`, encrypt what it is sent with `outbound`;
        (None, None) makes the leg plain RTP again."""
        self._srtp_in = inbound
        self._srtp_out = outbound

    @property
    def secure(self) -> bool:
        return self._srtp_in is not None or self._srtp_out is not None

    def send_rtp(self, data: bytes) -> bool:
        """Send a locally made packet (the notice) to this leg's party; False if dropped."""
        destination = self._rtp_destination
        if destination is None or self.closed:
            self.stats.dropped_not_forwarded += 1
            return False
        try:
            srtp_out = self._srtp_out
            if srtp_out is not None:
                data = srtp_out.protect(data)
            self._rtp_socket.sendto(data, destination)
        except (OSError, SrtpError):
            self.stats.dropped_send += 1
            return False
        self.stats.injected_rtp += 1
        return True

    def relay_held(self, data: bytes) -> bool:
        """Relay to the other party a packet this leg received and its filter held (a media
        worker's filter waits for the service's verdict); False if dropped."""
        peer = self._peer
        destination = peer._rtp_destination
        if destination is None or self.closed:
            self.stats.dropped_not_forwarded += 1
            return False
        try:
            srtp_out = peer._srtp_out
            if srtp_out is not None:
                data = srtp_out.protect(data)
            peer._rtp_socket.sendto(data, destination)
        except (OSError, SrtpError):
            self.stats.dropped_send += 1
            return False
        self.stats.rtp_forwarded += 1
        return True

    def as_dict(self) -> dict[str, StatsValue]:
        info: dict[str, StatsValue] = {
            "local_rtp": format_address((self.local_address, self.local_rtp_port)),
            "remote_rtp": format_address(self.remote_rtp),
            "latched_rtp": format_address(self.latched_rtp),
            "latched_rtcp": format_address(self.latched_rtcp),
            "forward_enabled": int(self.forward_enabled),
            "srtp": int(self.secure),
        }
        info.update(self.stats.as_dict())
        return info

    # --- hot path: one call per received datagram -------------------------

    def _on_rtp_readable(self) -> None:
        try:
            data, source = self._rtp_socket.recvfrom(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.stats.socket_errors += 1
            return
        stats = self.stats
        latched = self.latched_rtp
        if source != latched and latched is not None:
            stats.dropped_wrong_source += 1
            return
        srtp_in = self._srtp_in
        if srtp_in is not None:
            try:
                data = srtp_in.unprotect(data)
            except SrtpError:
                stats.dropped_srtp_auth += 1
                return
        arrival = _monotonic()
        if not stats.on_rtp(data, arrival):
            return
        if latched is None:
            self.latched_rtp = source
            self._rtp_destination = source
        tap = self.on_packet
        if tap is not None:
            # Inline rather than a helper: a Python call per packet costs more than the tap.
            try:
                tap(data, arrival)
            except Exception:
                self._tap_failed()
        if not self.forward_enabled:
            stats.dropped_not_forwarded += 1
            return
        forward_filter = self.forward_filter
        if forward_filter is not None and not forward_filter(data, arrival):
            stats.dropped_filtered += 1
            return
        peer = self._peer
        destination = peer._rtp_destination
        if destination is None:
            stats.dropped_not_forwarded += 1
            return
        try:
            srtp_out = peer._srtp_out
            if srtp_out is not None:
                data = srtp_out.protect(data)
            peer._rtp_socket.sendto(data, destination)
        except (OSError, SrtpError):
            stats.dropped_send += 1
            return
        stats.rtp_forwarded += 1

    def _on_rtcp_readable(self) -> None:
        try:
            data, source = self._rtcp_socket.recvfrom(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.stats.socket_errors += 1
            return
        stats = self.stats
        latched = self.latched_rtcp
        if source != latched and latched is not None:
            stats.dropped_wrong_source += 1
            return
        srtp_in = self._srtp_in
        if srtp_in is not None:
            try:
                data = srtp_in.unprotect_rtcp(data)
            except SrtpError:
                stats.dropped_srtp_auth += 1
                return
        if not stats.on_rtcp(data):
            return
        if latched is None:
            self.latched_rtcp = source
            self._rtcp_destination = source
        if not self.forward_enabled:
            stats.dropped_not_forwarded += 1
            return
        peer = self._peer
        destination = peer._rtcp_destination
        if destination is None:
            stats.dropped_not_forwarded += 1
            return
        try:
            srtp_out = peer._srtp_out
            if srtp_out is not None:
                data = srtp_out.protect_rtcp(data)
            peer._rtcp_socket.sendto(data, destination)
        except (OSError, SrtpError):
            stats.dropped_send += 1
            return
        stats.rtcp_forwarded += 1

    def _tap_failed(self) -> None:
        """Called from the `except` around the tap call (the log takes the exception from there)."""
        # A failing tap must not cost the call its audio, nor flood the log
        # at 50 packets/s: detach it and say so once.
        self.on_packet = None
        _log.exception("media.tap_failed", side=self.side)

    # --- lifecycle ---------------------------------------------------------

    def _start(self, loop: asyncio.AbstractEventLoop, peer: MediaLeg) -> None:
        self._peer = peer
        loop.add_reader(self._rtp_socket.fileno(), self._on_rtp_readable)
        loop.add_reader(self._rtcp_socket.fileno(), self._on_rtcp_readable)

    def _close(self, loop: asyncio.AbstractEventLoop, pool: PairReleaser) -> None:
        if self.closed:
            return
        self.closed = True
        self.on_packet = None
        # Readers go before the sockets: a closed fd number can be reused at
        # once by another socket, which the loop would then watch for us.
        if not loop.is_closed():
            loop.remove_reader(self._rtp_socket.fileno())
            loop.remove_reader(self._rtcp_socket.fileno())
        pool.release_pair(self._sockets)


class PairReleaser(Protocol):
    """Where a closed session's socket pairs go: the port pool, or a media worker's own
    bookkeeping (`recorder.media.worker`)."""

    def release_pair(self, pair: RtpSocketPair) -> None: ...


class MediaSession:
    """The media of one call: leg A on `address_a` (caller side), leg B on `address_b`.

    Must be created inside a running event loop (or given one); sockets are
    bound and being read as soon as the constructor returns, so the local
    ports can go straight into the SDP.
    """

    def __init__(
        self,
        pool: PortPool,
        address_a: str,
        address_b: str,
        *,
        clock_rate: int = 8000,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        sockets_a = pool.bind_pair(address_a)
        try:
            sockets_b = pool.bind_pair(address_b)
        except BaseException:
            pool.release_pair(sockets_a)
            raise
        self._relay(pool, sockets_a, sockets_b, clock_rate, loop)

    @classmethod
    def from_pairs(
        cls,
        releaser: PairReleaser,
        sockets_a: RtpSocketPair,
        sockets_b: RtpSocketPair,
        *,
        clock_rate: int = 8000,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> MediaSession:
        """A session on sockets bound elsewhere (a media worker gets them from the service)."""
        session = cls.__new__(cls)
        session._relay(releaser, sockets_a, sockets_b, clock_rate, loop)
        return session

    def _relay(
        self,
        releaser: PairReleaser,
        sockets_a: RtpSocketPair,
        sockets_b: RtpSocketPair,
        clock_rate: int,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self._pool = releaser
        self.leg_a = MediaLeg("a", sockets_a, clock_rate=clock_rate)
        self.leg_b = MediaLeg("b", sockets_b, clock_rate=clock_rate)
        self.leg_a._start(self._loop, self.leg_b)
        self.leg_b._start(self._loop, self.leg_a)
        self.closed = False

    def srtp_negotiator(
        self, sides: dict[str, tuple[str, str]], *, allow_mixed: bool = False
    ) -> SdesNegotiator:
        """The SDES negotiation of this call, setting each leg's SRTP as its keys change.
        `sides`: role -> (side name, SRTP mode)."""
        return SdesNegotiator(sides, allow_mixed=allow_mixed, on_change=self._keys_changed)

    def _keys_changed(self, keys: LegKeys) -> None:
        leg = self.leg_a if keys.role == "a" else self.leg_b
        if not keys.secure:
            leg.set_srtp(None, None)
            return
        inbound = inbound_session(keys.inbound) if keys.inbound is not None else NO_KEY
        outbound = outbound_session(keys.outbound) if keys.outbound is not None else NO_KEY
        leg.set_srtp(inbound, outbound)

    def stats(self) -> dict[str, dict[str, StatsValue]]:
        """Both legs' counters, for the call-end log line; keys 'a' and 'b'."""
        return {"a": self.leg_a.as_dict(), "b": self.leg_b.as_dict()}

    def close(self) -> None:
        """Stop relaying, close the sockets and give the ports back; idempotent."""
        if self.closed:
            return
        self.closed = True
        self.leg_a._close(self._loop, self._pool)
        self.leg_b._close(self._loop, self._pool)
