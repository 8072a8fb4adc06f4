"""The consent listener on hostile packets (issue 20): malformed RTP is ignored, never an
exception that would detach the listener; RTP header fields are honoured for the audio."""

from __future__ import annotations

import struct

import numpy as np

from consent.machine import ConsentConfig
from consent.prompt import Codec
from recorder.call.controller import ConsentSession

FRAME = b"\xff" * 160  # mu-law silence


def rtp(payload: bytes, *, first: int = 0x80, pt: int = 0, seq: int = 1) -> bytes:
    return struct.pack("!BBHII", first, pt, seq, seq * 160, 0x1234) + payload


def session() -> ConsentSession:
    return ConsentSession((FRAME,) * 10, Codec.PCMU, 101, ConsentConfig(), now=0.0)


def test_malformed_rtp_is_ignored_not_raised() -> None:
    listener = session()
    hostile = [
        b"",
        b"\x80\x00",
        bytes([0x8F]) + rtp(b"")[1:],  # 15 CSRCs announced, none there (found by media fuzz)
        bytes([0x90]) + rtp(b"\xbe\xde\xff\xff")[1:],  # extension longer than the packet
        bytearray(rtp(b"\x7f" * 10)),  # padding longer than the payload, set below
        rtp(b"\x01\x02", pt=101),  # truncated telephone-event
        bytes([0x40]) + rtp(FRAME)[1:],  # version 1
    ]
    hostile[4][0] |= 0x20
    hostile[4][-1] = 200
    for index, packet in enumerate(hostile):
        assert listener.on_packet(bytes(packet), now=0.02 * index) == []
    assert listener.decision is None


def test_the_audio_starts_after_csrcs_and_the_extension() -> None:
    listener = session()
    fed: list[np.ndarray] = []
    listener.inband.feed = lambda audio, now: fed.append(audio) or []  # type: ignore[method-assign]
    csrc = struct.pack("!I", 0xDEADBEEF)
    extension = b"\xbe\xde\x00\x01" + b"\x00\x00\x00\x00"
    packet = bytes([0x91]) + rtp(csrc + extension + FRAME)[1:]
    listener.on_packet(packet, now=0.0)
    [audio] = fed
    assert audio.size == 160  # the 160 payload bytes, not the CSRC and extension words
