"""Lawful use end to end (issue 15): a sipp call recorded through `recorder serve`, then a
motivated request, two approvals by two other people (A9), listening and an age export,
each by a real `recorder` CLI process running as its own Unix user, known to the service
only by its uid (SO_PEERCRED, A12). The export decrypts with Debian's `age` to the very
samples recorded; every step, refused or done, is in the audit trail, which verifies, and
an edited entry is caught (A5)."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import soundfile

from . import audio, peers
from .conftest import RecorderFactory
from .recorder_proc import RecorderProcess
from .test_consent_path import DTMF_9, NOTICE

pytestmark = pytest.mark.interop

QUALITY, DIRECTOR, CLERK, STRANGER = 60101, 60102, 60103, 60104
AS_USER = Path(__file__).with_name("as_user.py")
MONTREAL = ZoneInfo("America/Montreal")

POLICY = f"""
[policy]
name = "TEST"

[recording]
directions = ["inbound"]
extensions = "all"
mode = "automatic"

[notice]
play = false

[naming]
template = "{{date}}_{{time}}_agent-{{agent}}"
agent_sources = ["header:X-Agent-Code"]

[retention]
recordings = "8 days"                   # D1

[purposes.complaints]
description = "Complaints and disputes"
rule = "P3"
approvers = 2                           # A9: analysed jointly by IT and the clerk's office

[roles.quality_office]                  # A6: holds the files it requested for complaints
description = "Quality office"
purposes = ["complaints"]
scope = "all"
window = "retention"

[roles.administrator]
description = "IT director"
purposes = ["complaints"]
scope = "all"
window = "retention"
approves = ["complaints"]

[roles.clerk]
description = "Clerk's office"
purposes = ["complaints"]
scope = "all"
window = "retention"
approves = ["complaints"]

[people.quality]
name = "Claire Dubois"
role = "quality_office"
uid = {QUALITY}

[people.it_director]
name = "Paul Roy"
role = "administrator"
uid = {DIRECTOR}

