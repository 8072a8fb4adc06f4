"""Kamailio as a plain process in front of recorder nodes (issue 19), for interop tests and
the nodes benchmark: examples/kamailio/kamailio.cfg with a dispatcher list of our own.

`start_kamailio(workdir, nodes=[...])` writes the dispatcher list, runs
`kamailio -f examples/kamailio/kamailio.cfg -DD -E` (foreground, log on stderr) listening on
one free UDP port of 127.0.0.1, with its pid file and runtime directory in `workdir`, and
stops it (SIGTERM to its PID, then SIGKILL) when the block ends. Its log is read back to see
which node each INVITE went to and when a node was taken out or came back.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import peers

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "kamailio" / "kamailio.cfg"
# Debian's module directory; elsewhere the binary's compiled-in default is used.
MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")
_DISPATCH = re.compile(r"dispatch: INVITE (\S+) to recorder node sip:([\d.]+:\d+)")


@dataclass
class Kamailio:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def target(self) -> str:
        """`ip:port`, what a sipp caller takes as its remote host."""
        return f"{peers.LOCALHOST}:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def dispatched(self) -> dict[str, list[str]]:
        """SIP Call-ID -> the nodes (`ip:port`) its INVITE was sent to, in order (a failover
        adds the next one)."""
        out: dict[str, list[str]] = {}
        for call_id, node in _DISPATCH.findall(self.log_text()):
            out.setdefault(call_id, []).append(node)
        return out

    def wait_log(self, pattern: str, *, after: int = 0, timeout: float = 15.0) -> int:
        """Until `pattern` (a regex) appears in the log past offset `after`; returns the
        offset just past the match."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            found = compiled.search(text, after)
            if found is not None:
                return found.end()
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise AssertionError(f"kamailio exited with {code}:\n{text[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"kamailio never logged {pattern!r}:\n{text[-3000:]}")
            time.sleep(0.1)

    def log_size(self) -> int:
        return len(self.log_text())


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((peers.LOCALHOST, port))
        except OSError:
            return False
    return True


def kamailio_binary() -> str | None:
    return shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/sbin")


def write_dispatcher_list(path: Path, nodes: Sequence[str], set_id: int = 1) -> Path:
    """One line per node (`ip:port` of its `sip.external.listen`), in the example's form."""
    lines = [f"{set_id} sip:{node} 0 0 duid=rec-{i}" for i, node in enumerate(nodes, 1)]
    path.write_text("# setid destination flags priority attributes\n" + "\n".join(lines) + "\n")
    return path


@contextmanager
def start_kamailio(
    workdir: Path,
    *,
    nodes: Sequence[str],
    port: int | None = None,
    ping_interval: int = 1,
    fr_timer_ms: int = 1500,
    algorithm: str = "4",
    children: int = 4,
    ready_timeout: float = 10.0,
) -> Iterator[Kamailio]:
    """Kamailio dispatching to `nodes` (`ip:port` each), ready when yielded, stopped after."""
    binary = kamailio_binary()
    if binary is None:
        raise peers.PeerError("kamailio is not installed (scripts/install-test-deps.sh)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or peers.free_udp_port()
    dispatcher = write_dispatcher_list(workdir / "dispatcher.list", nodes)
    cmd = [
        binary,
        "-f",
        str(CONFIG),
        "-DD",
        "-E",
        "-m",
        "64",
        "-M",
        "8",
        "-n",
        str(children),
        "-P",
        str(workdir / "kamailio.pid"),
        "-Y",
        str(workdir),
        "-l",
        f"udp:{peers.LOCALHOST}:{port}",
        "-A",
        f'DS_LIST="{dispatcher}"',
        "-A",
        f"DS_PING_INTERVAL={ping_interval}",
        "-A",
        f"FR_TIMER={fr_timer_ms}",
        "-A",
        f'DS_ALG="{algorithm}"',
    ]
    if MODULES.is_dir():
        cmd[1:1] = ["-L", str(MODULES)]
    log_path = workdir / "kamailio.log"
    (workdir / "command.txt").write_text(" ".join(cmd) + "\n")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=workdir
        )
    kamailio = Kamailio(proc, port, log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        while _udp_free(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise peers.PeerError(
                    f"kamailio did not listen on {port}:\n{kamailio.log_text()[-3000:]}"
                )
            time.sleep(0.05)
        yield kamailio
    finally:
        peers.stop_process(proc)
