"""A full disk in the writer (issue 20), without a real full disk: `os.write` stand-ins.

In-process: `_Writer` with a pretend disk of N bytes (ENOSPC past them, EDQUOT for a
quota), answering into a fake pipe. Across the process boundary: the real writer process
and client, with a disk that is full while a flag file exists. The real thing (a small
tmpfs, `recorder serve`, sipp) is tests/interop/test_full_disk.py.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import pickle
import stat
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from recorder.recording.repair import parse_layout
from recorder.recording.timeline import RECORD
from recorder.recording.writer import (
    DISK_FULL,
    WRITE_INTERVAL,
    RecordingFile,
    RecordingWriterClient,
    _Sink,
    _Writer,
    no_room_reason,
)

from .test_writer import DEADLINE, STEM, Call, wait_for

HEADER = 44  # libsndfile's PCM WAV header
SECOND = 8000 * 4  # bytes of one second of stereo 16-bit audio


class PretendDisk:
    """os.write on a disk with `room` bytes left for everyone; past them ENOSPC (or `errno_`).

    Like a real one, only growth takes room: a header rewritten in place always succeeds.
    """

    def __init__(self, room: int, errno_: int = errno.ENOSPC) -> None:
        self.room = room
        self.errno = errno_

    def __call__(self, fd: int, data: memoryview) -> int:
        size = os.fstat(fd).st_size
        position = os.lseek(fd, 0, os.SEEK_CUR)
        allowed = max(0, size - position) + max(0, self.room)
        if allowed <= 0:
            raise OSError(self.errno, os.strerror(self.errno))
        written = os.write(fd, data[:allowed])
        self.room -= max(0, position + written - size)
        return written


class FlagDisk:
    """os.write on a disk that is full while `flag` exists (picklable: for the process)."""

    def __init__(self, flag: Path) -> None:
        self.flag = str(flag)

    def __call__(self, fd: int, data: memoryview) -> int:
        if os.path.exists(self.flag):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)


class FakeConn:
    """The writer's end of the pipe: every answer, unpickled."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send_bytes(self, data: bytes) -> None:
        self.sent.append(pickle.loads(data))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [m for m in self.sent if m[0] == kind]


def records(packets: list[tuple[int, bytes, float]]) -> bytes:
    return b"".join(RECORD.pack(ch, at, len(p)) + p for ch, p, at in packets)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_writer(disk: PretendDisk) -> tuple[_Writer, FakeConn]:
    conn = FakeConn()
    return _Writer(conn, finalizers=1, write=disk), conn  # type: ignore[arg-type]


def feed(writer: _Writer, call_id: str, call: Call, seconds: int, base: float) -> None:
    """`seconds` of both parties' audio, one batch a second, each flushed as it comes."""
    for k in range(seconds):
        at = base + k
        writer.tick(at + 1.5, {call_id: records(call.packets(50, at))})


