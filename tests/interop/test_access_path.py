"""Access end to end: a call sipp makes through `recorder serve` is recorded, then
`recorder access check` answers who may hear it, and the audit trail holds every question."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from . import peers
from .conftest import RecorderFactory
from .recorder_proc import RecorderProcess

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

[naming]                                # N1: the agent code from the PBX's answer
template = "{date}_{time}_agent-{agent}"
agent_sources = ["header:X-Agent-Code"]

[retention]
recordings = "8 days"                   # D1

[purposes.quality]
description = "Service quality"
rule = "P1"

[roles.team_lead]                       # A1
description = "Team lead"
purposes = ["quality"]
scope = "team"
window = "call_day"

[roles.agent]                           # A7
description = "Agent"
purposes = ["quality"]
scope = "own"
window = "call_day"

[people.lead_nord]
name = "Julie Tremblay"
role = "team_lead"
team = "nord"

[people.answering_agent]                # the stand-in PBX answers as agent 4711
name = "Marc Gagnon"
role = "agent"
team = "nord"
agent_code = "4711"

[people.other_agent]
name = "Anne Roy"
role = "agent"
team = "sud"
agent_code = "4712"
"""


def access_check(
    recorder: RecorderProcess, recording: int, person: str, at: datetime
) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "recorder.cli",
            "access",
            "check",
            str(recording),
            "--as",
            person,
            "--purpose",
            "quality",
            "--reason",
            "complaint 114",
            "--at",
            at.isoformat(),
            "--json",
            "--config",
            str(recorder.policy_path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_who_may_hear_a_real_recorded_call(
    interop_dir: Path, prompt_pcap: Path, start_recorder: RecorderFactory
) -> None:
    with peers.start_sipp_uas("uas_echo_agent", log_dir=interop_dir, calls=1) as pbx:
        recorder = start_recorder(pbx_port=pbx.port, media_ports=32, policy_extra=POLICY)
        uac = peers.run_sipp_uac(
            "uac_pcap", recorder.external_target, log_dir=interop_dir, pcap=prompt_pcap, timeout=20
        )
        pbx.wait(5)
    uac.assert_ok()
    recorder.wait_event("recording.finalized", timeout=15)
    [row] = recorder.catalog("recordings", "list")
    [call] = recorder.catalog("calls", "list")
    assert call["agent"] == "4711"
    recording = int(row["id"])
    arrived = datetime.fromisoformat(call["arrived_at"])
    same_day = arrived + timedelta(minutes=1)

    # A7: the agent who took the call hears it; another agent does not.
    assert access_check(recorder, recording, "answering_agent", same_day)[0] == 0
    code, refused = access_check(recorder, recording, "other_agent", same_day)
    assert code == 1 and [r["rule"] for r in refused["reasons"]] == ["A7"]
    # A1: the agent's team lead, the day of the call, not two days later.
    assert access_check(recorder, recording, "lead_nord", same_day)[0] == 0
    code, late = access_check(recorder, recording, "lead_nord", arrived + timedelta(days=2))
    assert code == 1 and [r["rule"] for r in late["reasons"]] == ["A1"]
    # A10: nobody off the list.
    code, stranger = access_check(recorder, recording, "intern", same_day)
    assert code == 1 and [r["rule"] for r in stranger["reasons"]] == ["A10"]

    # A5: every question, whatever the answer, is in the trail, and the chain verifies.
    entries = [e for e in recorder.catalog("audit", "list") if e["action"] == "access.check"]
    assert [(e["actor"].split(" via ")[0], e["outcome"]) for e in entries] == [
        ("answering_agent", "allowed"),
        ("other_agent", "refused"),
        ("lead_nord", "allowed"),
        ("lead_nord", "refused"),
        ("intern", "refused"),
    ]
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "recorder.cli",
            "audit",
            "verify",
            "--config",
            str(recorder.policy_path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert recorder.stop() == 0
