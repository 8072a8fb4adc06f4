"""Real SIP peers (sipp, baresip) as subprocesses, for interop tests.

Every process is started without daemonizing (no ``sipp -bg``, no ``baresip -d``)
so we own its PID; context managers stop it (SIGTERM, then SIGKILL) and an
``atexit`` hook stops whatever a crashed test left behind. Each peer writes its
stdout/stderr and its own logs into a directory under the test's tmp dir;
``conftest.py`` prints their tails when a test fails.

Everything binds 127.0.0.1. Ports come from a process-wide allocator
(15000-19999: below the ephemeral range 32768-60999, so that no socket bound to
port 0 can take them) that never hands out a port twice while a test holds it,
skips busy ones, and takes a test's ports back when the test ends.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

LOCALHOST = "127.0.0.1"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
PEER_TOOLS = ("sipp", "baresip", "sox", "espeak-ng")

# --------------------------------------------------------------------------- ports


class PortAllocator:
    """Hands out blocks of consecutive ports on 127.0.0.1 that are free right now.

    Starts at a PID-dependent offset so that two test processes running at once
    (other helpers, xdist workers) rarely probe the same ports; within one
    process a port is never handed out twice, so peers of one test never collide.
    """

    def __init__(self, low: int = 15000, high: int = 19999) -> None:
        self.low, self.high = low, high
        span = (high - low + 1) // 4
        self._next = low + 4 * ((os.getpid() * 7919) % span)
        self._given: set[int] = set()
        self._this_test: set[int] = set()
        self._lock = threading.Lock()

    def release_test_ports(self) -> None:
        """Give back what the test that just ended took (its peers are stopped by now).

        Without this a full suite walks through the 5,000 ports once and then fails
        every block request: CI ran out of 64-port blocks 1,800 tests in.
        """
        with self._lock:
            self._given -= self._this_test
            self._this_test.clear()

    def block(self, count: int = 1, tcp: bool = False, align: int = 2) -> int:
        """First port of ``count`` consecutive free ports (UDP, and TCP if asked).

        ``align`` keeps RTP ports even (RTCP is the odd port above).
        """
        with self._lock:
            span = self.high - self.low + 1
            for _ in range(span):
                start = self._next
                self._next += max(count, align)
                if self._next + count > self.high:
                    self._next = self.low
                if start % align or start + count - 1 > self.high:
                    continue
                ports = range(start, start + count)
                if any(p in self._given for p in ports):
                    continue
                if all(_port_free(p, tcp) for p in ports):
                    self._given.update(ports)
                    self._this_test.update(ports)
                    return start
        raise RuntimeError(f"no {count} free consecutive ports in {self.low}-{self.high}")


def _port_free(port: int, tcp: bool) -> bool:
    kinds = [socket.SOCK_DGRAM, socket.SOCK_STREAM] if tcp else [socket.SOCK_DGRAM]
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((LOCALHOST, port))
            except OSError:
                return False
    return True


def _port_range() -> tuple[int, int]:
    """RECORDER_TEST_PORTS=LOW-HIGH moves the range: two suites on one box, apart."""
    low, _, high = os.environ.get("RECORDER_TEST_PORTS", "15000-19999").partition("-")
    return int(low), int(high)


PORTS = PortAllocator(*_port_range())


def free_udp_port() -> int:
    return PORTS.block(1, align=1)


def free_port_block(count: int, tcp: bool = False) -> int:
    return PORTS.block(count, tcp=tcp)


def _wait_udp_bound(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Until someone (the peer we just started) holds the UDP port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerError(f"exited with {proc.returncode} before binding UDP {port}")
        if not _port_free(port, tcp=False):
            return
        time.sleep(0.02)
    raise PeerError(f"did not bind UDP {port} within {timeout} s")


# --------------------------------------------------------------------------- processes


class PeerError(RuntimeError):
    pass


_LIVE: dict[int, subprocess.Popen[bytes]] = {}
_LIVE_LOCK = threading.Lock()
# Log directories of peers started since the last reset (conftest shows them on failure).
_LOG_DIRS: list[Path] = []


def started_log_dirs() -> list[Path]:
    return list(_LOG_DIRS)


def reset_log_dirs() -> None:
    _LOG_DIRS.clear()


def _spawn(cmd: Sequence[str], log_dir: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "command.txt").write_text(" ".join(cmd) + "\n")
    with open(log_dir / "stdout.log", "wb") as out, open(log_dir / "stderr.log", "wb") as err:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=cwd or log_dir,
        )
    with _LIVE_LOCK:
        _LIVE[proc.pid] = proc
    _LOG_DIRS.append(log_dir)
    return proc


def _reap(proc: subprocess.Popen[bytes]) -> None:
    with _LIVE_LOCK:
        _LIVE.pop(proc.pid, None)


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 5.0
) -> int:
    """Signal our own child by PID, SIGKILL it after ``grace`` s; returns its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(grace)
    _reap(proc)
    return proc.returncode


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
    for proc in procs:
        stop_process(proc, grace=2.0)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- sipp


