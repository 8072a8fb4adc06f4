"""The service's local control API: newline-delimited JSON over a Unix stream socket.

Requests, one JSON object per line:

    {"cmd": "calls"}
    {"cmd": "pause" | "resume" | "start" | "stop", "call": "CALL-ID"}

Responses, one per request, in order:

    {"ok": true, "calls": [{"id": ..., "direction": ..., "state": ..., "recording": ...,
                            "started": ...}, ...]}
    {"ok": true, "message": "..."}
    {"ok": false, "error": "refused" | "bad_request" | "internal", "message": "..."}

Who may talk to it is decided by the file system: the socket is 0660 in a directory of the
service (`/run/recorder`, 0750 under systemd), so the service's user and group. Who *did*
is the peer's credentials (SO_PEERCRED), handed to the handler as `Actor` for the audit
trail. A call summary only ever carries the keys of `CallSummary`, whatever the handler
returns: phone numbers have no field to travel in (the catalog is their one home, N3/D2).

A request line longer than `MAX_LINE` bytes is answered with an error and the connection
closed: the rest of the line cannot be told from the next request.

A server may also carry `commands`, a table of further commands (the lawful-use desk serves
its own socket this way, `recorder.access.commands`): each takes the request object and the
`Actor` and returns a response, or a response and bytes. Bytes follow the response line
raw, their length in its `"payload"` key, so a recording is not inflated into JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, NotRequired, Protocol, TypedDict, TypeVar

import structlog

SYSTEMD_SOCKET: Final = Path("/run/recorder/control.sock")
LOCAL_SOCKET: Final = Path("var/control.sock")
SOCKET_NAME: Final = "control.sock"
SOCKET_MODE: Final = 0o660
MAX_LINE: Final = 4096
MAX_CLIENTS: Final = 32
IDLE_TIMEOUT: Final = 60.0
CLOSE_GRACE: Final = 1.0  # seconds a command in progress may take to finish at close
MAX_CALL_ID: Final = 256
ACTIONS: Final = ("pause", "resume", "start", "stop")

_PEERCRED: Final = struct.Struct("3i")
_SUMMARY_KEYS: Final = ("id", "direction", "state", "recording", "started", "extension", "agent")

log = structlog.get_logger("recorder.control")

_T = TypeVar("_T")
ErrorKind = Literal["refused", "bad_request", "internal"]


class ControlError(Exception):
    """The handler refuses a command (unknown call, not allowed now); the message is shown."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Actor:
    """Who sent a control command: the peer's credentials at connect time (SO_PEERCRED)."""

    uid: int | None
    gid: int | None
    pid: int | None

    def __str__(self) -> str:
        if self.uid is None:
            return "unknown"
        return f"uid={self.uid} gid={self.gid} pid={self.pid}"

    def to_json(self) -> dict[str, int | None]:
        return {"uid": self.uid, "gid": self.gid, "pid": self.pid}


class CallSummary(TypedDict):
    """One active call as the control API shows it. No phone numbers, by construction."""

    id: str
    direction: str  # inbound | outbound
    state: str  # e.g. consent | ringing | bridged
    recording: str  # e.g. off | recording | paused | refused
    started: str  # ISO 8601 with offset
    extension: NotRequired[str | None]
    agent: NotRequired[str | None]


Reply = dict[str, Any] | tuple[dict[str, Any], bytes]


class Command(Protocol):
    """One command of a `commands` table; raises ControlError to refuse."""

    def __call__(self, request: Mapping[str, Any], actor: Actor) -> Awaitable[Reply]: ...


class ControlHandler(Protocol):
    """The service side of the control API (the lead's call controller implements it).

    Each method may be a plain function or a coroutine function. An action returns a
    one-line status message and raises `ControlError` to refuse; any other exception is
    logged and answered as an internal error, the server keeps serving.
    """

    def calls(self, actor: Actor) -> list[CallSummary] | Awaitable[list[CallSummary]]: ...
    def pause(self, call_id: str, actor: Actor) -> str | Awaitable[str]: ...
    def resume(self, call_id: str, actor: Actor) -> str | Awaitable[str]: ...
    def start_recording(self, call_id: str, actor: Actor) -> str | Awaitable[str]: ...
    def stop_recording(self, call_id: str, actor: Actor) -> str | Awaitable[str]: ...


def service_socket_path(storage_dir: Path | None = None) -> Path:
    """Where the service listens: systemd's RuntimeDirectory when it has one, else `var/`.

    systemd exports RUNTIME_DIRECTORY for `RuntimeDirectory=`; without it, the socket sits
    next to the catalog (`storage_dir`, default `var/`) so that a development checkout and
    `recorder ctl` run from it agree without configuration.
    """
    runtime = os.environ.get("RUNTIME_DIRECTORY")
    if runtime:
        # Several directories are separated by colons; the first is the service's own.
        return Path(runtime.split(":")[0]) / SOCKET_NAME
    return (storage_dir or LOCAL_SOCKET.parent) / SOCKET_NAME


