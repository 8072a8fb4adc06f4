"""rtpengine's ng control protocol: bencode and the cookie framing (sans-IO), and `NgClient`,
its asyncio UDP adapter.

An ng message is `COOKIE SPACE BENCODED-DICT` in one UDP datagram; the reply carries the same
cookie (rtpengine answers a retransmitted cookie from its cache, so a request may be resent
as is). Replies hold `result` = `ok` (or `pong`), or `error` with `error-reason`. See
rtpengine's docs/ng_control_protocol.md. Bencode is four cases: a small codec here, checked
by property tests (tests/recorder/test_ng.py), rather than one more dependency (PyPI's
`bencode-py` would do; this keeps every string as bytes, as SDP must stay).

Values we send: `str` (UTF-8), `bytes`, `int`, `list`, `dict` with `str` keys. Decoding gives
`bytes` for every string (an SDP is bytes; rtpengine never promises UTF-8) and `str` keys.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import structlog

Address = tuple[str, int]
_log = structlog.get_logger(__name__)
TAG_A = "a"  # the recorder's rtpengine calls: the monologue facing the caller
TAG_B = "b"  # and the one facing the callee

Bencodable: TypeAlias = "str | bytes | int | Sequence[Bencodable] | Mapping[str, Bencodable]"
_INTEGER = re.compile(rb"0|-?[1-9][0-9]*")
MAX_DEPTH = 32  # deeper nesting is refused (rtpengine sends two or three levels)


class BencodeError(ValueError):
    """Input that is not bencode, or a value that cannot be bencoded."""


class NgError(Exception):
    """rtpengine answered `error` (its `error-reason` is the message)."""


def bencode(value: Any) -> bytes:
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


def _encode(value: Any, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise BencodeError("nested too deep")
    if isinstance(value, bool):
        raise BencodeError("booleans have no bencode form")
    if isinstance(value, int):
        out += b"i%de" % value
    elif isinstance(value, str | bytes | bytearray | memoryview):
        data = value.encode() if isinstance(value, str) else bytes(value)
        out += b"%d:" % len(data)
        out += data
    elif isinstance(value, Mapping):
        keys = []
        for key in value:
            if not isinstance(key, str | bytes):
                raise BencodeError(f"dictionary keys must be strings, not {type(key).__name__}")
            keys.append((key.encode() if isinstance(key, str) else key, key))
        out += b"d"
        for raw, key in sorted(keys):  # bencode sorts keys by their raw bytes
            out += b"%d:" % len(raw)
            out += raw
            _encode(value[key], out, depth + 1)
        out += b"e"
    elif isinstance(value, list | tuple):
        out += b"l"
        for item in value:
            _encode(item, out, depth + 1)
        out += b"e"
    else:
        raise BencodeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """One whole bencoded value; dictionary keys become `str`, strings stay `bytes`."""
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError(f"{len(data) - end} bytes after the value")
    return value


def _decode(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise BencodeError("nested too deep")
    if pos >= len(data):
        raise BencodeError("truncated")
    lead = data[pos : pos + 1]
    if lead == b"i":
        end = data.find(b"e", pos + 1)
        if end < 0:
            raise BencodeError("unterminated integer")
        text = data[pos + 1 : end]
        if not _INTEGER.fullmatch(text):
            raise BencodeError(f"bad integer {text[:20]!r}")
        return int(text), end + 1
    if lead.isdigit():
        colon = data.find(b":", pos)
        if colon < 0:
            raise BencodeError("string without ':'")
        size_text = data[pos:colon]
        if not size_text.isdigit() or (size_text.startswith(b"0") and len(size_text) > 1):
            raise BencodeError(f"bad string length {size_text[:20]!r}")
        start, end = colon + 1, colon + 1 + int(size_text)
        if end > len(data):
            raise BencodeError("string runs past the end")
        return data[start:end], end
    if lead == b"l":
        items = []
        pos += 1
        while data[pos : pos + 1] != b"e":
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
        return items, pos + 1
    if lead == b"d":
        result: dict[str, Any] = {}
        pos += 1
        while data[pos : pos + 1] != b"e":
            if pos >= len(data):
                raise BencodeError("truncated dictionary")
            key, pos = _decode(data, pos, depth + 1)
            if not isinstance(key, bytes):
                raise BencodeError("dictionary key is not a string")
            value, pos = _decode(data, pos, depth + 1)
            result[key.decode("utf-8", "replace")] = value
        return result, pos + 1
    raise BencodeError(f"unexpected byte {lead!r} at {pos}")


def new_cookie() -> str:
    return secrets.token_hex(8)


def encode_request(cookie: str, command: Mapping[str, Any]) -> bytes:
    """One datagram: the cookie, a space, the bencoded command dictionary."""
    if not cookie or " " in cookie:
        raise ValueError("a cookie is one non-empty word")
    if "command" not in command:
        raise ValueError("an ng message needs a 'command'")
    return cookie.encode() + b" " + bencode(command)


@dataclass(frozen=True, slots=True)
class NgReply:
    cookie: str
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.body.get("result") in (b"ok", b"pong")

    @property
    def error(self) -> str | None:
        if self.ok:
            return None
        reason = self.body.get("error-reason", self.body.get("result", b"no result"))
        return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)

    def text(self, key: str) -> str | None:
        value = self.body.get(key)
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else None

    def checked(self) -> dict[str, Any]:
        """The body, or NgError with rtpengine's reason."""
        error = self.error
        if error is not None:
            raise NgError(error)
        return self.body


