"""Starts and stops the recording of a consenting call, and catalogs its files.

The writer process (recorder.recording.writer) owns the files; this module decides
their directory and name from the policy (N1, N2), attaches the taps to the call's two
media legs (left = the external party, right = the agent side) and reports the outcome
to the call log with the policy's expiry (D1-D5).

Full disk (issue 20): it owns the `StorageSpace` of `storage.dir`. `storage_full()` is what
the controller asks before a call is recorded; the writer's `on_disk_full` (a recording the
disk stopped) marks the disk full at once. Each flip is logged once: `storage.full` (error),
`storage.recovered`; while full, the space is measured again every `RECHECK_SECONDS` so that
the recovery is seen (and the metrics say so) without waiting for a call. A file the disk
cut short is logged `recording.truncated` (warning) and catalogued `interrupted` with a
`recording.truncated` call event that gives the reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from recorder.call.b2bua import Call
from recorder.call.call_log import CallLog
from recorder.call.controller import CallState
from recorder.ops.logs import get_logger
from recorder.policy import Policy
from recorder.recording.naming import SUFFIX, day_directory, render_stem
from recorder.recording.space import SpaceChange, StorageSpace
from recorder.recording.tap import CallRecording, TappableLeg
from recorder.recording.writer import RecordingResult, RecordingWriterClient

log = get_logger("recorder.recording")

PLACEMENT_COUNTERS = (
    "left_span_ms",
    "right_span_ms",
    "late",
    "reanchors",
    "drift_corrections",
)

LegsOf = Callable[[Call], tuple[TappableLeg, TappableLeg] | None]  # (leg A, leg B)
RECHECK_SECONDS = 5.0  # while the disk is full, how often its free space is measured again


class ActiveRecording:
    """The controller's handle on one call's recording."""

    def __init__(self, owner: Recorder, call: Call, recording: CallRecording) -> None:
        self.owner = owner
        self.call = call
        self.recording = recording
        self.stopped = False
        self.discard = False

    def pause(self) -> None:
        self.recording.pause()

    def resume(self) -> None:
        self.recording.resume()

    def stop(self, now: float, *, discard: bool = False) -> None:
        """`discard`: the recording was refused mid-call (C5): what was written is destroyed."""
        if self.stopped:
            return
        self.stopped = True
        self.discard = discard
        future = self.recording.stop()
        future.add_done_callback(lambda done: self.owner.finished(self.call, done))


class Recorder:
    def __init__(
        self,
        client: RecordingWriterClient,
        call_log: CallLog | None,
        storage_dir: Path,
        policy: Callable[[], Policy],
        legs_of: LegsOf,
        wall_clock: Callable[[], datetime],
        *,
        space: StorageSpace | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.call_log = call_log
        self.storage_dir = storage_dir
        self.policy = policy
        self.legs_of = legs_of
        self.wall_clock = wall_clock
        self.space = space
        self.clock = clock
        self.arrivals: dict[str, datetime] = {}
        self.active: dict[str, ActiveRecording] = {}
        self._recheck: asyncio.TimerHandle | None = None
        if space is not None:
            client.on_disk_full = self.disk_full

    # ------------------------------------------------------------------ full disk
    def storage_full(self) -> str | None:
        """None while a new recording has room; else why not ("disk full", ...)."""
        space = self.space
        if space is None:
            return None
        self._space_changed(space.poll(self.clock()))
        return space.reason if space.full else None

    def disk_full(self, call_id: str, reason: str) -> None:
        """The writer found no room for `call_id`'s file (its `on_disk_full`)."""
        if self.space is not None:
            self._space_changed(self.space.report_full(self.clock(), reason), call_id)

    def _space_changed(self, change: SpaceChange | None, call_id: str | None = None) -> None:
        if change is None or self.space is None:
            return
        space = self.space
        if change.full:
            log.error(
                "storage.full",
                dir=str(space.directory),
                reason=change.reason,
                free_bytes=change.free_bytes,
                min_free_bytes=space.min_free_bytes,
                call_id=call_id,
            )
            self._schedule_recheck()
        else:
            log.warning(
                "storage.recovered",
                dir=str(space.directory),
                free_bytes=change.free_bytes,
                was=change.reason,
                full_seconds=None if change.full_seconds is None else round(change.full_seconds, 1),
            )

    def _schedule_recheck(self) -> None:
        if self._recheck is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a unit test): the next call measures again
        self._recheck = loop.call_later(RECHECK_SECONDS, self._on_recheck)

    def _on_recheck(self) -> None:
        self._recheck = None
        if self.space is None or not self.space.full:
            return
        self.storage_full()
        if self.space.full:
            self._schedule_recheck()

    def start(self, call: Call, state: CallState, now: float) -> ActiveRecording | None:
        legs = self.legs_of(call)
        if legs is None:
            return None
        leg_a, leg_b = legs
        external, agent = (leg_a, leg_b) if call.direction == "inbound" else (leg_b, leg_a)
        policy = self.policy()
        tz = policy.timezone
        extension = self._extension(call)
        directory = day_directory(self.storage_dir, state.arrived, tz=tz)
        stem = render_stem(
            policy.naming.template,
            arrival=state.arrived,
            agent=state.agent or policy.naming.unknown,
            extension=extension or policy.naming.unknown,
            call_id=call.id,
            tz=tz,
        )
        recording = CallRecording(
            self.client, call.id, external=external, agent=agent, directory=directory, stem=stem
        )
        # The row first, the file second (issue 20: a SIGKILL between the writer's claim and
        # the row left a file no row named): the taps hold the audio until the row is
        # written. The writer's first choice of name; it takes the next free one (-2...)
        # if that is taken, and `_opened` then corrects the row.
        intended = directory / f"{stem}{SUFFIX}"
        ready = None
        if self.call_log is not None:
            ready = self.call_log.recording_started(
                call.id,
                name=intended.name,
                path=str(intended),
                format="pcm16",
                at=self.wall_clock(),
            )
        opened = recording.start(ready)
        self.arrivals[call.id] = state.arrived
        active = ActiveRecording(self, call, recording)
        self.active[call.id] = active
        opened.add_done_callback(lambda done: self._opened(call, done, intended))
        log.info("recording.started", call_id=call.id, name=stem)
        return active

    def _extension(self, call: Call) -> str | None:
        if call.direction == "outbound":
            return call.a_invite.from_.uri.user
        answer = call.info.get("b_answer")
        if answer is not None:
            contacts = answer.contact
            if contacts and contacts[0].uri.user:
                return str(contacts[0].uri.user)
        return call.a_invite.uri.user

    def _destroy(self, call: Call, result: RecordingResult) -> None:
        for file in result.files:
            file.path.unlink(missing_ok=True)
        log.info("recording.destroyed", call_id=call.id, files=len(result.files), reason="refused")
        if self.call_log is not None:
            self.call_log.recording_destroyed(
                call.id, at=self.wall_clock(), reason="refused during the call (C5)"
            )

    def _opened(self, call: Call, done: asyncio.Future[Path | None], intended: Path) -> None:
        path = done.result() if not done.cancelled() and done.exception() is None else None
        if path is None:
            log.error("recording.open_failed", call_id=call.id)
            return
        if self.call_log is not None and path != intended:
            self.call_log.recording_opened(call.id, name=path.name, path=str(path))

    def finished(self, call: Call, done: asyncio.Future[RecordingResult]) -> None:
        active = self.active.pop(call.id, None)
        arrived = self.arrivals.pop(call.id, None)
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:
            log.error("recording.failed", call_id=call.id, error=type(error).__name__)
            return
        result = done.result()
        if active is not None and active.discard:
            self._destroy(call, result)
            return
        files: list[dict[str, Any]] = [
            {
                "path": str(f.path),
                "name": f.path.name,
                "sha256": f.sha256,
                "size": f.size,
                "duration": f.duration_s,
                "pauses": [list(p) for p in f.pauses],
                "state": f.state,
                "format": f.format,
                "reason": f.reason,
            }
            for f in result.files
        ]
        expires = None
        if arrived is not None:
            expires = self.policy().expiry("recordings", arrived)
        for info, f in zip(files, result.files, strict=True):
            # How the timeline placed the media: each party's span, and the
            # reanchors and late packets that say why a file is longer or has holes.
            placement = {k: f.stats[k] for k in PLACEMENT_COUNTERS if k in f.stats}
            log.info(
                "recording.finalized",
                call_id=call.id,
                name=info["name"],
                state=info["state"],
                duration=round(info["duration"], 3),
                sha256=info["sha256"][:16],
                dropped=result.dropped_packets,
                **placement,
            )
            if f.state == "truncated":
                # The call went on; its recording stopped where the disk did (kept, playable).
                log.warning(
                    "recording.truncated",
                    call_id=call.id,
                    name=info["name"],
                    reason=f.reason,
                    duration=round(info["duration"], 3),
                    size=info["size"],
                    sha256=info["sha256"][:16],
                )
                self.disk_full(call.id, f.reason or "disk full")
        if result.error:
            log.error("recording.incomplete", call_id=call.id, error=result.error)
        if self.call_log is not None:
            self.call_log.recording_done(
                call.id, at=self.wall_clock(), files=files, error=result.error, expires_at=expires
            )
