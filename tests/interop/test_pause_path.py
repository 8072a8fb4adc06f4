"""Pause and resume (S8), on-demand start (S5), the agent's refusal (C5), end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from . import audio, peers
from .conftest import RecorderFactory
from .recorder_proc import RecorderProcess
from .test_recording_path import POLICY

pytestmark = pytest.mark.interop

DTMF = Path("/usr/share/sip-tester")


def policy_with(**recording: str) -> str:
    """The recording test policy with extra [recording] keys (codes, mode)."""
    extra = "".join(f'{key} = "{value}"\n' for key, value in recording.items())
    return POLICY.format(extra="").replace('mode = "automatic"\n', f'mode = "automatic"\n{extra}')


@pytest.fixture
def recorders(start_recorder: RecorderFactory) -> RecorderFactory:
    def start(*, pbx_port: int, policy: str) -> RecorderProcess:
        return start_recorder(pbx_port=pbx_port, media_ports=32, policy_extra=policy)

    return start


def ctl(recorder: RecorderProcess, *args: str) -> tuple[int, str]:
    socket_path = recorder.policy_path.parent / "control.sock"
    done = subprocess.run(
        [sys.executable, "-m", "recorder.cli", "ctl", *args, "--socket", str(socket_path)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def long_call_pcap(directory: Path, seconds: float) -> Path:
    """A steady tone for the whole call: any silence in the file is a pause, not a gap."""
    wav = audio.tone(directory / "tone.wav", seconds, freq=600.0, gain_db=-12.0)
    return audio.wav_to_pcap(wav, directory / "tone.pcap")


def silent_spans(channel: np.ndarray, min_seconds: float) -> list[tuple[float, float]]:
    quiet = np.abs(channel.astype(np.int32)) < 64
    spans, start = [], None
    for index, flag in enumerate(np.append(quiet, False)):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            if index - start >= min_seconds * 8000:
                spans.append((start / 8000, index / 8000))
            start = None
    return spans


def test_pause_and_resume_by_control_socket(interop_dir: Path, recorders: RecorderFactory) -> None:
    pcap = long_call_pcap(interop_dir, 15.0)  # room for slow `recorder ctl` starts
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = recorders(pbx_port=pbx.port, policy=policy_with())
        with peers.sipp_uac_in_background(
            "uac_pcap", recorder.external_target, log_dir=interop_dir, pcap=pcap, timeout=30
        ) as result:
            recorder.wait_event("recording.started", timeout=10)
            code, out = ctl(recorder, "calls", "--json")
            assert code == 0, out
            calls = json.loads(out)["calls"]
            assert len(calls) == 1 and calls[0]["recording"] == "recording", calls
            call_id = calls[0]["id"]
            time.sleep(1.5)
            asked_pause = time.monotonic()
            assert ctl(recorder, "pause", call_id)[0] == 0
            listing = json.loads(ctl(recorder, "calls", "--json")[1])
            assert listing["calls"][0]["recording"] == "paused"
            assert ctl(recorder, "pause", call_id)[0] == 1  # refused: already paused
            time.sleep(2.0)
            assert ctl(recorder, "resume", call_id)[0] == 0
            resumed = time.monotonic()
            assert ctl(recorder, "pause", "no-such-call")[0] == 1
        pbx.wait(5)
    result[0].assert_ok()
    recorder.wait_event("recording.finalized", timeout=15)
    row = recorder.catalog("recordings", "list")[0]
    assert row["state"] == "complete"
    assert len(row["pauses"]) == 1, row
    start, end = row["pauses"][0]
    # Each `recorder ctl` is a process start: the pause lasts between the two commands.
    assert 2.0 <= end - start <= resumed - asked_pause, (start, end)
    samples, _ = soundfile.read(row["path"], dtype="int16", always_2d=True)
    # The paused span is silence on both channels; the tone is there before and after.
    for channel in (0, 1):
        spans = silent_spans(samples[:, channel], 1.0)
        assert any(abs(s - start) < 0.15 and abs(e - end) < 0.15 for s, e in spans), spans
    applied = [e["action"] for e in recorder.events("control.applied")]
    assert applied == ["pause", "resume"]


def test_agent_codes_pause_and_resume_and_are_swallowed(
    interop_dir: Path, recorders: RecorderFactory
) -> None:
    pcap = long_call_pcap(interop_dir, 6.0)
    keys = {
        "key1": str(DTMF / "dtmf_2833_star.pcap"),
        "key2": str(DTMF / "dtmf_2833_8.pcap"),
        "key3": str(DTMF / "dtmf_2833_pound.pcap"),
        "key4": str(DTMF / "dtmf_2833_9.pcap"),
    }
    with peers.start_sipp_uas("uas_agent_codes", log_dir=interop_dir, calls=1, keys=keys) as pbx:
        recorder = recorders(
            pbx_port=pbx.port, policy=policy_with(pause_code="*8", resume_code="#9")
        )
        uac = peers.run_sipp_uac(
            "uac_pcap", recorder.external_target, log_dir=interop_dir, pcap=pcap, timeout=30
        )
        pbx.wait(5)
    uac.assert_ok()
    actions = [e["action"] for e in recorder.events("agent.code")]
    assert actions == ["pause", "resume"], actions
    media = recorder.wait_event("call.ended")[0]["media"]
    # Every packet of the four key presses stayed with us: the caller never heard a code.
    assert media["b"]["dropped_filtered"] == 40, media["b"]
    recorder.wait_event("recording.finalized", timeout=15)
    row = recorder.catalog("recordings", "list")[0]
    assert len(row["pauses"]) == 1, row
    start, end = row["pauses"][0]
    assert end - start == pytest.approx(2.3, abs=0.4)


def test_agent_refusal_code_destroys_the_recording(
    interop_dir: Path, recorders: RecorderFactory
) -> None:
    pcap = long_call_pcap(interop_dir, 5.0)
    keys = {
        "key1": str(DTMF / "dtmf_2833_star.pcap"),
        "key2": str(DTMF / "dtmf_2833_8.pcap"),
        "key3": str(DTMF / "dtmf_2833_1.pcap"),
        "key4": str(DTMF / "dtmf_2833_2.pcap"),
    }
    policy = policy_with().replace(
        "[retention]", '[consent]\nagent_refusal_code = "*8"\n\n[retention]'
    )
    with peers.start_sipp_uas("uas_agent_codes", log_dir=interop_dir, calls=1, keys=keys) as pbx:
        recorder = recorders(pbx_port=pbx.port, policy=policy)
        uac = peers.run_sipp_uac(
            "uac_pcap", recorder.external_target, log_dir=interop_dir, pcap=pcap, timeout=30
        )
        pbx.wait(5)
    uac.assert_ok()  # C5: the call went on
    assert [e["action"] for e in recorder.events("agent.code")] == ["refuse"]
    recorder.wait_event("recording.destroyed", timeout=15)
    rows = recorder.catalog("recordings", "list")
    assert len(rows) == 1 and rows[0]["path"] is None, rows
    storage = recorder.policy_path.parent / "recordings"
    assert not list(storage.rglob("*.wav*"))  # no recording, no .part
    # T1: the call log counts it with the other refusals, by agent.
    [call] = recorder.catalog("calls", "list")
    assert (call["consent_outcome"], call["consent_method"]) == ("refused", "agent")
