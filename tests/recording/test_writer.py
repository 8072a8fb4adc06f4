"""The writer process for real: spawned, fed through its pipe, killed with SIGKILL.

These tests poll the file system with short sleeps where they wait for the
other process (a file reaching a size, a writer coming back); they are not
pure unit tests, and each has a deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import pickle
import signal
import stat
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from consent.g711 import ALAW_DECODE, ULAW_DECODE
from recorder.media.rtp import build_packet
from recorder.recording.repair import parse_layout, repair_all
from recorder.recording.tap import CallRecording
from recorder.recording.timeline import RECORD
from recorder.recording.writer import (
    WRITE_INTERVAL,
    PacketTap,
    RecordingFormat,
    RecordingWriterClient,
    writer_main,
)

FRAME = 160
Packet = tuple[int, bytes, float]
DEADLINE = 30.0
STEM = "2026-11-23_1042_agent-4711"


class Call:
    """Two synthetic parties: left PCMU, right PCMA (or PCMU), 20 ms packets.

    Both arrive at the same instants: the tests feed arrival times from the
    past, several batches' worth at once, which a live relay never does (a
    batch holds every packet that arrived before it was sent); with an offset
    between the channels, the commit horizon of one batch would cut into the
    next batch's first packet. Per-channel placement is the timeline tests' job.
    """

    def __init__(self, seed: int, right_pt: int = 8) -> None:
        self.rng = np.random.default_rng(seed)
        self.right_pt = right_pt
        self.seq = [10, 20]
        self.ts = [1000, 50000]
        self.sent: list[list[bytes]] = [[], []]

    def packets(self, count: int, base: float) -> list[Packet]:
        out: list[Packet] = []
        for k in range(count):
            for channel, pt in ((0, 0), (1, self.right_pt)):
                # Codes below 0x7F: never mu-law's "negative zero", which WAV
                # mu-law writers store as positive zero.
                data = bytes(self.rng.integers(0, 0x7F, FRAME, dtype=np.uint8))
                packet = build_packet(pt, self.seq[channel], self.ts[channel], 7 + channel, data)
                self.seq[channel] += 1
                self.ts[channel] += FRAME
                self.sent[channel].append(data)
                out.append((channel, packet, base + k * 0.02))
        return out

    def expected(self, first: int = 0, last: int | None = None) -> npt.NDArray[np.int16]:
        left = b"".join(self.sent[0][first:last])
        right = b"".join(self.sent[1][first:last])
        table = ALAW_DECODE if self.right_pt == 8 else ULAW_DECODE
        out = np.zeros((len(left), 2), dtype=np.int16)
        out[:, 0] = ULAW_DECODE[np.frombuffer(left, dtype=np.uint8)]
        out[:, 1] = table[np.frombuffer(right, dtype=np.uint8)]
        return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def client() -> AsyncIterator[RecordingWriterClient]:
    client = RecordingWriterClient(batch_interval=0.05)
    await client.start()
    yield client
    await client.aclose()


@pytest.mark.parametrize("fmt", ["pcm16", "alaw"])
async def test_call_is_written_sample_for_sample_then_fsynced_renamed_and_hashed(
    tmp_path: Path, client: RecordingWriterClient, fmt: RecordingFormat
) -> None:
    call = Call(1)
    directory = tmp_path / "2026" / "11" / "23"
    handle = client.open("call-1", directory=directory, stem=STEM, format=fmt)
    final = await asyncio.wait_for(handle.opened, DEADLINE)
    assert final == directory / f"{STEM}.wav"
    base = time.monotonic() - 5.0
    for chunk in range(3):  # several batches
        for packet in call.packets(50, base + chunk * 1.0):
            handle.add(*packet)
        await asyncio.sleep(0.06)
    result = await asyncio.wait_for(handle.close(time.monotonic()), DEADLINE)

    assert result.complete and result.error is None and result.dropped_packets == 0
    [info] = result.files
    assert info.path == final and info.state == "complete"
    assert not list(directory.glob("*.part"))
    assert stat.S_IMODE(final.stat().st_mode) == 0o640
    assert stat.S_IMODE(directory.stat().st_mode) == 0o750
    assert info.sha256 == sha256(final) and info.size == final.stat().st_size
    audio, rate = sf.read(final, dtype="int16")
    assert rate == 8000 and audio.shape[1] == 2
    expected = call.expected()
    if fmt == "pcm16":
        np.testing.assert_array_equal(audio, expected)
    else:
        # A-law file: the right (PCMA) channel's bytes are stored as sent.
        layout = parse_layout(final.read_bytes()[:4096])
        assert layout.format == "alaw"
        raw = np.frombuffer(final.read_bytes()[layout.data_offset :], dtype=np.uint8)
        sent_right = np.frombuffer(b"".join(call.sent[1]), dtype=np.uint8)
        np.testing.assert_array_equal(raw.reshape(-1, 2)[:, 1], sent_right)
        np.testing.assert_array_equal(audio[:, 1], expected[:, 1])
    assert info.duration_s == pytest.approx(len(expected) / 8000)
    assert info.stats["packets"] == 300


async def test_ulaw_file_keeps_pcmu_bytes(tmp_path: Path, client: RecordingWriterClient) -> None:
    call = Call(2, right_pt=0)
    handle = client.open("call-u", directory=tmp_path, stem="u", format="ulaw")
    await asyncio.wait_for(handle.opened, DEADLINE)
    for packet in call.packets(100, time.monotonic() - 3.0):
        handle.add(*packet)
    result = await asyncio.wait_for(handle.close(time.monotonic()), DEADLINE)
    path = result.files[0].path
    layout = parse_layout(path.read_bytes()[:4096])
    raw = np.frombuffer(path.read_bytes()[layout.data_offset :], dtype=np.uint8).reshape(-1, 2)
    np.testing.assert_array_equal(raw[:16000, 0], np.frombuffer(b"".join(call.sent[0]), np.uint8))
    np.testing.assert_array_equal(raw[:, 1], np.frombuffer(b"".join(call.sent[1]), np.uint8))


async def test_same_name_twice_gets_a_suffix(tmp_path: Path, client: RecordingWriterClient) -> None:
    first = client.open("a", directory=tmp_path, stem=STEM)
    second = client.open("b", directory=tmp_path, stem=STEM)
    paths = await asyncio.wait_for(asyncio.gather(first.opened, second.opened), DEADLINE)
    assert [p.name for p in paths if p] == [f"{STEM}.wav", f"{STEM}-2.wav"]
    results = await asyncio.gather(first.close(time.monotonic()), second.close(time.monotonic()))
    assert [r.files[0].path.name for r in results] == [f"{STEM}.wav", f"{STEM}-2.wav"]


async def test_writer_killed_mid_call_is_restarted_and_nothing_written_is_lost(
    tmp_path: Path, client: RecordingWriterClient
) -> None:
    call = Call(3)
    handle = client.open("call-k", directory=tmp_path, stem=STEM)
    await asyncio.wait_for(handle.opened, DEADLINE)
    part = tmp_path / f"{STEM}.wav.part"
    for packet in call.packets(100, time.monotonic() - 4.0):
        handle.add(*packet)
    written = 2 * 100 * FRAME * 2  # 2 s of stereo int16
    await wait_for(lambda: part.exists() and part.stat().st_size >= 44 + written, "first 2 s")
    dead = client.pid
    assert dead is not None
    os.kill(dead, signal.SIGKILL)
    await wait_for(lambda: client.pid not in (None, dead), "a new writer")
    await wait_for(lambda: handle.final == tmp_path / f"{STEM}-2.wav", "the continuation file")
    for packet in call.packets(50, time.monotonic() - 2.0):
        handle.add(*packet)
    result = await asyncio.wait_for(handle.close(time.monotonic()), DEADLINE)

    assert client.restarts == 1
    first, second = result.files
    assert first.state == "interrupted" and first.path == tmp_path / f"{STEM}.wav"
    assert second.state == "complete" and second.path == tmp_path / f"{STEM}-2.wav"
    assert not result.complete
    np.testing.assert_array_equal(sf.read(first.path, dtype="int16")[0], call.expected(0, 100))
    np.testing.assert_array_equal(sf.read(second.path, dtype="int16")[0], call.expected(100))
    for info in (first, second):
        assert info.sha256 == sha256(info.path)
        assert stat.S_IMODE(info.path.stat().st_mode) == 0o640
    assert not list(tmp_path.glob("*.part"))


def test_service_killed_mid_call_leaves_a_part_that_repair_makes_playable(
    tmp_path: Path,
) -> None:
    """The writer SIGKILLed by hand, as when the whole service dies; then start-up repair."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=writer_main, args=(child,), daemon=True)
    process.start()
    child.close()
    call = Call(4)
    directory = tmp_path / "2026" / "11" / "23"
    parent.send_bytes(pickle.dumps(("open", "c", str(directory), STEM, "pcm16", 0.1)))
    kind, _, part, final = pickle.loads(parent.recv_bytes())
    assert kind == "opened"
    packets = call.packets(150, time.monotonic() - 5.0)
    for start in range(0, len(packets), 40):
        raw = b"".join(RECORD.pack(ch, at, len(p)) + p for ch, p, at in packets[start:][:40])
        parent.send_bytes(pickle.dumps(("tick", time.monotonic(), {"c": raw})))
    # The service's next tick, a write interval later: what the writer held goes out.
    parent.send_bytes(pickle.dumps(("tick", time.monotonic() + WRITE_INTERVAL, {})))
    part_path = Path(part)
    written = 44 + 3 * 8000 * 4
    deadline = time.monotonic() + DEADLINE
    while part_path.stat().st_size < written:
        assert time.monotonic() < deadline, part_path.stat().st_size
        time.sleep(0.02)
    os.kill(process.pid or 0, signal.SIGKILL)
    process.join(DEADLINE)
    parent.close()
    with open(part_path, "ab") as f:
        f.write(b"\x01\x02\x03")  # a torn last frame
    # Before repair the header claims no audio at all (libsndfile sizes it on close).
    assert struct.unpack_from("<I", part_path.read_bytes(), 40) == (0,)

    report = repair_all(tmp_path)
    assert report.errors == []
    [repaired] = report.repaired
    assert repaired.path == Path(final) and not part_path.exists()
    audio, _ = sf.read(repaired.path, dtype="int16")
    np.testing.assert_array_equal(audio, call.expected())
    assert repaired.duration_s == pytest.approx(len(audio) / 8000)
    assert repaired.sha256 == sha256(repaired.path)
    assert repaired.size == repaired.path.stat().st_size
    assert stat.S_IMODE(repaired.path.stat().st_mode) == 0o640


