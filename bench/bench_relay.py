"""Load test of the RTP relay: N calls of G.711 20 ms audio both ways, for T seconds.

This process runs N `MediaSession`s on the chosen event loop; a separate
load-generator process (this same file with --generator, plain sockets and
epoll, no asyncio) plays both parties of every call, so that the relay's CPU
figure is the relay's alone. Packets carry their send time (CLOCK_MONOTONIC
is shared between processes) for a one-way latency figure.

    .venv/bin/python bench/bench_relay.py --calls 500 --seconds 10 --loop uvloop

With --srtp both legs of every call are SDES-SRTP (AES_CM_128_HMAC_SHA1_80): the
generator encrypts what each party sends and decrypts what it gets (in its own process),
the relay decrypts, and encrypts again for the other leg, as `recorder serve` does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import select
import socket
import struct
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
PACKET_SIZE = 172  # 12-byte RTP header + 160 bytes of G.711 (20 ms at 8 kHz)
INTERVAL = 0.020
SLOTS = 20  # senders are spread over 1 ms slots, as real calls are not phase-aligned
DRAIN_SECONDS = 0.5
# RTP header, then the send time in the payload.
STAMPED_HEADER = struct.Struct("!BBHIId")
SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"
# Fixed keys: party A's, ours towards A, party B's, ours towards B (a benchmark, not a call).
SRTP_KEYS = {
    "party_a": b"\x01" * 30,
    "ours_a": b"\x02" * 30,
    "party_b": b"\x03" * 30,
    "ours_b": b"\x04" * 30,
}


try:
    from pylibsrtp import Error as SrtpError
except ImportError:  # the plain benchmark runs without it
    SrtpError = ValueError  # type: ignore[misc,assignment]


def _srtp_sessions(key: bytes) -> tuple[Any, Any]:
    """(outbound, inbound) libsrtp sessions of one key."""
    from recorder.media.sdes import Crypto
    from recorder.media.srtp import inbound_session, outbound_session

    crypto = Crypto(1, SRTP_SUITE, key)
    return outbound_session(crypto), inbound_session(crypto)


def _percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _preemptions() -> int:
    """Involuntary context switches: high means the figures are skewed by other load."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


# --- load generator (child process) ------------------------------------------


