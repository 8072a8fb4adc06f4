"""systemd's notify socket protocol (sd_notify(3)), without libsystemd.

The service tells systemd when it is ready, reloading or stopping, what it is
doing (STATUS=) and that its event loop still turns (WATCHDOG=1). Each message
is one datagram of newline-separated `KEY=VALUE` lines sent to the AF_UNIX
socket named by `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket).

Outside systemd (no `$NOTIFY_SOCKET`) every call is a no-op, so the service
calls these unconditionally. Sending never raises: a lost notification must
not take calls down with it; failures are logged and counted in `failures`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("recorder.sdnotify")


def _monotonic_usec() -> int:
    # systemd compares this with its own CLOCK_MONOTONIC reading: name the clock rather than
    # trust time.monotonic() to be the same one.
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _one_line(text: str) -> str:
    # A newline would start a new KEY=VALUE assignment inside the datagram.
    return " ".join(text.splitlines())


class Notifier:
    """A client of the notify socket named by `environ` (default: `os.environ`)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")
        self.address: str | None = self._parse_address(env.get("NOTIFY_SOCKET", ""))
        self.failures = 0
        self._failing = False
        self._socket: socket.socket | None = None

    @staticmethod
    def _parse_address(value: str) -> str | None:
        if not value:
            return None
        if value.startswith("@"):
            # Linux abstract namespace: the name starts with a NUL byte, not '@'.
            return "\0" + value[1:]
        if value.startswith("/"):
            return value
        # systemd >= 254 may hand out vsock:CID:PORT (VMs); this service runs on the host.
        log.warning("sdnotify.unsupported_socket %r: notifications disabled", value)
        return None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Sends `KEY=VALUE` lines as one datagram; True if sent, False if disabled or failed."""
        if self.address is None:
            return False
        data = "\n".join(assignments).encode("utf-8")
        try:
            if self._socket is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                # Called from the event loop: a full receive queue must fail, not block the loop.
                sock.setblocking(False)
                self._socket = sock
            self._socket.sendto(data, self.address)
        except OSError as exc:
            self.failures += 1
            # A dead manager or a full queue fails every ping: say so once per outage, not
            # every WatchdogSec/2 for the rest of the process's life.
            level = logging.DEBUG if self._failing else logging.WARNING
            first = assignments[0] if assignments else ""
            log.log(level, "sdnotify.send_failed %s: %s", first, exc)
            self._failing = True
            return False
        if self._failing:
            log.info("sdnotify.send_recovered after %d failures", self.failures)
            self._failing = False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1: sockets listen and the catalog is open; also ends a reload."""
        if status is None:
            return self.notify("READY=1")
        return self.notify("READY=1", f"STATUS={_one_line(status)}")

    def reloading(self) -> bool:
        """RELOADING=1 with the MONOTONIC_USEC that Type=notify-reload (systemd >= 253) needs.

        Follow it with `ready()` once the new policy is in force (or kept after a failure).
        """
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={_monotonic_usec()}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """STATUS=: the one line `systemctl status` shows."""
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """EXTEND_TIMEOUT_USEC: a drain longer than TimeoutStopSec= asks for more time."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, round(seconds * 1_000_000))}")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of WatchdogSec=), or None when no watchdog is armed."""
        raw, pid = self._watchdog_usec, self._watchdog_pid
        if not raw:
            return None
        try:
            usec = int(raw)
            # The variables leak into children; only the process systemd meant may answer.
            if pid and int(pid) != os.getpid():
                return None
        except ValueError:
            log.warning("sdnotify.bad_watchdog_env WATCHDOG_USEC=%r WATCHDOG_PID=%r", raw, pid)
            return None
        if usec <= 0:
            return None
        return usec / 2 / 1_000_000

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


async def _ping_forever(notifier: Notifier, interval: float) -> None:
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)


def start_watchdog(
    loop: asyncio.AbstractEventLoop, notifier: Notifier
) -> asyncio.Task[None] | None:
    """Pings WATCHDOG=1 every half WatchdogSec= from `loop`; None when no watchdog is armed.

    The pings ride on the event loop on purpose: a loop stuck in a blocking call stops
    pinging, and systemd kills and restarts the service. Start it as soon as the loop
    runs (systemd's watchdog counts from the start, not from READY=1); stop it with
    `stop_watchdog()`.
    """
    interval = notifier.watchdog_interval()
    if interval is None or not notifier.enabled:
        return None
    return loop.create_task(_ping_forever(notifier, interval), name="sdnotify-watchdog")


async def stop_watchdog(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
