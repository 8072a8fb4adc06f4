"""The control socket and `recorder ctl`, over a real Unix socket in a temporary directory."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import stat
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any, cast

import pytest
import structlog

from recorder.cli.ctl import add_ctl_commands
from recorder.ops.control import (
    MAX_LINE,
    Actor,
    CallSummary,
    ControlError,
    ControlServer,
    ServiceUnreachable,
    control_exchange,
    control_request,
    service_socket_path,
)


class FakeHandler:
    """Two calls; `c1` recordable, `c2` refused by the caller. Records who asked what."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str | None, Actor]] = []
        self.state = {"c1": "recording", "c2": "refused"}
        self.gate: asyncio.Event | None = None

    def calls(self, actor: Actor) -> list[CallSummary]:
        self.log.append(("calls", None, actor))
        rows: list[dict[str, Any]] = [
            {
                "id": call_id,
                "direction": "inbound",
                "state": "bridged",
                "recording": recording,
                "started": "2026-11-23T10:42:00-05:00",
                "extension": "235",
                # A careless handler: the server must not let these through.
                "caller_number": "+15145550100",
                "callee_number": "+15145550199",
            }
            for call_id, recording in self.state.items()
        ]
        return cast(list[CallSummary], rows)

    def _act(self, name: str, call_id: str, actor: Actor, allowed: str, to: str) -> str:
        self.log.append((name, call_id, actor))
        if call_id not in self.state:
            raise ControlError(f"no active call {call_id}")
        if self.state[call_id] != allowed:
            raise ControlError(f"call {call_id} is {self.state[call_id]}, cannot {name}")
        self.state[call_id] = to
        return f"call {call_id}: {to}"

    def pause(self, call_id: str, actor: Actor) -> str:
        return self._act("pause", call_id, actor, "recording", "paused")

    async def resume(self, call_id: str, actor: Actor) -> str:
        if self.gate is not None:
            await self.gate.wait()
        return self._act("resume", call_id, actor, "paused", "recording")

    def start_recording(self, call_id: str, actor: Actor) -> str:
        return self._act("start", call_id, actor, "off", "recording")

    def stop_recording(self, call_id: str, actor: Actor) -> str:
        if call_id == "boom":
            raise RuntimeError("handler bug")
        return self._act("stop", call_id, actor, "recording", "off")


@pytest.fixture
def handler() -> FakeHandler:
    return FakeHandler()


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    # Also keeps the server's log lines off stdout, where the CLI tests read the CLI's output.
    with structlog.testing.capture_logs() as captured:
        yield captured


@pytest.fixture
async def server(
    tmp_path: Path, handler: FakeHandler, logs: list[MutableMapping[str, Any]]
) -> AsyncIterator[ControlServer]:
    srv = ControlServer(tmp_path / "run" / "control.sock", handler)
    await srv.start()
    yield srv
    await srv.close()


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, path: Path) -> Client:
        reader, writer = await asyncio.open_unix_connection(os.fspath(path))
        return cls(reader, writer)

    async def send(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def receive(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), 5)
        assert line.endswith(b"\n"), line
        response = json.loads(line)
        assert isinstance(response, dict)
        return response

    async def ask(self, request: Any) -> dict[str, Any]:
        await self.send(json.dumps(request).encode() + b"\n")
        return await self.receive()

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 5) == b""

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


# --- the server ------------------------------------------------------------------------------


async def test_calls_lists_summaries_without_numbers(
    server: ControlServer, handler: FakeHandler
) -> None:
    client = await Client.open(server.path)
    response = await client.ask({"cmd": "calls"})
    await client.close()
    assert response["ok"] is True
    assert [c["id"] for c in response["calls"]] == ["c1", "c2"]
    first = response["calls"][0]
    assert set(first) == {"id", "direction", "state", "recording", "started", "extension"}
    assert "+1514" not in json.dumps(response)


