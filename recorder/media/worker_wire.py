"""The wire between the service and a media worker process (issue 18).

One AF_UNIX SOCK_SEQPACKET socket pair per worker. Each send is one message, delivered
whole and in order, so there is no length framing; the first byte says what follows:

- `CONTROL` + a pickle of a tuple `(name, *args)`: the few messages of a call's life
  (open, remote, codec, srtp, forward, tap, filter, close) and the worker's answers
  (hello, closed, stats). The RTP/RTCP sockets of a new call ride on its "open" message as
  SCM_RIGHTS: the service binds them (so it knows the ports for the SDP at once) and the
  worker owns them from then on.
- `PACKETS` + records: packets, batched. Each record is `RECORD_HEAD` (session id, leg,
  kind, arrival on CLOCK_MONOTONIC, which the two processes share, payload length) and
  the payload.

Packet kinds, worker -> service:
- `TAP`: a packet of a leg the service listens to (the consent listener);
- `RECORDS`: a recorded leg's packets since the last flush, after a u32 count, already in
  the recording writer's batch format (`recorder.recording.timeline.RECORD`): the service
  appends them to the recording whole, with no Python step per packet;
- `HELD`: a packet the leg's filter holds for the service's verdict (agent DTMF codes).
Service -> worker:
- `INJECT`: a packet for the leg's party (the notice, ringback);
- `PASS`: a held packet the verdict lets through;
- `DROP`: the verdict on a held packet that stays dropped (empty payload).

`VERSION` is in the worker's hello: a service and a worker of different versions refuse
each other rather than misread records.
"""

from __future__ import annotations

import array
import asyncio
import pickle
import socket
import struct
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Final

VERSION: Final = 1

CONTROL: Final = 0x43  # "C"
PACKETS: Final = 0x4B  # "K"

TAP: Final = 0
HELD: Final = 1
INJECT: Final = 2
PASS: Final = 3
DROP: Final = 4
RECORDS: Final = 5

RECORDS_COUNT: Final = struct.Struct("=I")

ROLES: Final = ("a", "b")
ROLE_INDEX: Final = {"a": 0, "b": 1}

RECORD_HEAD: Final = struct.Struct("=IBBdI")  # session, leg (0 = a), kind, arrival, length
MAX_MESSAGE: Final = 60_000  # a batch stays under this (the socket buffer bounds a message)
SOCKET_BUFFER: Final = 4 << 20
_MAX_FDS: Final = 8
_RECV_SIZE: Final = MAX_MESSAGE + 4096
_ANCILLARY: Final = socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize)

Record = tuple[int, int, int, float, bytes]  # session, leg, kind, arrival, payload


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """The service's end and the worker's end, with room for bursts of packets."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in (ours, theirs):
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            end.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
    return ours, theirs


def control(name: str, *args: Any) -> bytes:
    return bytes((CONTROL,)) + pickle.dumps((name, *args), protocol=pickle.HIGHEST_PROTOCOL)


def read_control(message: bytes) -> tuple[Any, ...]:
    value = pickle.loads(memoryview(message)[1:])
    if not isinstance(value, tuple) or not value or not isinstance(value[0], str):
        raise ValueError("control message is not a (name, ...) tuple")
    return value


def records(message: bytes) -> Iterator[Record]:
    """The packet records of a `PACKETS` message; ValueError on a torn one."""
    view = memoryview(message)
    offset = 1
    end = len(message)
    head = RECORD_HEAD
    size = head.size
    unpack = head.unpack_from
    while offset < end:
        if offset + size > end:
            raise ValueError("packet record header cut short")
        session, leg, kind, arrival, length = unpack(view, offset)
        offset += size
        if offset + length > end:
            raise ValueError("packet record payload cut short")
        yield session, leg, kind, arrival, bytes(view[offset : offset + length])
        offset += length


class PacketBatch:
    """Packet records gathered until the next flush; whole messages out of `take`."""

    __slots__ = ("_buffer", "_full")

    def __init__(self) -> None:
        self._buffer = bytearray((PACKETS,))
        self._full: list[bytes] = []

    def add(self, session: int, leg: int, kind: int, arrival: float, data: bytes) -> None:
        buffer = self._buffer
        if len(buffer) + RECORD_HEAD.size + len(data) > MAX_MESSAGE and len(buffer) > 1:
            self._full.append(bytes(buffer))
            del buffer[1:]
        buffer += RECORD_HEAD.pack(session, leg, kind, arrival, len(data))
        buffer += data

    def __bool__(self) -> bool:
        return len(self._buffer) > 1 or bool(self._full)

    def take(self) -> list[bytes]:
        out = self._full
        self._full = []
        if len(self._buffer) > 1:
            out.append(bytes(self._buffer))
            del self._buffer[1:]
        return out


class Channel:
    """Non-blocking messages over one end of the pair, on an asyncio loop.

    Sends that the socket cannot take now wait in order (with their descriptors, closed
    once sent) until it can; `on_message(data, fds)` gets each message received, and
    `on_closed()` once, when the other end is gone (EOF, or a reset).
    """

    def __init__(
        self,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[bytes, list[int]], None],
        on_closed: Callable[[], None],
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.loop = loop
        self._on_message = on_message
        self._on_closed = on_closed
        self._queue: deque[tuple[bytes, list[socket.socket]]] = deque()
        self._writing = False
        self.closed = False
        self.queued_bytes = 0
        loop.add_reader(sock.fileno(), self._readable)

    def send(self, message: bytes, attach: list[socket.socket] | None = None) -> None:
        """Send `message`, passing `attach`'s descriptors with it; the sockets are closed
        here once they are on their way."""
        if self.closed:
            for item in attach or ():
                item.close()
            return
        if not self._queue and self._send_now(message, attach or []):
            return
        self._queue.append((message, attach or []))
        self.queued_bytes += len(message)
        if not self._writing:
            self._writing = True
            self.loop.add_writer(self.sock.fileno(), self._writable)

    def _send_now(self, message: bytes, attach: list[socket.socket]) -> bool:
        try:
            if attach:
                fds = array.array("i", [item.fileno() for item in attach])
                self.sock.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            else:
                self.sock.send(message)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self._lost()
            return True
        for item in attach:
            item.close()
        return True

    def _writable(self) -> None:
        while self._queue:
            message, attach = self._queue[0]
            if not self._send_now(message, attach):
                return
            if self.closed:
                return
            self._queue.popleft()
            self.queued_bytes -= len(message)
        self._writing = False
        self.loop.remove_writer(self.sock.fileno())

    def _readable(self) -> None:
        # A few messages per wakeup: a burst of batches is drained without starving the loop.
        for _ in range(16):
            try:
                data, ancillary, _flags, _address = self.sock.recvmsg(
                    MAX_MESSAGE + 4096, _ANCILLARY
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._lost()
                return
            if not data:
                self._lost()
                return
            fds: list[int] = []
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    received = array.array("i")
                    received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
                    fds.extend(received)
            self._on_message(data, fds)
            if self.closed:
                return

    def _lost(self) -> None:
        if self.closed:
            return
        self.close()
        self._on_closed()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.loop.is_closed():
            self.loop.remove_reader(self.sock.fileno())
            if self._writing:
                self.loop.remove_writer(self.sock.fileno())
        self._writing = False
        for _message, attach in self._queue:
            for item in attach:
                item.close()
        self._queue.clear()
        self.queued_bytes = 0
        self.sock.close()