[people.clerk]
name = "Denis Ferland"
role = "clerk"
uid = {CLERK}
"""


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every test user can reach (pytest's own tmp dirs are root's, 0700)."""
    if os.geteuid() != 0:
        message = "running the CLI as several Unix users needs root"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    directory = Path(tempfile.mkdtemp(prefix="recorder-lawful-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class Cli:
    def __init__(self, recorder: RecorderProcess, socket: Path, home: Path) -> None:
        self.recorder = recorder
        self.socket = socket
        self.home = home

    def run(self, uid: int, *args: str) -> tuple[int, Any, str]:
        """`recorder ARGS --json` as `uid`; (exit code, parsed stdout or None, stderr)."""
        done = subprocess.run(
            [sys.executable, str(AS_USER), str(uid), *args, "--socket", str(self.socket), "--json"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            cwd=self.home,
            env={**os.environ, "HOME": str(self.home)},
        )
        parsed = json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else None
        return done.returncode, parsed, done.stderr

    @property
    def policy(self) -> Path:
        return self.recorder.policy_path

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "recorder.cli",
                *args,
                "--config",
                str(self.recorder.policy_path),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )


def age_tools() -> tuple[str, str]:
    """Debian's `age` and `age-keygen`: skipped without them locally, a failure in CI."""
    age, age_keygen = shutil.which("age"), shutil.which("age-keygen")
    if age is None or age_keygen is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("age missing (scripts/install-test-deps.sh installs it)")
        pytest.skip("age missing")
    return age, age_keygen


def age_key(age_keygen: str, path: Path) -> str:
    """`age-keygen -o PATH`; the public key (age1...) it prints in the file."""
    subprocess.run([age_keygen, "-o", str(path)], check=True, capture_output=True)
    return next(
        line.split(": ", 1)[1]
        for line in path.read_text().splitlines()
        if line.startswith("# public key: ")
    )


def samples(data: bytes) -> np.ndarray:
    frames, rate = soundfile.read(io.BytesIO(data), dtype="int16", always_2d=True)
    assert rate == 8000 and frames.shape[1] == 2
    return frames


def test_request_two_approvals_listen_export_and_the_trail(
    interop_dir: Path,
    prompt_pcap: Path,
    start_recorder: RecorderFactory,
    shared_dir: Path,
) -> None:
    age, age_keygen = age_tools()
    socket = shared_dir / "access.sock"
    with peers.start_sipp_uas("uas_echo_agent", log_dir=interop_dir, calls=1) as pbx:
        recorder = start_recorder(
            pbx_port=pbx.port, media_ports=32, policy_extra=POLICY, access_socket=socket
        )
        uac = peers.run_sipp_uac(
            "uac_pcap", recorder.external_target, log_dir=interop_dir, pcap=prompt_pcap, timeout=20
        )
        pbx.wait(5)
    uac.assert_ok()
    recorder.wait_event("recording.finalized", timeout=15)
    [row] = recorder.catalog("recordings", "list")
    recording = int(row["id"])
    recorded = Path(row["path"]).read_bytes()
    assert oct(Path(row["path"]).stat().st_mode & 0o777) == "0o640"  # read only by the service
    cli = Cli(recorder, socket, shared_dir)

    # A12: a uid that is not on the nominative list gets nothing, and leaves a trace.
    code, _, err = cli.run(STRANGER, "whoami")
    assert code == 2 and "(A12)" in err and "60104" in err
    code, me, _ = cli.run(QUALITY, "whoami")
    assert code == 0 and me["person"] == "quality"

    # Bad requests: each one line naming its rule, exit 2, nothing in the register.
    reason = "complaint 2026-114 about the answer given"
    for args, rule in (
        (("--purpose", "curiosity", "--reason", reason), "P1"),
        (("--purpose", "complaints", "--reason", " "), "A3"),
        (("--purpose", "complaints", "--reason", "call back 514 555 0100"), "D2"),
    ):
        code, _, err = cli.run(QUALITY, "request", str(recording), *args)
        assert code == 2 and f"({rule})" in err and len(err.strip().splitlines()) == 1, err
    code, register, _ = cli.run(QUALITY, "requests")
    assert code == 0 and register == []

    code, request, err = cli.run(
        QUALITY, "request", str(recording), "--purpose", "complaints", "--reason", reason
    )
    assert code == 0, err
    assert request["state"] == "pending" and request["approvals_needed"] == 2
    public = request["public_id"]

    # Listening before approval is refused.
    code, _, err = cli.run(QUALITY, "listen", public, "--out", str(shared_dir / "early.wav"))
    assert code == 2 and "(A3)" in err and not (shared_dir / "early.wav").exists()
    # A3: never one's own request; A4: a tampered id does not verify.
    code, _, err = cli.run(QUALITY, "approve", public)
    assert code == 2 and "(A3)" in err
    number, token = public[1:].split("-")
    forged = f"R{number}-{'b' if token[0] == 'a' else 'a'}{token[1:]}"
    code, _, err = cli.run(DIRECTOR, "approve", forged)
    assert code == 2 and "(A4)" in err
    # A9: two different people.
    code, first, err = cli.run(DIRECTOR, "approve", public)
    assert code == 0 and first["state"] == "pending", err
    code, _, err = cli.run(DIRECTOR, "approve", public)
    assert code == 2 and "(A9)" in err
    code, second, err = cli.run(CLERK, "approve", public, "--reason", "checked with IT")
    assert code == 0 and second["state"] == "approved", err

    # Listening: the very file, to the requester only.
    out = shared_dir / "quality"
    out.mkdir()
    os.chown(out, QUALITY, QUALITY)
    code, _, err = cli.run(CLERK, "listen", public, "--out", str(shared_dir / "clerk.wav"))
    assert code == 2 and "(A10)" in err
    code, _, err = cli.run(QUALITY, "listen", public, "--out", str(out / "heard.wav"))
    assert code == 0, err
    assert (out / "heard.wav").read_bytes() == recorded

    # Export (X1, X2): sealed to the recipient's age key; the stock `age` decrypts it.
    key = shared_dir / "recipient.key"
    recipient = age_key(age_keygen, key)
    export_dir = out / "export"
    code, _, err = cli.run(QUALITY, "export", public, "--to", str(export_dir), "--recipient", "x")
    assert code == 2 and "(X2)" in err and not export_dir.exists()
    code, written, err = cli.run(
        QUALITY, "export", public, "--to", str(export_dir), "--recipient", recipient
    )
    assert code == 0, err
    names = sorted(Path(p).name for p in written["files"])
    assert names == ["001.wav.age", "SHA256SUMS", "manifest.json.age"]
    sums = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=export_dir, capture_output=True, text=True
    )
    assert sums.returncode == 0, sums.stdout + sums.stderr
    plain = subprocess.run(
        [age, "-d", "-i", str(key), str(export_dir / "001.wav.age")],
        check=True,
        capture_output=True,
    ).stdout
    assert plain == recorded
    assert np.array_equal(samples(plain), samples(recorded))
    assert samples(plain)[:, 0].any()  # the caller's audio is in it, not silence
    manifest = json.loads(
        subprocess.run(
            [age, "-d", "-i", str(key), str(export_dir / "manifest.json.age")],
            check=True,
            capture_output=True,
        ).stdout
    )
    assert manifest["request"] == public
    assert manifest["approved_by"] == ["it_director", "clerk"]
    assert manifest["files"][0]["sha256"] == row["sha256"]

    # A5: every step in the trail, refused or done, with who (by uid), and no number.
    trail = recorder.catalog("audit", "list")
    steps = [
        (e["action"], e["outcome"], e["actor"])
        for e in trail
        if e["action"].startswith(("access.", "recording.listen", "recording.export"))
        and e["action"] != "access.requests_listed"
    ]
    assert steps == [
        ("access.whoami", "refused", f"uid={STRANGER}"),
        ("access.request", "refused", f"quality (uid={QUALITY})"),
        ("access.request", "refused", f"quality (uid={QUALITY})"),
        ("access.request", "refused", f"quality (uid={QUALITY})"),
        ("access.request", "ok", f"quality (uid={QUALITY})"),
        ("recording.listen", "refused", f"quality (uid={QUALITY})"),
        ("access.approve", "refused", f"quality (uid={QUALITY})"),
        ("access.approve", "refused", f"it_director (uid={DIRECTOR})"),
        ("access.approve", "ok", f"it_director (uid={DIRECTOR})"),
        ("access.approve", "refused", f"it_director (uid={DIRECTOR})"),
        ("access.approve", "ok", f"clerk (uid={CLERK})"),
        ("recording.listen", "refused", f"clerk (uid={CLERK})"),
        ("recording.listen", "ok", f"quality (uid={QUALITY})"),
        ("recording.export", "refused", f"quality (uid={QUALITY})"),
        ("recording.export", "ok", f"quality (uid={QUALITY})"),
    ]
    # The refused reason held a number: none of its spellings reached the trail
    # (a bare "555" would also match the hex of a hash, one run in a few).
    dumped = json.dumps(trail)
    assert not [form for form in ("514 555 0100", "5145550100", "555 0100") if form in dumped]
    verify = cli.admin("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # An edited audit line is caught.
    assert recorder.stop() == 0
    database = Path(str(recorder.policy_path.parent / "recorder.db"))
    with sqlite3.connect(database) as db:
        db.execute(
            "UPDATE audit_entries SET reason = 'nothing to see' WHERE action = 'recording.export'"
            " AND outcome = 'ok'"
        )
    verify = cli.admin("audit", "verify")
    assert verify.returncode == 1, verify.stdout + verify.stderr


TRAINER, DPO = 60111, 60112

TRAINING_POLICY = f"""
[policy]
name = "TEST"
number_region = "CA"                    # R2: national numbers are read as Canadian

[recording]
directions = ["inbound"]
extensions = "all"
mode = "automatic"

[notice]
play = false

[naming]
template = "{{date}}_{{time}}_agent-{{agent}}"
agent_sources = ["header:X-Agent-Code"]

[retention]
recordings = "8 days"                   # D1
training_copies = "1 year"              # P5
summary_sheets = "1 year"               # P6

[purposes.training]
description = "Staff training"
rule = "P1"
deidentify = true                       # P5
mute_seconds = [[0, 1]]                 # the caller says who they are first

[roles.trainer]
description = "Training officer"
purposes = ["training"]
scope = "all"
window = "retention"

[roles.dpo]
description = "Data-protection officer"
purposes = []
scope = "none"
window = "retention"
approves = ["training"]
subject_access = true                   # R2

[people.trainer]
name = "Lucie Martin"
role = "trainer"
uid = {TRAINER}

[people.dpo]
name = "Henri Caron"
role = "dpo"
uid = {DPO}
"""


def test_training_copy_summary_and_subject_access(
    interop_dir: Path,
    prompt_pcap: Path,
    start_recorder: RecorderFactory,
    shared_dir: Path,
) -> None:
    age, age_keygen = age_tools()
    socket = shared_dir / "access.sock"
    with peers.start_sipp_uas("uas_echo_agent", log_dir=interop_dir, calls=1) as pbx:
        recorder = start_recorder(
            pbx_port=pbx.port, media_ports=32, policy_extra=TRAINING_POLICY, access_socket=socket
        )
        uac = peers.run_sipp_uac(
            "uac_pcap_from",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=prompt_pcap,
            keys={"caller": "+15145550100"},
            timeout=20,
        )
        pbx.wait(5)
    uac.assert_ok()
    recorder.wait_event("recording.finalized", timeout=15)
    [row] = recorder.catalog("recordings", "list")
    recording = int(row["id"])
    recorded = samples(Path(row["path"]).read_bytes())
    cli = Cli(recorder, socket, shared_dir)

    code, request, err = cli.run(
        TRAINER, "request", str(recording), "--purpose", "training", "--reason", "onboarding set"
    )
    assert code == 0, err
    code, _, err = cli.run(DPO, "approve", request["public_id"])
    assert code == 0, err

    # P5: the caller's first second silenced (the policy), and 2-3 s as asked; the agent kept.
    code, copy, err = cli.run(
        TRAINER,
        "training-copy",
        request["public_id"],
        "--recording",
        str(recording),
        "--mute",
        "0:02-0:03",
    )
    assert code == 0, err
    assert copy["name"].startswith("training_") and copy["month"] == copy["name"][9:16]
    assert not {"call", "recording", "agent", "extension"} & set(copy)
    path = Path(copy["path"])
    assert "4711" not in path.name and oct(path.stat().st_mode & 0o777) == "0o640"
    trained = samples(path.read_bytes())
    assert trained.shape == recorded.shape
    assert not trained[:8000, 0].any() and not trained[16000:24000, 0].any()
    assert np.array_equal(trained[8000:16000, 0], recorded[8000:16000, 0])
    assert np.array_equal(trained[:, 1], recorded[:, 1])
    assert recorded[:8000, 0].any()  # there was audio to remove

    # P6: a summary sheet, kept by its own class.
    code, sheet, err = cli.run(
        TRAINER,
        "summary",
        request["public_id"],
        "--recording",
        str(recording),
        "--text",
        "Caller asked about a refund; the agent explained the steps.",
    )
    assert code == 0 and sheet["recording_id"] == recording, err

    # R2: the number as the person gives it finds their call; only the DPO answers.
    reason = "access request of the person, identity checked"
    code, _, err = cli.run(
        TRAINER, "subject-access", "--number", "(514) 555-0100", "--reason", reason
    )
    assert code == 2 and "(R2)" in err
    key = shared_dir / "subject.key"
    recipient = age_key(age_keygen, key)
    out = shared_dir / "dpo"
    out.mkdir()
    os.chown(out, DPO, DPO)
    code, found, err = cli.run(
        DPO,
        "subject-access",
        "--number",
        "(514) 555-0100",
        "--reason",
        reason,
        "--export",
        str(out / "subject"),
        "--recipient",
        recipient,
    )
    assert code == 0, err
    assert [c["id"] for c in found["calls"]] == [row["call_id"]]
    assert [r["id"] for r in found["recordings"]] == [recording]
    plain = subprocess.run(
        [age, "-d", "-i", str(key), str(out / "subject" / "001.wav.age")],
        check=True,
        capture_output=True,
    ).stdout
    assert np.array_equal(samples(plain), recorded)
    code, other, err = cli.run(
        DPO, "subject-access", "--number", "+1 514 555 0199", "--reason", reason
    )
    assert code == 0 and other["calls"] == [] and other["recordings"] == [], err

    trail = recorder.catalog("audit", "list")
    actions = [
        (e["action"], e["outcome"]) for e in trail if e["action"] != "access.requests_listed"
    ]
    assert ("training_copy.make", "ok") in actions and ("summary.add", "ok") in actions
    assert actions.count(("subject_access", "ok")) == 2
    assert ("subject_access", "refused") in actions
    assert "5550100" not in json.dumps(trail) and "555 0100" not in json.dumps(trail)
    assert cli.admin("audit", "verify").returncode == 0


ANALYST = 60121

REPORT_POLICY = f"""
[policy]
name = "TEST"

[recording]
directions = ["inbound"]
extensions = "all"
mode = "automatic"

[notice]                                # C1
play = true
prompts = {{ en = "{NOTICE}" }}
default_language = "en"

[consent]                               # C3, C4: refusal by key 9 or by voice
mode = "opt_out"
refusal_keys = ["9"]
listen_seconds = 6.0
barge_in = true

[consent.voice]
language = "en"
phrases = {{ "stop recording" = 1e-30, "do not record" = 1e-20 }}

[retention]
recordings = "8 days"

[roles.analyst]                         # A11: counts, never a recording
description = "Statistics"
purposes = []
scope = "statistics"
window = "retention"
reports = ["annual", "quality"]

[people.analyst]
name = "Anne Caron"
role = "analyst"
uid = {ANALYST}
"""


def test_the_annual_report_counts_real_calls_recorded_and_refused(
    interop_dir: Path,
    prompt_pcap: Path,
    start_recorder: RecorderFactory,
    shared_dir: Path,
) -> None:
    """T1: one call recorded, one refused by key (RFC 4733), one by voice, counted as such."""
    phrase, raw = interop_dir / "stop.wav", interop_dir / "stop.raw.wav"
    subprocess.run(
        ["espeak-ng", "-v", "en-us+m3", "-s", "150", "-w", str(raw), "Stop recording."],
        check=True,
    )
    audio.to_8k_mono(raw, phrase)
    spoken = audio.pad(phrase, interop_dir / "stop_padded.wav", audio.wav_duration(NOTICE) + 0.8, 2)
    voice_pcap = audio.wav_to_pcap(spoken, interop_dir / "stop.pcap")
    socket = shared_dir / "access.sock"
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=3) as pbx:
        recorder = start_recorder(
            pbx_port=pbx.port, media_ports=32, policy_extra=REPORT_POLICY, access_socket=socket
        )
        recorded = peers.run_sipp_uac(
            "uac_pcap",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=prompt_pcap,
            call_length_s=audio.wav_duration(NOTICE) + 8,
            timeout=40,
        )
        by_key = peers.run_sipp_uac(
            "uac_dtmf",
            recorder.external_target,
            log_dir=interop_dir,
            keys={"dtmf": str(DTMF_9)},
            variables={"dtmf_delay_ms": "1500"},
            call_length_s=3.0,
            timeout=30,
        )
        by_voice = peers.run_sipp_uac(
            "uac_pcap",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=voice_pcap,
            call_length_s=audio.wav_duration(spoken) + 1,
            timeout=40,
        )
        pbx.wait(10)
    for uac in (recorded, by_key, by_voice):
        uac.assert_ok()
    recorder.wait_event("call.summary", count=3, timeout=20)
    recorder.wait_event("recording.finalized", timeout=15)
    methods = sorted(e["method"] for e in recorder.events("consent.refused"))
    assert methods == ["dtmf-rfc4733", "voice"], methods

    cli = Cli(recorder, socket, shared_dir)
    year = str(datetime.now(MONTREAL).year)
    chart = shared_dir / "charts"
    chart.mkdir()
    os.chown(chart, ANALYST, ANALYST)
    code, report, err = cli.run(
        ANALYST, "report", "annual", "--year", year, "--chart", str(chart / "annual.png")
    )
    assert code == 0, err
    month = datetime.now(MONTREAL).strftime("%Y-%m")
    [row] = [r for r in report["rows"] if r["month"] == month]
    assert (row["calls"], row["recorded_calls"], row["refusals"]) == (3, 1, 2)
    by_method = {
        r["method"]: r["refusals"] for r in report["refusals_by_method"] if r["month"] == month
    }
    assert by_method == {"dtmf-rfc4733": 1, "voice": 1}
    png = (chart / "annual.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # A11: the statistics role reads counts, never a recording, never per-agent figures.
    [rec] = recorder.catalog("recordings", "list")
    code, _, err = cli.run(
        ANALYST, "request", str(rec["id"]), "--purpose", "quality", "--reason", "curious"
    )
    assert code == 2 and ("(A11)" in err or "(P1)" in err), err
    code, _, err = cli.run(
        ANALYST, "report", "quality", "--from", month + "-01", "--to", month + "-28", "--per-agent"
    )
    assert code == 2 and "(A11)" in err
    reads = [e for e in recorder.catalog("audit", "list") if e["action"] == "report.read"]
    assert [e["outcome"] for e in reads] == ["ok", "refused"]