def client_socket_path() -> Path:
    """Default for `recorder ctl`: the systemd service's socket if present, else `var/`."""
    return SYSTEMD_SOCKET if SYSTEMD_SOCKET.exists() else LOCAL_SOCKET


def _peer(writer: asyncio.StreamWriter) -> Actor:
    sock = writer.get_extra_info("socket")
    peercred = getattr(socket, "SO_PEERCRED", None)
    if sock is None or peercred is None:
        return Actor(uid=None, gid=None, pid=None)
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, peercred, _PEERCRED.size)
    except OSError:
        return Actor(uid=None, gid=None, pid=None)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return Actor(uid=uid, gid=gid, pid=pid)


def _encode(response: Mapping[str, Any]) -> bytes:
    return json.dumps(response, separators=(",", ":"), default=str).encode() + b"\n"


def _error(kind: ErrorKind, message: str) -> dict[str, Any]:
    return {"ok": False, "error": kind, "message": message}


def _summary(item: Mapping[str, Any]) -> dict[str, Any]:
    return {key: item[key] for key in _SUMMARY_KEYS if key in item}


class _BadRequest(Exception):
    pass


def _load(line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _BadRequest(f"not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise _BadRequest("a request is a JSON object")
    return request


def _parse(request: Mapping[str, Any]) -> tuple[str, str | None]:
    cmd = request.get("cmd")
    if cmd == "calls":
        return cmd, None
    if cmd not in ACTIONS:
        raise _BadRequest(f"unknown cmd {cmd!r}; one of calls, {', '.join(ACTIONS)}")
    call = request.get("call")
    # Integers too: a catalog-style numeric id typed on a command line is the same call.
    if isinstance(call, int) and not isinstance(call, bool):
        call = str(call)
    if not isinstance(call, str) or not call:
        raise _BadRequest(f"{cmd}: 'call' must be a call id")
    if len(call) > MAX_CALL_ID or not call.isprintable():
        raise _BadRequest(f"{cmd}: malformed call id")
    return cmd, call


class ControlServer:
    """Listens on `path` and hands each command to `handler`; `start()` then `close()`."""

    def __init__(
        self,
        path: Path | str,
        handler: ControlHandler | None,
        *,
        commands: Mapping[str, Command] | None = None,
        mode: int = SOCKET_MODE,
        max_clients: int = MAX_CLIENTS,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.path = Path(path)
        self.handler = handler
        self.commands: Mapping[str, Command] = commands or {}
        self.mode = mode
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self._clients: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def start(self) -> None:
        """Bind, set the mode, listen. OSError when the path is taken by a live server."""
        self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        _clear_stale(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Bound under a temporary name, given its mode, then renamed into place: the
            # socket is never reachable with the umask's mode, and no process-wide umask
            # change races the service's other threads.
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            sock.bind(os.fspath(temporary))
            try:
                os.chmod(temporary, self.mode)
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    temporary.unlink()
                raise
            self._inode = self.path.stat().st_ino
            sock.listen(16)
            sock.setblocking(False)
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_LINE)
        except BaseException:
            sock.close()
            raise
        log.info("control.listening", path=str(self.path))

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Closing a client's transport ends its conversation (the reader sees EOF); only one
        # stuck in the handler is cancelled. Cancelling a task still in readline() makes
        # asyncio's stream callback (3.11) log the CancelledError as an error.
        for writer in list(self._clients.values()):
            writer.close()
        if self._clients:
            _done, stuck = await asyncio.wait(list(self._clients), timeout=CLOSE_GRACE)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        await server.wait_closed()
        # Only our own socket: a newer instance may already have replaced it.
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # a stream callback always runs in a task
        actor = _peer(writer)
        try:
            if len(self._clients) >= self.max_clients:
                writer.write(_encode(_error("refused", "too many control clients")))
                await writer.drain()
                return
            self._clients[task] = writer
            await self._converse(reader, writer, actor)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._clients.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, actor: Actor
    ) -> None:
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout):
                    line = await reader.readline()
            except ValueError:
                # StreamReader's limit: the line is over MAX_LINE and its tail is unread.
                writer.write(_encode(_error("bad_request", f"line over {MAX_LINE} bytes")))
                await writer.drain()
                return
            if not line:
                return
            if line.strip():
                reply = await self._answer(line, actor)
                if isinstance(reply, tuple):
                    response, payload = reply
                    writer.write(_encode({**response, "payload": len(payload)}))
                    writer.write(payload)
                else:
                    writer.write(_encode(reply))
                await writer.drain()
            if not line.endswith(b"\n"):
                return  # EOF after an unterminated last request

    async def _answer(self, line: bytes, actor: Actor) -> Reply:
        try:
            request = _load(line)
            command = self.commands.get(str(request.get("cmd")))
            if command is not None:
                return await self._extra(str(request["cmd"]), command, request, actor)
            if self.handler is None:
                known = ", ".join(sorted(self.commands))
                raise _BadRequest(f"unknown cmd {request.get('cmd')!r}; one of {known}")
            cmd, call = _parse(request)
        except _BadRequest as exc:
            return _error("bad_request", str(exc))
        try:
            if cmd == "calls":
                calls = await _resolve(self.handler.calls(actor))
                return {"ok": True, "calls": [_summary(item) for item in calls]}
            assert call is not None  # _parse guarantees one for every action
            action = {
                "pause": self.handler.pause,
                "resume": self.handler.resume,
                "start": self.handler.start_recording,
                "stop": self.handler.stop_recording,
            }[cmd]
            message = await _resolve(action(call, actor))
            log.info("control.command", cmd=cmd, call=call, actor=str(actor), result="done")
            return {"ok": True, "message": str(message)}
        except ControlError as exc:
            log.info("control.command", cmd=cmd, call=call, actor=str(actor), result="refused")
            return _error("refused", exc.message)
        except Exception:
            log.exception("control.handler_failed", cmd=cmd, actor=str(actor))
            return _error("internal", f"{cmd} failed inside the service; see its log")

    async def _extra(
        self, cmd: str, command: Command, request: Mapping[str, Any], actor: Actor
    ) -> Reply:
        try:
            return await command(request, actor)
        except ControlError as exc:
            return _error("refused", exc.message)
        except Exception:
            log.exception("control.handler_failed", cmd=cmd, actor=str(actor))
            return _error("internal", f"{cmd} failed inside the service; see its log")


async def _resolve(value: _T | Awaitable[_T]) -> _T:
    if inspect.isawaitable(value):
        return await value
    return value


def _clear_stale(path: Path) -> None:
    """Remove a socket left by a crashed service; refuse to touch anything else."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
    except ConnectionRefusedError:
        path.unlink()
        return
    except OSError:
        return  # e.g. permission denied: let bind report it
    finally:
        probe.close()
    raise OSError(f"{path}: another control server is listening there")


class ServiceUnreachable(Exception):
    """The control socket is missing, refuses, or does not answer."""


def control_request(
    path: Path | str, request: Mapping[str, Any], *, timeout: float = 5.0
) -> dict[str, Any]:
    """Send one request and return the response (blocking; for the CLI and tests)."""
    return control_exchange(path, request, timeout=timeout)[0]


def _read_exact(sock: socket.socket, buffer: bytearray, size: int) -> bytes:
    while len(buffer) < size:
        chunk = sock.recv(max(65536, size - len(buffer)))
        if not chunk:
            raise ServiceUnreachable("the service closed the connection mid-answer")
        buffer += chunk
    return bytes(buffer[:size])


def control_exchange(
    path: Path | str, request: Mapping[str, Any], *, timeout: float = 5.0
) -> tuple[dict[str, Any], bytes]:
    """Send one request; the response and the bytes that follow it (empty when none)."""
    where = os.fspath(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(where)
        except FileNotFoundError:
            raise ServiceUnreachable(
                f"no control socket at {where}: is the service running?"
            ) from None
        except ConnectionRefusedError:
            raise ServiceUnreachable(
                f"control socket {where} refuses connections: the service is not running"
            ) from None
        except PermissionError:
            raise ServiceUnreachable(
                f"permission denied on {where}: run as the service's user or group"
            ) from None
        except OSError as exc:
            raise ServiceUnreachable(f"cannot connect to {where}: {exc.strerror or exc}") from None
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            buffer = bytearray()
            while b"\n" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
            line, _, rest = bytes(buffer).partition(b"\n")
            response = _decode(line)
            size = response.get("payload", 0)
            payload = b""
            if isinstance(size, int) and size > 0:
                payload = _read_exact(sock, bytearray(rest), size)
        except TimeoutError:
            raise ServiceUnreachable(f"the service did not answer within {timeout:g} s") from None
        except OSError as exc:
            raise ServiceUnreachable(f"control connection failed: {exc}") from None
    finally:
        sock.close()
    return response, payload


def _decode(line: bytes) -> dict[str, Any]:
    try:
        response = json.loads(line)
    except ValueError:
        raise ServiceUnreachable("the service closed the connection without an answer") from None
    if not isinstance(response, dict):
        raise ServiceUnreachable("the service answered something that is not a response")
    return response
