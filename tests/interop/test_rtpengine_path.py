"""rtpengine as the media plane (issue 19): sipp -> recorder + rtpengine-daemon -> sipp.

rtpengine runs in userspace (`--table=-1`, no kernel module), records to pcap, and forwards
the call's media once it is bridged; the recorder keeps the notice and the consent on its own
relay. A consenting call ends as the usual stereo WAV (left = the caller, right = the agent)
with its catalog row; a refusing call leaves no file, no row and no pcap.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile

from recorder.media.ng import decode_reply, encode_request

from . import audio, peers
from .conftest import RecorderFactory, _in_ci
from .recorder_proc import RecorderProcess
from .test_pause_path import ctl, long_call_pcap, policy_with, silent_spans

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
NOTICE = ROOT / "prompts" / "notice-en.wav"
DTMF_9 = Path("/usr/share/sip-tester/dtmf_2833_9.pcap")
LISTEN_SECONDS = 1.0

POLICY = f"""
[policy]
name = "TEST"

[recording]
directions = ["inbound"]
extensions = "all"
mode = "automatic"

[notice]
play = true
prompts = {{ en = "{NOTICE}" }}
default_language = "en"

[consent]
mode = "opt_out"
refusal_keys = ["9"]
listen_seconds = {LISTEN_SECONDS}
barge_in = true

[naming]
template = "{{date}}_{{time}}_ext-{{extension}}"

