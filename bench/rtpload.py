"""A light multi-process SIP + RTP load generator for the scale benchmark (issue 18).

sipp's RTP echo (one socket, one thread, every call's packets) drops packets itself at
500 calls on two cores; this replaces both sipp ends for the benchmark:

- one process (this one) speaks SIP over UDP as a caller (UAC: INVITE with an SDP pointing
  at that call's own caller socket, ACK, BYE after `--call-length` s) and as the stand-in
  PBX (UAS: answers every INVITE 200 with an SDP pointing at a callee socket of its own,
  answers BYE), learning each side's peer media address from the SDP it receives;
- `--workers` media processes (default one per core) each own a share of the sockets,
  one UDP socket per call per side, bound before the first call, and run a plain epoll
  loop: every stream sends PCMU 20-ms packets (RTP seq/timestamp/SSRC of its own,
  `--packets` per stream, 8 bytes of the payload carrying the send time, CLOCK_MONOTONIC
  being shared by the processes of one host) and counts what arrives (received, duplicates,
  out of order, late = more than `--late-ms` after it was sent, one-way latency
  histogram). Streams start on a 2-ms grid so that calls do not all send at the same
  instant; a worker falling behind sends the packets due at once (no packet is skipped)
  and reports how late it was (`send_lag`: the harness's own health figure).

The caller streams from when the 200 arrives, the callee from when the ACK arrives (every
system has then seen both SDPs); both send `--packets` packets, so with `--packets`
= (call length - 1 s) / 20 ms every packet is sent before the BYE.

    python bench/rtpload.py --target 127.0.0.1:5060 --calls 500 --rate 50 \\
        --call-length 60 --uas-port 5070 --out result.json [--status status.json]

Ports: caller sockets CALLER_BASE + 2k, callee sockets CALLEE_BASE + 2k (k < calls).
`--status` is rewritten every second (current calls...); `--out` at the end: calls,
per-direction totals, per-call figures and each worker's send lag and CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import random
import re
import resource
import select
import signal
import socket
import struct
import sys
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

CALLER_BASE = 24000
CALLEE_BASE = 27000
PTIME_NS = 20_000_000
GRID_NS = 2_000_000  # streams start on this grid: 10 phases per 20 ms
PHASES = PTIME_NS // GRID_NS
PAYLOAD = 160
CALLEE_ID = 100_000  # payload bytes 8-11: the sending stream (caller k: k, callee j: this + j)
HEADER = 12
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, math.inf)
T1 = 0.5
# The payload: a 1 kHz tone in mu-law (8 samples a period), its first 8 bytes replaced
# by the send time.
_TONE = bytes([0xFF, 0x9E, 0x8E, 0x9E, 0xFF, 0x1E, 0x0E, 0x1E] * (PAYLOAD // 8))


# --------------------------------------------------------------------------- media worker


@dataclass
class Stream:
    """One side of one call: its socket, what it sends, what it receives."""

    key: tuple[str, int]
    sock: socket.socket
    ssrc: int
    buf: bytearray
    dest: tuple[str, int] | None = None
    packets: int = 0
    first_due: int = 0
    sent: int = 0
    send_errors: int = 0
    active: bool = False
    stopped: bool = False
    # receive side
    received: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    late: int = 0
    stray: int = 0
    socket_drops: int = 0
    peer: int = -1  # the sending stream's id, from the payload
    max_seq: int = -1
    seen: bytearray = field(default_factory=bytearray)
    latency_max_ns: int = 0
    latency_hist: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_MS))
    first_rx_ns: int = 0
    last_rx_ns: int = 0

    def figures(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "send_errors": self.send_errors,
            "received": self.received,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "late": self.late,
            "stray": self.stray,
            "socket_drops": self.socket_drops,
            "peer": self.peer,
            "latency_max_ms": round(self.latency_max_ns / 1e6, 2),
            "latency_hist": self.latency_hist,
            "rx_span_ms": round((self.last_rx_ns - self.first_rx_ns) / 1e6, 1)
            if self.received
            else None,
        }


def worker_main(
    index: int,
    conn: Connection,
    keys: list[tuple[str, int]],
    host: str,
    packets: int,
    late_ms: float,
) -> None:
    """One media process: bind its sockets, then serve commands and the 2-ms grid."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ep = select.epoll()
    streams: dict[tuple[str, int], Stream] = {}
    by_fd: dict[int, Stream] = {}
    rng = random.Random(index)
    for side, k in keys:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        port = (CALLER_BASE if side == "caller" else CALLEE_BASE) + 2 * k
        sock.bind((host, port))
        sock.setblocking(False)
        buf = bytearray(HEADER + PAYLOAD)
        buf[0] = 0x80  # V=2, PT=0 (marker set on the first packet)
        buf[HEADER:] = _TONE
        struct.pack_into("!I", buf, HEADER + 8, k if side == "caller" else CALLEE_ID + k)
        st = Stream((side, k), sock, rng.getrandbits(32), buf, packets=packets)
        st.seen = bytearray(packets + 64)
        streams[(side, k)] = st
        by_fd[sock.fileno()] = st
        ep.register(sock.fileno(), select.EPOLLIN)
    ep.register(conn.fileno(), select.EPOLLIN)
    conn.send(("ready", index, len(streams)))

    late_ns = int(late_ms * 1e6)
    bounds_ns = [b * 1_000_000 for b in LATENCY_BUCKETS_MS[:-1]]  # bisect_right -> bucket
    slots: list[list[Stream]] = [[] for _ in range(PHASES)]
    base = time.monotonic_ns()
    tick = 1
    lag_hist = [0] * len(LATENCY_BUCKETS_MS)
    lag_max = 0
    packets_late_20ms = 0
    rbuf = bytearray(2048)
    unpack_seq = struct.Struct("!H").unpack_from
    unpack_ns = struct.Struct("!q").unpack_from
    unpack_id = struct.Struct("!I").unpack_from
    pack_hdr = struct.Struct("!HII").pack_into
    pack_ns = struct.Struct("!q").pack_into
    conn_fd = conn.fileno()
    finishing_at: int | None = None
    cpu0 = time.process_time()

    def start(st: Stream, dest: tuple[str, int], now: int) -> None:
        i = max(tick, -(-(now - base) // GRID_NS))
        st.first_due = base + i * GRID_NS
        st.dest = dest
        st.active = True
        slots[i % PHASES].append(st)

    while True:
        now = time.monotonic_ns()
        due = base + tick * GRID_NS
        # One tick at a time between polls: a process that fell behind catches up on its
        # sends without leaving its sockets unread meanwhile.
        if due <= now:
            lag = now - due
            lag_max = max(lag_max, lag)
            lag_hist[bisect_right(bounds_ns, lag)] += 1
            slot = slots[tick % PHASES]
            keep: list[Stream] = []
            for st in slot:
                if not st.active:
                    continue
                # Every packet due by now (more than one only when this process fell behind).
                while st.sent < st.packets and st.first_due + st.sent * PTIME_NS <= now:
                    if now - (st.first_due + st.sent * PTIME_NS) > PTIME_NS:
                        packets_late_20ms += 1
                    buf = st.buf
                    pack_hdr(buf, 2, st.sent & 0xFFFF, (st.sent * PAYLOAD) & 0xFFFFFFFF, st.ssrc)
                    buf[1] = 0x80 if st.sent == 0 else 0x00
                    pack_ns(buf, HEADER, now)
                    try:
                        st.sock.sendto(buf, st.dest)  # type: ignore[arg-type]
                    except OSError:
                        st.send_errors += 1
                    st.sent += 1
                if st.sent < st.packets:
                    keep.append(st)
                else:
                    st.active = False
            slots[tick % PHASES] = keep
            tick += 1
            due += GRID_NS
        # Never block in epoll: a process asleep in epoll_wait is woken by every datagram
        # (a context switch per packet); asleep in nanosleep, datagrams only queue, and the
        # next poll takes them all (arrival times then have the grid's 2-ms resolution).
        events = ep.poll(0, 4096)
        if not events:
            if finishing_at is not None and time.monotonic_ns() >= finishing_at:
                break
            pause = (due - time.monotonic_ns()) / 1e9
            if pause > 0:
                time.sleep(pause)
            continue
        arrived = time.monotonic_ns()
        for fd, _ev in events:
            if fd == conn_fd:
                while conn.poll():
                    msg = conn.recv()
                    if msg[0] == "start":
                        _, side, k, dest = msg
                        start(streams[(side, k)], tuple(dest), time.monotonic_ns())
                    elif msg[0] == "stop":
                        st = streams[(msg[1], msg[2])]
                        st.active = False
                        st.stopped = True
                    elif msg[0] == "finish":
                        finishing_at = time.monotonic_ns() + int(msg[1] * 1e9)
                continue
            # One datagram per readiness event: epoll is level-triggered, so a socket with
            # more comes back in the same poll's next round without an EAGAIN try.
            st = by_fd[fd]
            try:
                n = st.sock.recv_into(rbuf)
            except OSError:
                continue  # EAGAIN, or an ICMP port unreachable reported late: nothing
            if n < HEADER + 12 or rbuf[0] & 0xC0 != 0x80:
                st.stray += 1
                continue
            seq = unpack_seq(rbuf, 2)[0]
            seen = st.seen
            if seq >= len(seen):
                st.stray += 1
                continue
            if seen[seq]:
                st.duplicates += 1
                continue
            seen[seq] = 1
            st.received += 1
            if seq < st.max_seq:
                st.out_of_order += 1
            else:
                st.max_seq = seq
            lat = arrived - unpack_ns(rbuf, HEADER)[0]
            if st.first_rx_ns == 0:
                st.first_rx_ns = arrived
                st.peer = unpack_id(rbuf, HEADER + 8)[0]
            st.last_rx_ns = arrived
            if lat > st.latency_max_ns:
                st.latency_max_ns = lat
            if lat > late_ns:
                st.late += 1
            st.latency_hist[bisect_right(bounds_ns, lat)] += 1
        if finishing_at is not None and time.monotonic_ns() >= finishing_at:
            break
    # The sockets' own drops (receive queue full: this process did not read in time), from
    # /proc/net/udp while they are still open: the harness's loss, not the system's.
    by_port = {st.sock.getsockname()[1]: st for st in streams.values()}
    with open("/proc/net/udp") as table:
        for line in table.read().splitlines()[1:]:
            cols = line.split()
            st_drop = by_port.get(int(cols[1].rsplit(":", 1)[1], 16))
            if st_drop is not None:
                st_drop.socket_drops = int(cols[-1])
    conn.send(
        (
            "result",
            index,
            {
                "streams": {f"{s}:{k}": st.figures() for (s, k), st in streams.items()},
                "send_lag": {
                    "max_ms": round(lag_max / 1e6, 2),
                    "hist": lag_hist,
                    "packets_sent_over_20ms_late": packets_late_20ms,
                },
                "cpu_s": round(time.process_time() - cpu0, 2),
            },
        )
    )
    for st in streams.values():
        st.sock.close()


# --------------------------------------------------------------------------- SIP


COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
}
COMPACT.update({"c": "content-type", "k": "supported"})


@dataclass
class Msg:
    first: str
    headers: list[tuple[str, str]]  # (lower-case long name, value) in order
    body: str

    def get(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    @property
    def is_response(self) -> bool:
        return self.first.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        return int(self.first.split()[1])

    @property
    def method(self) -> str:
        return self.first.split()[0]

    @property
    def cseq(self) -> tuple[int, str]:
        num, meth = (self.get("cseq") or "0 X").split()
        return int(num), meth


def parse(data: bytes) -> Msg | None:
    text = data.decode("utf-8", "replace")
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    if not lines or not lines[0]:
        return None
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            k, v = headers[-1]
            headers[-1] = (k, v + " " + line.strip())
            continue
        name, _, value = line.partition(":")
        name = name.strip().lower()
        headers.append((COMPACT.get(name, name), value.strip()))
    return Msg(lines[0], headers, body)


def tag_of(value: str | None) -> str | None:
    m = re.search(r";\s*tag=([^;>\s]+)", value or "")
    return m.group(1) if m else None


def uri_of(value: str) -> str:
    m = re.search(r"<([^>]+)>", value)
    return m.group(1) if m else value.split(";")[0].strip()


def hostport(uri: str, default: tuple[str, int]) -> tuple[str, int]:
    m = re.match(r"sips?:(?:[^@]+@)?([^;:>]+)(?::(\d+))?", uri)
    if not m:
        return default
    return m.group(1), int(m.group(2) or 5060)


def sdp_media(body: str) -> tuple[str, int] | None:
    addr = port = None
    for line in body.splitlines():
        if line.startswith("c=IN IP4 "):
            addr = line.split()[2]
        elif line.startswith("m=audio "):
            port = int(line.split()[1])
    return (addr, port) if addr and port else None


def sdp(host: str, port: int, sess: int) -> str:
    return (
        "v=0\r\n"
        f"o=rtpload {sess} {sess} IN IP4 {host}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {host}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    )


def split_routes(values: list[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        out += [p.strip() for p in re.findall(r"<[^>]*>[^,]*|[^,<]+", v) if p.strip()]
    return out


@dataclass
class UacCall:
    k: int
    call_id: str
    from_tag: str
    branch: str
    invite: bytes
    started: float
    state: str = "inviting"
    to_value: str | None = None
    remote_target: str | None = None
    route: list[str] = field(default_factory=list)
    answered: float | None = None
    ack: bytes | None = None
    bye: bytes | None = None
    outcome: str | None = None
    retrans: int = 0


@dataclass
class UasCall:
    j: int
    call_id: str
    invite_branch: str
    ok: bytes
    media: tuple[str, int] | None
    acked: bool = False
    byed: bool = False
    retrans: int = 0


class Load(asyncio.DatagramProtocol):
    """The SIP side: a UAC socket and a UAS socket, one asyncio loop."""

    def __init__(self, args: argparse.Namespace, workers: list[Connection]) -> None:
        self.args = args
        self.workers = workers
        self.host = args.host
        th, tp = args.target.rsplit(":", 1)
        self.target = (th, int(tp))
        self.uac: dict[str, UacCall] = {}
        self.uas: dict[str, UasCall] = {}
        self.free_callee = list(range(args.calls - 1, -1, -1))
        self.stats: dict[str, Any] = {
            "created": 0,
            "successful": 0,
            "failed": 0,
            "retransmissions_uac": 0,
            "retransmissions_uas": 0,
            "uas_invites": 0,
            "uas_failed": 0,
            "invite_200_ms": [],
            "failures": {},
        }
        self.uac_tr: asyncio.DatagramTransport | None = None
        self.uas_tr: asyncio.DatagramTransport | None = None
        self.done = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.tag = f"{os.getpid():x}{random.getrandbits(24):06x}"

    def worker_of(self, k: int) -> Connection:
        return self.workers[k % len(self.workers)]

    # ------------------------------------------------------------------ UAC

    def place_call(self, k: int) -> None:
        assert self.uac_tr is not None
        call_id = f"rl{self.tag}-{k}@{self.host}"
        c = UacCall(
            k,
            call_id,
            f"c{k}{self.tag}",
            f"z9hG4bK{self.tag}i{k}",
            b"",
            time.monotonic(),
        )
        th, tp = self.target
        ua = f"{self.host}:{self.args.uac_port}"
        body = sdp(self.host, CALLER_BASE + 2 * k, 1000 + k)
        c.invite = (
            f"INVITE sip:{self.args.service}@{th}:{tp} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {ua};branch={c.branch};rport\r\n"
            f'From: "rtpload caller" <sip:caller@{ua}>;tag={c.from_tag}\r\n'
            f"To: <sip:{self.args.service}@{th}:{tp}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:caller@{ua}>\r\n"
            "Max-Forwards: 70\r\n"
            "Subject: rtpload\r\n"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()
        self.uac[call_id] = c
        self.stats["created"] += 1
        self.uac_tr.sendto(c.invite, self.target)
        self.spawn(self.invite_timer(c))

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def invite_timer(self, c: UacCall) -> None:
        assert self.uac_tr is not None
        interval = T1
        waited = 0.0
        while c.state == "inviting" and waited < 64 * T1:
            await asyncio.sleep(interval)
            waited += interval
            if c.state != "inviting":
                return
            self.uac_tr.sendto(c.invite, self.target)
            c.retrans += 1
            self.stats["retransmissions_uac"] += 1
            interval = min(2 * interval, 4.0)
        if c.state in ("inviting", "proceeding"):
            # No final response (timer B): give up.
            if c.state == "proceeding":
                await asyncio.sleep(32.0)
                if c.state != "proceeding":
                    return
            self.fail(c, "no final response to INVITE")

    def fail(self, c: UacCall, why: str) -> None:
        if c.outcome is None:
            c.outcome = why
            c.state = "done"
            self.stats["failed"] += 1
            self.stats["failures"][why] = self.stats["failures"].get(why, 0) + 1
            self.worker_of(c.k).send(("stop", "caller", c.k))
            self.check_done()

    def succeed(self, c: UacCall) -> None:
        if c.outcome is None:
            c.outcome = "ok"
            c.state = "done"
            self.stats["successful"] += 1
            self.check_done()

    def check_done(self) -> None:
        if self.stats["successful"] + self.stats["failed"] >= self.args.calls:
            self.done.set()

    def in_dialog(self, c: UacCall, method: str, cseq: int, branch: str) -> bytes:
        ua = f"{self.host}:{self.args.uac_port}"
        routes = "".join(f"Route: {r}\r\n" for r in c.route)
        return (
            f"{method} {c.remote_target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {ua};branch={branch};rport\r\n"
            f"{routes}"
            f'From: "rtpload caller" <sip:caller@{ua}>;tag={c.from_tag}\r\n'
            f"To: {c.to_value}\r\n"
            f"Call-ID: {c.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:caller@{ua}>\r\n"
            "Max-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    def dialog_dest(self, c: UacCall) -> tuple[str, int]:
        if c.route:
            return hostport(uri_of(c.route[0]), self.target)
        return hostport(c.remote_target or "", self.target)

    def on_uac(self, msg: Msg, addr: tuple[str, int]) -> None:
        assert self.uac_tr is not None
        call_id = msg.get("call-id") or ""
        c = self.uac.get(call_id)
        if msg.is_response is False:
            # A request from the system towards the caller: BYE (the far end hung up), OPTIONS.
            self.uac_tr.sendto(self.response(msg, 200, "OK"), addr)
            if c is not None and msg.method == "BYE":
                self.fail(c, "BYE from the system")
            return
        if c is None:
            return
        _, meth = msg.cseq
        status = msg.status
        if meth == "INVITE":
            if status < 200:
                if c.state == "inviting":
                    c.state = "proceeding"
                return
            if status >= 300:
                # ACK the failure (same branch, hop by hop).
                if c.state in ("inviting", "proceeding"):
                    ua = f"{self.host}:{self.args.uac_port}"
                    th, tp = self.target
                    ack = (
                        f"ACK sip:{self.args.service}@{th}:{tp} SIP/2.0\r\n"
                        f"Via: SIP/2.0/UDP {ua};branch={c.branch};rport\r\n"
                        f'From: "rtpload caller" <sip:caller@{ua}>;tag={c.from_tag}\r\n'
                        f"To: {msg.get('to')}\r\n"
                        f"Call-ID: {c.call_id}\r\n"
                        "CSeq: 1 ACK\r\n"
                        "Max-Forwards: 70\r\n"
                        "Content-Length: 0\r\n\r\n"
                    ).encode()
                    self.uac_tr.sendto(ack, self.target)
                    self.fail(c, f"INVITE {status}")
                return
            # 2xx
            if c.ack is not None:  # a retransmitted 200: ACK again
                self.uac_tr.sendto(c.ack, self.dialog_dest(c))
                return
            if c.state not in ("inviting", "proceeding"):
                return
            c.state = "up"
            c.answered = time.monotonic()
            self.stats["invite_200_ms"].append(1000 * (c.answered - c.started))
            c.to_value = msg.get("to")
            c.remote_target = uri_of(msg.get("contact") or "")
            c.route = list(reversed(split_routes(msg.all("record-route"))))
            c.ack = self.in_dialog(c, "ACK", 1, f"z9hG4bK{self.tag}a{c.k}")
            self.uac_tr.sendto(c.ack, self.dialog_dest(c))
            media = sdp_media(msg.body)
            if media is None:
                self.fail(c, "200 without SDP")
                return
            self.worker_of(c.k).send(("start", "caller", c.k, media))
            self.spawn(self.hang_up(c))
        elif meth == "BYE" and c.state == "bye" and status >= 200:
            if status < 300:
                self.succeed(c)
            else:
                self.fail(c, f"BYE {status}")

    async def hang_up(self, c: UacCall) -> None:
        assert self.uac_tr is not None and c.answered is not None
        await asyncio.sleep(max(0.0, c.answered + self.args.call_length - time.monotonic()))
        if c.state != "up":
            return
        c.state = "bye"
        self.worker_of(c.k).send(("stop", "caller", c.k))
        c.bye = self.in_dialog(c, "BYE", 2, f"z9hG4bK{self.tag}b{c.k}")
        interval = T1
        waited = 0.0
        dest = self.dialog_dest(c)
        self.uac_tr.sendto(c.bye, dest)
        while c.state == "bye" and waited < 64 * T1:
            await asyncio.sleep(interval)
            waited += interval
            if c.state != "bye":
                return
            self.uac_tr.sendto(c.bye, dest)
            c.retrans += 1
            self.stats["retransmissions_uac"] += 1
            interval = min(2 * interval, 4.0)
        if c.state == "bye":
            self.fail(c, "no response to BYE")

    # ------------------------------------------------------------------ UAS

    def response(
        self, req: Msg, status: int, reason: str, extra: str = "", body: str = ""
    ) -> bytes:
        lines = [f"SIP/2.0 {status} {reason}"]
        to = req.get("to") or ""
        for k, v in req.headers:
            if k == "via":
                lines.append(f"Via: {v}")
            elif k == "record-route" and status < 300 and req.method in ("INVITE",):
                lines.append(f"Record-Route: {v}")
        lines.append(f"From: {req.get('from')}")
        lines.append(f"To: {to}")
        lines.append(f"Call-ID: {req.get('call-id')}")
        lines.append(f"CSeq: {req.get('cseq')}")
        if extra:
            lines.append(extra.rstrip("\r\n"))
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def on_uas(self, msg: Msg, addr: tuple[str, int]) -> None:
        assert self.uas_tr is not None
        if msg.is_response:
            return
        method = msg.method
        call_id = msg.get("call-id") or ""
        call = self.uas.get(call_id)
        if method == "INVITE":
            if call is not None:  # a retransmission, or a re-INVITE: same answer
                ok = call.ok
                if tag_of(msg.get("to")):
                    ok = self.answer(msg, call.j, tag_of(msg.get("to")) or "")
                self.uas_tr.sendto(ok, addr)
                return
            self.stats["uas_invites"] += 1
            if not self.free_callee:
                self.uas_tr.sendto(self.response(msg, 503, "Out of callee sockets"), addr)
                self.stats["uas_failed"] += 1
                return
            j = self.free_callee.pop()
            media = sdp_media(msg.body)
            ok = self.answer(msg, j, f"s{j}{self.tag}")
            branch = re.search(r"branch=([^;,\s]+)", msg.get("via") or "")
            call = UasCall(j, call_id, branch.group(1) if branch else "", ok, media)
            self.uas[call_id] = call
            self.uas_tr.sendto(ok, addr)
            self.spawn(self.ok_timer(call, addr))
        elif method == "ACK":
            if call is not None and not call.acked:
                call.acked = True
                if call.media is not None and not call.byed:
                    self.worker_of(call.j).send(("start", "callee", call.j, call.media))
        elif method == "BYE":
            self.uas_tr.sendto(self.response(msg, 200, "OK"), addr)
            if call is not None and not call.byed:
                call.byed = True
                self.worker_of(call.j).send(("stop", "callee", call.j))
        elif method == "CANCEL":
            self.uas_tr.sendto(self.response(msg, 200, "OK"), addr)
        else:
            self.uas_tr.sendto(self.response(msg, 200, "OK"), addr)

    def answer(self, req: Msg, j: int, tag: str) -> bytes:
        to = req.get("to") or ""
        to_tag = "" if tag_of(to) else f";tag={tag}"
        body = sdp(self.host, CALLEE_BASE + 2 * j, 5000 + j)
        req2 = Msg(
            req.first, [(k, v + to_tag if k == "to" else v) for k, v in req.headers], req.body
        )
        return self.response(
            req2,
            200,
            "OK",
            extra=f"Contact: <sip:pbx@{self.host}:{self.args.uas_port}>",
            body=body,
        )

    async def ok_timer(self, call: UasCall, addr: tuple[str, int]) -> None:
        """Retransmit the 200 until the ACK (timers G and H)."""
        assert self.uas_tr is not None
        interval = T1
        waited = 0.0
        while waited < 64 * T1:
            await asyncio.sleep(interval)
            waited += interval
            if call.acked or call.byed:
                return
            self.uas_tr.sendto(call.ok, addr)
            call.retrans += 1
            self.stats["retransmissions_uas"] += 1
            interval = min(2 * interval, 4.0)
        self.stats["uas_failed"] += 1

    # ------------------------------------------------------------------ plumbing

    def current(self) -> int:
        return sum(1 for c in self.uac.values() if c.state in ("up", "bye"))


class _Side(asyncio.DatagramProtocol):
    def __init__(self, load: Load, uac: bool) -> None:
        self.load = load
        self.uac = uac

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        msg = parse(data)
        if msg is None:
            return
        try:
            if self.uac:
                self.load.on_uac(msg, addr)
            else:
                self.load.on_uas(msg, addr)
        except Exception as exc:  # a malformed message is not a reason to stop
            print(f"rtpload: {type(exc).__name__}: {exc}", file=sys.stderr)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


async def run(args: argparse.Namespace, workers: list[Connection]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    load = Load(args, workers)
    load.uac_tr, _ = await loop.create_datagram_endpoint(
        lambda: _Side(load, True), local_addr=(args.host, args.uac_port)
    )
    load.uas_tr, _ = await loop.create_datagram_endpoint(
        lambda: _Side(load, False), local_addr=(args.host, args.uas_port)
    )
    for tr in (load.uac_tr, load.uas_tr):
        sock = tr.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    status_path = Path(args.status) if args.status else None
    t0 = time.monotonic()

    async def status() -> None:
        while True:
            if status_path is not None:
                tmp = status_path.with_suffix(".tmp")
                tmp.write_text(
                    json.dumps(
                        {
                            "t": round(time.monotonic() - t0, 2),
                            "current": load.current(),
                            "created": load.stats["created"],
                            "successful": load.stats["successful"],
                            "failed": load.stats["failed"],
                        }
                    )
                )
                tmp.replace(status_path)
            await asyncio.sleep(1.0)

    status_task = asyncio.ensure_future(status())
    if args.start_file:  # the caller tells us when to go (after its own baseline)
        while not Path(args.start_file).exists():
            await asyncio.sleep(0.05)
    start = time.monotonic()
    for k in range(args.calls):
        await asyncio.sleep(max(0.0, start + k / args.rate - time.monotonic()))
        load.place_call(k)
    deadline = start + args.calls / args.rate + args.call_length + 80
    try:
        await asyncio.wait_for(load.done.wait(), max(1.0, deadline - time.monotonic()))
    except TimeoutError:
        for c in load.uac.values():
            if c.outcome is None:
                load.fail(c, f"still {c.state} at the deadline")
    await asyncio.sleep(0.5)
    status_task.cancel()
    if status_path is not None:
        status_path.write_text(
            json.dumps(
                {
                    "t": round(time.monotonic() - t0, 2),
                    "current": 0,
                    "created": load.stats["created"],
                    "successful": load.stats["successful"],
                    "failed": load.stats["failed"],
                    "done": True,
                }
            )
        )
    stats = dict(load.stats)
    times = stats.pop("invite_200_ms")
    stats["invite_200_ms"] = {
        "mean": round(sum(times) / len(times), 2) if times else None,
        "p99": percentile(times, 0.99),
        "max": percentile(times, 1.0),
    }
    stats["uas_acked"] = sum(1 for c in load.uas.values() if c.acked)
    stats["uas_byes"] = sum(1 for c in load.uas.values() if c.byed)
    stats["not_ok"] = {c.k: c.outcome for c in load.uac.values() if c.outcome != "ok"}
    for tr in (load.uac_tr, load.uas_tr):
        tr.close()
    return stats


def summarize(streams: dict[str, dict[str, Any]], prefix: str, expected: int) -> Any:
    """Totals of one direction: each `prefix` stream's sent against what its peer stream (the
    other side's socket that heard it, known by the id in the payload) received."""
    other = "callee" if prefix == "caller" else "caller"
    heard_by = {
        v["peer"]: v for k, v in streams.items() if k.startswith(other + ":") and v["peer"] >= 0
    }
    senders = {k: v for k, v in streams.items() if k.startswith(prefix + ":")}
    rx = [v for k, v in streams.items() if k.startswith(other + ":")]
    sent = sum(v["sent"] for v in senders.values())
    received = sum(v["received"] for v in rx)
    with_loss = 0
    worst = 0.0
    for key, v in senders.items():
        if not v["sent"]:
            continue
        index = int(key.split(":")[1]) + (CALLEE_ID if prefix == "callee" else 0)
        got = heard_by.get(index, {}).get("received", 0)
        if got < v["sent"]:
            with_loss += 1
            worst = max(worst, 100.0 * (v["sent"] - got) / v["sent"])
    hist = [sum(v["latency_hist"][i] for v in rx) for i in range(len(LATENCY_BUCKETS_MS))]
    total = sum(hist)
    p99 = None
    if total:
        acc = 0
        for i, count in enumerate(hist):
            acc += count
            if acc >= 0.99 * total:
                p99 = LATENCY_BUCKETS_MS[i]
                break
    return {
        "expected": expected,
        "sent": sent,
        "received": received,
        "lost": sent - received,
        "loss_pct": round(100.0 * (sent - received) / sent, 4) if sent else None,
        "calls_with_loss": with_loss,
        "worst_call_loss_pct": round(worst, 3),
        "late": sum(v["late"] for v in rx),
        "duplicates": sum(v["duplicates"] for v in rx),
        "out_of_order": sum(v["out_of_order"] for v in rx),
        "stray": sum(v["stray"] for v in rx),
        # Dropped by the receiving party's own socket (the generator did not read in time).
        "receiver_socket_drops": sum(v.get("socket_drops", 0) for v in rx),
        "send_errors": sum(v["send_errors"] for v in senders.values()),
        "latency_max_ms": max((v["latency_max_ms"] for v in rx), default=None),
        "latency_p99_bucket_ms": p99,
        "latency_hist": {str(b): c for b, c in zip(LATENCY_BUCKETS_MS, hist, strict=True)},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--target", required=True, help="HOST:PORT the INVITEs go to")
    p.add_argument("--calls", type=int, required=True, help="calls in all (the plateau)")
    p.add_argument("--rate", type=float, default=50.0, help="new calls per second")
    p.add_argument("--call-length", type=float, default=60.0, help="seconds from 200 to BYE")
    p.add_argument("--packets", type=int, default=0, help="per stream (default: length-1 s)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--uac-port", type=int, required=True)
    p.add_argument("--uas-port", type=int, required=True)
    p.add_argument("--service", default="service", help="Request-URI user")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--late-ms", type=float, default=100.0)
    p.add_argument("--status", default=None, help="status JSON rewritten every second")
    p.add_argument("--start-file", default=None, help="wait for this file before calling")
    p.add_argument("--ready-file", default=None, help="written once every socket is bound")
    p.add_argument("--out", required=True, help="result JSON")
    args = p.parse_args(argv)
    if not args.packets:
        args.packets = max(1, round((args.call_length - 1.0) / 0.020))
    if args.calls > (CALLEE_BASE - CALLER_BASE) // 2:
        p.error(f"at most {(CALLEE_BASE - CALLER_BASE) // 2} calls")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 4 * args.calls + 256)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    ctx = mp.get_context("fork")
    conns: list[Connection] = []
    procs = []
    per_worker: list[list[tuple[str, int]]] = [[] for _ in range(args.workers)]
    for k in range(args.calls):
        per_worker[k % args.workers].append(("caller", k))
        per_worker[k % args.workers].append(("callee", k))
    for i in range(args.workers):
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=worker_main,
            args=(i, child, per_worker[i], args.host, args.packets, args.late_ms),
            name=f"rtpload-media-{i}",
        )
        proc.start()
        child.close()
        conns.append(parent)
        procs.append(proc)
    for conn in conns:
        msg = conn.recv()
        assert msg[0] == "ready", msg
    if args.ready_file:
        Path(args.ready_file).write_text(" ".join(str(pr.pid) for pr in procs) + "\n")
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    t0 = time.monotonic()
    cpu0 = time.process_time()
    stats = runner(run(args, conns))
    ua_cpu = time.process_time() - cpu0
    for conn in conns:
        conn.send(("finish", 1.0))
    streams: dict[str, dict[str, Any]] = {}
    workers_out: list[dict[str, Any]] = []
    for conn in conns:
        msg = conn.recv()
        streams.update(msg[2]["streams"])
        workers_out.append(
            {"index": msg[1], "send_lag": msg[2]["send_lag"], "cpu_s": msg[2]["cpu_s"]}
        )
    for proc in procs:
        proc.join(10)
    ok_calls = stats["successful"]
    expected = ok_calls * args.packets
    out = {
        "parameters": {k: v for k, v in vars(args).items()},
        "wall_s": round(time.monotonic() - t0, 2),
        "calls": stats,
        "forward": summarize(streams, "caller", expected),
        "back": summarize(streams, "callee", expected),
        "workers": workers_out,
        "ua_cpu_s": round(ua_cpu, 2),
        "streams": streams,
    }
    Path(args.out).write_text(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
