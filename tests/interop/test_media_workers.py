"""Media worker processes through `recorder serve` (issue 18): sipp callers, a sipp PBX.

A worker killed with SIGKILL mid-call: its calls end cleanly (BYE to both parties) and
their recordings are kept, catalogued `interrupted` and hash-correct; the other worker's
calls go on and are recorded complete; a new worker takes the dead one's place and carries
the next calls.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile

from . import peers
from .conftest import RecorderFactory

pytestmark = pytest.mark.interop

POLICY = """
[policy]
name = "TEST"

[recording]
directions = ["inbound"]
extensions = "all"
mode = "automatic"

[notice]
play = false

[naming]
template = "{date}_{time}_ext-{extension}"

[retention]
recordings = "8 days"
"""

TALK_SECONDS = 8.0  # the PBX hangs up after this; the kill comes well before


def test_killed_worker_ends_its_calls_keeps_their_recordings_and_is_replaced(
    interop_dir: Path, prompt_pcap: Path, start_recorder: RecorderFactory
) -> None:
    with peers.start_sipp_uas("uas_bye", log_dir=interop_dir, call_length_s=TALK_SECONDS) as pbx:
        recorder = start_recorder(
            pbx_port=pbx.port, media_ports=64, policy_extra=POLICY, media_extra="workers = 2"
        )
        started = recorder.wait_event("media.workers_started")[0]
        assert started["workers"] == 2 and len(started["pids"]) == 2
        results: list[peers.SippResult] = []
        callers = threading.Thread(
            target=lambda: results.append(
                peers.run_sipp_uac(
                    "uac_wait_bye",
                    recorder.external_target,
                    log_dir=interop_dir,
                    pcap=prompt_pcap,
                    calls=4,
                    rate=20,
                    limit=4,
                    timeout=40,
                )
            )
        )
        callers.start()
        try:
            recorder.wait_event("recording.started", count=4, timeout=15)
            placed = recorder.wait_event("media.call_placed", count=4)
            assert sorted(e["worker"] for e in placed) == [0, 0, 1, 1]  # least loaded first
            victim = placed[0]["pid"]
            doomed = {e["call_id"] for e in placed if e["pid"] == victim}
            # Let a second of audio reach the files, then kill one worker outright.
            threading.Event().wait(1.0)
            os.kill(victim, signal.SIGKILL)
            died = recorder.wait_event("media.worker_died")[0]
            assert died["pid"] == victim and died["calls"] == 2
            restarted = recorder.wait_event("media.worker_restarted")[0]
            assert restarted["slot"] == died["slot"] and restarted["pid"] != victim
        finally:
            callers.join(60)
        (uac,) = results
        # Every caller's call ended with a BYE it answered: two from the recorder at the
        # kill, two relayed from the PBX when it hung up.
        assert uac.successful == 4, uac.describe()
        ended = recorder.wait_event("call.ended", count=4, timeout=15)
        reasons = {e["call_id"]: e["reason"] for e in ended}
        assert {c for c, r in reasons.items() if r == "media_lost"} == doomed
        assert sorted(reasons.values()).count("bye from b") == 2
        recorder.wait_event("recording.finalized", count=4, timeout=15)
        rows = recorder.catalog("recordings", "list")
        assert len(rows) == 4, rows
        states = sorted(row["state"] for row in rows)
        assert states == ["complete", "complete", "interrupted", "interrupted"], rows
        prompt_seconds = peers.pcap_duration(prompt_pcap)
        for row in rows:
            path = Path(row["path"])
            assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"]
            samples, rate = soundfile.read(path, dtype="int16", always_2d=True)
            assert rate == 8000 and samples.shape[1] == 2
            seconds = len(samples) / rate
            # The killed calls' files hold the call up to the kill; the others, the whole
            # prompt (a file ends with the last packet the parties sent).
            if row["state"] == "interrupted":
                assert 0.5 < seconds < prompt_seconds - 2, seconds
            else:
                assert seconds > prompt_seconds - 0.1, seconds
            assert np.abs(samples[:, 0]).max() > 1000  # the caller's prompt is in there

        # The restarted worker takes calls: two more, one on each worker, both recorded.
        uac = peers.run_sipp_uac(
            "uac_wait_bye",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=prompt_pcap,
            calls=2,
            rate=20,
            limit=2,
            timeout=30,
        )
        assert uac.successful == 2, uac.describe()
        placed = recorder.wait_event("media.call_placed", count=6)[4:]
        assert {e["pid"] for e in placed} == {restarted["pid"], started["pids"][1 - died["slot"]]}
        recorder.wait_event("recording.finalized", count=6, timeout=15)
        rows = recorder.catalog("recordings", "list")
        assert sorted(r["state"] for r in rows).count("complete") == 4
    assert recorder.stop() == 0
    assert recorder.media_ports_in_use() == []
    assert "worker_given_up" not in recorder.log_text()