async def test_packets_are_dropped_and_counted_when_the_pipe_buffer_is_full(
    tmp_path: Path,
) -> None:
    client = RecordingWriterClient(batch_interval=0.05, max_buffer_bytes=64)
    await client.start()
    try:
        handle = client.open("c", directory=tmp_path, stem="full")
        await asyncio.wait_for(handle.opened, DEADLINE)
        for packet in Call(5).packets(20, time.monotonic() - 1.0):
            handle.add(*packet)
        result = await asyncio.wait_for(handle.close(time.monotonic()), DEADLINE)
    finally:
        await client.aclose()
    assert result.dropped_packets == 40 and client.dropped_packets == 40
    assert result.files[0].duration_s == 0.0


class FakeLeg:
    def __init__(self) -> None:
        self.on_packet: PacketTap | None = None


async def test_call_recording_taps_pauses_and_restores_the_previous_tap(
    tmp_path: Path, client: RecordingWriterClient
) -> None:
    external, agent = FakeLeg(), FakeLeg()
    heard: list[bytes] = []
    external.on_packet = lambda data, arrival: heard.append(data)  # e.g. the consent listener
    consent_tap = external.on_packet
    now = [time.monotonic() - 10.0]
    recording = CallRecording(
        client, "call-t", external=external, agent=agent, directory=tmp_path, stem="t",
        clock=lambda: now[0],
    )  # fmt: skip
    assert await asyncio.wait_for(recording.start(), DEADLINE) == tmp_path / "t.wav"
    call = Call(6)
    packets = call.packets(150, now[0])
    legs = (external, agent)
    for index, (channel, packet, arrival) in enumerate(packets):
        now[0] = arrival
        if index == 100:
            recording.pause()
        if index == 200:
            recording.resume()
        tap = legs[channel].on_packet
        if 100 <= index < 200:
            assert tap is (consent_tap if channel == 0 else None)
        if tap is not None:
            tap(packet, arrival)
    assert len(heard) == 150
    result = await asyncio.wait_for(recording.stop(), DEADLINE)
    assert external.on_packet is consent_tap and agent.on_packet is None
    [info] = result.files
    [(start, end)] = info.pauses
    assert start == pytest.approx(1.0, abs=0.001) and end == pytest.approx(2.0, abs=0.001)
    audio = sf.read(info.path, dtype="int16")[0]
    expected = call.expected()
    expected[8000:16000] = 0
    np.testing.assert_array_equal(audio, expected)
