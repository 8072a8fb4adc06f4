"""A full disk mid-call (issue 20), for real: storage.dir on a 3 MiB tmpfs, sipp calls.

The call goes on and ends normally; its recording is finalized truncated (it plays, its hash
is the catalog's) and catalogued `interrupted` with a `recording.truncated` event giving the
reason; `storage.full` and `recording.truncated` are logged and the metrics say so. While
the disk is full, a call to record is connected unrecorded (`when_full =
"connect_unrecorded"`) or refused 503 with Retry-After (`"reject"`). A recording made before
the disk filled stays complete and verified; once space is back, calls are recorded again.

Needs root (mount); skipped otherwise, except under CI where it fails.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile

from storage.repository import CallInfo, Catalog, RecordingInfo

from . import audio, peers
from .conftest import RecorderFactory, _in_ci
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

[naming]
template = "{date}_{time}_ext-{extension}"

[retention]
recordings = "8 days"
"""

SIZE = "3m"
MIN_FREE_MB = 0.25  # storage.min_free_mb: new recordings need 256 KiB
LEFT_FOR_THE_CALL = 400 * 1024  # free when the long call starts: ~12.8 s of stereo 16-bit
LONG_CALL_SECONDS = 20.0  # the long call's audio: longer than the room left


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs, 0750, unmounted (lazily) whatever happens."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 and not _in_ci():
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0750", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        message = f"cannot mount a tmpfs on {disk}: {done.stderr.strip()}"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)


@pytest.fixture(scope="module")
def long_pcap(tmp_path_factory: pytest.TempPathFactory, prompt_wav: Path) -> Path:
    base = tmp_path_factory.mktemp("full_disk_audio")
    padded = audio.pad(prompt_wav, base / "long.wav", 0.3, LONG_CALL_SECONDS - 4.0)
    return audio.wav_to_pcap(padded, base / "long_pcmu.pcap", "pcmu")


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(disk: Path, leave: int) -> Path:
    """A filler file that leaves `leave` bytes free."""
    filler = disk / "filler.bin"
    with open(filler, "wb") as f:
        remaining = free_bytes(disk) - leave
        block = b"\0" * (64 * 1024)
        while remaining > 0:
            remaining -= f.write(block[: min(len(block), remaining)])
        f.flush()
        os.fsync(f.fileno())
    assert abs(free_bytes(disk) - leave) <= 8192, free_bytes(disk)
    return filler


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        text = page.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def catalog(recorder: RecorderProcess) -> Catalog:
    """The catalog read directly: the CLI's reads are audited, and the audit anchor lives
    in storage.dir, on the full disk (see the report of issue 20)."""
    return Catalog.open(f"sqlite:///{recorder.policy_path.parent / 'recorder.db'}", create=False)


def settled(store: Catalog, count: int, timeout: float = 10.0) -> list[RecordingInfo]:
    """The `count` recordings, once the catalog's writes (queued after the log) are done."""
    deadline = time.monotonic() + timeout
    while True:
        rows = store.list_recordings()
        if len(rows) == count and all(r.state.value != "recording" for r in rows):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)


def ended_calls(store: Catalog, count: int, timeout: float = 10.0) -> list[CallInfo]:
    deadline = time.monotonic() + timeout
    while True:
        rows = store.list_calls()
        if len(rows) == count and all(r.ended_at is not None for r in rows):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)


def events_of(store: Catalog, call_row: int) -> list[tuple[str, dict[str, Any]]]:
    return [(e.name, dict(e.detail)) for e in store.list_events(call_row)]


def call(recorder: RecorderProcess, log_dir: Path, pcap: Path, *, timeout: float = 20) -> None:
    peers.run_sipp_uac(
        "uac_pcap", recorder.external_target, log_dir=log_dir, pcap=pcap, timeout=timeout
    ).assert_ok()