def scenario_path(scenario: str | Path) -> Path:
    """``"uac_pcap"`` -> tests/interop/scenarios/uac_pcap.xml; paths pass through."""
    p = Path(scenario)
    if p.suffix != ".xml":
        p = SCENARIOS / f"{scenario}.xml"
    if not p.is_file():
        raise FileNotFoundError(p)
    return p


def pcap_duration(path: Path) -> float:
    """Seconds from the first to the last record, plus one 20 ms packet."""
    data = path.read_bytes()
    if len(data) < 24 or struct.unpack_from("<I", data)[0] != 0xA1B2C3D4:
        raise ValueError(f"{path}: not a little-endian microsecond pcap")
    off, first, last = 24, None, 0.0
    while off + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack_from("<IIII", data, off)
        t = sec + usec / 1e6
        first = t if first is None else first
        last = t
        off += 16 + incl
    return 0.0 if first is None else last - first + 0.02


@dataclass
class SippResult:
    scenario: str
    command: list[str]
    returncode: int | None
    log_dir: Path
    timed_out: bool = False
    stats: dict[str, str] = field(default_factory=dict)  # last -trace_stat row

    def _int(self, name: str) -> int:
        value = self.stats.get(name, "")
        return int(value) if value.isdigit() else 0

    @property
    def successful(self) -> int:
        return self._int("SuccessfulCall(C)")

    @property
    def failed(self) -> int:
        return self._int("FailedCall(C)")

    @property
    def retransmissions(self) -> int:
        return self._int("Retransmissions(C)")

    @property
    def created(self) -> int:
        return self._int("TotalCallCreated")

    @property
    def out_of_call_messages(self) -> int:
        return self._int("OutOfCallMsgs(C)")

    def messages(self) -> str:
        """The SIP messages sipp sent and received (-trace_msg)."""
        return _read(self.log_dir / "messages.log")

    def errors(self) -> str:
        return _read(self.log_dir / "errors.log")

    def describe(self) -> str:
        lines = [
            f"sipp {self.scenario}: exit {self.returncode}"
            f"{' (timed out, killed)' if self.timed_out else ''}, "
            f"created={self.created} successful={self.successful} failed={self.failed} "
            f"retrans={self.retransmissions} logs={self.log_dir}",
        ]
        for name in ("errors.log", "stderr.log", "screen.log"):
            tail = _tail(self.log_dir / name, 25)
            if tail.strip():
                lines += [f"--- {name} (tail)", tail]
        return "\n".join(lines)

    def assert_ok(self, calls: int = 1) -> None:
        """Exit 0, exactly ``calls`` successful calls, no failed call."""
        ok = (
            self.returncode == 0
            and not self.timed_out
            and self.successful == calls
            and self.failed == 0
        )
        assert ok, self.describe()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _read_stats(path: Path) -> dict[str, str]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def sipp_command(
    scenario: str | Path,
    *,
    log_dir: Path,
    port: int,
    media_port: int,
    target: str | None = None,
    calls: int | None = None,
    rate: float | None = None,
    limit: int | None = None,
    call_length_ms: int | None = None,
    service: str | None = None,
    keys: Mapping[str, str] | None = None,
    variables: Mapping[str, str] | None = None,
    rtp_echo: bool = False,
    timeout_s: float | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The sipp argv, with every log sent to ``log_dir``."""
    cmd = [
        "sipp",
        "-sf",
        str(scenario_path(scenario)),
        "-i",
        LOCALHOST,
        "-p",
        str(port),
        "-mi",
        LOCALHOST,
        "-mp",
        str(media_port),
        "-nostdin",
        "-t",
        "u1",
        "-trace_stat",
        "-stf",
        str(log_dir / "stat.csv"),
        "-fd",
        "1",
        "-trace_msg",
        "-message_file",
        str(log_dir / "messages.log"),
        "-trace_err",
        "-error_file",
        str(log_dir / "errors.log"),
        "-trace_screen",
        "-screen_file",
        str(log_dir / "screen.log"),
    ]
    if rtp_echo:
        cmd.append("-rtp_echo")
    if calls is not None:
        cmd += ["-m", str(calls)]
    if rate is not None:
        cmd += ["-r", f"{rate:g}"]
    if limit is not None:
        cmd += ["-l", str(limit)]
    if call_length_ms is not None:
        cmd += ["-d", str(call_length_ms)]
    if service is not None:
        cmd += ["-s", service]
    # -key values are substituted when the scenario loads (even in play_pcap_audio);
    # -set values are global variables, [$name] (see uac_dtmf.xml for a pause).
    for k, v in (keys or {}).items():
        cmd += ["-key", k, v]
    for k, v in (variables or {}).items():
        cmd += ["-set", k, v]
    if timeout_s is not None:
        cmd += ["-timeout", f"{int(timeout_s + 0.999)}s", "-timeout_error"]
    cmd += list(extra_args)
    if target is not None:
        cmd.append(target)
    return cmd


def run_sipp_uac(
    scenario: str | Path,
    target: str,
    *,
    log_dir: Path,
    local_port: int | None = None,
    media_port: int | None = None,
    pcap: Path | None = None,
    call_length_s: float | None = None,
    calls: int = 1,
    rate: float | None = None,
    limit: int | None = None,
    service: str = "service",
    keys: Mapping[str, str] | None = None,
    variables: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
) -> SippResult:
    """Run a sipp caller to completion (or ``timeout``) against ``target`` ("ip:port").

    ``pcap`` is passed as ``-key pcap`` (the scenarios' ``play_pcap_audio="[pcap]"``)
    and, unless ``call_length_s`` says otherwise, the call lasts the pcap's length
    plus 300 ms (``-d``: the scenarios' bare ``<pause/>``).
    """
    name = scenario_path(scenario).stem
    log_dir = _unique_dir(log_dir, f"sipp-{name}")
    all_keys = dict(keys or {})
    if pcap is not None:
        all_keys["pcap"] = str(pcap.resolve())
        if call_length_s is None:
            call_length_s = pcap_duration(pcap) + 0.3
    cmd = sipp_command(
        scenario,
        log_dir=log_dir,
        target=target,
        port=local_port or free_udp_port(),
        # [auto_media_port] (uac_load) steps 4 ports per call up from -mp.
        media_port=media_port or free_port_block(4 * calls + 4),
        calls=calls,
        rate=rate,
        limit=limit,
        call_length_ms=None if call_length_s is None else int(call_length_s * 1000),
        service=service,
        keys=all_keys,
        variables=variables,
        timeout_s=timeout,
        extra_args=extra_args,
    )
    proc = _spawn(cmd, log_dir)
    timed_out = False
    try:
        # sipp's own -timeout fires first and still writes its stats; this is the backstop.
        proc.wait(timeout + 10.0)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        stop_process(proc)
    return SippResult(
        name, cmd, proc.returncode, log_dir, timed_out, _read_stats(log_dir / "stat.csv")
    )


@dataclass
class SippUas:
    scenario: str
    port: int
    media_port: int
    log_dir: Path
    command: list[str]
    proc: subprocess.Popen[bytes]
    result: SippResult | None = None

    @property
    def target(self) -> str:
        """``ip:port``, what a sipp UAC takes as its remote host."""
        return f"{LOCALHOST}:{self.port}"

    def uri(self, user: str = "pbx") -> str:
        return f"sip:{user}@{LOCALHOST}:{self.port}"

    def wait(self, timeout: float = 10.0) -> SippResult:
        """Wait for sipp to exit by itself (``calls=N`` given); stop it if it won't."""
        timed_out = False
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        return self._finish(timed_out)

    def stop(self) -> SippResult:
        """Stop it now (SIGTERM: sipp still writes its final stats)."""
        return self._finish(False)

    def _finish(self, timed_out: bool) -> SippResult:
        if self.result is None:
            stop_process(self.proc)
            self.result = SippResult(
                self.scenario,
                self.command,
                self.proc.returncode,
                self.log_dir,
                timed_out,
                _read_stats(self.log_dir / "stat.csv"),
            )
        return self.result


@contextlib.contextmanager
def sipp_uac_in_background(
    scenario: str | Path, target: str, **kwargs: Any
) -> Iterator[list[SippResult]]:
    """`run_sipp_uac` in a thread while the test acts on the call; the list gets its
    result. Leaving the block waits for sipp (its own timeout bounds the wait)."""
    result: list[SippResult] = []
    caller = threading.Thread(
        target=lambda: result.append(run_sipp_uac(scenario, target, **kwargs))
    )
    caller.start()
    try:
        yield result
    finally:
        caller.join(float(kwargs.get("timeout", 30)) + 10)


@contextlib.contextmanager
def start_sipp_uas(
    scenario: str | Path,
    *,
    log_dir: Path,
    port: int | None = None,
    media_port: int | None = None,
    rtp_echo: bool = True,
    calls: int | None = None,
    call_length_s: float | None = None,
    keys: Mapping[str, str] | None = None,
    variables: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout: float = 5.0,
) -> Iterator[SippUas]:
    """A sipp UAS in the background (our child, not ``-bg``), ready when yielded.

    ``call_length_s`` is ``-d``: ringing time in uas_echo, talk time in uas_bye.
    On exit it is stopped if still running; ``uas.result`` then holds its stats.
    """
    name = scenario_path(scenario).stem
    log_dir = _unique_dir(log_dir, f"sipp-{name}")
    port = port or free_udp_port()
    media_port = media_port or free_port_block(4)
    cmd = sipp_command(
        scenario,
        log_dir=log_dir,
        port=port,
        media_port=media_port,
        calls=calls,
        call_length_ms=None if call_length_s is None else int(call_length_s * 1000),
        keys=keys,
        variables=variables,
        rtp_echo=rtp_echo,
        extra_args=extra_args,
    )
    proc = _spawn(cmd, log_dir)
    uas = SippUas(name, port, media_port, log_dir, cmd, proc)
    try:
        try:
            _wait_udp_bound(port, proc, ready_timeout)
        except PeerError as exc:
            raise PeerError(f"sipp {name}: {exc}\n{_tail(log_dir / 'stderr.log')}") from exc
        yield uas
    finally:
        uas.stop()


def _unique_dir(parent: Path, stem: str) -> Path:
    for i in range(1000):
        d = parent / (stem if i == 0 else f"{stem}-{i}")
        try:
            d.mkdir(parents=True)
        except FileExistsError:
            continue
        return d
    raise PeerError(f"cannot create a log dir for {stem} in {parent}")


# --------------------------------------------------------------------------- baresip

_BARESIP_CONFIG = """\
# Generated by tests/interop/peers.py: headless, 127.0.0.1 only, PCMU.
poll_method\t\tepoll
sip_listen\t\t{ip}:{sip_port}
net_interface\t\t{ip}
call_local_timeout\t{local_timeout}
call_max_calls\t\t4
audio_player\t\taufile,/dev/null
audio_source\t\taufile,{source}
audio_alert\t\taufile,/dev/null
audio_level\t\tno
ausrc_format\t\ts16
auplay_format\t\ts16
auenc_format\t\ts16
audec_format\t\ts16
audio_buffer\t\t20-160
rtp_ports\t\t{rtp_lo}-{rtp_hi}
rtcp_mux\t\tno
jitter_buffer_delay\t5-10
rtp_stats\t\tno
module_path\t\t/usr/lib/baresip/modules
module\t\t\tg711.so
module\t\t\taufile.so
module\t\t\tsndfile.so
module\t\t\tctrl_tcp.so
module_app\t\taccount.so
module_app\t\tmenu.so
ctrl_tcp_listen\t\t{ip}:{ctrl_port}
snd_path\t\t{snd_dir}
"""

# SRTP-SDES (RFC 4568): offers one a=crypto line, AES_CM_128_HMAC_SHA1_80; as the
# answerer it also takes AES_CM_128_HMAC_SHA1_32 and AEAD_AES_128/256_GCM.
_BARESIP_SRTP_CONFIG = "module\t\t\tsrtp.so\n"

# The account's ``mediaenc``: "srtp-mand" offers RTP/SAVP (and answers 488 to a plain
# RTP/AVP offer), "srtp" offers RTP/AVP with a=crypto (best effort), "srtp-mandf" RTP/SAVPF.
SrtpMode = Literal["srtp", "srtp-mand", "srtp-mandf"]


@dataclass(frozen=True)
class BaresipTls:
    """SIP over TLS for a baresip UA (Debian baresip 1.0.0 on libre 1.1.0, OpenSSL 3).

    baresip always listens for TLS on ``sip_listen``'s port + 1 (UDP and TCP on the
    port itself); without a certificate that listener cannot complete a handshake.

    ``certificate`` is ``sip_certificate``: ONE PEM file holding the certificate
    (chain) and then its private key (``tests.tlscerts.LeafCert.pem``); it is also
    the client certificate baresip shows when it connects. ``cafile`` is
    ``sip_cafile``. ``verify_server`` writes ``sip_verify_server yes|no``, which
    only baresip >= 1.1.0 reads: 1.0.0 loads the CA file but never verifies the
    server it connects to (libre 1.1.0 leaves OpenSSL at SSL_VERIFY_NONE), nor
    asks the client for a certificate.
    """

    certificate: Path
    cafile: Path | None = None
    verify_server: bool | None = None

    def config_lines(self) -> str:
        lines = f"sip_certificate\t\t{self.certificate.resolve()}\n"
        if self.cafile is not None:
            lines += f"sip_cafile\t\t{self.cafile.resolve()}\n"
        if self.verify_server is not None:
            lines += f"sip_verify_server\t{'yes' if self.verify_server else 'no'}\n"
        return lines


def _srtp_mode(srtp: bool | SrtpMode) -> SrtpMode | None:
    if srtp is True:
        return "srtp-mand"
    return srtp or None


def write_baresip_config(
    conf_dir: Path,
    *,
    user: str,
    sip_port: int,
    ctrl_port: int,
    rtp_ports: tuple[int, int],
    source_wav: Path,
    snd_dir: Path,
    auto_answer: bool = True,
    local_timeout_s: int = 120,
    tls: BaresipTls | None = None,
    srtp: bool | SrtpMode = False,
    outbound: str | None = None,
) -> Path:
    """A baresip ``-f`` directory: config, accounts (one, PCMU only), empty contacts.

    ``source_wav`` (8 kHz mono) is what it sends; baresip hangs up when it ends,
    so pad it past the call length. The sndfile module writes what it received to
    ``snd_dir/dump-*-dec.wav`` and what it sent to ``-enc.wav``.

    ``tls`` adds the certificate lines (the TLS listener is ``sip_port + 1``; a call
    goes over TLS when the dialled URI says ``;transport=tls``). ``srtp`` loads
    srtp.so and sets the account's ``mediaenc`` (True: ``srtp-mand``, SDES with
    RTP/SAVP). ``outbound`` is the account's outbound proxy, e.g.
    ``sip:127.0.0.1:5061;transport=tls``: every request then goes there (with a
    Route header), whatever the dialled URI.
    """
    conf_dir.mkdir(parents=True, exist_ok=True)
    snd_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "config").write_text(
        _BARESIP_CONFIG.format(
            ip=LOCALHOST,
            sip_port=sip_port,
            ctrl_port=ctrl_port,
            rtp_lo=rtp_ports[0],
            rtp_hi=rtp_ports[1],
            source=source_wav.resolve(),
            snd_dir=snd_dir.resolve(),
            local_timeout=local_timeout_s,
        )
        + (_BARESIP_SRTP_CONFIG if _srtp_mode(srtp) else "")
        + (tls.config_lines() if tls is not None else "")
    )
    mode = "auto" if auto_answer else "manual"
    # The AOR stays without ;transport=tls: with it baresip 1.0.0 appends
    # ";transport=tls" to every URI it dials (twice if the URI has it already).
    params = f"regint=0;answermode={mode};audio_codecs=PCMU"
    if (mencid := _srtp_mode(srtp)) is not None:
        params += f";mediaenc={mencid}"
    if outbound is not None:
        params += f';outbound="{outbound}"'
    (conf_dir / "accounts").write_text(f"<sip:{user}@{LOCALHOST}:{sip_port}>;{params}\n")
    (conf_dir / "contacts").write_text("")
    return conf_dir


@dataclass(frozen=True)
class SipTraced:
    """One SIP message from ``baresip -s``: its transport, addresses and text."""

    transport: str  # "UDP", "TCP", "TLS"
    src: str  # "127.0.0.1:5061"
    dst: str
    text: str  # CRLF lines, headers and body

    @property
    def start_line(self) -> str:
        return self.text.split("\r\n", 1)[0]

    @property
    def body(self) -> str:
        return self.text.partition("\r\n\r\n")[2]

    def header(self, name: str) -> str | None:
        head = self.text.partition("\r\n\r\n")[0]
        for line in head.split("\r\n")[1:]:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name.lower():
                return value.strip()
        return None


# baresip's sip_trace_handler: ESC[36;1m "#" NL "TLS src -> dst" NL message ESC[;m NL
_SIP_TRACE = re.compile(r"\x1b\[36;1m#\n(UDP|TCP|TLS|WS|WSS) (\S+) -> (\S+)\n(.*?)\x1b\[;m", re.S)


def parse_sip_trace(stdout: str) -> list[SipTraced]:
    return [SipTraced(*m.groups()) for m in _SIP_TRACE.finditer(stdout)]


class Baresip:
    """A running baresip driven over ctrl_tcp (netstring-framed JSON)."""

    def __init__(
        self,
        name: str,
        conf_dir: Path,
        snd_dir: Path,
        log_dir: Path,
        user: str,
        sip_port: int,
        ctrl_port: int,
        proc: subprocess.Popen[bytes],
        *,
        tls: BaresipTls | None = None,
        srtp: SrtpMode | None = None,
        sip_trace: bool = False,
    ) -> None:
        self.name, self.conf_dir, self.snd_dir, self.log_dir = name, conf_dir, snd_dir, log_dir
        self.user, self.sip_port, self.ctrl_port, self.proc = user, sip_port, ctrl_port, proc
        self.tls, self.srtp, self.sip_trace = tls, srtp, sip_trace
        self._sock: socket.socket | None = None
        self._events: list[dict[str, Any]] = []
        self._responses: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._token = 0
        self._reader: threading.Thread | None = None

    @property
    def uri(self) -> str:
        """Where to call it: over TLS (``tls_uri``) if it has a certificate, else UDP."""
        return self.tls_uri if self.tls is not None else self.udp_uri

    @property
    def udp_uri(self) -> str:
        return f"sip:{self.user}@{LOCALHOST}:{self.sip_port}"

    @property
    def tls_port(self) -> int:
        """baresip's TLS listener: always ``sip_listen``'s port + 1."""
        return self.sip_port + 1

    @property
    def tls_uri(self) -> str:
        """``sip:user@127.0.0.1:TLSPORT;transport=tls`` (baresip 1.0.0 cannot dial
        ``sips:``: it makes ``sip:sips:...`` of it and sends that over UDP)."""
        return f"sip:{self.user}@{LOCALHOST}:{self.tls_port};transport=tls"

    @property
    def target(self) -> str:
        return f"{LOCALHOST}:{self.sip_port}"

    @property
    def tls_target(self) -> str:
        return f"{LOCALHOST}:{self.tls_port}"

    # -- control connection
    def _connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise PeerError(
                    f"baresip {self.name} exited with {self.proc.returncode}:\n"
                    f"{_tail(self.log_dir / 'stdout.log')}"
                )
            try:
                self._sock = socket.create_connection((LOCALHOST, self.ctrl_port), timeout=1.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise PeerError(
                        f"baresip {self.name}: ctrl_tcp {self.ctrl_port} "
                        f"not reachable within {timeout} s"
                    ) from None
                time.sleep(0.05)
        self._sock.settimeout(None)
        self._reader = threading.Thread(
            target=self._read_loop, name=f"baresip-{self.name}", daemon=True
        )
        self._reader.start()

    def _read_loop(self) -> None:
        assert self._sock is not None
        buf = b""
        with open(self.log_dir / "ctrl.jsonl", "a") as trace:
            while True:
                try:
                    chunk = self._sock.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    with self._cond:
                        self._cond.notify_all()
                    return
                buf += chunk
                while True:
                    colon = buf.find(b":")
                    if colon < 0 or not buf[:colon].isdigit():
                        break
                    length = int(buf[:colon])
                    end = colon + 1 + length
                    if len(buf) < end + 1:
                        break
                    payload, buf = buf[colon + 1 : end], buf[end + 1 :]
                    try:
                        msg = json.loads(payload)
                    except ValueError:
                        continue
                    # Events carry no time of their own; tests measure delays with this.
                    msg["_at"] = time.monotonic()
                    trace.write(json.dumps(msg) + "\n")
                    trace.flush()
                    with self._cond:
                        if msg.get("response"):
                            self._responses[str(msg.get("token", ""))] = msg
                        else:
                            self._events.append(msg)
                        self._cond.notify_all()

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        """Run a menu command (``dial``, ``hangup``, ``accept``, ``sndcode``, ``ausrc``...)."""
        if self._sock is None:
            raise PeerError("not connected")
        with self._cond:
            self._token += 1
            token = f"t{self._token}"
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._sock.sendall(str(len(body)).encode() + b":" + body + b",")
        with self._cond:
            ok = self._cond.wait_for(lambda: token in self._responses, timeout)
            if not ok:
                raise PeerError(f"baresip {self.name}: no response to {command} in {timeout} s")
            return self._responses.pop(token)

    def dial(self, uri: str) -> dict[str, Any]:
        return self.command("dial", uri)

    def hangup(self) -> dict[str, Any]:
        return self.command("hangup")

    def accept(self) -> dict[str, Any]:
        return self.command("accept")

    def send_dtmf(self, digits: str) -> dict[str, Any]:
        """RFC 2833/4733 telephone-events (baresip cannot send SIP INFO DTMF)."""
        return self.command("sndcode", digits)

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self._events if type_ is None or e.get("type") == type_]

    def wait_event(
        self,
        type_: str,
        timeout: float = 10.0,
        where: Callable[[dict[str, Any]], bool] | None = None,
        after: int = 0,
    ) -> dict[str, Any]:
        """First event of ``type_`` (index >= ``after``) matching ``where``.

        Raises PeerError on timeout or if baresip exits first.
        """

        def find() -> dict[str, Any] | None:
            for e in self._events[after:]:
                if e.get("type") == type_ and (where is None or where(e)):
                    return e
            return None

        with self._cond:
            found = self._cond.wait_for(
                lambda: find() is not None or self.proc.poll() is not None, timeout
            )
            event = find()
        if event is None:
            seen = [e.get("type") for e in self.events()]
            why = "exited" if found else f"timed out after {timeout} s"
            raise PeerError(f"baresip {self.name}: no {type_} event ({why}); saw {seen}")
        return event

    def wait_secure(self, timeout: float = 10.0, after: int = 0) -> str:
        """The SRTP suite of its call's audio, from the CALL_MENC event that srtp.so
        raises once both keys are in (param ``"0,audio,AES_CM_128_HMAC_SHA1_80"``)."""
        event = self.wait_event(
            "CALL_MENC", timeout, where=lambda e: ",audio," in str(e.get("param", "")), after=after
        )
        return str(event["param"]).rsplit(",", 1)[-1]

    # -- SIP trace (started with sip_trace=True)
    def sip_messages(self) -> list[SipTraced]:
        """Every SIP message it sent or received so far, as traced by ``baresip -s``
        (the messages as they went inside TLS, which no capture can show)."""
        if not self.sip_trace:
            raise PeerError(f"baresip {self.name} was started without sip_trace=True")
        # Bytes, not read_text(): universal newlines would turn the messages' CRLFs into LFs.
        stdout = (self.log_dir / "stdout.log").read_bytes().decode("utf-8", errors="replace")
        return parse_sip_trace(stdout)

    # -- audio dumps
    def received_wavs(self) -> list[Path]:
        return sorted(self.snd_dir.glob("dump-*-dec.wav"))

    def sent_wavs(self) -> list[Path]:
        return sorted(self.snd_dir.glob("dump-*-enc.wav"))

    def received_wav(self) -> Path:
        """What it received in its (only) call; read after CALL_CLOSED, when it is complete."""
        wavs = self.received_wavs()
        if len(wavs) != 1:
            raise PeerError(f"baresip {self.name}: expected one received WAV, found {wavs}")
        return wavs[0]

    def stop(self) -> int:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        code = stop_process(self.proc)
        if self._reader is not None:
            self._reader.join(2.0)
        return code


@contextlib.contextmanager
def start_baresip(
    work_dir: Path,
    *,
    user: str,
    source_wav: Path,
    auto_answer: bool = True,
    sip_port: int | None = None,
    ctrl_port: int | None = None,
    ready_timeout: float = 5.0,
    tls: BaresipTls | None = None,
    srtp: bool | SrtpMode = False,
    outbound: str | None = None,
    sip_trace: bool = False,
) -> Iterator[Baresip]:
    """A headless baresip UA, registered nowhere, reachable at ``Baresip.uri``.

    Callee: ``auto_answer=True`` answers every INVITE. Caller: ``ua.dial(uri)`` and
    ``ua.wait_event("CALL_ESTABLISHED")``. It sends ``source_wav`` and hangs up when
    that ends; what it received is ``ua.received_wav()`` once the call is closed.

    ``tls``: SIP over TLS too (listener ``ua.tls_port``, ``ua.uri`` then dials it
    over TLS). ``srtp``: SDES-SRTP (True: mandatory, RTP/SAVP); ``ua.wait_secure()``
    gives the suite once the call's media is encrypted. ``outbound``: the account's
    outbound proxy. ``sip_trace``: ``baresip -s``, line-buffered, read with
    ``ua.sip_messages()``.
    """
    base = _unique_dir(work_dir, f"baresip-{user}")
    conf_dir, snd_dir = base / "conf", base / "snd"
    # baresip listens on UDP and TCP sip_port and on TLS sip_port + 1.
    sip_port = sip_port or free_port_block(2, tcp=True)
    ctrl_port = ctrl_port or free_port_block(1, tcp=True)
    rtp_lo = free_port_block(8)
    write_baresip_config(
        conf_dir,
        user=user,
        sip_port=sip_port,
        ctrl_port=ctrl_port,
        rtp_ports=(rtp_lo, rtp_lo + 7),
        source_wav=source_wav,
        snd_dir=snd_dir,
        auto_answer=auto_answer,
        tls=tls,
        srtp=srtp,
        outbound=outbound,
    )
    cmd = ["baresip", "-f", str(conf_dir)]
    if sip_trace:
        # stdout is a file, so fully buffered: stdbuf (which execs baresip, same
        # PID) makes the trace readable while the UA runs, not only after it exits.
        cmd = ["stdbuf", "-oL", *cmd, "-s"]
    proc = _spawn(cmd, base)
    ua = Baresip(
        user,
        conf_dir,
        snd_dir,
        base,
        user,
        sip_port,
        ctrl_port,
        proc,
        tls=tls,
        srtp=_srtp_mode(srtp),
        sip_trace=sip_trace,
    )
    try:
        ua._connect(ready_timeout)
        yield ua
    finally:
        ua.stop()