async def test_actions_reach_the_handler_with_the_peer_credentials(
    server: ControlServer, handler: FakeHandler
) -> None:
    client = await Client.open(server.path)
    assert await client.ask({"cmd": "pause", "call": "c1"}) == {
        "ok": True,
        "message": "call c1: paused",
    }
    # An async handler method, on the same connection.
    assert (await client.ask({"cmd": "resume", "call": "c1"}))["message"] == "call c1: recording"
    assert (await client.ask({"cmd": "stop", "call": "c1"}))["message"] == "call c1: off"
    assert (await client.ask({"cmd": "start", "call": "c1"}))["message"] == "call c1: recording"
    await client.close()
    names = [(name, call) for name, call, _ in handler.log]
    assert names == [("pause", "c1"), ("resume", "c1"), ("stop", "c1"), ("start", "c1")]
    actor = handler.log[0][2]
    assert (actor.uid, actor.gid, actor.pid) == (os.getuid(), os.getgid(), os.getpid())
    assert str(actor) == f"uid={os.getuid()} gid={os.getgid()} pid={os.getpid()}"


async def test_refusals_are_errors_not_crashes(server: ControlServer) -> None:
    client = await Client.open(server.path)
    assert await client.ask({"cmd": "pause", "call": "nope"}) == {
        "ok": False,
        "error": "refused",
        "message": "no active call nope",
    }
    refused = await client.ask({"cmd": "resume", "call": "c2"})
    assert refused["error"] == "refused" and "cannot resume" in refused["message"]
    # The connection is still usable.
    assert (await client.ask({"cmd": "calls"}))["ok"] is True
    await client.close()


async def test_a_failing_handler_is_an_internal_error_and_the_server_goes_on(
    server: ControlServer,
) -> None:
    client = await Client.open(server.path)
    response = await client.ask({"cmd": "stop", "call": "boom"})
    assert response["ok"] is False and response["error"] == "internal"
    assert "handler bug" not in response["message"]  # internals stay in the service log
    assert (await client.ask({"cmd": "calls"}))["ok"] is True
    await client.close()


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json\n", "not JSON"),
        (b"\xff\xfe\n", "not JSON"),
        (b"[1, 2]\n", "JSON object"),
        (b'{"cmd": "reboot"}\n', "unknown cmd 'reboot'"),
        (b'{"call": "c1"}\n', "unknown cmd None"),
        (b'{"cmd": "pause"}\n', "'call' must be a call id"),
        (b'{"cmd": "pause", "call": ""}\n', "'call' must be a call id"),
        (b'{"cmd": "pause", "call": true}\n', "'call' must be a call id"),
        (b'{"cmd": "pause", "call": ["c1"]}\n', "'call' must be a call id"),
        (b'{"cmd": "pause", "call": "c1\\u0000"}\n', "malformed call id"),
        (b'{"cmd": "pause", "call": "' + b"x" * 300 + b'"}\n', "malformed call id"),
    ],
)
async def test_bad_requests_are_answered_as_json(
    server: ControlServer, handler: FakeHandler, raw: bytes, fragment: str
) -> None:
    client = await Client.open(server.path)
    await client.send(raw)
    response = await client.receive()
    assert response["ok"] is False and response["error"] == "bad_request"
    assert fragment in response["message"]
    # Still serving this client, and the handler never saw the bad request.
    assert (await client.ask({"cmd": "pause", "call": "c1"}))["ok"] is True
    await client.close()
    assert [name for name, _, _ in handler.log] == ["pause"]


async def test_numeric_call_ids_are_passed_as_strings(
    server: ControlServer, handler: FakeHandler
) -> None:
    client = await Client.open(server.path)
    response = await client.ask({"cmd": "pause", "call": 42})
    await client.close()
    assert response["message"] == "no active call 42"
    assert handler.log[0][1] == "42"


async def test_blank_lines_are_ignored_and_answers_come_in_order(server: ControlServer) -> None:
    client = await Client.open(server.path)
    await client.send(
        b'\n  \n{"cmd": "pause", "call": "c1"}\n{"cmd": "pause", "call": "c1"}\n{"cmd":"calls"}\n'
    )
    first, second, third = [await client.receive() for _ in range(3)]
    await client.close()
    assert first["ok"] is True
    assert second["error"] == "refused"
    assert [c["recording"] for c in third["calls"]] == ["paused", "refused"]


