"""The row before the file: `CallRecording.start(ready)` and the recording glue (issue 20).

Found by tests/interop/test_kill_loop.py: a SIGKILL a few ms after `recording.started` came
after the writer had claimed `NAME.wav.part` but before the catalog had the row that names
it. The next start repaired the `.part` into a `.wav` that no row named: a recording the
catalog did not know (never listed, never purged). Now the row is written first; the taps
hold the audio meanwhile, so the recording still begins when it started.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from recorder.call.recording_glue import Recorder
from recorder.recording import tap as tap_module
from recorder.recording.tap import CallRecording
from recorder.recording.writer import PacketTap, RecordingWriterClient
from tests.recording.test_writer import DEADLINE, Call
from tests.retention.conftest import make_policy


class FakeLeg:
    def __init__(self) -> None:
        self.on_packet: PacketTap | None = None


@pytest.fixture
async def client() -> AsyncIterator[RecordingWriterClient]:
    client = RecordingWriterClient(batch_interval=0.05)
    await client.start()
    yield client
    await client.aclose()


def feed(legs: tuple[FakeLeg, FakeLeg], packets: list[tuple[int, bytes, float]]) -> None:
    for channel, packet, arrival in packets:
        tap = legs[channel].on_packet
        assert tap is not None
        tap(packet, arrival)


async def test_the_file_waits_for_ready_and_keeps_what_the_taps_got_meanwhile(
    tmp_path: Path, client: RecordingWriterClient
) -> None:
    legs = (FakeLeg(), FakeLeg())
    now = [time.monotonic() - 10.0]
    recording = CallRecording(
        client, "c1", external=legs[0], agent=legs[1], directory=tmp_path, stem="r",
        clock=lambda: now[0],
    )  # fmt: skip
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    opened = recording.start(ready)
    call = Call(11)
    packets = call.packets(150, now[0])
    feed(legs, packets[:120])  # held: no file yet
    now[0] = packets[120][2]
    recording.pause()  # paused while held: silence from here...
    await asyncio.sleep(0.2)
    assert list(tmp_path.iterdir()) == [] and not opened.done()
    ready.set_result(None)
    assert await asyncio.wait_for(opened, DEADLINE) == tmp_path / "r.wav"
    now[0] = packets[200][2]
    recording.resume()  # ...to here
    feed(legs, packets[200:])
    result = await asyncio.wait_for(recording.stop(), DEADLINE)
    [info] = result.files
    [(start, end)] = info.pauses
    assert start == pytest.approx(1.2, abs=0.001) and end == pytest.approx(2.0, abs=0.001)
    audio = sf.read(info.path, dtype="int16")[0]
    expected = call.expected()
    expected[9600:16000] = 0
    np.testing.assert_array_equal(audio, expected)


async def test_a_recording_stopped_before_ready_is_opened_then_closed(
    tmp_path: Path, client: RecordingWriterClient
) -> None:
    legs = (FakeLeg(), FakeLeg())
    recording = CallRecording(
        client, "c2", external=legs[0], agent=legs[1], directory=tmp_path, stem="short"
    )
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    recording.start(ready)
    call = Call(12)
    feed(legs, call.packets(50, time.monotonic() - 5.0))
    stopped = recording.stop()
    assert legs[0].on_packet is None and legs[1].on_packet is None
    ready.set_exception(RuntimeError("the catalog said no"))  # recorded all the same
    result = await asyncio.wait_for(stopped, DEADLINE)
    [info] = result.files
    np.testing.assert_array_equal(sf.read(info.path, dtype="int16")[0], call.expected())


async def test_the_file_opens_after_the_hold_even_if_ready_never_comes(
    tmp_path: Path, client: RecordingWriterClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tap_module, "HOLD_SECONDS", 0.1)
    legs = (FakeLeg(), FakeLeg())
    recording = CallRecording(
        client, "c3", external=legs[0], agent=legs[1], directory=tmp_path, stem="slow"
    )
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    assert await asyncio.wait_for(recording.start(never), DEADLINE) == tmp_path / "slow.wav"
    await asyncio.wait_for(recording.stop(), DEADLINE)


class OrderedCallLog:
    """Says whether the file existed when the row was asked for, and holds the row back."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.rows: list[dict[str, Any]] = []
        self.renamed: list[dict[str, Any]] = []
        self.written: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def recording_started(self, call_id: str, **fields: Any) -> asyncio.Future[None]:
        self.rows.append(fields | {"files_then": sorted(self.directory.rglob("*.wav*"))})
        return self.written

    def recording_opened(self, call_id: str, **fields: Any) -> None:
        self.renamed.append(fields)


async def test_the_recording_row_is_written_before_the_file_exists(
    tmp_path: Path, client: RecordingWriterClient
) -> None:
    policy = make_policy()
    log = OrderedCallLog(tmp_path)
    legs = (FakeLeg(), FakeLeg())
    arrived = datetime(2026, 11, 23, 15, 42, tzinfo=UTC)
    recorder = Recorder(
        client,
        log,  # type: ignore[arg-type]
        tmp_path,
        lambda: policy,
        lambda call: legs,  # type: ignore[arg-type,return-value]
        lambda: arrived,
    )
    uri = SimpleNamespace(user="235")
    call = SimpleNamespace(
        id="call-9", direction="inbound", info={}, a_invite=SimpleNamespace(uri=uri)
    )
    state = SimpleNamespace(arrived=arrived, agent="4711")
    # A file of the same name already there: the writer takes the next one, and says so.
    day = tmp_path / "2026" / "11" / "23"
    active = recorder.start(call, state, 0.0)  # type: ignore[arg-type]
    assert active is not None
    [row] = log.rows
    intended = Path(row["path"])
    assert intended.parent == day and row["files_then"] == []
    day.mkdir(parents=True)
    intended.write_bytes(b"an earlier recording of the same minute")
    await asyncio.sleep(0.2)
    assert sorted(p.name for p in day.iterdir()) == [intended.name]  # no .part before the row
    log.written.set_result(None)
    deadline = time.monotonic() + DEADLINE
    while not log.renamed:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    stem = intended.name.removesuffix(".wav")
    assert log.renamed == [{"name": f"{stem}-2.wav", "path": str(day / f"{stem}-2.wav")}]
    active.recording.stop()
    recorder.active.clear()
