"""Run the real `recorder serve` as a subprocess for interop tests, and read its JSON logs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POLICY_TEMPLATE = """\
[service]
timezone = "America/Montreal"
ring_timeout = {ring_timeout}
drain_seconds = {drain_seconds}
{service_extra}
[sip.external]
listen = "127.0.0.1:{external_port}"
allow = [{external_allow}]
next_hop = "127.0.0.1:{trunk_port}"
{external_extra}
[sip.internal]
listen = "127.0.0.1:{internal_port}"
allow = ["127.0.0.1/32"]
next_hop = "127.0.0.1:{pbx_port}"
{internal_extra}
[media]
address = "127.0.0.1"
ports = "{media_first}-{media_last}"
{media_extra}
[storage]
dir = "{recordings}"
database = "{database}"
{storage_extra}"""


@dataclass
class RecorderProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    external_port: int
    internal_port: int
    media_first: int
    media_last: int
    policy_path: Path
    _offset: int = field(default=0)

    @property
    def external_target(self) -> str:
        return f"127.0.0.1:{self.external_port}"

    @property
    def internal_target(self) -> str:
        return f"127.0.0.1:{self.internal_port}"

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every JSON log line so far (optionally only events called `name`)."""
        out: list[dict[str, Any]] = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if name is None or entry.get("event") == name:
                out.append(entry)
        return out

    def wait_event(self, name: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(name)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"recorder logged {len(found)} {name!r} events, expected {count}:\n"
                    + self.log_path.read_text(errors="replace")[-4000:]
                )
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"recorder exited with {self.proc.returncode}:\n"
                    + self.log_path.read_text(errors="replace")[-4000:]
                )
            time.sleep(0.05)

    def catalog(self, *args: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        """`recorder <args> --json` against this recorder's catalog, polled until non-empty."""
        deadline = time.monotonic() + timeout
        while True:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "recorder.cli",
                    *args,
                    "--json",
                    "--config",
                    str(self.policy_path),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            rows: list[dict[str, Any]] = json.loads(done.stdout) if done.returncode == 0 else []
            if rows or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def media_ports_in_use(self) -> list[int]:
        """Ports of the media range still bound by anyone (UDP)."""
        busy: list[int] = []
        for port in range(self.media_first, self.media_last + 1):
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
            finally:
                probe.close()
        return busy

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"recorder exited early:\n{log.read_text(errors='replace')}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.2)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"recorder did not listen on {port}:\n{log.read_text(errors='replace')}")


def policy_template_text(**fields: Any) -> str:
    """POLICY_TEMPLATE filled in, the optional parts defaulted (the benchmarks use it too):
    `storage` gives the catalog and recordings places unless `database`/`recordings` do."""
    storage = fields.get("storage")
    defaults: dict[str, Any] = dict.fromkeys(
        ("storage_extra", "service_extra", "external_extra", "internal_extra", "media_extra"), ""
    )
    if storage is not None:
        defaults["database"] = f"sqlite:///{storage}/recorder.db"
        defaults["recordings"] = Path(storage) / "recordings"
    return POLICY_TEMPLATE.format(**{**defaults, **fields})


def _lines(text: str) -> str:
    return text.strip() + "\n" if text.strip() else ""


@contextmanager
def running_recorder(
    workdir: Path,
    *,
    external_port: int,
    internal_port: int,
    pbx_port: int,
    trunk_port: int,
    media_first: int,
    media_last: int,
    external_allow: tuple[str, ...] = ("127.0.0.0/8",),
    ring_timeout: float = 180,
    drain_seconds: float = 2,
    policy_extra: str = "",
    access_socket: Path | None = None,
    storage_dir: Path | None = None,
    storage_extra: str = "",
    database: str | None = None,
    external_extra: str = "",
    internal_extra: str = "",
    media_extra: str = "",
    service_extra: str = "",
    env: Mapping[str, str] | None = None,
) -> Iterator[RecorderProcess]:
    """`policy_extra`: the policy tables ([recording], [notice]...) appended to the deploy part.
    `storage_dir`: storage.dir (default WORKDIR/recordings; the catalog stays in WORKDIR);
    `storage_extra`: more `[storage]` keys (`when_full = "reject"`...);
    `database`: storage.database (default a SQLite file in WORKDIR);
    `external_extra`, `internal_extra`, `media_extra`: more keys for those tables (TLS, SRTP);
    `service_extra`: more `[service]` keys (`node = "rec-1"`);
    `env`: more environment variables (`RUNTIME_DIRECTORY`: where the control socket goes)."""
    workdir.mkdir(parents=True, exist_ok=True)
    policy = workdir / "policy.toml"
    policy.write_text(
        policy_template_text(
            external_port=external_port,
            internal_port=internal_port,
            pbx_port=pbx_port,
            trunk_port=trunk_port,
            media_first=media_first,
            media_last=media_last,
            storage=workdir,
            database=database or f"sqlite:///{workdir}/recorder.db",
            recordings=storage_dir if storage_dir is not None else workdir / "recordings",
            storage_extra=storage_extra + "\n" if storage_extra else "",
            external_allow=", ".join(f'"{a}"' for a in external_allow),
            ring_timeout=ring_timeout,
            drain_seconds=drain_seconds,
            service_extra=_lines(service_extra)
            + ("" if access_socket is None else f'access_socket = "{access_socket}"\n'),
            external_extra=_lines(external_extra),
            internal_extra=_lines(internal_extra),
            media_extra=_lines(media_extra),
        )
        + policy_extra
    )
    log_path = workdir / "recorder.log"
    environ = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "recorder.cli",
                "serve",
                "--config",
                str(policy),
                "--log-format",
                "json",
                "--log-level",
                "debug",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env=environ,
        )
    recorder = RecorderProcess(
        proc, log_path, external_port, internal_port, media_first, media_last, policy
    )
    try:
        _wait_listening(external_port, proc, log_path, 15)
        _wait_listening(internal_port, proc, log_path, 15)
        # Listening comes before the catalog, the purge and the signal handlers are ready.
        recorder.wait_event("service.started", timeout=20)
        yield recorder
    finally:
        recorder.stop()