[retention]
recordings = "8 days"
"""


def _rtpengine_binary() -> str | None:
    return shutil.which("rtpengine") or (
        "/usr/bin/rtpengine" if Path("/usr/bin/rtpengine").is_file() else None
    )


@dataclass
class Rtpengine:
    proc: subprocess.Popen[bytes]
    ng_port: int
    spool: Path
    log: Path

    def pcaps(self) -> list[Path]:
        return sorted((self.spool / "pcaps").glob("*.pcap"))


def _ping(port: int, timeout: float = 0.3) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(encode_request("probe", {"command": "ping"}), ("127.0.0.1", port))
        try:
            data, _ = sock.recvfrom(4096)
        except OSError:
            return False
    return decode_reply(data).ok


@pytest.fixture
def rtpengine(interop_dir: Path) -> Iterator[Rtpengine]:
    """Debian's rtpengine-daemon, userspace only, on its own ports; stopped after the test."""
    binary = _rtpengine_binary()
    if binary is None:
        message = "rtpengine missing (Debian rtpengine-daemon; scripts/install-test-deps.sh)"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    ng_port = peers.free_udp_port()
    first = peers.free_port_block(64)
    spool = interop_dir / "rtpengine-spool"
    spool.mkdir(mode=0o700)
    log = interop_dir / "rtpengine.log"
    command = [
        binary,
        "--config-file=none",
        "--foreground",
        "--log-stderr",
        "--log-level=6",
        "--table=-1",  # no kernel module: userspace forwarding
        "--interface=127.0.0.1",
        f"--listen-ng=127.0.0.1:{ng_port}",
        f"--port-min={first}",
        f"--port-max={first + 63}",
        f"--recording-dir={spool}",
        "--recording-method=pcap",
        "--delete-delay=0",
        "--num-threads=2",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not _ping(ng_port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rtpengine did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield Rtpengine(proc, ng_port, spool, log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def rtpengine_recorder(
    start_recorder: RecorderFactory, rtpengine: Rtpengine
) -> Iterator[tuple[RecorderFactory, Rtpengine]]:
    def start(*, pbx_port: int, policy: str = POLICY) -> RecorderProcess:
        return start_recorder(
            pbx_port=pbx_port,
            media_ports=32,
            policy_extra=policy,
            media_extra=(
                'engine = "rtpengine"\n'
                f'rtpengine = "127.0.0.1:{rtpengine.ng_port}"\n'
                f'rtpengine_spool = "{rtpengine.spool}"\n'
            ),
        )

    yield start, rtpengine


def one_event(recorder: RecorderProcess, name: str) -> dict[str, object]:
    events = recorder.wait_event(name)
    assert len(events) == 1, events
    return events[0]


def test_consenting_call_is_forwarded_by_rtpengine_and_recorded(
    interop_dir: Path,
    prompt_wav: Path,
    agent_wav: Path,
    rtpengine_recorder: tuple[RecorderFactory, Rtpengine],
) -> None:
    start, engine = rtpengine_recorder
    # The caller speaks once the notice and the listening window are over and it is bridged.
    lead = audio.wav_duration(NOTICE) + LISTEN_SECONDS + 1.5
    caller_pcap = audio.wav_to_pcap(
        audio.pad(prompt_wav, interop_dir / "caller.wav", lead, 1.0), interop_dir / "caller.pcap"
    )
    agent_pcap = audio.wav_to_pcap(
        audio.pad(agent_wav, interop_dir / "agent.wav", 0.3, 0.5), interop_dir / "agent.pcap"
    )
    with peers.start_sipp_uas(
        "uas_play_pcap",
        log_dir=interop_dir,
        calls=1,
        rtp_echo=False,
        keys={"pcap": str(agent_pcap.resolve())},
    ) as pbx:
        recorder = start(pbx_port=pbx.port)
        uac = peers.run_sipp_uac(
            "uac_pcap",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=caller_pcap,
            timeout=40,
        )
        uas = pbx.wait(5)
    uac.assert_ok()
    uas.assert_ok()
    # rtpengine carried the call; the notice came from our relay first (C1), then consent.
    assert one_event(recorder, "rtpengine.call")["ng_call_id"]
    assert one_event(recorder, "notice.ended")["complete"] is True
    assert one_event(recorder, "consent.accepted")["method"] == "timeout"
    # rtpengine received both parties' RTP (userspace here: no kernel module).
    deleted = recorder.wait_event("rtpengine.call_deleted", timeout=10)[0]
    assert deleted["packets_a"] > 100 and deleted["packets_b"] > 100, deleted
    assert deleted["kernel"] is False
    converted = recorder.wait_event("rtpengine.recording_converted", timeout=20)[0]
    assert converted["pcaps"] == 1, converted
    assert converted["packets_a"] > 100 and converted["packets_b"] > 100, converted
    # Our relay heard the caller during the notice only: after the bridge, rtpengine alone
    # carried (and recorded) the caller's packets.
    notice = one_event(recorder, "call.ended")["media"]["notice"]
    heard = notice["rtp_packets"] + converted["packets_a"]
    assert abs(heard - deleted["packets_a"]) <= 30, (notice, converted, deleted)
    finalized = recorder.wait_event("recording.finalized", timeout=15)[0]
    assert finalized["state"] == "complete"

    rows = recorder.catalog("recordings", "list")
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["state"] == "complete" and row["expires_at"] is not None
    path = Path(row["path"])
    assert path.name.endswith("_ext-pbx.wav"), path.name
    node = recorder.wait_event("service.started")[0]["node"]
    where = path.parent.relative_to(recorder.policy_path.parent / "recordings").parts
    assert where[0] == node
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o750
    assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"]
    assert not list(path.parent.glob("*.part"))

    # Left = the caller, right = the agent, each party's own speech and not the other's.
    _, left = audio.read_wav(path, channel=0)
    _, right = audio.read_wav(path, channel=1)
    assert audio.peak_xcorr(prompt_wav, left).peak > 0.9
    assert audio.peak_xcorr(agent_wav, right).peak > 0.9
    assert audio.peak_xcorr(agent_wav, left).peak < 0.5
    assert audio.peak_xcorr(prompt_wav, right).peak < 0.5
    # The notice is not in the recording (it was played before the bridge).
    assert audio.peak_xcorr(NOTICE, left).peak < 0.5
    # rtpengine's pcap was converted, then removed: the catalog's file is the only copy.
    assert engine.pcaps() == []
    assert not list((engine.spool / "metadata").glob("*"))
    calls = recorder.catalog("calls", "list")
    assert len(calls) == 1 and calls[0]["consent_outcome"] == "accepted"


def test_refusing_call_leaves_no_recording(
    interop_dir: Path, rtpengine_recorder: tuple[RecorderFactory, Rtpengine]
) -> None:
    start, engine = rtpengine_recorder
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = start(pbx_port=pbx.port)
        uac = peers.run_sipp_uac(
            "uac_dtmf",
            recorder.external_target,
            log_dir=interop_dir,
            keys={"dtmf": str(DTMF_9)},
            variables={"dtmf_delay_ms": "1500"},
            call_length_s=4.0,
            timeout=30,
        )
        uas = pbx.wait(5)
    uac.assert_ok()
    uas.assert_ok()  # C5: refused, and still served (through rtpengine)
    assert one_event(recorder, "rtpengine.call")["ng_call_id"]
    assert one_event(recorder, "consent.refused")["method"] == "dtmf-rfc4733"
    summary = one_event(recorder, "call.summary")
    assert summary["recorded"] is False and summary["consent"] == "refused"
    recorder.wait_event("call.ended")
    time.sleep(0.5)  # let the ng delete go out
    assert recorder.events("recording.started") == []
    assert recorder.catalog("recordings", "list", timeout=0.5) == []
    rows = recorder.catalog("calls", "list")
    assert len(rows) == 1 and rows[0]["consent_outcome"] == "refused"
    recordings = recorder.policy_path.parent / "recordings"
    assert not [p for p in recordings.rglob("*") if p.suffix in (".wav", ".part")]
    assert engine.pcaps() == []  # rtpengine was never asked to record
    assert not list((engine.spool / "metadata").glob("*"))


def test_pause_and_resume_by_control_socket_through_rtpengine(
    interop_dir: Path, rtpengine_recorder: tuple[RecorderFactory, Rtpengine]
) -> None:
    """S8 with rtpengine: the pause is noted when asked and applied when the pcap is read back;
    the paused span is silence on both channels, as with the relay."""
    start, engine = rtpengine_recorder
    pcap = long_call_pcap(interop_dir, 15.0)
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = start(pbx_port=pbx.port, policy=policy_with())  # no notice: recorded at once
        with peers.sipp_uac_in_background(
            "uac_pcap", recorder.external_target, log_dir=interop_dir, pcap=pcap, timeout=30
        ) as result:
            recorder.wait_event("recording.started", timeout=10)
            code, out = ctl(recorder, "calls", "--json")
            assert code == 0, out
            call_id = json.loads(out)["calls"][0]["id"]
            time.sleep(1.5)
            asked_pause = time.monotonic()
            assert ctl(recorder, "pause", call_id)[0] == 0
            time.sleep(2.0)
            assert ctl(recorder, "resume", call_id)[0] == 0
            resumed = time.monotonic()
        pbx.wait(5)
    result[0].assert_ok()
    assert one_event(recorder, "rtpengine.call")
    recorder.wait_event("recording.finalized", timeout=20)
    row = recorder.catalog("recordings", "list")[0]
    assert row["state"] == "complete"
    assert len(row["pauses"]) == 1, row
    paused_from, paused_to = row["pauses"][0]
    assert 2.0 <= paused_to - paused_from <= resumed - asked_pause, row["pauses"]
    samples, _ = soundfile.read(row["path"], dtype="int16", always_2d=True)
    for channel in (0, 1):
        spans = silent_spans(samples[:, channel], 1.0)
        assert any(abs(s - paused_from) < 0.15 and abs(e - paused_to) < 0.15 for s, e in spans), (
            spans
        )
        # The tone is there before and after the pause (rtpengine forwarded the whole call).
        assert np.abs(samples[: int(paused_from * 8000) - 800, channel]).max() > 1000
        assert np.abs(samples[int(paused_to * 8000) + 800 :, channel]).max() > 1000
    assert engine.pcaps() == []


def test_calls_are_relayed_and_recorded_while_rtpengine_is_down(
    interop_dir: Path, prompt_pcap: Path, prompt_wav: Path, start_recorder: RecorderFactory
) -> None:
    """Fail-safe: with nothing on the ng port, the service says so at start, and each call is
    relayed in-process (and recorded) instead of failing."""
    silent = peers.free_udp_port()  # nothing listens there
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = start_recorder(
            pbx_port=pbx.port,
            media_ports=32,
            policy_extra=policy_with(),
            media_extra=f'engine = "rtpengine"\nrtpengine = "127.0.0.1:{silent}"\n',
        )
        assert recorder.wait_event("rtpengine.unreachable")
        uac = peers.run_sipp_uac(
            "uac_pcap", recorder.external_target, log_dir=interop_dir, pcap=prompt_pcap, timeout=20
        )
        pbx.wait(5)
    uac.assert_ok()
    assert one_event(recorder, "rtpengine.fallback")["side"] == "external"
    assert recorder.events("rtpengine.call") == []
    recorder.wait_event("recording.finalized", timeout=15)
    rows = recorder.catalog("recordings", "list")
    assert len(rows) == 1 and rows[0]["state"] == "complete", rows
    _, left = audio.read_wav(Path(rows[0]["path"]), channel=0)
    assert audio.peak_xcorr(prompt_wav, left).peak > 0.9
