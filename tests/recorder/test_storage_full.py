"""A call to record while storage is full (issue 20), the controller and B2BUA driven by hand.

`[storage] when_full = "reject"`: 503 with Retry-After, nothing connects. "connect_unrecorded":
the call is served, without notice and without recording. Either way the call log says why
(`recording.skipped`). The Recorder's side: `storage.full` / `storage.recovered` said once,
a truncated file logged and the disk marked full.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from recorder.call.controller import STORAGE_FULL_RETRY_AFTER, CallController
from recorder.call.recording_glue import Recorder
from recorder.policy import Policy, load_policy
from recorder.recording.space import BELOW_MINIMUM, MIB, StorageSpace
from recorder.recording.writer import RecordingFile, RecordingResult, RecordingWriterClient

from .test_b2bua import Harness, invite, sdp
from .test_config import GOOD

POLICY = """
[policy]
name = "TEST"

[recording]
directions = ["inbound"]
extensions = "all"
mode = "automatic"

[notice]
play = {play}
prompts = {{ en = "notice.wav" }}
default_language = "en"

[naming]
template = "{{date}}_{{time}}_ext-{{extension}}"

[retention]
recordings = "8 days"
"""


@dataclass
class FakeCallLog:
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    ended_reasons: list[str] = field(default_factory=list)

    def opened(self, call_id: str, **fields: Any) -> None:
        pass

    def event(
        self, call_id: str, name: str, at: datetime, detail: dict[str, Any] | None = None
    ) -> None:
        self.events.append((call_id, name, dict(detail or {})))

    def answered(self, call_id: str, **fields: Any) -> None:
        pass

    def consent(self, call_id: str, **fields: Any) -> None:
        pass

    def ended(self, call_id: str, *, at: datetime, reason: str, media: Any) -> None:
        self.ended_reasons.append(reason)


class FakeRecording:
    def stop(self, now: float, *, discard: bool = False) -> None:
        pass

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass


def load(tmp_path: Path, *, notice: bool) -> Policy:
    (tmp_path / "notice.wav").write_bytes(b"RIFF")  # only its existence matters here
    path = tmp_path / "policy.toml"
    path.write_text(GOOD + POLICY.format(play="true" if notice else "false"))
    return load_policy(path)


class Setup:
    def __init__(self, tmp_path: Path, when_full: str, *, notice: bool = False) -> None:
        self.full: str | None = None
        self.recorded: list[str] = []
        self.call_log = FakeCallLog()
        self.h = Harness()

        def factory(call: Any, state: Any, now: float) -> FakeRecording:
            self.recorded.append(call.id)
            return FakeRecording()

        self.controller = CallController(
            load(tmp_path, notice=notice),
            policy_dir=tmp_path,
            media_of=lambda call: None,
            recording_factory=factory,
            call_log=self.call_log,  # type: ignore[arg-type]
            storage_full=lambda: self.full,
            when_full=when_full,
        )
        self.controller.b2bua = self.h.b2bua
        self.h.b2bua.hooks = self.controller

    def skipped(self) -> list[dict[str, Any]]:
        return [detail for _, name, detail in self.call_log.events if name == "recording.skipped"]


def test_with_room_the_call_is_recorded(tmp_path: Path) -> None:
    s = Setup(tmp_path, "reject")
    s.h.receive(s.h.external, invite())
    s.h.answer_b(200, sdp=sdp("127.0.0.1", 16000))
    assert len(s.recorded) == 1 and s.skipped() == []


def test_reject_answers_503_with_retry_after_and_connects_nothing(tmp_path: Path) -> None:
    s = Setup(tmp_path, "reject")
    s.full = "disk full"
    with structlog.testing.capture_logs() as logs:
        key = s.h.receive(s.h.external, invite())
    assert key is not None
    assert s.h.ext_port.statuses(key) == [100, 503]
    final = s.h.ext_port.responses[-1][1]
    assert final.headers.get("Retry-After") == str(STORAGE_FULL_RETRY_AFTER)
    assert s.h.int_port.requests == []  # the PBX never hears of it
    assert s.h.media[0].closed and not s.h.b2bua.calls and not s.controller.states
    assert s.recorded == []
    assert s.controller.counters["storage_rejected"] == 1
    assert s.skipped() == [{"reason": "disk full", "when_full": "reject", "status": 503}]
    assert s.call_log.ended_reasons == ["storage full: disk full"]
    [refused] = [e for e in logs if e["event"] == "call.refused_storage_full"]
    assert refused["log_level"] == "warning" and refused["status"] == 503


def test_connect_unrecorded_serves_the_call_without_notice_nor_recording(
    tmp_path: Path,
) -> None:
    s = Setup(tmp_path, "connect_unrecorded", notice=True)
    s.full = BELOW_MINIMUM
    with structlog.testing.capture_logs() as logs:
        key = s.h.receive(s.h.external, invite())
    assert key is not None
    # Not answered locally for a notice: the PBX is called at once.
    assert s.h.ext_port.statuses(key) == [100]
    s.h.b_invite()  # sent
    s.h.answer_b(200, sdp=sdp("127.0.0.1", 16000))
    assert s.h.ext_port.statuses(key) == [100, 200]
    assert s.recorded == []
    assert s.controller.counters["storage_unrecorded"] == 1
    assert s.skipped() == [{"reason": BELOW_MINIMUM, "when_full": "connect_unrecorded"}]
    [skipped] = [e for e in logs if e["event"] == "recording.skipped"]
    assert skipped["log_level"] == "warning" and skipped["reason"] == BELOW_MINIMUM
    # An agent's on-demand start is refused with the reason.
    [state] = s.controller.states.values()
    assert state.recording_skipped == BELOW_MINIMUM
    with pytest.raises(Exception, match="storage was full"):
        s.controller.start_recording(state.call.id, "tester")  # type: ignore[arg-type]


def test_with_room_and_a_notice_the_caller_is_answered_for_it(tmp_path: Path) -> None:
    s = Setup(tmp_path, "connect_unrecorded", notice=True)
    s.h.b2bua.hooks = None  # the notice itself needs media: the plan says enough
    s.h.receive(s.h.external, invite())
    [call] = s.h.b2bua.calls.values()
    assert s.controller.plan(call, s.h.now).answer_first
    assert s.skipped() == []


def test_disk_filling_before_the_answer_leaves_the_call_connected_unrecorded(
    tmp_path: Path,
) -> None:
    s = Setup(tmp_path, "reject")  # too late to refuse: the call goes on
    key = s.h.receive(s.h.external, invite())
    s.full = "disk full"
    s.h.answer_b(200, sdp=sdp("127.0.0.1", 16000))
    assert key is not None and s.h.ext_port.statuses(key) == [100, 200]
    assert s.recorded == []
    assert s.skipped() == [{"reason": "disk full", "when_full": "connect_unrecorded"}]


# --------------------------------------------------------------------------- the Recorder


class FakeVfs:
    def __init__(self, free: int) -> None:
        self.free = free

    def __call__(self, path: Path) -> Any:
        import os

        return os.statvfs_result((4096, 4096, 1000, 0, self.free // 4096, 0, 0, 0, 0, 255))


@dataclass
class FakeCall:
    id: str = "c1"
    info: dict[str, Any] = field(default_factory=dict)


async def test_recorder_says_full_and_recovered_once_each(tmp_path: Path) -> None:
    vfs = FakeVfs(100 * MIB)
    clock = [0.0]
    space = StorageSpace(tmp_path, min_free_bytes=64 * MIB, statvfs=vfs)
    client = RecordingWriterClient(loop=asyncio.get_running_loop())
    recorder = Recorder(
        client,
        None,
        tmp_path,
        lambda: load(tmp_path, notice=False),
        lambda call: None,
        lambda: datetime.now(UTC),
        space=space,
        clock=lambda: clock[0],
    )
    assert client.on_disk_full == recorder.disk_full
    with structlog.testing.capture_logs() as logs:
        assert recorder.storage_full() is None
        vfs.free = 1 * MIB
        clock[0] = 2.0
        assert recorder.storage_full() == BELOW_MINIMUM
        clock[0] = 4.0
        assert recorder.storage_full() == BELOW_MINIMUM
        client.on_disk_full("c9", "disk full")  # the writer, too: already said
        vfs.free = 100 * MIB
        clock[0] = 6.0
        assert recorder.storage_full() is None
        # The writer finds no room: full at once, whatever the last measure said.
        vfs.free = 0
        client.on_disk_full("c2", "disk full")
        assert recorder.storage_full() == "disk full"
    names = [(e["event"], e.get("reason") or e.get("was")) for e in logs]
    assert names == [
        ("storage.full", BELOW_MINIMUM),
        ("storage.recovered", BELOW_MINIMUM),
        ("storage.full", "disk full"),
    ]
    full = [e for e in logs if e["event"] == "storage.full"]
    assert all(e["log_level"] == "error" for e in full) and full[1]["call_id"] == "c2"
    assert space.became_full == 2
    if recorder._recheck is not None:
        recorder._recheck.cancel()


async def test_recorder_logs_a_truncated_file_and_marks_the_disk_full(tmp_path: Path) -> None:
    space = StorageSpace(tmp_path, min_free_bytes=0, statvfs=FakeVfs(0))
    client = RecordingWriterClient(loop=asyncio.get_running_loop())
    recorder = Recorder(
        client,
        None,
        tmp_path,
        lambda: load(tmp_path, notice=False),
        lambda call: None,
        lambda: datetime.now(UTC),
        space=space,
    )
    info = RecordingFile(
        path=tmp_path / "x.wav",
        sha256="ab" * 32,
        size=1044,
        duration_s=0.125,
        format="pcm16",
        state="truncated",
        reason="disk full",
    )
    done: asyncio.Future[RecordingResult] = asyncio.get_running_loop().create_future()
    done.set_result(RecordingResult("c1", (info,), None, 0))
    with structlog.testing.capture_logs() as logs:
        recorder.finished(FakeCall(), done)  # type: ignore[arg-type]
    events = [e["event"] for e in logs]
    assert events == ["recording.finalized", "recording.truncated", "storage.full"]
    truncated = logs[1]
    assert truncated["log_level"] == "warning" and truncated["call_id"] == "c1"
    assert truncated["reason"] == "disk full" and truncated["name"] == "x.wav"
    assert logs[0]["state"] == "truncated"
    assert space.full and space.reason == "disk full"
    if recorder._recheck is not None:
        recorder._recheck.cancel()