def run_generator() -> None:
    """Read the relay's ports from stdin, report ours, wait for 'go', send, report results."""
    config = json.loads(sys.stdin.readline())
    relay_ports: list[list[int]] = config["calls"]
    seconds: float = config["seconds"]
    srtp: bool = config.get("srtp", False)

    # Endpoint i: 2 * call for the caller (talks to leg A), 2 * call + 1 for the callee (leg B).
    sockets: list[socket.socket] = []
    targets: list[tuple[str, int]] = []
    for a_port, b_port in relay_ports:
        for port in (a_port, b_port):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((HOST, 0))
            sock.setblocking(False)
            sockets.append(sock)
            targets.append((HOST, port))
    # Per endpoint: what it encrypts with (its own key) and decrypts with (ours towards it).
    protect: list[Callable[[bytes], bytes]] = []
    unprotect: list[Callable[[bytes], bytes]] = []
    if srtp:
        for index in range(len(sockets)):
            side = "a" if index % 2 == 0 else "b"
            protect.append(_srtp_sessions(SRTP_KEYS[f"party_{side}"])[0].protect)
            unprotect.append(_srtp_sessions(SRTP_KEYS[f"ours_{side}"])[1].unprotect)
    own_ports = [sock.getsockname()[1] for sock in sockets]
    print(json.dumps({"ports": own_ports}), flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("generator: expected 'go'")

    by_fd = {sock.fileno(): sock for sock in sockets}
    fd_index = {sock.fileno(): index for index, sock in enumerate(sockets)}
    poller = select.epoll()
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    buffers = [bytearray(PACKET_SIZE) for _ in sockets]
    seqs = [0] * len(sockets)
    slots = [list(range(slot, len(sockets), SLOTS)) for slot in range(SLOTS)]
    sent = [0, 0]  # by direction: 0 = caller -> callee, 1 = callee -> caller
    received = 0
    strays = 0
    send_errors = 0
    latencies = array("d")
    unpack_sent_at = STAMPED_HEADER.unpack_from
    now = time.monotonic
    cpu_start = _cpu_seconds()
    start = now()
    stop_sending = start + seconds
    stop = stop_sending + DRAIN_SECONDS
    tick = 0
    slot = 0
    next_send = start

    while True:
        current = now()
        if current >= stop:
            break
        if next_send <= current < stop_sending:
            for index in slots[slot]:
                seq = seqs[index]
                STAMPED_HEADER.pack_into(
                    buffers[index], 0, 0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF,
                    index, current,
                )  # fmt: skip
                try:
                    if srtp:
                        sockets[index].sendto(protect[index](bytes(buffers[index])), targets[index])
                    else:
                        sockets[index].sendto(buffers[index], targets[index])
                except BlockingIOError:
                    send_errors += 1
                    continue
                seqs[index] = seq + 1
                sent[index & 1] += 1
            slot += 1
            if slot == SLOTS:
                slot = 0
                tick += 1
            next_send = start + tick * INTERVAL + slot * (INTERVAL / SLOTS)
            continue
        timeout = max(0.0, min(next_send, stop) - current)
        for fd, _events in poller.poll(timeout):
            try:
                data = by_fd[fd].recv(2048)
            except BlockingIOError:
                continue
            index = fd_index[fd]
            if srtp:
                try:
                    data = unprotect[index](data)
                except SrtpError:
                    strays += 1
                    continue
            stamp = unpack_sent_at(data)
            if stamp[4] != index ^ 1:
                strays += 1  # not from this endpoint's party (a packet of an earlier run)
                continue
            received += 1
            latencies.append(now() - stamp[5])

    result = {
        "sent_a_to_b": sent[0],
        "sent_b_to_a": sent[1],
        "received": received,
        "strays": strays,
        "send_errors": send_errors,
        "latency_p50_ms": _percentile(latencies, 0.50) * 1000,
        "latency_p99_ms": _percentile(latencies, 0.99) * 1000,
        "generator_cpu_s": _cpu_seconds() - cpu_start,
    }
    print(json.dumps(result), flush=True)


# --- relay (this process) -------------------------------------------------------


async def _measure_lag(samples: list[float], period: float = 0.010) -> None:
    """How late a 10 ms timer fires: the delay every ready callback also sees."""
    while True:
        before = time.perf_counter()
        await asyncio.sleep(period)
        # uvloop's timers run on a millisecond clock and can fire a hair early.
        samples.append(max(0.0, time.perf_counter() - before - period))


def _process_cpu_seconds(pid: int) -> float:
    """utime + stime of another process (a media worker), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _RecordingTap:
    """What a recording costs the service per packet: `RecordingHandle.tap`'s pack and
    append, the buffer handed off (here: dropped) every 150 ms."""

    def __init__(self) -> None:
        from recorder.recording.timeline import RECORD

        self.buffer = bytearray()
        self.packets = 0
        self._pack = RECORD.pack

    def tap(self, channel: int) -> Callable[[bytes, float], None]:
        pack = self._pack

        def on_packet(data: bytes, arrival: float) -> None:
            self.buffer += pack(channel, arrival, len(data))
            self.buffer += data
            self.packets += 1

        # As `RecordingHandle.tap`: a media worker's packed records go in whole.
        on_packet.record_channel = channel  # type: ignore[attr-defined]
        on_packet.append_records = self._append  # type: ignore[attr-defined]
        return on_packet

    def _append(self, records: memoryview, count: int) -> None:
        self.buffer += records
        self.packets += count

    async def drain(self) -> None:
        while True:
            await asyncio.sleep(0.15)
            self.buffer.clear()


async def run_relay(
    calls: int,
    seconds: float,
    first_port: int,
    srtp: bool = False,
    workers: int = 0,
    record: bool = False,
) -> dict[str, Any]:
    from recorder.media.ports import PortPool
    from recorder.media.relay import MediaSession
    from recorder.media.workers import MediaWorkers

    pool = PortPool(first_port, first_port + 4 * calls + 3)
    plane: MediaWorkers | None = None
    sessions: list[Any]
    if workers:
        plane = MediaWorkers(workers, pool, HOST, on_lost=lambda call: None)
        await plane.start()
        sessions = [plane.open(f"call-{n}") for n in range(calls)]
    else:
        sessions = [MediaSession(pool, HOST, HOST) for _ in range(calls)]
    recording = _RecordingTap() if record else None
    drain = asyncio.create_task(recording.drain()) if recording is not None else None
    generator = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--generator",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert generator.stdin is not None and generator.stdout is not None
    relay_ports = [[s.leg_a.local_rtp_port, s.leg_b.local_rtp_port] for s in sessions]
    request = {"calls": relay_ports, "seconds": seconds, "srtp": srtp}
    generator.stdin.write(json.dumps(request).encode() + b"\n")
    await generator.stdin.drain()
    party_ports = json.loads(await generator.stdout.readline())["ports"]
    for index, session in enumerate(sessions):
        if plane is not None:
            session.set_remote("a", (HOST, party_ports[2 * index]), None)
            session.set_remote("b", (HOST, party_ports[2 * index + 1]), None)
        else:
            session.leg_a.set_remote((HOST, party_ports[2 * index]))
            session.leg_b.set_remote((HOST, party_ports[2 * index + 1]))
        if recording is not None:
            session.leg_a.on_packet = recording.tap(0)
            session.leg_b.on_packet = recording.tap(1)
        if srtp and plane is not None:
            raise SystemExit("--srtp with --workers: not measured by this benchmark")
        if srtp:
            # Each leg decrypts with its party's key and encrypts with ours towards it.
            for leg, side in ((session.leg_a, "a"), (session.leg_b, "b")):
                inbound = _srtp_sessions(SRTP_KEYS[f"party_{side}"])[1]
                outbound = _srtp_sessions(SRTP_KEYS[f"ours_{side}"])[0]
                leg.set_srtp(inbound, outbound)

    lag_samples: list[float] = []
    lag_task = asyncio.create_task(_measure_lag(lag_samples))
    worker_pids = [w.pid for w in plane.live] if plane is not None else []
    cpu_start = _cpu_seconds()
    workers_start = [_process_cpu_seconds(pid) for pid in worker_pids]
    preemptions_start = _preemptions()
    wall_start = time.monotonic()
    generator.stdin.write(b"go\n")
    await generator.stdin.drain()
    line = await generator.stdout.readline()
    wall = time.monotonic() - wall_start
    service_cpu = _cpu_seconds() - cpu_start
    workers_cpu = [
        _process_cpu_seconds(pid) - start
        for pid, start in zip(worker_pids, workers_start, strict=True)
    ]
    cpu = service_cpu + sum(workers_cpu)
    preemptions = _preemptions() - preemptions_start
    lag_task.cancel()
    await generator.wait()
    if not line:
        raise SystemExit(f"generator exited with {generator.returncode} and no result")
    result: dict[str, Any] = json.loads(line)

    totals: dict[str, int] = {}
    names = ("rtp_packets", "rtp_forwarded", "dropped_send", "dropped_wrong_source")
    names += ("dropped_srtp_auth", "rtp_lost")
    if plane is not None:
        finals: list[asyncio.Future[dict[str, Any]]] = []
        for session in sessions:
            final: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            session.finish(final.set_result)
            finals.append(final)
        for counters in await asyncio.gather(*finals):
            for leg_counters in counters.values():
                for name in names:
                    totals[name] = totals.get(name, 0) + leg_counters.get(name, 0)
        await plane.aclose()
    else:
        for session in sessions:
            for leg in (session.leg_a, session.leg_b):
                leg_counters = leg.stats.as_dict()
                for name in names:
                    value = leg_counters[name]
                    assert isinstance(value, int)
                    totals[name] = totals.get(name, 0) + value
            session.close()
    if drain is not None:
        drain.cancel()
    assert pool.free_count == pool.capacity

    sent = result["sent_a_to_b"] + result["sent_b_to_a"]
    relayed = totals["rtp_forwarded"]
    result.update(
        calls=calls,
        seconds=seconds,
        sent=sent,
        loss_percent=100.0 * (sent - result["received"]) / sent if sent else float("nan"),
        relay_received=totals["rtp_packets"],
        relay_forwarded=relayed,
        relay_dropped_send=totals["dropped_send"],
        relay_dropped_srtp_auth=totals["dropped_srtp_auth"],
        srtp=srtp,
        relay_seq_lost=totals["rtp_lost"],
        relay_cpu_s=cpu,
        workers=workers,
        record=record,
        service_cpu_cores=service_cpu / wall,
        worker_cpu_cores=[round(w / wall, 3) for w in workers_cpu],
        recorded_packets=recording.packets if recording is not None else 0,
        relay_preemptions=preemptions,
        load_average=os.getloadavg()[0],
        relay_cpu_cores=cpu / wall,
        relay_us_per_packet=1e6 * cpu / relayed if relayed else float("nan"),
        lag_p50_ms=_percentile(lag_samples, 0.50) * 1000,
        lag_p99_ms=_percentile(lag_samples, 0.99) * 1000,
        lag_max_ms=max(lag_samples, default=float("nan")) * 1000,
    )
    return result


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100, help="concurrent calls (default 100)")
    parser.add_argument("--seconds", type=float, default=10.0, help="sending time (default 10)")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--first-port", type=int, default=20000, help="relay port range start")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--srtp", action="store_true", help="SDES-SRTP on both legs")
    parser.add_argument(
        "--workers", type=int, default=0, help="media worker processes (0: relay in this loop)"
    )
    parser.add_argument("--record", action="store_true", help="tap both legs as a recording does")
    parser.add_argument("--generator", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generator:
        run_generator()
        return
    with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
        result = runner.run(
            run_relay(
                args.calls, args.seconds, args.first_port, args.srtp, args.workers, args.record
            )
        )
    result["loop"] = args.loop
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"loop={args.loop} calls={args.calls} seconds={args.seconds:g} srtp={args.srtp}\n"
        f"  packets sent {result['sent']}  received {result['received']}  "
        f"loss {result['loss_percent']:.3f}%\n"
        f"  relay: received {result['relay_received']}  forwarded {result['relay_forwarded']}  "
        f"send drops {result['relay_dropped_send']}  seq-gap losses {result['relay_seq_lost']}\n"
        f"  workers {args.workers} record {args.record}: service "
        f"{result['service_cpu_cores']:.2f} core, workers {result['worker_cpu_cores']}, "
        f"recorded {result['recorded_packets']} packets\n"
        f"  relay CPU {result['relay_cpu_s']:.2f} s ({result['relay_cpu_cores']:.2f} core, "
        f"{result['relay_us_per_packet']:.1f} us/packet)  "
        f"generator CPU {result['generator_cpu_s']:.2f} s\n"
        f"  relay preempted {result['relay_preemptions']} times, "
        f"load average {result['load_average']:.2f}\n"
        f"  event-loop lag p50 {result['lag_p50_ms']:.2f} ms  p99 {result['lag_p99_ms']:.2f} ms  "
        f"max {result['lag_max_ms']:.2f} ms\n"
        f"  one-way latency p50 {result['latency_p50_ms']:.3f} ms  "
        f"p99 {result['latency_p99_ms']:.3f} ms"
    )


if __name__ == "__main__":
    main()
