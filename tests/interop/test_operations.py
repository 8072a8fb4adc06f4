"""Operations (issue 8) against the real `recorder serve`: systemd notify, reload, drain, logs,
metrics. Peers are sipp processes; everything listens on 127.0.0.1."""

from __future__ import annotations

import contextlib
import itertools
import re
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import soundfile
from prometheus_client.parser import text_string_to_metric_families

from . import peers
from .recorder_proc import RecorderProcess, running_recorder

pytestmark = pytest.mark.interop

# Records inbound calls at the answer, no notice: every bridged inbound call leaves a file.
POLICY = """
[policy]
name = "OPS"

[recording]
directions = ["inbound"]
extensions = "all"
mode = "automatic"

[notice]
play = false

[retention]
recordings = "8 days"
"""

CALLER_NUMBER = "+15145550100"
CALLEE_NUMBER = "+18005550199"
# A phone number as the issue defines it for the log scan: a run of 7+ digits, optionally
# after '+', that is not part of a longer token (hex ids) or a decimal (durations).
UNMASKED_NUMBER = re.compile(r"(?<![\w.*])\+?\d{7,}(?![\w.*])")


# --------------------------------------------------------------------------- helpers


@dataclass
class Ports:
    external: int = field(default_factory=lambda: peers.free_port_block(1, tcp=True))
    internal: int = field(default_factory=lambda: peers.free_port_block(1, tcp=True))
    trunk: int = field(default_factory=peers.free_udp_port)
    media_first: int = field(default_factory=lambda: peers.free_port_block(32))


RecorderFactory = Callable[..., RecorderProcess]


@pytest.fixture
def ops_recorder(interop_dir: Path) -> Iterator[RecorderFactory]:
    stack = ExitStack()

    def start(
        *,
        pbx_port: int,
        ports: Ports | None = None,
        drain_seconds: float = 2,
        extra: str = "",
    ) -> RecorderProcess:
        ports = ports or Ports()
        cm: AbstractContextManager[RecorderProcess] = running_recorder(
            interop_dir / "recorder",
            external_port=ports.external,
            internal_port=ports.internal,
            pbx_port=pbx_port,
            trunk_port=ports.trunk,
            media_first=ports.media_first,
            media_last=ports.media_first + 31,
            drain_seconds=drain_seconds,
            policy_extra=POLICY + extra,
        )
        return stack.enter_context(cm)

    with stack:
        yield start


