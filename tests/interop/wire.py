"""What went over 127.0.0.1, seen from outside the peers: a loopback capture and an
SRTP (RFC 3711) decoder for SDES keys (RFC 4568).

``LoopbackCapture`` reads every IPv4 UDP/TCP packet on ``lo`` with an AF_PACKET
socket (root or CAP_NET_RAW; there is no tshark here), keeping those with a port in
a given range. ``SrtpStream`` decrypts and authenticates AES_CM_128_HMAC_SHA1_80/_32
SRTP with the key from an ``a=crypto`` line: a packet that authenticates with the
key its sender put in its SDP is the proof that the media was SRTP with that key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_ETH_P_ALL = 0x0003
_PACKET_OUTGOING = 4  # lo shows each packet twice: as sent and as received
_IPPROTO_TCP, _IPPROTO_UDP = 6, 17


@dataclass(frozen=True)
class Packet:
    at: float  # time.monotonic()
    proto: str  # "udp" or "tcp"
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


def capture_available() -> str | None:
    """None if this process may open a packet socket, else why not."""
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
    except (PermissionError, OSError) as exc:
        return f"no AF_PACKET socket (needs root or CAP_NET_RAW): {exc}"
    s.close()
    return None


@dataclass
class LoopbackCapture:
    """Packets on ``lo`` whose source or destination port is in ``ports``."""

    ports: range
    packets: list[Packet] = field(default_factory=list)
    _sock: socket.socket | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> LoopbackCapture:
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._run, name="lo-capture", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                frame, addr = self._sock.recvfrom(65600)
            except TimeoutError:
                continue
            if addr[2] == _PACKET_OUTGOING:
                continue
            packet = self._parse(frame[14:])  # lo has a zeroed Ethernet header
            if packet is not None:
                with self._lock:
                    self.packets.append(packet)

    def _parse(self, ip: bytes) -> Packet | None:
        if len(ip) < 20 or ip[0] >> 4 != 4:
            return None
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from("!H", ip, 2)[0]
        proto = ip[9]
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        seg = ip[ihl:total]
        if proto == _IPPROTO_UDP and len(seg) >= 8:
            sport, dport = struct.unpack_from("!HH", seg)
            kind, payload = "udp", seg[8:]
        elif proto == _IPPROTO_TCP and len(seg) >= 20:
            sport, dport = struct.unpack_from("!HH", seg)
            kind, payload = "tcp", seg[(seg[12] >> 4) * 4 :]
        else:
            return None
        if sport not in self.ports and dport not in self.ports:
            return None
        return Packet(time.monotonic(), kind, (src, sport), (dst, dport), payload)

    def snapshot(self) -> list[Packet]:
        with self._lock:
            return list(self.packets)

    def udp(self, src_port: int, dst_port: int) -> list[Packet]:
        return [
            p
            for p in self.snapshot()
            if p.proto == "udp" and p.src[1] == src_port and p.dst[1] == dst_port
        ]

    def tcp_stream(self, src_port: int | None = None, dst_port: int | None = None) -> bytes:
        """The TCP payload bytes of one direction, in capture order (no reordering on lo)."""
        return b"".join(
            p.payload
            for p in self.snapshot()
            if p.proto == "tcp"
            and (src_port is None or p.src[1] == src_port)
            and (dst_port is None or p.dst[1] == dst_port)
        )


# --------------------------------------------------------------------------- RTP / SRTP


@dataclass(frozen=True)
class Rtp:
    pt: int
    marker: bool
    seq: int
    ts: int
    ssrc: int
    header: bytes
    payload: bytes  # still encrypted for an SRTP packet, without the auth tag


def is_rtp(data: bytes) -> bool:
    """RTP version 2 and not RTCP (PT 72-76 with the marker bit = RTCP 200-204)."""
    return len(data) >= 12 and data[0] >> 6 == 2 and not 72 <= data[1] & 0x7F <= 76


def parse_rtp(data: bytes, tag_len: int = 0) -> Rtp:
    if not is_rtp(data):
        raise ValueError("not RTP")
    cc, ext = data[0] & 0x0F, data[0] & 0x10
    hlen = 12 + 4 * cc
    if ext:
        hlen += 4 + 4 * struct.unpack_from("!H", data, hlen + 2)[0]
    end = len(data) - tag_len
    if end < hlen:
        raise ValueError("RTP shorter than its header and tag")
    _, m_pt, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
    return Rtp(m_pt & 0x7F, bool(m_pt & 0x80), seq, ts, ssrc, data[:hlen], data[hlen:end])


class SrtpError(ValueError):
    pass


_TAG_LEN = {"AES_CM_128_HMAC_SHA1_80": 10, "AES_CM_128_HMAC_SHA1_32": 4}


def _aes_cm(key: bytes, iv: int, data: bytes) -> bytes:
    counter = iv.to_bytes(16, "big")
    ctx = Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor()
    return ctx.update(data) + ctx.finalize()


def derive_session_keys(master_key: bytes, master_salt: bytes) -> tuple[bytes, bytes, bytes]:
    """RFC 3711 4.3 with key_derivation_rate 0: (cipher key, auth key, salt) for SRTP."""
    salt = int.from_bytes(master_salt, "big")

    def prf(label: int, length: int) -> bytes:
        x = (label << 48) ^ salt  # key_id = label || r, r = 0
        return _aes_cm(master_key, x << 16, bytes(length))

    return prf(0x00, 16), prf(0x01, 20), prf(0x02, 14)


def parse_sdes_crypto(line: str) -> tuple[str, bytes, bytes]:
    """``a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:KEY|...`` -> (suite, key, salt)."""
    body = line.split(":", 1)[1] if line.startswith("a=crypto") else line
    _tag, suite, params = body.split()[:3]
    if not params.startswith("inline:"):
        raise SrtpError(f"not an inline key: {params}")
    material = base64.b64decode(params[len("inline:") :].split("|", 1)[0])
    if len(material) != 30:
        raise SrtpError(f"{suite}: {len(material)} bytes of key material, expected 16 + 14")
    return suite, material[:16], material[16:]


class SrtpStream:
    """One direction's SRTP (one sender's SDES key), packets given in order."""

    def __init__(self, crypto_line: str) -> None:
        suite, key, salt = parse_sdes_crypto(crypto_line)
        if suite not in _TAG_LEN:
            raise SrtpError(f"suite {suite} not supported here")
        self.suite, self.tag_len = suite, _TAG_LEN[suite]
        self.k_e, self.k_a, self.k_s = derive_session_keys(key, salt)
        self._roc: dict[int, int] = {}
        self._last_seq: dict[int, int] = {}

    def _index(self, ssrc: int, seq: int) -> tuple[int, int]:
        roc = self._roc.get(ssrc, 0)
        last = self._last_seq.get(ssrc)
        if last is not None and seq < last and last - seq > 0x8000:
            roc += 1  # wrapped (in-order packets only: enough on loopback)
        self._roc[ssrc], self._last_seq[ssrc] = roc, seq
        return roc, (roc << 16) | seq

    def decrypt(self, data: bytes) -> Rtp:
        """The packet with its payload decrypted; SrtpError if it does not authenticate."""
        rtp = parse_rtp(data, self.tag_len)
        roc, index = self._index(rtp.ssrc, rtp.seq)
        signed, tag = data[: len(data) - self.tag_len], data[len(data) - self.tag_len :]
        mac = hmac.new(self.k_a, signed + roc.to_bytes(4, "big"), hashlib.sha1).digest()
        if not hmac.compare_digest(mac[: self.tag_len], tag):
            raise SrtpError(f"auth tag mismatch (seq {rtp.seq}, ssrc {rtp.ssrc:#x})")
        salt = int.from_bytes(self.k_s, "big")
        iv = (salt << 16) ^ (rtp.ssrc << 64) ^ (index << 16)
        plain = _aes_cm(self.k_e, iv, rtp.payload)
        return Rtp(rtp.pt, rtp.marker, rtp.seq, rtp.ts, rtp.ssrc, rtp.header, plain)

    def protect(self, data: bytes) -> bytes:
        """An RTP packet encrypted and tagged with this key (for tests of ``decrypt``)."""
        rtp = parse_rtp(data)
        roc, index = self._index(rtp.ssrc, rtp.seq)
        salt = int.from_bytes(self.k_s, "big")
        iv = (salt << 16) ^ (rtp.ssrc << 64) ^ (index << 16)
        signed = rtp.header + _aes_cm(self.k_e, iv, rtp.payload)
        mac = hmac.new(self.k_a, signed + roc.to_bytes(4, "big"), hashlib.sha1).digest()
        return signed + mac[: self.tag_len]


def is_rtcp(data: bytes) -> bool:
    return len(data) >= 8 and data[0] >> 6 == 2 and 200 <= data[1] <= 204


def plain_rtcp_types(data: bytes) -> list[int] | None:
    """The packet types of a cleartext (compound) RTCP packet, None if it is not
    one: in SRTCP everything after the first 8 bytes is encrypted and an E-flag,
    index and tag follow, so the length fields do not add up to the datagram."""
    if not is_rtcp(data):
        return None
    types, off = [], 0
    while off + 4 <= len(data):
        if data[off] >> 6 != 2 or not 200 <= data[off + 1] <= 204:
            return None
        types.append(data[off + 1])
        off += 4 + 4 * struct.unpack_from("!H", data, off + 2)[0]
    return types if off == len(data) else None
