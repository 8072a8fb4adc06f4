"""The recording notice and the refusal (C1, C3, C4, C5) end to end through `recorder serve`."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from . import audio, peers
from .conftest import RecorderFactory
from .recorder_proc import RecorderProcess

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
NOTICE = ROOT / "prompts" / "notice-en.wav"
DTMF_9 = Path("/usr/share/sip-tester/dtmf_2833_9.pcap")

POLICY = """
[policy]
name = "TEST"

[recording]
directions = ["inbound"]                # S1
extensions = "all"
mode = "automatic"

[notice]                                # C1
play = true
prompts = {{ en = "{notice}" }}
default_language = "en"

[consent]                               # C3, C4: refusal by key 9, during the notice too
mode = "opt_out"
refusal_keys = ["9"]
listen_seconds = {listen}
barge_in = true

[retention]
recordings = "8 days"
"""


@pytest.fixture
def notice_recorder(start_recorder: RecorderFactory) -> RecorderFactory:
    def start(
        *, pbx_port: int, listen: float = 1.0, trunk_port: int = 0, extra: str = ""
    ) -> RecorderProcess:
        return start_recorder(
            pbx_port=pbx_port,
            media_ports=32,
            trunk_port=trunk_port,
            policy_extra=POLICY.format(notice=NOTICE, listen=listen) + extra,
        )

    return start


def notice_packets() -> int:
    return -(-round(audio.wav_duration(NOTICE) * 8000) // 160)


def one_event(recorder: RecorderProcess, name: str) -> dict[str, Any]:
    events = recorder.wait_event(name)
    assert len(events) == 1, events
    return events[0]


def test_silent_caller_hears_notice_then_reaches_the_pbx(
    interop_dir: Path, prompt_pcap: Path, notice_recorder: RecorderFactory
) -> None:
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = notice_recorder(pbx_port=pbx.port)
        uac = peers.run_sipp_uac(
            "uac_pcap",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=prompt_pcap,
            call_length_s=audio.wav_duration(NOTICE) + 4,
            timeout=30,
        )
        uas = pbx.wait(5)
    uac.assert_ok()
    uas.assert_ok()  # C5: the PBX was reached
    decided = one_event(recorder, "consent.accepted")
    assert decided["method"] == "timeout"
    assert recorder.wait_event("call.bridged")
    # The caller got the whole notice from us before any PBX audio (C1).
    notice = one_event(recorder, "notice.ended")
    assert notice["packets"] == notice_packets() and notice["complete"] is True
    media = one_event(recorder, "call.ended")["media"]
    assert media["a"]["injected_rtp"] >= notice_packets(), media  # plus our ringback
    started = one_event(recorder, "notice.started")
    assert started["seconds"] == pytest.approx(audio.wav_duration(NOTICE), abs=0.03)


def test_refusal_by_rfc2833_key_during_notice(
    interop_dir: Path, notice_recorder: RecorderFactory
) -> None:
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = notice_recorder(pbx_port=pbx.port)
        uac = peers.run_sipp_uac(
            "uac_dtmf",
            recorder.external_target,
            log_dir=interop_dir,
            keys={"dtmf": str(DTMF_9)},
            variables={"dtmf_delay_ms": "1500"},
            call_length_s=3.0,
            timeout=30,
        )
        uas = pbx.wait(5)
    uac.assert_ok()
    uas.assert_ok()  # C5: refused, and still served
    refused = one_event(recorder, "consent.refused")
    assert refused["method"] == "dtmf-rfc4733"
    assert recorder.events("consent.accepted") == []
    summary = one_event(recorder, "call.summary")
    assert summary["recorded"] is False and summary["consent"] == "refused"
    # The call log says what happened and why nothing was recorded (N3, C5).
    rows = recorder.catalog("calls", "list")
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["consent_outcome"] == "refused" and row["consent_method"] == "dtmf-rfc4733"
    assert row["direction"] == "inbound" and row["policy_record"] is True
    assert "C3" in row["policy_rules"]
    assert recorder.catalog("recordings", "list", timeout=0.5) == []
    # Barge-in: the notice stopped at the key, well before its end.
    notice = one_event(recorder, "notice.ended")
    assert 0 < notice["packets"] < notice_packets() and notice["complete"] is False


def test_refusal_by_sip_info(interop_dir: Path, notice_recorder: RecorderFactory) -> None:
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = notice_recorder(pbx_port=pbx.port)
        uac = peers.run_sipp_uac(
            "uac_info",
            recorder.external_target,
            log_dir=interop_dir,
            keys={"digit": "9"},
            variables={"dtmf_delay_ms": "1000"},
            call_length_s=2.0,
            timeout=30,
        )
        uas = pbx.wait(5)
    uac.assert_ok()
    uas.assert_ok()
    assert one_event(recorder, "consent.refused")["method"] == "sip-info"
    assert one_event(recorder, "call.summary")["recorded"] is False


def test_another_key_is_not_a_refusal(interop_dir: Path, notice_recorder: RecorderFactory) -> None:
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = notice_recorder(pbx_port=pbx.port)
        uac = peers.run_sipp_uac(
            "uac_info",
            recorder.external_target,
            log_dir=interop_dir,
            keys={"digit": "5"},
            variables={"dtmf_delay_ms": "1000"},
            call_length_s=audio.wav_duration(NOTICE) + 3,
            timeout=30,
        )
        pbx.wait(5)
    uac.assert_ok()
    assert one_event(recorder, "consent.accepted")["method"] == "timeout"


def test_baresip_caller_hears_the_notice_then_the_callee(
    interop_dir: Path,
    prompt_wav: Path,
    agent_wav: Path,
    agent_long_wav: Path,
    notice_recorder: RecorderFactory,
) -> None:
    # The caller speaks after the notice: its source is silence, then the prompt.
    source = audio.pad(
        prompt_wav, interop_dir / "late_prompt.wav", audio.wav_duration(NOTICE) + 2.5, 1.0
    )
    with peers.start_baresip(interop_dir, user="callee", source_wav=agent_long_wav) as callee:
        recorder = notice_recorder(pbx_port=callee.sip_port)
        with peers.start_baresip(interop_dir, user="caller", source_wav=source) as caller:
            caller.dial(f"sip:callee@127.0.0.1:{recorder.external_port}")
            caller.wait_event("CALL_ESTABLISHED", timeout=5)
            callee.wait_event("CALL_ESTABLISHED", timeout=audio.wav_duration(NOTICE) + 5)
            caller.wait_event("CALL_CLOSED", timeout=audio.wav_duration(source) + 5)
            callee.wait_event("CALL_CLOSED", timeout=5)
            heard = caller.received_wav()
            got = callee.received_wav()
    assert audio.peak_xcorr(NOTICE, heard).peak > 0.9  # C1: the caller heard the notice
    assert audio.peak_xcorr(agent_wav, heard).peak > 0.9  # then the callee
    assert audio.peak_xcorr(prompt_wav, got).peak > 0.9  # and was heard by the callee
    assert one_event(recorder, "consent.accepted")["method"] == "timeout"


def test_refusal_by_inband_tone(interop_dir: Path, notice_recorder: RecorderFactory) -> None:
    # The caller's audio: 1.5 s of silence, then a real DTMF '9' (852 + 1477 Hz, 200 ms).
    tone = interop_dir / "d9.wav"
    audio._run(
        [
            "sox",
            "-n",
            "-r",
            "8000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            str(tone),
            "synth",
            "0.2",
            "sine",
            "852",
            "synth",
            "0.2",
            "sine",
            "mix",
            "1477",
            "gain",
            "-6",
        ]
    )
    caller = audio.pad(tone, interop_dir / "d9_padded.wav", 1.5, 1.0)
    pcap = audio.wav_to_pcap(caller, interop_dir / "d9.pcap")
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = notice_recorder(pbx_port=pbx.port)
        uac = peers.run_sipp_uac(
            "uac_pcap",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=pcap,
            call_length_s=4.0,
            timeout=30,
        )
        uas = pbx.wait(5)
    uac.assert_ok()
    uas.assert_ok()
    refused = one_event(recorder, "consent.refused")
    assert refused["method"] == "inband"
    assert one_event(recorder, "call.summary")["recorded"] is False


def test_notice_packets_are_paced_every_20_ms(notice_recorder: RecorderFactory) -> None:
    """A bare UDP caller timestamps the notice as it arrives: 20 ms apart, without drift."""
    recorder = notice_recorder(pbx_port=peers.free_udp_port(), listen=30.0)
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", peers.free_udp_port()))
    media.settimeout(2.0)
    sig = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sig.bind(("127.0.0.1", 0))
    sig.settimeout(3.0)
    port = media.getsockname()[1]
    body = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
    ).encode()
    target = ("127.0.0.1", recorder.external_port)
    invite = (
        f"INVITE sip:service@127.0.0.1:{recorder.external_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{sig.getsockname()[1]};branch=z9hG4bKpace\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag=pace\r\n"
        f"To: <sip:service@127.0.0.1:{recorder.external_port}>\r\nCall-ID: pace-1\r\n"
        f"CSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:{sig.getsockname()[1]}>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    try:
        sig.sendto(invite, target)
        while True:
            answer, _ = sig.recvfrom(65535)
            if answer.startswith(b"SIP/2.0 200 "):
                break
        arrivals: list[float] = []
        while len(arrivals) < notice_packets():
            packet = media.recv(2048)
            arrivals.append(time.monotonic())
            assert packet[1] & 0x7F == 0
    finally:
        media.close()
        sig.close()
    # The first packet may wait in our socket while we read the 200: measure from the second.
    times = np.array(arrivals[1:])
    gaps = np.diff(times) * 1000
    assert abs(float(np.median(gaps)) - 20) <= 1
    # Paced from the start time, not from the previous packet: no drift over the notice. Each
    # packet's lateness against its slot, compared by medians between the two halves, so
    # that a stall of the loaded host (or of this reader) delaying a few packets, which a
    # start-time pacer then catches up, does not count, while a drift of even 0.1 ms per
    # packet (about 19 ms between the halves' medians of this notice) does.
    lateness = (times - times[0]) * 1000 - np.arange(len(times)) * 20
    half = len(lateness) // 2
    drift = float(np.median(lateness[half:]) - np.median(lateness[:half]))
    assert abs(drift) <= 10, f"the notice drifts: {drift:.1f} ms between halves"
    # The p99 of |gap - 20 ms| depends on the machine's load: it is reported, not asserted.
    print(
        f"notice pacing: p99 |gap-20ms| = {np.percentile(np.abs(gaps - 20), 99):.2f} ms,"
        f" drift {drift:.2f} ms"
    )


@pytest.mark.parametrize(
    ("method", "expected"), [("rfc2833", "dtmf-rfc4733"), ("info", "sip-info")]
)
def test_pjsua2_caller_refuses(
    interop_dir: Path, notice_recorder: RecorderFactory, method: str, expected: str
) -> None:
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = notice_recorder(pbx_port=pbx.port)
        done = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).with_name("pjsua_caller.py")),
                "--target",
                f"sip:service@127.0.0.1:{recorder.external_port}",
                "--port",
                str(peers.free_udp_port()),
                "--dtmf",
                "9",
                "--method",
                method,
                "--delay",
                "1.0",
                "--duration",
                "3.0",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        uas = pbx.wait(10)
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["confirmed"] and outcome["dtmf_sent"], outcome
    uas.assert_ok()  # C5: served all the same
    assert one_event(recorder, "consent.refused")["method"] == expected
    assert one_event(recorder, "call.summary")["recorded"] is False


def test_outbound_callee_hears_the_notice_then_the_call_is_recorded(
    interop_dir: Path, prompt_pcap: Path, notice_recorder: RecorderFactory
) -> None:
    """C2: on an outbound call the callee is told, after answering, before the bridge."""
    outbound = POLICY.replace('directions = ["inbound"]', 'directions = ["outbound"]').replace(
        "play = true", "play = true\nto_callee = true"
    )
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as trunk:
        recorder = notice_recorder(pbx_port=peers.free_udp_port(), trunk_port=trunk.port)
        # Replace the policy part: the fixture's policy records inbound calls.
        text = recorder.policy_path.read_text()
        head = text[: text.index("[policy]")]
        recorder.policy_path.write_text(head + outbound.format(notice=NOTICE, listen=1.0))
        recorder.proc.send_signal(signal.SIGHUP)
        recorder.wait_event("service.reloaded")
        uac = peers.run_sipp_uac(
            "uac_pcap",
            recorder.internal_target,
            log_dir=interop_dir,
            pcap=prompt_pcap,
            call_length_s=audio.wav_duration(NOTICE) + 4,
            timeout=30,
        )
        trunk.wait(5)
    uac.assert_ok()
    started = one_event(recorder, "notice.started")
    assert started["to"] == "callee"
    assert one_event(recorder, "consent.accepted")["method"] == "timeout"
    media = one_event(recorder, "call.ended")["media"]
    assert media["b"]["injected_rtp"] == notice_packets()  # the notice went to the callee
    assert media["a"]["injected_rtp"] == 0  # not to the agent
    recorder.wait_event("recording.finalized", timeout=15)
    rows = recorder.catalog("recordings", "list")
    assert len(rows) == 1 and rows[0]["state"] == "complete"
    # Recorded only after the notice: what is left of the call after it.
    assert rows[0]["duration"] < 4.5


VOICE = """
[consent.voice]                         # C4: refusal by voice, as well as by key
language = "en"
phrases = { "stop recording" = 1e-30, "do not record" = 1e-20 }
"""


def test_refusal_by_voice(interop_dir: Path, notice_recorder: RecorderFactory) -> None:
    # After the notice the caller says "Stop recording." (espeak-ng, through PCMU).
    phrase = interop_dir / "stop.wav"
    raw = interop_dir / "stop.raw.wav"
    subprocess.run(
        ["espeak-ng", "-v", "en-us+m3", "-s", "150", "-w", str(raw), "Stop recording."],
        check=True,
    )
    audio.to_8k_mono(raw, phrase)
    caller = audio.pad(phrase, interop_dir / "stop_padded.wav", audio.wav_duration(NOTICE) + 0.8, 2)
    pcap = audio.wav_to_pcap(caller, interop_dir / "stop.pcap")
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = notice_recorder(pbx_port=pbx.port, listen=6.0, extra=VOICE)
        uac = peers.run_sipp_uac(
            "uac_pcap",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=pcap,
            call_length_s=audio.wav_duration(caller) + 1,
            timeout=40,
        )
        uas = pbx.wait(5)
    uac.assert_ok()
    uas.assert_ok()  # C5: served all the same
    assert recorder.events("voice.unavailable") == []
    assert one_event(recorder, "consent.refused")["method"] == "voice"
    assert one_event(recorder, "call.summary")["recorded"] is False


def test_notice_as_early_media(
    interop_dir: Path,
    prompt_wav: Path,
    agent_wav: Path,
    agent_long_wav: Path,
    notice_recorder: RecorderFactory,
) -> None:
    """`early_media = true`: 183 + the notice; the caller is answered only by the callee."""
    source = audio.pad(
        prompt_wav, interop_dir / "late_prompt.wav", audio.wav_duration(NOTICE) + 2.5, 1.0
    )
    with peers.start_baresip(interop_dir, user="callee", source_wav=agent_long_wav) as callee:
        recorder = notice_recorder(pbx_port=callee.sip_port)
        text = recorder.policy_path.read_text().replace(
            "play = true", "play = true\nearly_media = true"
        )
        recorder.policy_path.write_text(text)
        recorder.proc.send_signal(signal.SIGHUP)
        recorder.wait_event("service.reloaded")
        with peers.start_baresip(interop_dir, user="caller", source_wav=source) as caller:
            caller.dial(f"sip:callee@127.0.0.1:{recorder.external_port}")
            established = caller.wait_event(
                "CALL_ESTABLISHED", timeout=audio.wav_duration(NOTICE) + 8
            )
            callee_up = callee.wait_event("CALL_ESTABLISHED", timeout=5)
            caller.wait_event("CALL_CLOSED", timeout=audio.wav_duration(source) + 10)
            callee.wait_event("CALL_CLOSED", timeout=5)
            heard = caller.received_wav()
    # The caller's call was established only once the callee answered, after the notice.
    assert established["_at"] >= callee_up["_at"] - 1.0
    assert one_event(recorder, "call.answered_locally")["early_media"] is True
    assert audio.peak_xcorr(NOTICE, heard).peak > 0.9
    assert one_event(recorder, "consent.accepted")["method"] == "timeout"