def decode_reply(datagram: bytes) -> NgReply:
    """Split and decode a reply; BencodeError if it is not one."""
    cookie, space, rest = datagram.partition(b" ")
    if not space or not cookie:
        raise BencodeError("no cookie")
    body = bdecode(rest)
    if not isinstance(body, dict):
        raise BencodeError("the reply is not a dictionary")
    return NgReply(cookie.decode("ascii", "replace"), body)


class NgTimeout(NgError):
    """rtpengine did not answer in time."""


# ---------------------------------------------------------------------------- the client


class NgClient:
    """ng over UDP: one socket, replies matched by cookie, requests resent on silence."""

    def __init__(self, address: Address, *, timeout: float = 0.4, attempts: int = 3) -> None:
        self.address = address
        self.timeout = timeout
        self.attempts = attempts
        self._transport: asyncio.DatagramTransport | None = None
        self._waiting: dict[str, asyncio.Future[NgReply]] = {}
        self.bad_replies = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        client = self

        class _Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                client._received(data)

            def error_received(self, exc: Exception) -> None:
                # ICMP port unreachable (rtpengine not running): the retries decide.
                _log.debug("rtpengine.ng_socket_error", error=str(exc))

        transport, _ = await loop.create_datagram_endpoint(_Protocol, remote_addr=self.address)
        self._transport = transport

    def _received(self, data: bytes) -> None:
        try:
            reply = decode_reply(data)
        except BencodeError as exc:
            self.bad_replies += 1
            _log.warning("rtpengine.bad_reply", error=str(exc))
            return
        future = self._waiting.pop(reply.cookie, None)
        if future is not None and not future.done():
            future.set_result(reply)

    async def request(self, command: dict[str, Any]) -> dict[str, Any]:
        """Send `command`, return rtpengine's reply body; NgError / NgTimeout otherwise."""
        if self._transport is None:
            raise NgError("the ng client is not started")
        cookie = new_cookie()
        datagram = encode_request(cookie, command)
        future: asyncio.Future[NgReply] = asyncio.get_running_loop().create_future()
        self._waiting[cookie] = future
        try:
            for _ in range(self.attempts):
                # The same cookie each time: rtpengine answers a repeat from its cache.
                self._transport.sendto(datagram)
                done, _pending = await asyncio.wait({future}, timeout=self.timeout)
                if done:
                    return future.result().checked()
        finally:
            self._waiting.pop(cookie, None)
        raise NgTimeout(f"no answer from rtpengine at {self.address[0]}:{self.address[1]}")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for future in self._waiting.values():
            if not future.done():
                future.cancel()
        self._waiting.clear()


def delete_summary(reply: dict[str, Any]) -> dict[str, int | bool]:
    """rtpengine's counters from a `delete` (or `query`) reply: RTP packets it received from
    each party (tag `a`: the caller; `b`: the callee), errors, and whether any stream was
    forwarded in the kernel. Missing or odd fields count as zero."""
    out: dict[str, int | bool] = {"packets_a": 0, "packets_b": 0, "errors": 0, "kernel": False}
    tags = reply.get("tags")
    for tag, info in tags.items() if isinstance(tags, dict) else ():
        key = {TAG_A: "packets_a", TAG_B: "packets_b"}.get(tag)
        medias = info.get("medias") if isinstance(info, dict) else None
        for media in medias if isinstance(medias, list) else ():
            streams = media.get("streams") if isinstance(media, dict) else None
            for stream in streams if isinstance(streams, list) else ():
                if not isinstance(stream, dict):
                    continue
                flags = stream.get("flags")
                flags = flags if isinstance(flags, list) else []
                stats = stream.get("stats")
                packets = stats.get("packets") if isinstance(stats, dict) else None
                # rtpengine marks a stream "kernelized" once it tried, with "no kernel
                # support" too when the kernel would not take it (userspace forwarding).
                if b"kernelized" in flags and b"no kernel support" not in flags:
                    out["kernel"] = True
                if key is not None and b"RTP" in flags and isinstance(packets, int):
                    out[key] = int(out[key]) + packets
    totals = reply.get("totals")
    rtp = totals.get("RTP") if isinstance(totals, dict) else None
    errors = rtp.get("errors") if isinstance(rtp, dict) else None
    if isinstance(errors, int):
        out["errors"] = errors
    return out
