"""asyncio protocols carrying SIP over UDP, TCP and TLS, and the stateless error answer.

They only move bytes and frame messages; the endpoint owns the TransactionLayer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from sip.errors import RemoteProtocolError
from sip.message import Headers, Message, Response, StreamParser, generate_tag, parse_message
from sip.transaction import Address
from sip.uri import is_token

__all__ = [
    "TcpConnection",
    "UdpProtocol",
    "error_response",
]

log = logging.getLogger(__name__)

_REASONS = {
    400: "Bad Request",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    483: "Too Many Hops",
    505: "Version Not Supported",
    513: "Message Too Large",
}
_NEEDED = ("Via", "From", "To", "Call-ID", "CSeq")


def _unfolded_header_lines(head: str) -> list[str]:
    lines: list[str] = []
    for line in head.split("\n"):
        line = line.rstrip("\r")
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    return lines


def error_response(data: bytes, status: int) -> bytes | None:
    """A stateless error answer to the malformed request in `data`, built from whatever
    headers can be read (RFC 3261 §8.2.6: Via, From, To, Call-ID, CSeq copied). None when
    `data` is not a request or those headers cannot be found: then there is nobody to
    answer and the message is dropped."""
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode("utf-8", "replace")
    start, *lines = _unfolded_header_lines(head)
    parts = start.split()
    # A malformed *response* is never answered, nor is garbage without a request line. The
    # request line may be malformed itself: extra LWS (RFC 4475 lwsstart, lwsruri) too.
    if (
        len(parts) < 3
        or parts[0].upper().startswith("SIP/")
        or not any(part.upper().startswith("SIP/") for part in parts[2:])
    ):
        return None
    if parts[0] == "ACK":
        return None  # an ACK is never answered (RFC 3261 §17.1.1.3): no 400 either
    items: list[tuple[str, str]] = []
    for line in lines:
        name, sep, value = line.partition(":")
        # A line whose name is no token or whose value holds a bare CR cannot be a header
        # (that may be why the request is malformed): skip it, Headers would refuse it.
        if sep and is_token(name.strip()) and "\r" not in value:
            items.append((name.strip(), value.strip()))
    parsed = Headers(items)
    if not all(name in parsed for name in _NEEDED):
        return None
    headers = Headers([(name, value) for name in _NEEDED for value in _raw_values(parsed, name)])
    to = headers.get("To") or ""
    if ";tag=" not in to.lower().replace(" ", ""):
        headers.set("To", f"{to};tag={generate_tag()}")
    reason = _REASONS.get(status, "Bad Request" if status == 400 else "Error")
    return Response(status, reason, headers).serialize()


def _raw_values(headers: Headers, name: str) -> list[str]:
    # Via is the one repeated header to copy; its raw lines are kept as they came.
    if name == "Via":
        return [value for key, value in headers if key == "Via"]
    value = headers.get(name)
    return [value] if value is not None else []


MessageHandler = Callable[[Message, Address, str], None]
ErrorHandler = Callable[[RemoteProtocolError, bytes, Address, str], None]


class UdpProtocol(asyncio.DatagramProtocol):
    """One datagram = one message (§18.3 does not frame UDP)."""

    def __init__(self, on_message: MessageHandler, on_error: ErrorHandler) -> None:
        self._on_message = on_message
        self._on_error = on_error
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's UDP transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        source = (str(addr[0]), int(addr[1]))
        if not data.strip(b"\r\n"):
            return  # keepalive (RFC 5626 CRLF ping)
        try:
            msg = parse_message(data)
        except RemoteProtocolError as exc:
            self._on_error(exc, data, source, "UDP")
            return
        self._on_message(msg, source, "UDP")

    def error_received(self, exc: Exception) -> None:
        # ICMP errors surface here on the next operation; transactions time out on their own.
        log.info("UDP error: %s", exc)

    def send(self, data: bytes, destination: Address) -> None:
        if self.transport is None or self.transport.is_closing():
            log.warning("UDP socket closed, dropping %d bytes to %s", len(data), destination)
            return
        self.transport.sendto(data, destination)


class TcpConnection(asyncio.Protocol):
    """One TCP or TLS connection, inbound or outbound, with its own stream framer.

    `name` ("TCP" or "TLS") is the transport the messages are reported to have come over.
    """

    def __init__(
        self,
        on_message: MessageHandler,
        on_error: ErrorHandler,
        on_open: Callable[[TcpConnection], None],
        on_close: Callable[[TcpConnection], None],
        name: str = "TCP",
    ) -> None:
        self._on_message = on_message
        self._on_error = on_error
        self._on_open = on_open
        self._on_close = on_close
        self._parser = StreamParser()
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.peer: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1]))
        self._on_open(self)

    def data_received(self, data: bytes) -> None:
        chunk = data
        while True:
            try:
                messages = self._parser.feed(data)
            except RemoteProtocolError as exc:
                # Only the chunk is at hand to build the answer from: right when, as usual,
                # the bad message came in one piece.
                self._on_error(exc, chunk, self.peer, self.name)
                if self._parser.broken:
                    # Framing is lost: nothing after this can be delimited.
                    self.close()
                    return
                data = b""
                continue
            for msg in messages:
                self._on_message(msg, self.peer, self.name)
            if not messages:
                return
            # Feed nothing once more: a malformed message behind good ones in the same chunk
            # is reported by the next feed(), and the peer may be waiting for our answer.
            data = b""

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.transport is not None:  # else: a failed TLS handshake
            log.info("%s connection with %s lost: %s", self.name, self.peer, exc)
        self._on_close(self)

    def send(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            log.warning(
                "%s connection to %s closed, dropping %d bytes", self.name, self.peer, len(data)
            )
            return
        self.transport.write(data)

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
