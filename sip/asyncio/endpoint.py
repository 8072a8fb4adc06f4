"""`SipEndpoint`: a TransactionLayer on a UDP socket and a TCP listener (and a TLS one when
given `TlsSettings`), driven by asyncio.

Everything received is parsed, fed to the layer with `loop.time()`, and the layer's
datagrams are sent and its events handed to `on_event(endpoint, event)`. One loop timer
(`loop.call_at`) is re-armed from the layer after every input, as aioquic does.

On top of the layer, the endpoint plays the part of the UAS core for 2xx responses to
INVITE (RFC 3261 §13.3.1.4, RFC 6026): a 2xx sent with `send_response` is retransmitted
by a `Uas2xxRetransmitter` until its ACK arrives (the ACK is still delivered to
`on_event`); if none comes within 64*T1, `on_event` gets `TransactionTimedOut` with the
INVITE server transaction's key, as for a missing ACK of a non-2xx (timer H).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from sip.errors import RemoteProtocolError
from sip.message import KNOWN_METHODS, Message, Request, Response
from sip.transaction import (
    DEFAULT_TIMERS,
    Address,
    RequestReceived,
    ResponseReceived,
    TimerConfig,
    TransactionEvent,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    Uas2xxRetransmitter,
)

from .tls import TlsSettings, describe_tls_error
from .transport import TcpConnection, UdpProtocol, error_response

__all__ = ["EventHandler", "SipEndpoint"]

log = logging.getLogger(__name__)

EventHandler = Callable[["SipEndpoint", TransactionEvent], None]
# Connections are kept by (transport, address): TCP and TLS to one address are not the same.
ConnectionKey = tuple[str, Address]


def _counted(method: str) -> str:
    """A method as a key of `SipEndpoint.messages`: the methods peers invent (any token will
    do) all count as "other", or each new one would grow the counters, and /metrics, for ever."""
    return method if method in KNOWN_METHODS else "other"


class _Pending2xx:
    __slots__ = ("key", "request", "retransmitter")

    def __init__(self, key: str, request: Request, retransmitter: Uas2xxRetransmitter) -> None:
        self.key = key
        self.request = request
        self.retransmitter = retransmitter


class SipEndpoint:
    def __init__(
        self,
        on_event: EventHandler,
        config: TimerConfig = DEFAULT_TIMERS,
        *,
        sent_by: Address | None = None,
    ) -> None:
        """`sent_by`: the address to put in Via (default: the bound address, which must
        then be routable, not 0.0.0.0)."""
        self._on_event = on_event
        self._config = config
        self._sent_by = sent_by
        self._layer: TransactionLayer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: UdpProtocol | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tls: TlsSettings | None = None
        self._tls_local: Address | None = None
        self._connections: dict[ConnectionKey, TcpConnection] = {}
        self._connecting: dict[ConnectionKey, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._delivering = False
        self._local: Address = ("", 0)
        # INVITE server transactions the TU may answer with a 2xx: key -> (request, source,
        # transport); and the 2xx awaiting their ACK, by (Call-ID, CSeq number).
        self._invites: dict[str, tuple[Request, Address, str]] = {}
        self._pending_2xx: dict[tuple[str, int], _Pending2xx] = {}
        self._closed = False
        # ("in" | "out", method, status) -> messages the TU received or sent; status 0 for
        # requests, and a response's method is its CSeq's ("other" past the known methods).
        # Retransmissions are not counted.
        self.messages: Counter[tuple[str, str, int]] = Counter()
        self.parse_errors = 0
        # TLS handshakes that failed, inbound and outbound (bad or missing certificate,
        # not TLS at all, too slow).
        self.tls_failures = 0

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, host: str, port: int, *, tls: TlsSettings | None = None) -> None:
        """Listen on UDP and TCP at (host, port); port 0 picks a free one (same for both).
        With `tls`, requests may be sent over "TLS", and TLS is accepted at `tls.listen`
        when it is set (port 0: a free one)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        udp_transport, udp = await loop.create_datagram_endpoint(
            lambda: UdpProtocol(self._on_message, self._on_parse_error),
            local_addr=(host, port),
        )
        self._udp = udp
        sockname = udp_transport.get_extra_info("sockname")
        self._local = (str(sockname[0]), int(sockname[1]))
        try:
            self._tcp_server = await loop.create_server(
                self._new_connection, host, self._local[1], reuse_address=True
            )
        except OSError:
            udp_transport.close()
            raise
        sent_by = self._sent_by or self._local
        per_transport: dict[str, Address] = {}
        listening = "UDP, TCP"
        self._tls = tls
        if tls is not None and tls.listen is not None:
            try:
                self._tls_local = await self._listen_tls(tls, tls.listen)
            except OSError:
                udp_transport.close()
                assert self._tcp_server is not None
                self._tcp_server.close()
                raise
            per_transport["TLS"] = tls.sent_by or (sent_by[0], self._tls_local[1])
            listening += f", TLS on {self._tls_local[0]}:{self._tls_local[1]}"
        self._layer = TransactionLayer(self._config, local_sent_by=sent_by, sent_by=per_transport)
        log.info("SIP endpoint listening on %s:%d (%s)", *self._local, listening)

    async def _listen_tls(self, tls: TlsSettings, address: Address) -> Address:
        if tls.server_context is None:
            raise ValueError("TlsSettings.listen needs a server_context")
        assert self._loop is not None
        # Our own accept loop, each handshake awaited in a task of ours (_handshake): the
        # loop's ssl= server drops a failed handshake silently, and it must be said and
        # counted. start_tls() on an accepted transport is no way either: uvloop may read
        # the ClientHello before it takes over, and the handshake then hangs.
        infos = await self._loop.getaddrinfo(
            address[0], address[1], type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        listener = socket.create_server(address, family=infos[0][0], backlog=128)
        listener.setblocking(False)
        self._spawn(self._accept_tls(listener))
        sockname = listener.getsockname()
        return str(sockname[0]), int(sockname[1])

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """Stop listening, close every connection and forget every transaction timer."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
        for conn in list(self._connections.values()):
            conn.close()
        for task in self._tasks:
            task.cancel()

    async def wait_closed(self) -> None:
        if self._tcp_server is not None:
            await self._tcp_server.wait_closed()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> SipEndpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()

    @property
    def local_address(self) -> Address:
        return self._local

    @property
    def tls_address(self) -> Address | None:
        """Where TLS is accepted (the bound port when 0 was asked), None without TLS."""
        return self._tls_local

    @property
    def layer(self) -> TransactionLayer:
        if self._layer is None:
            raise RuntimeError("SipEndpoint.start() has not been awaited")
        return self._layer

    # --- the layer's API, clock-free ---------------------------------------------------------

    def send_request(self, request: Request, destination: Address, transport: str = "UDP") -> str:
        key = self.layer.send_request(request, destination, transport, self._now())
        self.messages[("out", _counted(request.method), 0)] += 1
        self._process()
        return key

    def send_response(self, key: str, response: Response) -> None:
        now = self._now()
        self.layer.send_response(key, response, now)
        self.messages[("out", _counted(response.cseq.method), response.status)] += 1
        invite = self._invites.get(key)
        if invite is not None and 200 <= response.status < 300:
            request, source, transport = invite
            retransmitter = Uas2xxRetransmitter(response, source, transport, now, self._config)
            pending = _Pending2xx(key, request, retransmitter)
            self._pending_2xx[(response.call_id, response.cseq.seq)] = pending
        self._process()

    def send_stateless(self, msg: Message, destination: Address, transport: str = "UDP") -> None:
        self.layer.send_stateless(msg, destination, transport)
        if isinstance(msg, Request):
            self.messages[("out", _counted(msg.method), 0)] += 1
        else:
            self.messages[("out", _counted(msg.cseq.method), msg.status)] += 1
        self._process()

    def cancel_request(self, key: str) -> str | None:
        cancel_key = self.layer.cancel_request(key, self._now())
        if cancel_key is not None:
            self.messages[("out", "CANCEL", 0)] += 1
        self._process()
        return cancel_key

    def find_cancelled(self, cancel: Request) -> str | None:
        return self.layer.find_cancelled(cancel)

    # --- input -------------------------------------------------------------------------------

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _on_message(self, msg: Message, source: Address, transport: str) -> None:
        if self._layer is None or self._closed:
            return
        try:
            self._layer.receive(msg, source, transport, self._now())
        except RemoteProtocolError as exc:
            # A response is never answered (and one with a status past 699 does not
            # serialize): only a request's bytes are needed to build the error answer.
            data = msg.serialize() if isinstance(msg, Request) else b""
            self._answer_error(exc, data, source, transport)
        self._process()

    def _on_parse_error(
        self, exc: RemoteProtocolError, data: bytes, source: Address, transport: str
    ) -> None:
        self._answer_error(exc, data, source, transport)

    def _answer_error(
        self, exc: RemoteProtocolError, data: bytes, source: Address, transport: str
    ) -> None:
        self.parse_errors += 1
        answer = error_response(data, exc.status_hint)
        log.warning(
            "malformed message from %s:%d over %s (%s): %s",
            source[0],
            source[1],
            transport,
            exc,
            f"answered {exc.status_hint}" if answer is not None else "dropped",
        )
        if answer is not None:
            self._transmit(answer, source, transport)

    def _new_connection(self, name: str = "TCP") -> TcpConnection:
        return TcpConnection(
            self._on_message,
            self._on_parse_error,
            self._connection_opened,
            self._connection_lost,
            name,
        )

    def _connection_opened(self, conn: TcpConnection) -> None:
        self._connections[(conn.name, conn.peer)] = conn

    async def _accept_tls(self, listener: socket.socket) -> None:
        assert self._loop is not None
        try:
            while not self._closed:
                try:
                    sock, _ = await self._loop.sock_accept(listener)
                except OSError as exc:
                    # Out of file descriptors, mostly: give the calls in progress a moment
                    # to hand some back rather than spin.
                    log.warning("TLS accept failed: %s", exc)
                    await asyncio.sleep(0.1)
                    continue
                self._spawn(self._handshake(sock))
        finally:
            # Here, once the loop no longer watches it (close() cancels this task).
            listener.close()

    async def _handshake(self, sock: socket.socket) -> None:
        assert self._loop is not None and self._tls is not None
        try:
            peer = sock.getpeername()
        except OSError:
            sock.close()  # gone already: nobody to tell
            return
        try:
            # connection_made (registering the connection) comes before any data.
            await self._loop.connect_accepted_socket(
                lambda: self._new_connection("TLS"),
                sock,
                ssl=self._tls.server_context,
                ssl_handshake_timeout=self._tls.handshake_timeout,
            )
        except OSError as exc:  # ssl.SSLError is one; so is the handshake timeout
            self.tls_failures += 1
            log.warning(
                "TLS handshake with %s:%d failed: %s", peer[0], peer[1], describe_tls_error(exc)
            )

    def _connection_lost(self, conn: TcpConnection) -> None:
        for address, known in list(self._connections.items()):
            if known is conn:
                del self._connections[address]

    # --- output ------------------------------------------------------------------------------

    def _process(self) -> None:
        """Flush what the layer produced, deliver its events, re-arm the timer. Re-entrant:
        a handler calling send_* lands here again and only flushes."""
        self._flush()
        if not self._delivering:
            self._delivering = True
            try:
                while events := self.layer.events():
                    for event in events:
                        self._dispatch(event)
                        self._flush()
            finally:
                self._delivering = False
        self._rearm()

    def _dispatch(self, event: TransactionEvent) -> None:
        if isinstance(event, ResponseReceived):
            response = event.response
            self.messages[("in", _counted(response.cseq.method), response.status)] += 1
        if isinstance(event, RequestReceived):
            request = event.request
            self.messages[("in", _counted(request.method), 0)] += 1
            if request.method == "INVITE" and event.key is not None:
                self._invites[event.key] = (request, event.source, event.transport)
            elif request.method == "ACK" and event.key is None:
                pending = self._pending_2xx.get((request.call_id, request.cseq.seq))
                if pending is not None and pending.retransmitter.matches(request):
                    del self._pending_2xx[(request.call_id, request.cseq.seq)]
        elif isinstance(event, TransactionTerminated):
            self._invites.pop(event.key, None)
        self._deliver(event)

    def _deliver(self, event: TransactionEvent) -> None:
        try:
            self._on_event(self, event)
        except Exception:
            # A bug in one call's handling must not take the endpoint down for all calls.
            log.exception("SIP event handler failed on %s", type(event).__name__)

    def _flush(self) -> None:
        if self._layer is None:
            return
        for data, destination, transport in self._layer.datagrams_to_send():
            self._transmit(data, destination, transport)
        for pending in self._pending_2xx.values():
            for data, destination, transport in pending.retransmitter.datagrams_to_send():
                self._transmit(data, destination, transport)

    def _transmit(self, data: bytes, destination: Address, transport: str) -> None:
        if self._closed:
            return
        if transport == "UDP":
            if self._udp is not None:
                self._udp.send(data, destination)
            return
        if transport not in ("TCP", "TLS") or (transport == "TLS" and self._tls is None):
            log.warning(
                "transport %s not supported, dropping message to %s", transport, destination
            )
            return
        key = (transport, destination)
        conn = self._connections.get(key)
        if conn is not None and conn.is_open:
            conn.send(data)
            return
        queue = self._connecting.get(key)
        if queue is not None:
            queue.append(data)
            return
        self._connecting[key] = [data]
        self._spawn(self._connect(key))

    async def _connect(self, key: ConnectionKey) -> None:
        assert self._loop is not None
        name, destination = key
        try:
            if name == "TLS":
                assert self._tls is not None
                _, conn = await self._loop.create_connection(
                    lambda: self._new_connection("TLS"),
                    destination[0],
                    destination[1],
                    ssl=self._tls.client_context,
                    server_hostname=self._tls.server_name or destination[0],
                    ssl_handshake_timeout=self._tls.handshake_timeout,
                )
            else:
                _, conn = await self._loop.create_connection(
                    self._new_connection, destination[0], destination[1]
                )
        except OSError as exc:  # ssl.SSLError (a certificate that does not verify) is one
            dropped = self._connecting.pop(key, [])
            reason: object = exc
            if name == "TLS":
                self.tls_failures += 1
                reason = describe_tls_error(exc)
            # The client transaction will time out (timer B/F); nothing else to tell the TU.
            log.warning(
                "%s connection to %s:%d failed (%s), %d message(s) dropped",
                name,
                destination[0],
                destination[1],
                reason,
                len(dropped),
            )
            return
        # Reachable under the address asked for too, which may differ from the peername.
        self._connections[key] = conn
        for data in self._connecting.pop(key, []):
            conn.send(data)

    # --- timer -------------------------------------------------------------------------------

    def _next_deadline(self) -> float | None:
        deadlines = [self.layer.get_timer()]
        deadlines.extend(p.retransmitter.get_timer() for p in self._pending_2xx.values())
        return min((d for d in deadlines if d is not None), default=None)

    def _rearm(self) -> None:
        if self._closed or self._loop is None:
            return
        when = self._next_deadline()
        if when == self._timer_when and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_when = when
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        # asyncio may run a handle up to one clock resolution early: never let `now` fall
        # short of the deadline that woke us, or the timer would spin.
        now = max(self._now(), self._timer_when or 0.0)
        self._timer_when = None
        self.layer.handle_timer(now)
        for call, pending in list(self._pending_2xx.items()):
            retransmitter = pending.retransmitter
            retransmitter.handle_timer(now)
            if retransmitter.timed_out:
                del self._pending_2xx[call]
                log.info("no ACK for the 2xx of %s", pending.key)
                self._deliver(TransactionTimedOut(pending.key, pending.request))
        self._process()
