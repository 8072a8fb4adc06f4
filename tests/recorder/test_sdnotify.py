"""The notify socket protocol against real AF_UNIX datagram sockets standing in for systemd."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from recorder.ops.sdnotify import Notifier, start_watchdog, stop_watchdog

TIMEOUT = 2.0


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket playing systemd, and the NOTIFY_SOCKET value naming it."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(TIMEOUT)
    yield sock, str(path)
    sock.close()


def _drain(sock: socket.socket) -> list[bytes]:
    got: list[bytes] = []
    while True:
        try:
            got.append(sock.recv(4096, socket.MSG_DONTWAIT))
        except BlockingIOError:
            return got


def test_unset_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.status("idle") is False
    assert notifier.watchdog() is False
    assert notifier.failures == 0
    assert notifier.watchdog_interval() is None


def test_exact_datagrams_on_a_path_socket(manager: tuple[socket.socket, str]) -> None:
    sock, address = manager
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert notifier.enabled

    assert notifier.ready()
    assert sock.recv(4096) == b"READY=1"
    assert notifier.status("3 active calls")
    assert sock.recv(4096) == b"STATUS=3 active calls"
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    assert notifier.ready(status="policy reloaded")
    assert sock.recv(4096) == b"READY=1\nSTATUS=policy reloaded"
    assert notifier.extend_timeout(1.5)
    assert sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=1500000"
    notifier.close()
    assert notifier.failures == 0


def test_status_stays_one_assignment(manager: tuple[socket.socket, str]) -> None:
    sock, address = manager
    notifier = Notifier({"NOTIFY_SOCKET": address})
    # A newline in the text must not smuggle in a second assignment (READY=1 here).
    notifier.status("draining\nREADY=1")
    assert sock.recv(4096) == b"STATUS=draining READY=1"


def test_reloading_carries_monotonic_usec(manager: tuple[socket.socket, str]) -> None:
    sock, address = manager
    notifier = Notifier({"NOTIFY_SOCKET": address})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = sock.recv(4096).decode().split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_abstract_socket() -> None:
    name = f"recorder-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(TIMEOUT)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert sock.recv(4096) == b"READY=1"
        assert notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_failures_are_counted_and_logged_once_per_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "notify"
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})
    caplog.set_level(logging.DEBUG, logger="recorder.sdnotify")

    assert notifier.watchdog() is False
    assert notifier.watchdog() is False
    assert notifier.failures == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "WATCHDOG=1" in warnings[0].getMessage()

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        assert notifier.watchdog() is True
        assert sock.recv(4096, socket.MSG_DONTWAIT) == b"WATCHDOG=1"
    assert any("recovered" in r.getMessage() for r in caplog.records)


def test_a_full_queue_fails_without_blocking(manager: tuple[socket.socket, str]) -> None:
    _sock, address = manager
    notifier = Notifier({"NOTIFY_SOCKET": address})
    # Nobody reads: the receive queue fills; a blocking send would hang here (pytest-timeout).
    results = [notifier.status(f"{i} active calls") for i in range(5000)]
    assert results[0] is True
    assert results[-1] is False
    assert notifier.failures == results.count(False)


def test_unsupported_address_disables(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="recorder.sdnotify")
    notifier = Notifier({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert "vsock:2:1234" in caplog.text


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "init"}, None),
        ({"WATCHDOG_USEC": "1000"}, 0.0005),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "thirty"}, None),
        ({"WATCHDOG_PID": str(os.getpid())}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert Notifier(env).watchdog_interval() == expected


def test_environ_defaults_to_os_environ(
    manager: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, address = manager
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "8000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier()
    assert notifier.watchdog_interval() == 4.0
    assert notifier.ready()
    assert sock.recv(4096) == b"READY=1"


async def _recv(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recv(sock, 4096), TIMEOUT)


async def test_watchdog_pings_from_the_event_loop(manager: tuple[socket.socket, str]) -> None:
    sock, address = manager
    sock.setblocking(False)
    # 20 ms WatchdogSec -> a ping every 10 ms.
    notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "20000"})
    task = start_watchdog(asyncio.get_running_loop(), notifier)
    assert task is not None
    try:
        for _ in range(3):
            assert await _recv(sock) == b"WATCHDOG=1"

        # A loop stuck for 10 ping periods sends nothing: that silence is what gets a hung
        # service restarted. (No await between the block and the drain: the task can't run.)
        _drain(sock)
        time.sleep(0.1)
        assert _drain(sock) == []

        # Once the loop turns again, pings resume.
        assert await _recv(sock) == b"WATCHDOG=1"
    finally:
        await stop_watchdog(task)
    assert task.cancelled()

    _drain(sock)
    await asyncio.sleep(0.05)
    assert _drain(sock) == []


async def test_no_watchdog_task_without_watchdog_or_socket(
    manager: tuple[socket.socket, str],
) -> None:
    _sock, address = manager
    loop = asyncio.get_running_loop()
    assert start_watchdog(loop, Notifier({"NOTIFY_SOCKET": address})) is None
    assert start_watchdog(loop, Notifier({"WATCHDOG_USEC": "20000"})) is None
    await stop_watchdog(None)