async def test_an_unterminated_last_request_is_answered(server: ControlServer) -> None:
    client = await Client.open(server.path)
    await client.send(b'{"cmd": "calls"}')
    client.writer.write_eof()
    assert (await client.receive())["ok"] is True
    assert await client.closed()
    await client.close()


async def test_an_oversized_line_is_refused_and_the_connection_closed(
    server: ControlServer, handler: FakeHandler
) -> None:
    client = await Client.open(server.path)
    padding = b" " * (MAX_LINE * 4)
    await client.send(b'{"cmd": "pause", "call": "c1",' + padding + b'"x": 1}\n')
    response = await client.receive()
    assert response["error"] == "bad_request" and str(MAX_LINE) in response["message"]
    assert await client.closed()
    await client.close()
    assert handler.log == []
    # The server itself is fine.
    other = await Client.open(server.path)
    assert (await other.ask({"cmd": "calls"}))["ok"] is True
    await other.close()


async def test_clients_are_served_concurrently(server: ControlServer, handler: FakeHandler) -> None:
    handler.state["c1"] = "paused"
    handler.gate = asyncio.Event()
    slow = await Client.open(server.path)
    await slow.send(b'{"cmd": "resume", "call": "c1"}\n')
    pending = asyncio.ensure_future(slow.receive())
    # While one client's command waits inside the handler, ten others are answered.
    others = [await Client.open(server.path) for _ in range(10)]
    answers = await asyncio.gather(*(c.ask({"cmd": "calls"}) for c in others))
    assert all(a["ok"] for a in answers)
    assert not pending.done()
    handler.gate.set()
    assert (await pending)["message"] == "call c1: recording"
    for client in [slow, *others]:
        await client.close()


async def test_too_many_clients_are_told_so(tmp_path: Path, handler: FakeHandler) -> None:
    srv = ControlServer(tmp_path / "control.sock", handler, max_clients=2)
    await srv.start()
    try:
        held = [await Client.open(srv.path) for _ in range(2)]
        for client in held:  # make sure both are registered before the third connects
            assert (await client.ask({"cmd": "calls"}))["ok"]
        extra = await Client.open(srv.path)
        response = await extra.receive()
        assert response["error"] == "refused" and "too many" in response["message"]
        assert await extra.closed()
        await extra.close()
        # A client that leaves frees its slot (the server has let go once we see its EOF).
        held[0].writer.write_eof()
        assert await held[0].closed()
        late = await Client.open(srv.path)
        assert (await late.ask({"cmd": "calls"}))["ok"]
        for client in [*held, late]:
            await client.close()
    finally:
        await srv.close()


async def test_idle_clients_are_disconnected(tmp_path: Path, handler: FakeHandler) -> None:
    srv = ControlServer(tmp_path / "control.sock", handler, idle_timeout=0.05)
    await srv.start()
    try:
        client = await Client.open(srv.path)
        assert await client.closed()
        await client.close()
    finally:
        await srv.close()


async def test_socket_mode_and_cleanup(tmp_path: Path, handler: FakeHandler) -> None:
    path = tmp_path / "var" / "control.sock"
    srv = ControlServer(path, handler)
    await srv.start()
    info = path.lstat()
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o660
    assert sorted(p.name for p in path.parent.iterdir()) == ["control.sock"]
    await srv.close()
    assert not path.exists()
    await srv.close()  # idempotent


async def test_a_stale_socket_is_replaced(tmp_path: Path, handler: FakeHandler) -> None:
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.fspath(path))
    stale.close()  # what a killed service leaves behind
    srv = ControlServer(path, handler)
    await srv.start()
    try:
        client = await Client.open(path)
        assert (await client.ask({"cmd": "calls"}))["ok"]
        await client.close()
    finally:
        await srv.close()