def wait_finalized(conn: FakeConn, call_id: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not any(m[1] == call_id for m in conn.of("finalized")):
        assert time.monotonic() < deadline, f"{call_id} never finalized"
        time.sleep(0.01)


def finalized(writer: _Writer, conn: FakeConn) -> dict[str, RecordingFile]:
    writer.pool.shutdown(wait=True)
    return {m[1]: m[2] for m in conn.of("finalized")}


def test_no_room_reasons() -> None:
    assert no_room_reason(OSError(errno.ENOSPC, "x")) == DISK_FULL == "disk full"
    assert no_room_reason(OSError(errno.EDQUOT, "x")) == "disk quota exceeded"
    assert no_room_reason(OSError(errno.EIO, "x")) is None
    assert no_room_reason(RuntimeError("System error")) is None
    assert no_room_reason(None) is None


def test_sink_writes_what_the_disk_takes_and_keeps_the_error(tmp_path: Path) -> None:
    disk = PretendDisk(10)
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        sink = _Sink(fd, disk)
        assert sink.write(b"0123456") == 7 and sink.error is None
        assert sink.write(b"789abcdef") == 3  # a short write, then no room
        assert isinstance(sink.error, OSError) and sink.error.errno == errno.ENOSPC
        assert sink.tell() == 10 and sink.seek(0) == 0
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"0123456789"


def test_disk_full_mid_call_truncates_the_file_which_plays_and_hashes(tmp_path: Path) -> None:
    # Room for the header and 2.5 s of audio: the call's 5 s do not fit.
    disk = PretendDisk(HEADER + int(2.5 * SECOND) + 3)  # + a torn frame
    writer, conn = make_writer(disk)
    call = Call(11)
    writer.open("c1", str(tmp_path), STEM, "pcm16", 0.1)
    base = time.monotonic() - 100
    feed(writer, "c1", call, 5, base)
    # The client hears at once, and only once, that this call's file stopped growing.
    assert conn.of("full") == [("full", "c1", "disk full")]
    writer.close("c1", base + 10)
    info = finalized(writer, conn)["c1"]

    assert info.state == "truncated" and info.reason == "disk full"
    assert info.path == tmp_path / f"{STEM}.wav" and not list(tmp_path.glob("*.part"))
    assert info.sha256 == sha256(info.path) and info.size == info.path.stat().st_size
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o640
    # It plays, and holds exactly the call's first 2.5 s: nothing the disk took is lost.
    audio, rate = sf.read(info.path, dtype="int16")
    assert rate == 8000 and len(audio) == int(2.5 * 8000)
    np.testing.assert_array_equal(audio, call.expected()[: len(audio)])
    assert info.duration_s == pytest.approx(2.5)
    # The header says what the file holds (the torn frame is cut).
    layout = parse_layout(info.path.read_bytes()[:4096])
    assert info.path.stat().st_size == layout.data_offset + len(audio) * 4
    assert info.stats["packets"] > 0


def test_every_call_meets_the_full_disk_in_turn_and_the_writer_serves_on(
    tmp_path: Path,
) -> None:
    disk = PretendDisk(10**9)
    writer, conn = make_writer(disk)
    base = time.monotonic() - 100
    # Finished before the disk filled: complete, and stays so.
    before = Call(20)
    writer.open("before", str(tmp_path), "before", "pcm16", 0.1)
    feed(writer, "before", before, 2, base)
    writer.close("before", base + 5)
    wait_finalized(conn, "before")  # its header rewrite must not race the disk filling
    calls = {name: Call(seed) for seed, name in enumerate(("a", "b", "c"), start=21)}
    for name in calls:
        writer.open(name, str(tmp_path), name, "pcm16", 0.1)
    for k in range(2):  # two seconds of each, with room to spare
        for name, call in calls.items():
            writer.tick(base + k + 1.5, {name: records(call.packets(50, base + k))})
    disk.room = SECOND  # then one more second of room for all three together
    for k in range(2, 6):
        writer.tick(
            base + k + 1.5,
            {name: records(call.packets(50, base + k)) for name, call in calls.items()},
        )
    assert sorted(m[1] for m in conn.of("full")) == ["a", "b", "c"]
    for name in calls:
        writer.close(name, base + 10)
    # Space is back: a new call is written whole, by the same writer.
    disk.room = 10**9
    after = Call(30)
    writer.open("after", str(tmp_path), "after", "pcm16", 0.1)
    feed(writer, "after", after, 2, base)
    writer.close("after", base + 5)
    files = finalized(writer, conn)

    assert not conn.of("failed")
    assert files["before"].state == files["after"].state == "complete"
    np.testing.assert_array_equal(
        sf.read(files["before"].path, dtype="int16")[0], before.expected()
    )
    np.testing.assert_array_equal(sf.read(files["after"].path, dtype="int16")[0], after.expected())
    total = 0
    for name, call in calls.items():
        info = files[name]
        assert info.state == "truncated" and info.reason == "disk full", name
        audio, _ = sf.read(info.path, dtype="int16")
        assert len(audio) >= 2 * 8000  # the two seconds written before the disk filled
        np.testing.assert_array_equal(audio, call.expected()[: len(audio)])
        assert info.sha256 == sha256(info.path)
        total += len(audio)
    assert total <= (4 + 3) * 8000  # no more than the disk had room for
    for info in files.values():
        assert info.sha256 == sha256(info.path)
    assert not list(tmp_path.glob("*.part"))


def test_quota_exceeded_is_a_truncation_with_its_own_reason(tmp_path: Path) -> None:
    disk = PretendDisk(HEADER + SECOND, errno.EDQUOT)
    writer, conn = make_writer(disk)
    writer.open("q", str(tmp_path), "q", "ulaw", 0.1)
    feed(writer, "q", Call(40, right_pt=0), 3, time.monotonic() - 100)
    writer.close("q", time.monotonic())
    info = finalized(writer, conn)["q"]
    assert conn.of("full") == [("full", "q", "disk quota exceeded")]
    assert info.state == "truncated" and info.reason == "disk quota exceeded"
    assert info.format == "ulaw" and sf.info(str(info.path)).frames > 0
    assert info.sha256 == sha256(info.path)


def test_a_call_opened_on_a_full_disk_fails_and_says_full(tmp_path: Path) -> None:
    writer, conn = make_writer(PretendDisk(0))
    writer.open("late", str(tmp_path), "late", "pcm16", 0.1)
    assert conn.of("full") == [("full", "late", "disk full")]
    [(_, call_id, error)] = conn.of("failed")
    assert call_id == "late" and "No space left" in error
    assert "late" not in writer.calls and not list(tmp_path.iterdir())


def test_other_write_errors_still_interrupt_rather_than_truncate(tmp_path: Path) -> None:
    disk = PretendDisk(HEADER + SECOND, errno.EIO)
    writer, conn = make_writer(disk)
    writer.open("io", str(tmp_path), "io", "pcm16", 0.1)
    feed(writer, "io", Call(50), 3, time.monotonic() - 100)
    writer.close("io", time.monotonic())
    info = finalized(writer, conn)["io"]
    assert not conn.of("full")
    assert info.state == "interrupted" and info.reason is not None
    assert "write failed" in info.reason
    assert info.sha256 == sha256(info.path)


async def test_the_writer_process_and_client_on_a_disk_that_fills_and_empties(
    tmp_path: Path,
) -> None:
    flag = tmp_path / "disk-is-full"
    storage = tmp_path / "recordings"
    client = RecordingWriterClient(batch_interval=0.05, write=FlagDisk(flag))
    told: list[tuple[str, str]] = []
    client.on_disk_full = lambda call_id, reason: told.append((call_id, reason))
    await client.start()
    try:
        pid = client.pid
        first, second = Call(60), Call(61)
        one = client.open("one", directory=storage, stem="one")
        two = client.open("two", directory=storage, stem="two")
        await asyncio.wait_for(asyncio.gather(one.opened, two.opened), DEADLINE)
        base = time.monotonic() - 10.0
        for packet in first.packets(100, base):
            one.add(*packet)
        for packet in second.packets(100, base):
            two.add(*packet)
        parts = [storage / "one.wav.part", storage / "two.wav.part"]
        await wait_for(
            lambda: all(p.stat().st_size >= HEADER + 2 * SECOND for p in parts), "two seconds"
        )
        flag.touch()  # the disk fills
        for packet in first.packets(50, base + 2):
            one.add(*packet)
        for packet in second.packets(50, base + 2):
            two.add(*packet)
        await wait_for(lambda: len(told) == 2, "both calls told full")
        one_result, two_result = await asyncio.wait_for(
            asyncio.gather(one.close(time.monotonic()), two.close(time.monotonic())), DEADLINE
        )
        flag.unlink()  # room again: the same writer records the next call whole
        third = Call(62)
        three = client.open("three", directory=storage, stem="three")
        await asyncio.wait_for(three.opened, DEADLINE)
        for packet in third.packets(50, time.monotonic() - 2.0):
            three.add(*packet)
        three_result = await asyncio.wait_for(three.close(time.monotonic()), DEADLINE)
        assert client.pid == pid and client.restarts == 0
    finally:
        await client.aclose()

    assert sorted(told) == [("one", "disk full"), ("two", "disk full")]
    for result, call in ((one_result, first), (two_result, second)):
        assert result.truncated and not result.complete and result.error is None
        [info] = result.files
        assert info.state == "truncated" and info.reason == "disk full"
        audio, _ = sf.read(info.path, dtype="int16")
        assert len(audio) == 2 * 8000
        np.testing.assert_array_equal(audio, call.expected(0, 100))
        assert info.sha256 == sha256(info.path)
    assert three_result.complete
    np.testing.assert_array_equal(
        sf.read(three_result.files[0].path, dtype="int16")[0], third.expected()
    )
    stats = client.stats()
    assert stats["files_truncated"] == 2 and stats["recordings_truncated"] == 2
    assert stats["disk_full_events"] == 2 and stats["files_interrupted"] == 0
    assert stats["recordings_complete"] == 1


def test_a_call_is_written_once_a_write_interval_and_whole_at_its_close(
    tmp_path: Path,
) -> None:
    """Batches come every 160 ms; the call's file grows at most once per WRITE_INTERVAL
    (each write has a fixed cost, whatever it holds), and the file ends up exact."""
    disk = PretendDisk(10**9)
    sizes: list[int] = []

    def counting(fd: int, data: memoryview) -> int:
        written = disk(fd, data)
        sizes.append(written)
        return written

    conn = FakeConn()
    writer = _Writer(conn, finalizers=1, write=counting)  # type: ignore[arg-type]
    base = time.monotonic() - 100
    call = Call(40)
    writer.open("c", str(tmp_path), "c", "pcm16", 0.1)
    header_writes = len(sizes)
    batch = 0.16
    ticks = 40  # 6.4 s of audio, 8 packets per batch and party
    for k in range(ticks):
        packets = call.packets(8, base + k * batch)
        writer.tick(base + (k + 1) * batch + 0.1, {"c": records(packets)})
    audio_writes = len(sizes) - header_writes
    assert 5 <= audio_writes <= ticks * batch / WRITE_INTERVAL + 1, sizes
    writer.close("c", base + ticks * batch + 1)
    files = finalized(writer, conn)
    np.testing.assert_array_equal(sf.read(files["c"].path, dtype="int16")[0], call.expected())
