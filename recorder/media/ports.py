"""RTP/RTCP port pool: even RTP ports, RTCP on RTP + 1 (RFC 3550 §11).

The pool is bookkeeping only; `bind_pair` is where it meets the kernel, and
it steps over ports some other process holds instead of failing the call.
Released ports go to the back of the queue so that a port is reused as late
as possible: stray packets from a finished call then land nowhere rather than
in the next call.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections import deque
from dataclasses import dataclass


class PortPoolExhausted(RuntimeError):
    """No RTP/RTCP pair could be allocated (all taken, or all busy in the kernel)."""


def _family_of(host: str) -> socket.AddressFamily:
    try:
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"media address must be an IP address, got {host!r}") from exc
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def bind_rtp_pair(host: str, rtp_port: int) -> tuple[socket.socket, socket.socket]:
    """Bind non-blocking UDP sockets on (host, rtp_port) and (host, rtp_port + 1).

    Raises OSError (EADDRINUSE when another process holds either port); on
    failure nothing stays open.
    """
    family = _family_of(host)
    rtp = socket.socket(family, socket.SOCK_DGRAM)
    try:
        rtp.setblocking(False)
        rtp.bind((host, rtp_port))
        rtcp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            rtcp.setblocking(False)
            rtcp.bind((host, rtp_port + 1))
        except BaseException:
            rtcp.close()
            raise
    except BaseException:
        rtp.close()
        raise
    return rtp, rtcp


@dataclass(slots=True)
class RtpSocketPair:
    """A bound RTP socket and its RTCP neighbour."""

    host: str
    rtp_port: int
    rtp: socket.socket
    rtcp: socket.socket

    @property
    def rtcp_port(self) -> int:
        return self.rtp_port + 1

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


class PortPool:
    """Even RTP ports in [first, last] whose RTCP neighbour also fits in the range."""

    def __init__(self, first: int, last: int) -> None:
        if not 1 <= first <= last <= 65535:
            raise ValueError(f"invalid port range {first}-{last}")
        start = first + (first & 1)
        ports = range(start, last, 2)  # port + 1 <= last
        if not ports:
            raise ValueError(f"port range {first}-{last} holds no even/odd RTP/RTCP pair")
        self.first = first
        self.last = last
        self._free: deque[int] = deque(ports)
        self._valid = frozenset(ports)
        self._allocated: set[int] = set()
        self.bind_conflicts = 0

    @property
    def capacity(self) -> int:
        return len(self._valid)

    @property
    def free_count(self) -> int:
        return len(self._free)

    @property
    def allocated_count(self) -> int:
        return len(self._allocated)

    def allocate(self) -> int:
        """Take the least recently used free RTP port; PortPoolExhausted if none."""
        if not self._free:
            raise PortPoolExhausted(
                f"RTP port pool {self.first}-{self.last} exhausted: "
                f"all {self.capacity} RTP/RTCP pairs are in use"
            )
        port = self._free.popleft()
        self._allocated.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a port back. Releasing a port that is not allocated is a bug: ValueError."""
        if port not in self._allocated:
            state = "not in this pool" if port not in self._valid else "not allocated"
            raise ValueError(f"cannot release RTP port {port}: {state}")
        self._allocated.remove(port)
        self._free.append(port)

    def bind_pair(self, host: str) -> RtpSocketPair:
        """Allocate a port and bind its RTP+RTCP sockets on `host`.

        A port held by another process (EADDRINUSE on either socket) goes back
        to the end of the queue, since it may be free again later, and the next
        one is tried. Other bind errors (an address not on this machine) are
        configuration errors and propagate.
        """
        _family_of(host)  # a bad address is a caller error, not a pool one
        for _ in range(self.free_count):
            port = self.allocate()
            try:
                rtp, rtcp = bind_rtp_pair(host, port)
            except BaseException as exc:
                self.release(port)
                if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
                    self.bind_conflicts += 1
                    continue
                raise
            return RtpSocketPair(host, port, rtp, rtcp)
        raise PortPoolExhausted(
            f"RTP port pool {self.first}-{self.last} exhausted on {host}: "
            f"{self.allocated_count} of {self.capacity} pairs in use, the rest busy in the kernel"
        )

    def release_pair(self, pair: RtpSocketPair) -> None:
        """Close a pair's sockets and give its port back."""
        pair.close()
        self.release(pair.rtp_port)
