"""The UDP packets of a pcap file, sans-IO: how rtpengine's `--recording-method=pcap` output is
read back (`recorder.call.rtpengine`), and which party sent each packet."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class CapturedPacket:
    time: float  # capture time, seconds since the epoch (rtpengine's clock)
    source: Address
    destination: Address
    payload: bytes  # the UDP payload: the RTP packet


_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
# Link types: Ethernet, then the raw-IP ones (DLT_RAW is 12 or 14 by platform, 101 on disk).
_LINK_HEADER = {1: 14, 12: 0, 14: 0, 101: 0, 228: 0, 229: 0}


def read_pcap(data: bytes) -> list[CapturedPacket]:
    """The UDP packets of a classic pcap file (what rtpengine's pcap recording writes).

    Non-UDP records and fragments are skipped; a truncated last record (a file still being
    written) ends the list. ValueError if `data` is not a pcap of a link type we read.
    """
    if len(data) < 24 or data[:4] not in _PCAP_MAGIC:
        raise ValueError("not a pcap file")
    endian, unit = _PCAP_MAGIC[data[:4]]
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    if linktype not in _LINK_HEADER:
        raise ValueError(f"pcap link type {linktype} is not read")
    skip = _LINK_HEADER[linktype]
    record = struct.Struct(endian + "IIII")
    packets: list[CapturedPacket] = []
    pos = 24
    while pos + record.size <= len(data):
        seconds, fraction, caplen, _length = record.unpack_from(data, pos)
        pos += record.size
        if pos + caplen > len(data):
            break
        frame = data[pos + skip : pos + caplen]
        pos += caplen
        parsed = _udp(frame)
        if parsed is not None:
            source, destination, payload = parsed
            packets.append(CapturedPacket(seconds + fraction * unit, source, destination, payload))
    return packets


def _udp(frame: bytes) -> tuple[Address, Address, bytes] | None:
    if not frame:
        return None
    version = frame[0] >> 4
    if version == 4:
        if len(frame) < 20:
            return None
        ihl = (frame[0] & 0x0F) * 4
        flags_fragment = struct.unpack_from("!H", frame, 6)[0]
        if frame[9] != 17 or flags_fragment & 0x3FFF or len(frame) < ihl + 8:
            return None
        source_ip = ".".join(str(b) for b in frame[12:16])
        destination_ip = ".".join(str(b) for b in frame[16:20])
        udp = ihl
    elif version == 6:
        if len(frame) < 48 or frame[6] != 17:
            return None
        source_ip = str(ipaddress.IPv6Address(frame[8:24]))
        destination_ip = str(ipaddress.IPv6Address(frame[24:40]))
        udp = 40
    else:
        return None
    source_port, destination_port, length = struct.unpack_from("!HHH", frame, udp)
    end = udp + length if length >= 8 else len(frame)
    payload = frame[udp + 8 : min(end, len(frame))]
    return (source_ip, source_port), (destination_ip, destination_port), payload


def split_parties(
    packets: Iterable[CapturedPacket],
    *,
    port_a: int,
    port_b: int,
    not_from: Iterable[Address] = (),
) -> list[tuple[str, bytes, float]]:
    """(role, RTP packet, capture time) in capture order: what rtpengine received on `port_a`
    came from the caller (role "a"), on `port_b` from the callee ("b"); RTCP (other ports)
    and anything sent by an address in `not_from` (our own notice leg) are left out."""
    excluded = set(not_from)
    out: list[tuple[str, bytes, float]] = []
    for packet in packets:
        if packet.source in excluded or len(packet.payload) < 12:
            continue
        port = packet.destination[1]
        if port == port_a:
            out.append(("a", packet.payload, packet.time))
        elif port == port_b:
            out.append(("b", packet.payload, packet.time))
    out.sort(key=lambda item: item[2])
    return out
