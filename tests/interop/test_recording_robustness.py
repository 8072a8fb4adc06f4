"""Recording under stress (issue 6): packet loss, a killed service, 50 calls at once."""

from __future__ import annotations

import signal
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from consent.g711 import ulaw_decode

from . import audio, peers
from .conftest import RecorderFactory
from .recorder_proc import RecorderProcess
from .test_recording_path import POLICY, find_exact

pytestmark = pytest.mark.interop


@pytest.fixture
def recorders(start_recorder: RecorderFactory) -> RecorderFactory:
    def start(*, pbx_port: int, media_ports: int = 32) -> RecorderProcess:
        return start_recorder(
            pbx_port=pbx_port, media_ports=media_ports, policy_extra=POLICY.format(extra="")
        )

    return start


def lossy_pcap(source: Path, out: Path, loss: float, seed: int) -> list[tuple[int, bytes]]:
    """Copy `source` without a random `loss` fraction of its packets (timing kept, as on a
    lossy network); return (RTP timestamp, payload) of the packets kept."""
    data = source.read_bytes()
    rng = np.random.default_rng(seed)
    kept_records = [data[:24]]
    kept: list[tuple[int, bytes]] = []
    offset, index = 24, 0
    while offset + 16 <= len(data):
        incl = struct.unpack_from("<I", data, offset + 8)[0]
        record = data[offset : offset + 16 + incl]
        # Never drop the first packet: it anchors the timeline in both files.
        if index == 0 or rng.random() >= loss:
            kept_records.append(record)
            rtp = record[16 + 42 :]
            kept.append((struct.unpack_from("!I", rtp, 4)[0], rtp[12:]))
        offset += 16 + incl
        index += 1
    out.write_bytes(b"".join(kept_records))
    return kept


def test_lost_packets_become_silence_and_the_rest_stays_in_place(
    interop_dir: Path, prompt_pcap: Path, recorders: RecorderFactory
) -> None:
    lossy = interop_dir / "lossy.pcap"
    kept = lossy_pcap(prompt_pcap, lossy, loss=0.05, seed=5)
    total = peers.pcap_duration(prompt_pcap)
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = recorders(pbx_port=pbx.port)
        uac = peers.run_sipp_uac(
            "uac_pcap",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=lossy,
            call_length_s=total + 0.3,
            timeout=20,
        )
        pbx.wait(5)
    uac.assert_ok()
    recorder.wait_event("recording.finalized", timeout=15)
    row = recorder.catalog("recordings", "list")[0]
    samples, _ = soundfile.read(row["path"], dtype="int16", always_2d=True)
    left = samples[:, 0]
    ts0 = kept[0][0]
    # Anchor on the first packet that is not silence, then check every other one from there.
    anchor_ts, anchor = next(
        (ts, pcm) for ts, payload in kept if np.ptp(pcm := ulaw_decode(payload)) > 0
    )
    found = find_exact(left, anchor)
    assert found >= 0
    origin = found - (anchor_ts - ts0)
    # Every surviving packet sits exactly where its RTP timestamp says.
    for ts, payload in kept:
        at = origin + (ts - ts0)
        assert np.array_equal(left[at : at + 160], ulaw_decode(payload)), f"packet ts={ts}"
    # The timeline kept its length: the last packet ends where the media ended.
    last_ts = kept[-1][0]
    assert len(left) >= origin + (last_ts - ts0) + 160


def test_killed_service_leaves_a_playable_interrupted_recording(
    interop_dir: Path, prompt_pcap: Path, recorders: RecorderFactory
) -> None:
    long_pcap = audio.wav_to_pcap(
        audio.pad(audio.silence(interop_dir / "s.wav", 0.1), interop_dir / "long.wav", 0, 20),
        interop_dir / "long.pcap",
    )
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = recorders(pbx_port=pbx.port)
        started = time.monotonic()
        with peers.sipp_uac_in_background(
            "uac_pcap",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=long_pcap,
            call_length_s=20,
            timeout=30,
            extra_args=["-max_retrans", "1", "-recv_timeout", "2s"],
        ):
            recorder.wait_event("recording.started", timeout=10)
            time.sleep(3.0)
            recorder.proc.send_signal(signal.SIGKILL)
            recorder.proc.wait(5)
            killed_after = time.monotonic() - started
        pbx.stop()
    # The writer process outlives its parent long enough to flush what it holds.
    storage = recorder.policy_path.parent / "recordings"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not list(storage.rglob("*.wav.part")):
        time.sleep(0.1)
    assert list(storage.rglob("*.wav.part")), "no .part left by the killed service"
    restarted = recorders(pbx_port=peers.free_udp_port())
    restarted.wait_event("recording.recovered", timeout=15)
    rows = restarted.catalog("recordings", "list")
    assert len(rows) == 1 and rows[0]["state"] == "interrupted", rows
    assert not list(storage.rglob("*.part"))
    samples, rate = soundfile.read(rows[0]["path"], dtype="int16", always_2d=True)
    duration = len(samples) / rate
    assert 2.0 <= duration <= killed_after, (duration, killed_after)
    assert rows[0]["duration"] == pytest.approx(duration, abs=0.01)


