#!/usr/bin/env python3
"""Turn an 8 kHz mono 16-bit WAV into a pcap of G.711 RTP that sipp can play.

sipp's ``<exec play_pcap_audio="FILE"/>`` replays the UDP payloads of an
Ethernet/IPv4/UDP capture, paced by the record timestamps, towards the remote
SDP address; only the RTP inside matters, the addresses are rewritten.
Debian's sip-tester ships no PCMU speech pcap, hence this script.

    scripts/make_pcap.py prompt.wav prompt.pcap [--codec pcmu|pcma]

G.711 is encoded with numpy (``audioop`` is deprecated and gone in 3.13).
"""

from __future__ import annotations

import argparse
import struct
import sys
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000
SAMPLES_PER_PACKET = 160  # 20 ms
PAYLOAD_TYPES = {"pcmu": 0, "pcma": 8}

_ULAW_BIAS = 0x21
_ULAW_CLIP = 8159
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
# Upper bounds of the A-law segments for the 13-bit magnitude (ITU-T G.711).
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def ulaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    # The 14-bit formulation of the ITU-T/Sun reference (as in CPython's audioop),
    # so the bytes match other implementations exactly, not just audibly.
    x = pcm.astype(np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(x), _ULAW_CLIP) + _ULAW_BIAS
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left").astype(np.int32)
    uval = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((mag >> (seg + 1)) & 0x0F))
    return ((uval ^ mask) & 0xFF).astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -mag, mag).astype(np.int16)


def alaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    x = pcm.astype(np.int32) >> 3
    mask = np.where(x >= 0, 0xD5, 0x55)
    mag = np.where(x >= 0, x, -x - 1)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left").astype(np.int32)
    shift = np.where(seg < 2, 1, seg)
    aval = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((mag >> shift) & 0x0F))
    return ((aval ^ mask) & 0xFF).astype(np.uint8).tobytes()


def alaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    a = np.frombuffer(data, dtype=np.uint8).astype(np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, np.where(seg == 1, t + 0x108, (t + 0x108) << (seg - 1)))
    return np.where(a & 0x80, t, -t).astype(np.int16)


def read_wav_8k_mono(path: Path) -> npt.NDArray[np.int16]:
    with wave.open(str(path), "rb") as w:
        if w.getframerate() != SAMPLE_RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(
                f"{path}: need 8000 Hz mono 16-bit, got {w.getframerate()} Hz "
                f"{w.getnchannels()} ch {8 * w.getsampwidth()}-bit"
            )
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


def _ip_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(payload: bytes, src_port: int, dst_port: int, ident: int) -> bytes:
    udp_len = 8 + len(payload)
    ip_wo_sum = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0xB8,
        20 + udp_len,
        ident & 0xFFFF,
        0,
        64,
        17,
        0,
        bytes([127, 0, 0, 1]),
        bytes([127, 0, 0, 1]),
    )
    ip = ip_wo_sum[:10] + struct.pack("!H", _ip_checksum(ip_wo_sum)) + ip_wo_sum[12:]
    # UDP checksum 0 means "not computed", which IPv4 allows and sipp ignores.
    udp = struct.pack("!HHHH", src_port, dst_port, udp_len, 0)
    eth = b"\x00\x00\x00\x00\x00\x02" + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00"
    return eth + ip + udp + payload


def rtp_payloads(pcm: npt.NDArray[np.int16], codec: str) -> list[bytes]:
    """G.711 frames of 160 bytes; the last one is padded with silence."""
    pad = (-len(pcm)) % SAMPLES_PER_PACKET
    pcm = np.concatenate([pcm, np.zeros(pad, dtype=np.int16)])
    encoded = ulaw_encode(pcm) if codec == "pcmu" else alaw_encode(pcm)
    return [encoded[i : i + SAMPLES_PER_PACKET] for i in range(0, len(encoded), SAMPLES_PER_PACKET)]


def write_rtp_pcap(
    pcm: npt.NDArray[np.int16],
    out: Path,
    codec: str = "pcmu",
    ssrc: int = 0x5EC0DE01,
    first_seq: int = 1000,
    first_ts: int = 160_000,
) -> int:
    """Write the pcap; return the number of RTP packets."""
    pt = PAYLOAD_TYPES[codec]
    records = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    t0_us = 1_700_000_000 * 1_000_000
    frames = rtp_payloads(pcm, codec)
    for i, body in enumerate(frames):
        marker = 0x80 if i == 0 else 0x00  # first packet of a talkspurt
        rtp = (
            struct.pack(
                "!BBHII",
                0x80,
                marker | pt,
                (first_seq + i) & 0xFFFF,
                (first_ts + i * SAMPLES_PER_PACKET) & 0xFFFFFFFF,
                ssrc,
            )
            + body
        )
        frame = _frame(rtp, 6000, 6000, i)
        t_us = t0_us + i * 20_000
        records.append(
            struct.pack("<IIII", t_us // 1_000_000, t_us % 1_000_000, len(frame), len(frame))
        )
        records.append(frame)
    out.write_bytes(b"".join(records))
    return len(frames)


def wav_to_pcap(wav: Path, out: Path, codec: str = "pcmu") -> int:
    return write_rtp_pcap(read_wav_8k_mono(wav), out, codec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wav", type=Path, help="8 kHz mono 16-bit WAV")
    ap.add_argument("pcap", type=Path, help="output pcap")
    ap.add_argument("--codec", choices=sorted(PAYLOAD_TYPES), default="pcmu")
    args = ap.parse_args(argv)
    try:
        n = wav_to_pcap(args.wav, args.pcap, args.codec)
    except (OSError, ValueError, wave.Error) as exc:
        print(f"make_pcap: {exc}", file=sys.stderr)
        return 1
    print(f"{args.pcap}: {n} RTP packets, {n * 20 / 1000:.2f} s, PT {PAYLOAD_TYPES[args.codec]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
