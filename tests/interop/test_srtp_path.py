"""SDES-SRTP through `recorder serve` (issue 21), with a PBX whose media the test owns.

sipp plays the PBX's signalling (`uas_srtp_party.xml`: RTP/SAVP, one AES_CM_128_HMAC_SHA1_80
key the test chose) and a socket of this test is the PBX's media: it encrypts with that key
(pylibsrtp, as a phone's libsrtp does) what it sends the recorder. The caller is sipp with
plain RTP, so this is also the mixed case `media.srtp_mixed = true` allows.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from consent.g711 import ulaw_decode, ulaw_encode
from recorder.media.rtp import build_packet
from recorder.media.sdes import SUITES, Crypto
from recorder.media.srtp import outbound_session

from . import peers
from .conftest import RecorderFactory
from .test_recording_path import find_exact, pcap_pcm

pytestmark = pytest.mark.interop

POLICY = """
[policy]
name = "TEST"

[recording]
directions = ["inbound"]                # S1
extensions = "all"
mode = "automatic"

[notice]
play = false

[retention]
recordings = "8 days"
"""

FORGED = 5
TONE_PACKETS = 75  # 1.5 s


class SrtpParty:
    """The PBX's media: waits for the recorder's first packet (to learn the B-leg port the
    recorder sends from), then sends FORGED packets under a wrong key, then a 1 kHz tone
    encrypted under the key its SDP gave."""

    def __init__(self, key: bytes) -> None:
        port = peers.free_port_block(2)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(15.0)
        self.port = port
        self.key = key
        tone = 8000 * np.sin(2 * np.pi * 1000 * np.arange(160 * TONE_PACKETS) / 8000)
        self.payload = ulaw_encode(tone.astype(np.int16)).tobytes()
        self.received = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def tone_pcm(self) -> np.ndarray:
        return ulaw_decode(self.payload)

    def _run(self) -> None:
        try:
            _, recorder = self.sock.recvfrom(2048)
            self.received += 1
            wrong = outbound_session(Crypto(1, "AES_CM_128_HMAC_SHA1_80", os.urandom(30)))
            for seq in range(FORGED):
                self.sock.sendto(
                    wrong.protect(build_packet(0, seq, seq * 160, 77, bytes(160))), recorder
                )
            right = outbound_session(Crypto(1, "AES_CM_128_HMAC_SHA1_80", self.key))
            start = time.monotonic()
            for n in range(TONE_PACKETS):
                chunk = self.payload[160 * n : 160 * (n + 1)]
                packet = build_packet(0, 1000 + n, 160000 + 160 * n, 0x5EC0, chunk)
                self.sock.sendto(right.protect(packet), recorder)
                time.sleep(max(0.0, start + 0.02 * (n + 1) - time.monotonic()))
        except BaseException as exc:  # reported by join(): a thread cannot fail the test itself
            self.error = exc

    def join(self) -> None:
        self.thread.join(20)
        self.sock.close()
        if self.error is not None:
            raise self.error


def test_plain_caller_srtp_pbx_recorded_exactly_forged_packets_dropped(
    interop_dir: Path, prompt_pcap: Path, start_recorder: RecorderFactory
) -> None:
    key = os.urandom(30)
    key_text = base64.b64encode(key).decode()
    party = SrtpParty(key)
    with peers.start_sipp_uas(
        "uas_srtp_party",
        log_dir=interop_dir,
        calls=1,
        rtp_echo=False,
        keys={"party_port": str(party.port), "party_key": key_text},
    ) as pbx:
        recorder = start_recorder(
            pbx_port=pbx.port,
            media_ports=32,
            policy_extra=POLICY,
            internal_extra='srtp = "require"',
            media_extra="srtp_mixed = true",
        )
        uac = peers.run_sipp_uac(
            "uac_pcap",
            recorder.external_target,
            log_dir=interop_dir,
            pcap=prompt_pcap,
            call_length_s=peers.pcap_duration(prompt_pcap) + 1.5,
            timeout=30,
        )
        pbx_result = pbx.wait(10)
    party.join()
    uac.assert_ok()
    pbx_result.assert_ok()
    # The PBX was offered SRTP (required on its side) with the recorder's keys, every suite.
    offer = pbx_result.messages().split("INVITE sip:", 1)[1].split("SIP/2.0 ", 1)[0]
    assert "RTP/SAVP" in offer
    assert [s for s in SUITES if f" {s} inline:" in offer] == list(SUITES)
    ended = recorder.wait_event("call.ended")[0]["media"]
    assert ended["b"]["srtp"] == 1 and ended["a"]["srtp"] == 0
    assert ended["b"]["dropped_srtp_auth"] == FORGED
    assert ended["b"]["rtp_packets"] == TONE_PACKETS  # only authenticated packets count
    recorder.wait_event("recording.finalized", timeout=15)
    [row] = recorder.catalog("recordings", "list")
    samples, rate = soundfile.read(Path(row["path"]), dtype="int16", always_2d=True)
    assert rate == 8000
    # Left: the caller, sample for sample; right: the PBX's tone, decrypted, sample for sample.
    assert find_exact(samples[:, 0], pcap_pcm(prompt_pcap)) >= 0
    assert find_exact(samples[:, 1], party.tone_pcm) >= 0
    # Key material never reaches the log or the catalog.
    log = recorder.log_path.read_bytes()
    assert key_text.encode() not in log and b"inline:" not in log
    for db in recorder.policy_path.parent.glob("recorder.db*"):
        assert key_text.encode() not in db.read_bytes()
    assert key_text not in offer