async def test_a_live_server_or_a_plain_file_is_not_replaced(
    server: ControlServer, handler: FakeHandler, tmp_path: Path
) -> None:
    with pytest.raises(OSError, match="another control server"):
        await ControlServer(server.path, handler).start()
    client = await Client.open(server.path)  # the first one still serves
    assert (await client.ask({"cmd": "calls"}))["ok"]
    await client.close()
    plain = tmp_path / "notes.txt"
    plain.write_text("keep me")
    with pytest.raises(FileExistsError):
        await ControlServer(plain, handler).start()
    assert plain.read_text() == "keep me"


async def test_close_does_not_remove_a_successors_socket(
    tmp_path: Path, handler: FakeHandler
) -> None:
    path = tmp_path / "control.sock"
    first = ControlServer(path, handler)
    await first.start()
    path.unlink()  # e.g. an operator cleaning up, then a second instance starting
    second = ControlServer(path, handler)
    await second.start()
    await first.close()
    assert path.exists()
    await second.close()
    assert not path.exists()


async def test_close_drops_connected_clients(tmp_path: Path, handler: FakeHandler) -> None:
    srv = ControlServer(tmp_path / "control.sock", handler)
    await srv.start()
    client = await Client.open(srv.path)
    assert (await client.ask({"cmd": "calls"}))["ok"]
    await asyncio.wait_for(srv.close(), 5)
    assert await client.closed()
    await client.close()


def test_service_socket_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    assert service_socket_path() == Path("var/control.sock")
    assert service_socket_path(tmp_path) == tmp_path / "control.sock"
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/recorder:/run/other")
    assert service_socket_path(tmp_path) == Path("/run/recorder/control.sock")


# --- the blocking client ---------------------------------------------------------------------


async def test_control_request_against_the_server(server: ControlServer) -> None:
    response = await asyncio.to_thread(control_request, server.path, {"cmd": "calls"})
    assert response["ok"] is True and len(response["calls"]) == 2


def test_control_request_without_a_service(tmp_path: Path) -> None:
    with pytest.raises(ServiceUnreachable, match="no control socket"):
        control_request(tmp_path / "missing.sock", {"cmd": "calls"})
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.fspath(tmp_path / "stale.sock"))
    stale.close()
    with pytest.raises(ServiceUnreachable, match="not running"):
        control_request(tmp_path / "stale.sock", {"cmd": "calls"})


async def test_control_request_when_the_service_does_not_answer(tmp_path: Path) -> None:
    path = tmp_path / "mute.sock"

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    mute_server = await asyncio.start_unix_server(mute, os.fspath(path))
    try:
        with pytest.raises(ServiceUnreachable, match="did not answer"):
            await asyncio.to_thread(control_request, path, {"cmd": "calls"}, timeout=0.2)
    finally:
        mute_server.close()
        await mute_server.wait_closed()


# --- recorder ctl ----------------------------------------------------------------------------


def ctl(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="recorder")
    add_ctl_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["ctl", *argv])
    result: int = args.handler(args)
    return result


async def run_ctl(*argv: str) -> int:
    # The CLI blocks on its socket; the server runs on this loop, so the CLI gets a thread.
    return await asyncio.to_thread(ctl, *argv)


