"""Recording end to end (issue 6): sipp -> recorder -> sipp, the WAV checked sample for sample."""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile

from consent.g711 import ulaw_decode

from . import peers
from .conftest import RecorderFactory
from .recorder_proc import RecorderProcess

pytestmark = pytest.mark.interop

POLICY = """
[policy]
name = "TEST"

[recording]
directions = ["inbound"]                # S1
extensions = "all"
mode = "automatic"

[notice]
play = false                            # sample-exact check: recording starts at the answer

[naming]                                # N2
template = "{{date}}_{{time}}_ext-{{extension}}"

[retention]
recordings = "8 days"                   # D1
{extra}
"""


@pytest.fixture
def recording_recorder(start_recorder: RecorderFactory) -> RecorderFactory:
    def start(*, pbx_port: int, directions: str = '["inbound"]') -> RecorderProcess:
        policy = POLICY.format(extra="").replace(
            'directions = ["inbound"]', f"directions = {directions}"
        )
        return start_recorder(pbx_port=pbx_port, media_ports=32, policy_extra=policy)

    return start


def pcap_pcm(path: Path) -> np.ndarray:
    """The G.711 decoding of every RTP payload in a pcap, in order."""
    data = path.read_bytes()
    chunks, offset = [], 24
    while offset + 16 <= len(data):
        incl = struct.unpack_from("<I", data, offset + 8)[0]
        frame = data[offset + 16 : offset + 16 + incl]
        chunks.append(ulaw_decode(frame[42 + 12 :]))
        offset += 16 + incl
    return np.concatenate(chunks)


def find_exact(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Index where `needle` appears sample for sample in `haystack`, or -1."""
    first = np.flatnonzero(needle != needle[0])[0]  # anchor on the first non-constant sample
    for start in np.flatnonzero(haystack == needle[first]) - first:
        if 0 <= start <= len(haystack) - len(needle) and np.array_equal(
            haystack[start : start + len(needle)], needle
        ):
            return int(start)
    return -1


def test_recorded_call_is_exact_named_and_catalogued(
    interop_dir: Path, prompt_pcap: Path, recording_recorder: RecorderFactory
) -> None:
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = recording_recorder(pbx_port=pbx.port)
        uac = peers.run_sipp_uac(
            "uac_pcap",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=prompt_pcap,
            timeout=20,
        )
        pbx.wait(5)
    uac.assert_ok()
    recorder.wait_event("recording.finalized", timeout=15)
    rows = recorder.catalog("recordings", "list")
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["state"] == "complete"
    path = Path(row["path"])
    # N2: date, hour, minute and extension; D1: expiry stored with it.
    assert path.name.endswith("_ext-pbx.wav"), path.name  # the answering contact
    # Under the node's own directory (issue 19: several nodes may share storage.dir).
    node = recorder.wait_event("service.started")[0]["node"]
    where = path.parent.relative_to(recorder.policy_path.parent / "recordings").parts
    assert where[0] == node and where[1].isdigit()
    assert row["expires_at"] is not None
    # Privacy by default: 0640 files in 0750 directories, and the hash the catalog holds.
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o750
    assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"]
    assert not list(path.parent.glob("*.part"))

    samples, rate = soundfile.read(path, dtype="int16", always_2d=True)
    assert rate == 8000 and samples.shape[1] == 2
    sent = pcap_pcm(prompt_pcap)
    # Left = the caller (external party): exactly the G.711 decoding of what it sent.
    left_at = find_exact(samples[:, 0], sent)
    assert left_at >= 0, "caller's audio not found sample for sample in the left channel"
    # Right = the PBX side (sipp echoes the caller): the same audio, later.
    right_at = find_exact(samples[:, 1], sent)
    assert right_at >= left_at
    media_seconds = len(sent) / 8000
    assert abs(row["duration"] - (right_at / 8000 + media_seconds)) <= 0.02
    calls = recorder.catalog("calls", "list")
    assert calls[0]["policy_record"] is True


def test_call_the_policy_excludes_leaves_no_file(
    interop_dir: Path, prompt_pcap: Path, recording_recorder: RecorderFactory
) -> None:
    # S1: only inbound calls; this policy records outbound only, so nothing may be written.
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = recording_recorder(pbx_port=pbx.port, directions='["outbound"]')
        uac = peers.run_sipp_uac(
            "uac_pcap",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=prompt_pcap,
            timeout=20,
        )
        pbx.wait(5)
    uac.assert_ok()
    recorder.wait_event("call.summary")
    rows = recorder.catalog("calls", "list")
    assert len(rows) == 1 and rows[0]["policy_record"] is False, rows
    assert recorder.catalog("recordings", "list", timeout=0.5) == []
    storage = recorder.policy_path.parent / "recordings"
    assert not list(storage.rglob("*.wav*"))  # no recording, no .part
