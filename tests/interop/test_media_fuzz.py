"""Fuzzed media into a live call (issue 20): random and truncated RTP, RTCP and RFC 4733
packets from the caller's own (latched) address, between the caller's real audio, through
`recorder serve`. No crash, no spurious refusal, and the recording plays and holds the
caller's tone."""

from __future__ import annotations

import math
import random
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from consent.g711 import ulaw_encode

from . import peers
from .conftest import RecorderFactory
from .test_consent_path import NOTICE

pytestmark = pytest.mark.interop

SEED = 20261204
TONE_HZ = 1000.0
CALL_SECONDS = 12.0

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

[consent]                               # C3: a refusal is key 9; nothing else refuses
mode = "opt_out"
refusal_keys = ["9"]
listen_seconds = 1.0
barge_in = true

[retention]
recordings = "8 days"
"""


def tone_frames(seconds: float) -> list[bytes]:
    t = np.arange(int(8000 * seconds)) / 8000
    audio = (8000 * np.sin(2 * math.pi * TONE_HZ * t)).astype(np.int16)
    data = ulaw_encode(audio).tobytes()
    return [data[i : i + 160] for i in range(0, len(data) - 159, 160)]


def rtp(seq: int, ts: int, ssrc: int, payload: bytes, pt: int = 0, marker: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, (marker << 7) | pt, seq & 0xFFFF, ts, ssrc) + payload


def fuzzed(rng: random.Random, seq: int, ts: int, ssrc: int) -> bytes:
    """One malformed or odd packet; never a well-formed key-9 event (that is a refusal)."""
    kind = rng.randrange(10)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 12))  # shorter than an RTP header
    if kind == 1:
        return rng.randbytes(rng.randrange(12, 1400))  # anything
    if kind == 2:  # version 1 or 3
        return bytes([rng.choice((0x40, 0xC0))]) + rtp(seq, ts, ssrc, b"\xff" * 160)[1:]
    if kind == 3:  # CSRC count beyond the packet
        return bytes([0x8F]) + rtp(seq, ts, ssrc, b"")[1:]
    if kind == 4:  # an extension header claiming more words than there are
        return bytes([0x90]) + rtp(seq, ts, ssrc, b"\xbe\xde\xff\xff" + b"\x00" * 8)[1:]
    if kind == 5:  # padding bit with a padding length past the payload
        packet = bytearray(rtp(seq, ts, ssrc, b"\x7f" * 20))
        packet[0] |= 0x20
        packet[-1] = 250
        return bytes(packet)
    if kind == 6:  # telephone-event, truncated
        return rtp(seq, ts, ssrc, rng.randbytes(rng.randrange(0, 4)), pt=101)
    if kind == 7:  # telephone-event for codes that are no DTMF key (16-255)
        event = rng.randrange(16, 256)
        return rtp(seq, ts, ssrc, struct.pack("!BBH", event, 0x80 | 10, 800), pt=101)
    if kind == 8:  # a jump far ahead in sequence and time
        return rtp(seq + 30000, ts + 10**9, ssrc, b"\xff" * 160)
    return rtp(seq, ts, ssrc, b"\xff" * 160, pt=rng.randrange(128))  # odd payload types


def rtcp_fuzz(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 8))
    if kind == 1:  # a sender report whose length field lies
        return struct.pack("!BBH", 0x80, 200, 0xFFFF) + rng.randbytes(20)
    if kind == 2:  # BYE with a reason longer than the packet
        return struct.pack("!BBHI", 0x81, 203, 2, 0x1234) + bytes([200]) + b"x"
    return rng.randbytes(rng.randrange(8, 600))


def tone_energy(left: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(left))
    freqs = np.fft.rfftfreq(left.size, 1 / rate)
    band = (freqs > TONE_HZ - 20) & (freqs < TONE_HZ + 20)
    return float(spectrum[band].sum() / max(spectrum.sum(), 1e-9))


def test_fuzzed_media_into_a_live_call(interop_dir: Path, start_recorder: RecorderFactory) -> None:
    rng = random.Random(SEED)
    caller_rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller_rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    first = peers.free_port_block(2)
    port = first + (first % 2)
    caller_rtp.bind(("127.0.0.1", port))
    caller_rtcp.bind(("127.0.0.1", port + 1))
    sent = {"valid": 0, "fuzz_rtp": 0, "fuzz_rtcp": 0}
    try:
        with peers.start_sipp_uas("uas_echo", log_dir=interop_dir, calls=1) as pbx:
            recorder = start_recorder(pbx_port=pbx.port, media_ports=32, policy_extra=POLICY)
            a_port = recorder.media_first + (recorder.media_first % 2)  # the first leg bound
            with peers.sipp_uac_in_background(
                "uac_media_key",
                recorder.external_target,
                log_dir=interop_dir,
                keys={"rtp_port": str(port)},
                call_length_s=CALL_SECONDS,
                timeout=40,
            ) as result:
                recorder.wait_event("notice.started", timeout=15)
                frames = tone_frames(CALL_SECONDS - 1.0)
                ssrc, start = rng.getrandbits(32), time.monotonic()
                for index, frame in enumerate(frames):
                    # The first valid packet latches our address; fuzz comes after it.
                    caller_rtp.sendto(rtp(index, index * 160, ssrc, frame), ("127.0.0.1", a_port))
                    sent["valid"] += 1
                    if index > 0:
                        for _ in range(rng.randrange(0, 3)):
                            junk = fuzzed(rng, index, index * 160, ssrc)
                            caller_rtp.sendto(junk, ("127.0.0.1", a_port))
                            sent["fuzz_rtp"] += 1
                        if index % 5 == 0:
                            caller_rtcp.sendto(rtcp_fuzz(rng), ("127.0.0.1", a_port + 1))
                            sent["fuzz_rtcp"] += 1
                    delay = start + (index + 1) * 0.020 - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            pbx.wait(10)
        [uac] = result
        uac.assert_ok()
        recorder.wait_event("recording.finalized", timeout=15)
    finally:
        caller_rtp.close()
        caller_rtcp.close()
    assert recorder.proc.poll() is None, "the service died"
    assert recorder.events("consent.refused") == [], "a spurious refusal"
    assert "Traceback" not in recorder.log_text()
    # The listener survived every packet (a CSRC count past the datagram used to detach it).
    assert recorder.events("media.tap_failed") == []
    assert recorder.events("consent.listener_failed") == []
    assert len(recorder.events("consent.accepted")) == 1
    [ended] = recorder.wait_event("call.ended")
    leg = ended["media"]["a"]
    assert leg["dropped_malformed"] > 0, leg  # the fuzz was seen, and dropped
    [row] = recorder.catalog("recordings", "list")
    assert row["state"] == "complete"
    frames_out, rate = soundfile.read(row["path"], dtype="float32", always_2d=True)
    assert rate == 8000 and frames_out.shape[0] > 8000
    # The caller's tone is what the left channel holds, fuzz or not.
    assert tone_energy(frames_out[:, 0], rate) > 0.5, tone_energy(frames_out[:, 0], rate)
    print(f"media fuzz: {sent}, dropped_malformed={leg['dropped_malformed']}")