class NotifyListener:
    """The test's end of `$NOTIFY_SOCKET`: every datagram, with its arrival time.

    `on_ready` runs in the reader thread the moment a READY=1 arrives, so that what it
    checks is the service's state at that moment, not a little later.
    """

    def __init__(self, on_ready: Callable[[], object] | None = None) -> None:
        # AF_UNIX paths are limited to 108 bytes: pytest's tmp paths can be longer.
        self.dir = Path(tempfile.mkdtemp(prefix="notify-", dir="/tmp"))
        self.path = self.dir / "sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.1)
        self.on_ready = on_ready
        self.ready_checks: list[object] = []
        self.messages: list[tuple[float, list[str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            lines = data.decode().split("\n")
            if "READY=1" in lines and self.on_ready is not None:
                self.ready_checks.append(self.on_ready())
            with self._lock:
                self.messages.append((time.monotonic(), lines))

    def assignments(self) -> list[tuple[float, str]]:
        with self._lock:
            return [(at, line) for at, lines in self.messages for line in lines]

    def times(self, assignment: str) -> list[float]:
        return [at for at, line in self.assignments() if line == assignment]

    def wait_for(self, assignment: str, count: int = 1, timeout: float = 10.0) -> list[float]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.times(assignment)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(found)} {assignment!r} notifications, expected {count}: "
                    f"{[line for _, line in self.assignments()]}"
                )
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def notify_socket(
    monkeypatch: pytest.MonkeyPatch, on_ready: Callable[[], object] | None = None
) -> Iterator[NotifyListener]:
    """`$NOTIFY_SOCKET` and a 2 s `$WATCHDOG_USEC` for the recorder started inside.

    running_recorder hands the test's environment to the service, as systemd would hand it
    its own; WATCHDOG_PID is left unset (the service then takes the watchdog as its own).
    """
    listener = NotifyListener(on_ready)
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        yield listener
    finally:
        listener.close()


@dataclass
class SipAnswer:
    status: int
    headers: dict[str, str]
    raw: str


def _parse_response(data: bytes) -> SipAnswer:
    text = data.decode("utf-8", "replace")
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return SipAnswer(int(head[0].split(" ")[1]), headers, text)


def sip_transaction(port: int, method: str, timeout: float = 3.0) -> list[SipAnswer]:
    """Sends one out-of-dialog request from a fresh UDP socket; every response to its final.

    For an INVITE, the final non-2xx response is ACKed as RFC 3261 §17.1.1.3 says.
    """
    local = peers.free_udp_port()
    branch = "z9hG4bK" + secrets.token_hex(8)
    tag = secrets.token_hex(4)
    call_id = secrets.token_hex(8) + "@127.0.0.1"
    uri = f"sip:service@127.0.0.1:{port}"

    def request(name: str, to: str) -> bytes:
        return (
            f"{name} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch={branch}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1:{local}>;tag={tag}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: 1 {name}\r\n"
            f"Contact: <sip:probe@127.0.0.1:{local}>\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    answers: list[SipAnswer] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", local))
        sock.sendto(request(method, f"<{uri}>"), ("127.0.0.1", port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            answer = _parse_response(data)
            answers.append(answer)
            if answer.status >= 200:
                if method == "INVITE" and answer.status >= 300:
                    sock.sendto(request("ACK", answer.headers["to"]), ("127.0.0.1", port))
                break
    return answers


def run_in_thread(target: Callable[[], peers.SippResult]) -> Callable[..., peers.SippResult]:
    """Starts `target` now; the returned function joins it and gives its result."""
    box: list[peers.SippResult] = []
    thread = threading.Thread(target=lambda: box.append(target()), daemon=True)
    thread.start()

    def join(timeout: float = 60.0) -> peers.SippResult:
        thread.join(timeout)
        assert box, "sipp did not finish"
        return box[0]

    return join


def decided(recorder: RecorderProcess, count: int) -> list[dict[str, object]]:
    return recorder.wait_event("policy.decided", count)


def pcap_packets(path: Path) -> int:
    data = path.read_bytes()
    count, offset = 0, 24
    while offset + 16 <= len(data):
        offset += 16 + int.from_bytes(data[offset + 8 : offset + 12], "little")
        count += 1
    return count


# --------------------------------------------------------------------------- systemd notify


def test_notify_socket_ready_watchdog_status_stopping(
    interop_dir: Path,
    prompt_pcap: Path,
    ops_recorder: RecorderFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ports = Ports()

    def sip_answers() -> bool:
        answers = sip_transaction(ports.external, "OPTIONS", timeout=1.0)
        return bool(answers) and answers[-1].status == 200

    with (
        notify_socket(monkeypatch, on_ready=sip_answers) as notify,
        peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx,
    ):
        recorder = ops_recorder(pbx_port=pbx.port, ports=ports)
        ready = notify.wait_for("READY=1")
        # READY=1 only once the SIP port answers (and the catalog, opened before it, is open).
        assert notify.ready_checks == [True]
        assert (recorder.policy_path.parent / "recorder.db").is_file()
        assert "STATUS=0 active calls" in [line for _, line in notify.assignments()]
        # WatchdogSec=2 s: a ping every second, from the start, again and again.
        pings = notify.wait_for("WATCHDOG=1", count=4, timeout=8)
        assert pings[0] < ready[0] + 1.5
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert all(0.5 < gap < 1.6 for gap in gaps), gaps

        uac = peers.run_sipp_uac(
            "uac_pcap",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=prompt_pcap,
            call_length_s=1.5,
            timeout=20,
        )
        uac.assert_ok()
        pbx.wait(5)
        statuses = [line for _, line in notify.assignments() if line.startswith("STATUS=")]
        assert "STATUS=1 active calls" in statuses, statuses
        assert statuses[-1] == "STATUS=0 active calls", statuses

        assert not notify.times("STOPPING=1")
        assert recorder.stop() == 0
        notify.wait_for("STOPPING=1", timeout=2)
        stopping = notify.times("STOPPING=1")[0]
        # Nothing claims readiness after the stop began.
        assert all(at < stopping for at in notify.times("READY=1"))


# --------------------------------------------------------------------------- SIGHUP


def test_sighup_keeps_the_call_and_the_next_call_follows_the_new_policy(
    interop_dir: Path,
    prompt_pcap: Path,
    ops_recorder: RecorderFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with (
        notify_socket(monkeypatch) as notify,
        peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=3) as pbx,
    ):
        recorder = ops_recorder(pbx_port=pbx.port)
        notify.wait_for("READY=1")
        original = recorder.policy_path.read_text()
        outbound_only = original.replace('directions = ["inbound"]', 'directions = ["outbound"]')
        assert outbound_only != original

        def call() -> peers.SippResult:
            return peers.run_sipp_uac(
                "uac_pcap",
                recorder.external_target,
                log_dir=interop_dir,
                pcap=prompt_pcap,
                call_length_s=4.0,
                timeout=25,
            )

        # 1. A recorded call; the policy changes under it.
        first = run_in_thread(call)
        recorder.wait_event("recording.started")
        recorder.policy_path.write_text(outbound_only)
        recorder.proc.send_signal(signal.SIGHUP)
        recorder.wait_event("service.reloaded")
        notify.wait_for("RELOADING=1")
        notify.wait_for("READY=1", count=2)
        reloading = [line for _, line in notify.assignments() if line.startswith("MONOTONIC_USEC")]
        assert reloading, "RELOADING=1 without MONOTONIC_USEC"
        assert recorder.events("call.ended") == [], "the reload ended the call"
        first().assert_ok()
        recorder.wait_event("recording.finalized")

        # 2. The next call follows the new policy: not recorded.
        call().assert_ok()
        second = decided(recorder, 2)[1]
        assert second["record"] is False
        assert second["policy_hash"] != decided(recorder, 1)[0]["policy_hash"]

        # 3. A broken policy is refused; the one in force stays (a wrongly applied reload
        # of this file would record inbound calls again).
        recorder.policy_path.write_text(original + "\n[broken\n")
        recorder.proc.send_signal(signal.SIGHUP)
        recorder.wait_event("service.reload_failed")
        notify.wait_for("READY=1", count=3)
        call().assert_ok()
        third = decided(recorder, 3)[2]
        assert third["record"] is False
        assert third["policy_hash"] == second["policy_hash"]
        pbx.wait(5)
        assert recorder.proc.poll() is None

    # The catalog commands read the same file: mend it first.
    recorder.policy_path.write_text(outbound_only)
    rows = recorder.catalog("calls", "list")
    assert sorted(row["policy_record"] for row in rows) == [False, False, True], rows
    recordings = recorder.catalog("recordings", "list")
    assert len(recordings) == 1 and recordings[0]["state"] == "complete", recordings
    assert recorder.stop() == 0


# --------------------------------------------------------------------------- SIGTERM drain


def test_sigterm_drains_five_calls_refuses_new_ones_and_finalizes_every_recording(
    interop_dir: Path, prompt_pcap: Path, ops_recorder: RecorderFactory
) -> None:
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=5) as pbx:
        recorder = ops_recorder(pbx_port=pbx.port, drain_seconds=3)
        # Callers that stay on the line until hung up: only the drain ends their calls.
        uac = run_in_thread(
            lambda: peers.run_sipp_uac(
                "uac_wait_bye",
                recorder.external_target,
                log_dir=interop_dir,
                pcap=prompt_pcap,
                calls=5,
                limit=5,
                rate=10,
                timeout=40,
            )
        )
        recorder.wait_event("recording.started", count=5, timeout=15)
        time.sleep(1.0)  # some audio in every file
        recorder.proc.send_signal(signal.SIGTERM)
        recorder.wait_event("service.draining")
        answers = sip_transaction(recorder.external_port, "INVITE")
        assert answers and answers[-1].status == 503, [a.raw for a in answers]
        assert answers[-1].headers.get("retry-after", "").isdigit(), answers[-1].raw
        assert recorder.proc.wait(30) == 0
        result = uac(30)
        pbx.wait(5)
    # Every caller got a BYE and answered it: five successful calls.
    result.assert_ok(calls=5)
    ended = recorder.events("call.ended")
    assert len(ended) == 5 and all(e["reason"] == "shutdown" for e in ended), ended
    assert recorder.events("service.stopped")

    rows = recorder.catalog("recordings", "list")
    assert len(rows) == 5, rows
    for row in rows:
        assert row["state"] == "complete", row
        samples, rate = soundfile.read(row["path"], dtype="int16", always_2d=True)
        assert rate == 8000 and samples.shape[1] == 2
        assert len(samples) >= 8000, f"{row['path']}: {len(samples)} samples"
        assert abs(row["duration"] - len(samples) / 8000) < 0.05
    storage = recorder.policy_path.parent / "recordings"
    assert not list(storage.rglob("*.part"))


# --------------------------------------------------------------------------- log scan


def _numbered_scenario(directory: Path) -> Path:
    """uac_pcap with the caller's number in From, Contact and P-Asserted-Identity."""
    text = peers.scenario_path("uac_pcap").read_text()
    text = text.replace("sip:caller@", "sip:[from_user]@")
    text = text.replace(
        "      Max-Forwards: 70\n      Subject:",
        "      Max-Forwards: 70\n"
        "      P-Asserted-Identity: <sip:[from_user]@[local_ip]>\n"
        "      Subject:",
    )
    assert text.count("[from_user]") >= 4
    path = directory / "uac_numbered.xml"
    path.write_text(text)
    return path


def test_logs_of_a_call_show_no_phone_number(
    interop_dir: Path, prompt_pcap: Path, ops_recorder: RecorderFactory
) -> None:
    scenario = _numbered_scenario(interop_dir)
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = ops_recorder(pbx_port=pbx.port)
        uac = peers.run_sipp_uac(
            scenario,
            recorder.external_target,
            log_dir=interop_dir,
            pcap=prompt_pcap,
            call_length_s=2.0,
            service=CALLEE_NUMBER,
            keys={"from_user": CALLER_NUMBER},
            timeout=20,
        )
        pbx.wait(5)
    uac.assert_ok()
    assert CALLER_NUMBER in uac.messages()  # the number really was on the wire
    recorder.wait_event("recording.finalized")
    assert recorder.stop() == 0
    # The catalog, and only the catalog, holds the numbers.
    calls = recorder.catalog("calls", "list")
    assert calls[0]["caller_number"] == CALLER_NUMBER

    log = recorder.log_text()
    received = recorder.events("call.received")[0]
    assert received["caller"] == "+1514***0100" and received["callee"] == "+1800***0199"
    leaks = [
        (number, line) for line in log.splitlines() for number in UNMASKED_NUMBER.findall(line)
    ]
    assert leaks == [], leaks[:10]
    assert "5145550100" not in log and "8005550199" not in log


# --------------------------------------------------------------------------- metrics


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape_until(
    port: int, ready: Callable[[dict[tuple[str, frozenset[tuple[str, str]]], float]], float]
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Scrape until `ready` holds (a datagram's effect is not visible the moment it is sent)."""
    deadline = time.monotonic() + 5
    while True:
        samples = scrape(port)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def metric(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_endpoint_counts_what_the_run_did(
    interop_dir: Path, prompt_pcap: Path, ops_recorder: RecorderFactory
) -> None:
    metrics_port = peers.free_port_block(1, tcp=True)
    extra = f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=2) as pbx:
        recorder = ops_recorder(pbx_port=pbx.port, extra=extra)
        # The metrics endpoint opens after `service.started`: scraping before it races.
        recorder.wait_event("metrics.listening")
        before = scrape(metrics_port)
        assert metric(before, "recorder_active_calls") == 0
        assert metric(before, "recorder_accepting_calls") == 1

        def call() -> peers.SippResult:
            return peers.run_sipp_uac(
                "uac_pcap",
                recorder.external_target,
                log_dir=interop_dir,
                pcap=prompt_pcap,
                timeout=25,
            )

        first = run_in_thread(call)
        recorder.wait_event("recording.started")
        # The file opens once its catalog row is written (a row before any file): wait for it.
        during = scrape_until(
            metrics_port,
            lambda m: (
                metric(m, "recorder_rtp_packets_relayed_total")
                * metric(m, "recorder_recordings_open")
            ),
        )
        assert metric(during, "recorder_active_calls") == 1
        assert metric(during, "recorder_active_calls_by_direction", direction="inbound") == 1
        assert metric(during, "recorder_recordings_open") == 1
        assert metric(during, "recorder_rtp_packets_relayed_total") > 0
        assert metric(during, "recorder_media_port_pairs", state="allocated") == 2
        first().assert_ok()
        call().assert_ok()
        pbx.wait(5)
        recorder.wait_event("recording.finalized", count=2, timeout=15)
        # One datagram that is not SIP, for the parse-error counter.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
            junk.sendto(b"this is not SIP\r\n\r\n", ("127.0.0.1", recorder.external_port))
        recorder.wait_event("call.summary", count=2)
        after = scrape_until(
            metrics_port, lambda m: metric(m, "recorder_sip_parse_errors_total", side="external")
        )
        files = recorder.catalog("recordings", "list")
        assert recorder.stop() == 0

    m = after
    assert metric(m, "recorder_active_calls") == 0
    assert metric(m, "recorder_calls_received_total") == 2
    assert metric(m, "recorder_calls_answered_total") == 2
    assert metric(m, "recorder_calls_failed_total") == 0
    assert metric(m, "recorder_calls_total", direction="inbound", decision="record") == 2
    assert metric(m, "recorder_calls_total", direction="inbound", decision="no_record") == 0
    assert metric(m, "recorder_recordings_started_total") == 2
    assert metric(m, "recorder_recordings_total", outcome="complete") == 2
    assert metric(m, "recorder_recordings_total", outcome="failed") == 0
    assert metric(m, "recorder_recording_files_total", state="complete") == 2
    assert len(files) == 2
    assert metric(m, "recorder_recording_bytes_written_total") == sum(f["size"] for f in files)
    assert metric(m, "recorder_recordings_open") == 0
    # Each call: the caller's pcap relayed to the PBX, and the PBX's echo relayed back.
    sent = pcap_packets(prompt_pcap)
    relayed = metric(m, "recorder_rtp_packets_relayed_total")
    received = metric(m, "recorder_rtp_packets_received_total")
    assert 0.95 * 4 * sent <= relayed <= received, (relayed, received, sent)
    assert metric(m, "recorder_rtp_packets_lost_total") <= 0.01 * received
    assert metric(m, "recorder_media_port_pairs", state="allocated") == 0
    ext_in = {"side": "external", "direction": "in"}
    ext_out = {"side": "external", "direction": "out"}
    int_in = {"side": "internal", "direction": "in"}
    int_out = {"side": "internal", "direction": "out"}
    assert metric(m, "recorder_sip_requests_total", method="INVITE", **ext_in) == 2
    assert metric(m, "recorder_sip_requests_total", method="ACK", **ext_in) == 2
    assert metric(m, "recorder_sip_requests_total", method="BYE", **ext_in) == 2
    assert metric(m, "recorder_sip_responses_total", method="INVITE", status="200", **ext_out) == 2
    assert metric(m, "recorder_sip_responses_total", method="BYE", status="200", **ext_out) == 2
    assert metric(m, "recorder_sip_requests_total", method="INVITE", **int_out) == 2
    assert metric(m, "recorder_sip_requests_total", method="BYE", **int_out) == 2
    assert metric(m, "recorder_sip_responses_total", method="INVITE", status="200", **int_in) == 2
    assert metric(m, "recorder_sip_responses_total", method="BYE", status="200", **int_in) == 2
    assert metric(m, "recorder_sip_parse_errors_total", side="external") == 1
    assert metric(m, "recorder_sip_parse_errors_total", side="internal") == 0
    # The loop-lag monitor has been measuring since the start, twice a second.
    assert metric(m, "recorder_event_loop_lag_seconds_count") >= 4
    assert metric(m, "recorder_event_loop_lag_seconds_bucket", le="+Inf") == metric(
        m, "recorder_event_loop_lag_seconds_count"
    )
    assert metric(m, "process_resident_memory_bytes") > 0