async def test_ctl_calls_table(server: ControlServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_ctl("calls", "--socket", str(server.path)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "DIRECTION", "STATE", "RECORDING", "STARTED", "EXT", "AGENT"]
    assert lines[1].split() == [
        "c1",
        "inbound",
        "bridged",
        "recording",
        "2026-11-23T10:42:00-05:00",
        "235",
        "-",
    ]
    assert len(lines) == 3


async def test_ctl_calls_json(server: ControlServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_ctl("calls", "--json", "--socket", str(server.path)) == 0
    document = json.loads(capsys.readouterr().out)
    assert [c["id"] for c in document["calls"]] == ["c1", "c2"]


async def test_ctl_actions_and_their_exit_codes(
    server: ControlServer,
    handler: FakeHandler,
    logs: list[MutableMapping[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sock = str(server.path)
    assert await run_ctl("pause", "c1", "--socket", sock) == 0
    assert capsys.readouterr().out == "call c1: paused\n"
    assert await run_ctl("resume", "c1", "--socket", sock, "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"ok": True, "message": "call c1: recording"}
    assert await run_ctl("stop", "c1", "--socket", sock) == 0
    assert await run_ctl("start", "c1", "--socket", sock) == 0
    capsys.readouterr()
    assert await run_ctl("pause", "c9", "--socket", sock) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "refused: no active call c9" in captured.err
    assert await run_ctl("start", "c2", "--socket", sock, "--json") == 1
    assert json.loads(capsys.readouterr().out)["error"] == "refused"
    names = [name for name, _, _ in handler.log]
    assert names == ["pause", "resume", "stop", "start", "pause", "start"]
    # The service's own log line for each command (the handler writes the audit trail).
    commands = [e for e in logs if e["event"] == "control.command"]
    assert [(e["cmd"], e["call"], e["result"]) for e in commands] == [
        ("pause", "c1", "done"),
        ("resume", "c1", "done"),
        ("stop", "c1", "done"),
        ("start", "c1", "done"),
        ("pause", "c9", "refused"),
        ("start", "c2", "refused"),
    ]
    assert commands[0]["actor"] == f"uid={os.getuid()} gid={os.getgid()} pid={os.getpid()}"


def test_ctl_without_a_service(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl("calls", "--socket", str(tmp_path / "none.sock")) == 2
    err = capsys.readouterr().err
    assert "service unreachable" in err and "none.sock" in err
    assert ctl("pause", "c1", "--socket", str(tmp_path / "none.sock")) == 2


def test_ctl_default_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Without /run/recorder, the default is var/control.sock relative to the cwd.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("recorder.ops.control.SYSTEMD_SOCKET", tmp_path / "absent" / "control.sock")
    asked: list[Path] = []

    def fake(path: Path, request: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        asked.append(path)
        return {"ok": True, "calls": []}

    monkeypatch.setattr("recorder.cli.ctl.control_request", fake)
    assert ctl("calls") == 0
    present = tmp_path / "run.sock"
    present.touch()
    monkeypatch.setattr("recorder.ops.control.SYSTEMD_SOCKET", present)
    assert ctl("calls") == 0
    assert asked == [Path("var/control.sock"), present]


# --- a command table with bytes after the answer (the access socket's framing) ---------------


async def test_a_command_table_answers_with_bytes_after_the_line(
    tmp_path: Path, logs: list[MutableMapping[str, Any]]
) -> None:
    seen: list[tuple[dict[str, Any], Actor]] = []
    blob = bytes(range(256)) * 3000  # over one recv, with newlines and NULs inside

    async def fetch(request: Any, actor: Actor) -> Any:
        seen.append((dict(request), actor))
        if request.get("what") == "refuse":
            raise ControlError("not for you")
        if request.get("what") == "crash":
            raise RuntimeError("boom")
        return {"ok": True, "kind": "blob"}, blob

    srv = ControlServer(tmp_path / "access.sock", None, commands={"fetch": fetch}, mode=0o666)
    await srv.start()
    try:
        assert stat.S_IMODE(os.stat(srv.path).st_mode) == 0o666
        loop = asyncio.get_running_loop()
        response, payload = await loop.run_in_executor(
            None, lambda: control_exchange(srv.path, {"cmd": "fetch", "what": "x"})
        )
        assert response == {"ok": True, "kind": "blob", "payload": len(blob)}
        assert payload == blob
        assert seen[0][1].uid == os.getuid()  # the peer, by SO_PEERCRED
        refused = await loop.run_in_executor(
            None, lambda: control_request(srv.path, {"cmd": "fetch", "what": "refuse"})
        )
        assert refused == {"ok": False, "error": "refused", "message": "not for you"}
        crashed = await loop.run_in_executor(
            None, lambda: control_request(srv.path, {"cmd": "fetch", "what": "crash"})
        )
        assert crashed["error"] == "internal"
        # No handler: the fixed commands are not served here, and the answer lists what is.
        unknown = await loop.run_in_executor(
            None, lambda: control_request(srv.path, {"cmd": "pause", "call": "c1"})
        )
        assert unknown["error"] == "bad_request" and "fetch" in unknown["message"]
    finally:
        await srv.close()