def test_disk_filling_mid_call_truncates_the_recording_and_the_call_goes_on(
    small_disk: Path,
    interop_dir: Path,
    prompt_pcap: Path,
    long_pcap: Path,
    start_recorder: RecorderFactory,
) -> None:
    metrics = peers.free_port_block(1, tcp=True)
    extra = POLICY + f'\n[metrics]\nlisten = "127.0.0.1:{metrics}"\n'
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir) as pbx:
        recorder = start_recorder(
            pbx_port=pbx.port,
            media_ports=32,
            policy_extra=extra,
            storage_dir=small_disk,
            storage_extra=f'when_full = "connect_unrecorded"\nmin_free_mb = {MIN_FREE_MB}',
        )
        recorder.wait_event("metrics.listening", timeout=10)
        assert scrape(metrics)["recorder_storage_full"] == 0

        # 1. Before the disk fills: a complete recording.
        call(recorder, interop_dir, prompt_pcap)
        recorder.wait_event("recording.finalized", timeout=15)
        store = catalog(recorder)
        [before] = settled(store, 1)
        assert before.state.value == "complete" and before.path is not None
        assert sha256(Path(before.path)) == before.sha256

        # 2. The disk fills during a call that outlasts it.
        fill(small_disk, LEFT_FOR_THE_CALL)
        call(recorder, interop_dir, long_pcap, timeout=LONG_CALL_SECONDS + 20)
        [truncated_log] = recorder.wait_event("recording.truncated", timeout=15)
        recorder.wait_event("call.summary", count=2)
        ended = recorder.events("call.ended")
        assert [e["reason"] for e in ended] == ["bye from a", "bye from a"]  # ended normally
        [full_log] = recorder.events("storage.full")
        assert full_log["reason"] == "disk full" and full_log["level"] == "error"
        assert truncated_log["reason"] == "disk full" and truncated_log["level"] == "warning"
        assert truncated_log["call_id"] == ended[1]["call_id"]
        # The call's media went on whole though the file stopped: the relay never waits.
        legs = ended[1]["media"]
        assert all(leg["rtp_forwarded"] >= 0.9 * LONG_CALL_SECONDS * 50 for leg in legs.values())

        recordings = settled(store, 2)
        cut = recordings[1]
        assert cut.state.value == "interrupted" and cut.path is not None
        assert cut.sha256 == sha256(Path(cut.path)) and cut.size == Path(cut.path).stat().st_size
        assert cut.expires_at is not None
        info = soundfile.info(cut.path)
        assert info.frames > 0 and info.samplerate == 8000 and info.channels == 2
        assert 5.0 < info.frames / 8000 < LONG_CALL_SECONDS - 3.0
        assert cut.duration == pytest.approx(info.frames / 8000)
        samples, _ = soundfile.read(cut.path, dtype="int16")
        assert len(samples) == info.frames and samples.any()
        why = {"recording": cut.id, "name": Path(cut.path).name, "reason": "disk full"}
        assert ("recording.truncated", why) in events_of(store, cut.call_id)
        assert not list(small_disk.rglob("*.part"))
        samples_now = scrape(metrics)
        assert samples_now["recorder_storage_full"] == 1
        assert samples_now["recorder_recordings_truncated_total"] == 1
        assert samples_now['recorder_recording_files_total{state="truncated"}'] == 1
        assert samples_now["recorder_storage_full_events_total"] == 1

        # 3. While full, when_full = "connect_unrecorded": served, not recorded, and said.
        call(recorder, interop_dir, prompt_pcap)
        [skipped] = recorder.wait_event("recording.skipped", timeout=10)
        assert skipped["reason"] == "disk full"
        recorder.wait_event("call.summary", count=3)
        calls = ended_calls(store, 3)
        assert calls[2].policy_record and calls[2].end_reason == "bye from a"
        assert store.list_recordings(call_id=calls[2].id) == []
        assert (
            "recording.skipped",
            {"reason": "disk full", "when_full": "connect_unrecorded"},
        ) in (events_of(store, calls[2].id))
        assert scrape(metrics)['recorder_calls_storage_full_total{action="unrecorded"}'] == 1
        assert len(store.list_recordings()) == 2
        recorder.stop()

        # 4. The same full disk with when_full = "reject": 503 with Retry-After, no call.
        recorder = start_recorder(
            pbx_port=pbx.port,
            media_ports=32,
            policy_extra=POLICY,
            storage_dir=small_disk,
            storage_extra=f'when_full = "reject"\nmin_free_mb = {MIN_FREE_MB}',
        )
        [full_at_start] = recorder.wait_event("storage.full")
        assert full_at_start["reason"] == "free space below storage.min_free_mb"
        refused = peers.run_sipp_uac(
            "uac_flood",
            recorder.external_target,
            log_dir=interop_dir,
            calls=1,
            call_length_s=0,
            timeout=10,
        )
        refused.assert_ok()  # uac_flood fails a 503 without a Retry-After
        messages = refused.messages()
        assert "SIP/2.0 503" in messages and "Retry-After: 60" in messages
        assert "SIP/2.0 200" not in messages
        recorder.wait_event("call.refused_storage_full")
        recorder.wait_event("call.summary")
        calls = ended_calls(store, 4)
        assert calls[3].answered_at is None
        assert calls[3].end_reason == "storage full: free space below storage.min_free_mb"
        assert store.list_recordings(call_id=calls[3].id) == []

        # 5. Space is back: said within the re-check period while full, without a call; then
        # the next call is recorded.
        (small_disk / "filler.bin").unlink()
        [recovered] = recorder.wait_event("storage.recovered", timeout=10)
        assert recovered["free_bytes"] > 2 * 1024 * 1024
        call(recorder, interop_dir, prompt_pcap)
        recorder.wait_event("recording.finalized", timeout=15)
        recordings = settled(store, 3)
        assert recordings[2].state.value == "complete"

    # Nothing written before, during or after the full disk was lost or changed.
    for row in recordings:
        assert row.path is not None and sha256(Path(row.path)) == row.sha256, row
    assert recordings[0].id == before.id and recordings[0].sha256 == before.sha256
    assert recordings[0].state.value == "complete"
    store.close()