def test_fifty_concurrent_recorded_calls(
    interop_dir: Path, prompt_pcap: Path, recorders: RecorderFactory
) -> None:
    calls = 50
    base = peers.free_port_block(4 * calls + 4)
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir) as pbx:
        recorder = recorders(pbx_port=pbx.port, media_ports=4 * calls + 16)
        uac = peers.run_sipp_uac(
            "uac_load",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=prompt_pcap,
            call_length_s=peers.pcap_duration(prompt_pcap) + 0.5,
            calls=calls,
            rate=25,
            limit=calls,
            media_port=base,
            timeout=60,
        )
        pbx.stop()
    uac.assert_ok(calls)
    recorder.wait_event("recording.finalized", count=calls, timeout=60)
    rows = recorder.catalog("recordings", "list")
    assert len(rows) == calls and all(r["state"] == "complete" for r in rows)
    sent = audio.make_pcap_module().ulaw_decode(b"".join(_payloads(prompt_pcap)))
    for row in rows:
        samples, _ = soundfile.read(row["path"], dtype="int16", always_2d=True)
        left_at = find_exact(samples[:, 0], sent)
        right_at = find_exact(samples[:, 1], sent)
        # Both channels hold the whole call, the echo a few packets after the original.
        assert left_at >= 0 and right_at >= left_at, row["name"]
        assert (right_at - left_at) / 8000 < 0.2, row["name"]


def _payloads(pcap: Path) -> list[bytes]:
    data = pcap.read_bytes()
    out, offset = [], 24
    while offset + 16 <= len(data):
        incl = struct.unpack_from("<I", data, offset + 8)[0]
        out.append(data[offset + 16 + 42 + 12 : offset + 16 + incl])
        offset += 16 + incl
    return out


def test_a_stalled_service_puts_the_held_audio_in_place_not_later(
    interop_dir: Path, recorders: RecorderFactory
) -> None:
    """The service's process stops for 1.5 s mid-call (a VM pause, a blocked loop): the
    packets wait in its sockets and arrive in one burst. Both parties' audio is in the
    file sample for sample, with no silence inserted and no re-anchor (the 2026-12-03
    scale run had 169 of 250 files 1 s too long after such a stall)."""
    sweep = interop_dir / "sweep.wav"
    audio._run(
        ["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(sweep), "synth", "6", "sine",
         "300-3000", "vol", "0.5"]
    )  # fmt: skip
    pcap = audio.wav_to_pcap(sweep, interop_dir / "sweep.pcap")
    payloads = _payloads(pcap)
    sent = ulaw_decode(b"".join(payloads))
    media_ms = 20 * len(payloads)
    with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
        recorder = recorders(pbx_port=pbx.port)
        with peers.sipp_uac_in_background(
            "uac_pcap",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=pcap,
            call_length_s=media_ms / 1000 + 0.5,
            timeout=30,
        ) as uac_done:
            recorder.wait_event("recording.started", timeout=10)
            time.sleep(2.0)
            recorder.proc.send_signal(signal.SIGSTOP)
            try:
                time.sleep(1.5)
            finally:
                recorder.proc.send_signal(signal.SIGCONT)
        pbx.wait(10)
    assert uac_done, "sipp did not finish"
    uac_done[0].assert_ok()
    final = recorder.wait_event("recording.finalized", timeout=15)[0]
    assert final["reanchors"] == 0 and final["late"] == 0, final
    assert abs(final["left_span_ms"] - media_ms) <= 20, final
    assert abs(final["right_span_ms"] - media_ms) <= 20, final
    row = recorder.catalog("recordings", "list")[0]
    samples, _ = soundfile.read(row["path"], dtype="int16", always_2d=True)
    left_at = find_exact(samples[:, 0], sent)
    right_at = find_exact(samples[:, 1], sent)
    assert left_at >= 0 and right_at >= left_at, (left_at, right_at)
