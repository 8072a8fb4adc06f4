"""`CallRecording`: what the service makes for one recorded call.

It hooks `on_packet` taps on the call's two media legs (left = the external
party's leg, right = the agent/extension side's), so packets are copied to
the writer only while the recording runs: not before `start`, not while
paused, not after `stop`. It swallows nothing: the relay forwards exactly as
before (DTMF swallowing is the service's business).

A leg that already has a tap (the consent listener) keeps it: ours is
chained after it, and on detach the previous tap is put back if nobody has
replaced ours meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from recorder.recording.writer import (
    PacketTap,
    RecordingFormat,
    RecordingHandle,
    RecordingResult,
    RecordingWriterClient,
)

LEFT = 0  # the external party
RIGHT = 1  # the agent / extension side


class TappableLeg(Protocol):
    """What a `MediaLeg` offers a recorder."""

    on_packet: PacketTap | None


class _Attachment:
    __slots__ = ("installed", "leg", "previous")

    def __init__(self, leg: TappableLeg, tap: PacketTap) -> None:
        self.leg = leg
        previous = leg.on_packet
        self.previous = previous
        if previous is None:
            installed = tap
        else:

            def installed(data: bytes, arrival: float) -> None:
                previous(data, arrival)
                tap(data, arrival)

        self.installed = installed
        leg.on_packet = installed

    def detach(self) -> None:
        if self.leg.on_packet is self.installed:
            self.leg.on_packet = self.previous


class CallRecording:
    """One call's recording: start, pause/resume, stop -> `RecordingResult`."""

    def __init__(
        self,
        client: RecordingWriterClient,
        call_id: str,
        *,
        external: TappableLeg,
        agent: TappableLeg,
        directory: Path,
        stem: str,
        format: RecordingFormat = "pcm16",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`directory` and `stem` come from `naming.day_directory` and `naming.render_stem`."""
        self.call_id = call_id
        self._client = client
        self._legs = ((external, LEFT), (agent, RIGHT))
        self._directory = directory
        self._stem = stem
        self._format: RecordingFormat = format
        self._clock = clock
        self._handle: RecordingHandle | None = None
        self._attachments: list[_Attachment] = []
        self.paused = False

    @property
    def started(self) -> bool:
        return self._handle is not None

    def start(self) -> asyncio.Future[Path | None]:
        """Open the file and tap both legs; resolves to the final path (None if it failed)."""
        if self._handle is None:
            self._handle = self._client.open(
                self.call_id, directory=self._directory, stem=self._stem, format=self._format
            )
            if not self.paused:
                self._attach()
        return self._handle.opened

    def pause(self, at: float | None = None) -> None:
        """Paused time becomes silence; no packet is copied meanwhile."""
        if self.paused or self._handle is None or self._handle.closing:
            return
        self.paused = True
        self._detach()
        self._handle.pause(self._clock() if at is None else at)

    def resume(self, at: float | None = None) -> None:
        if not self.paused or self._handle is None or self._handle.closing:
            return
        self.paused = False
        self._handle.resume(self._clock() if at is None else at)
        self._attach()

    def stop(self, at: float | None = None) -> asyncio.Future[RecordingResult]:
        """Detach, finish and finalize; resolves once the writer has renamed and hashed the file."""
        if self._handle is None:
            raise RuntimeError("recording was never started")
        self._detach()
        return self._handle.close(self._clock() if at is None else at)

    def _attach(self) -> None:
        assert self._handle is not None
        for leg, channel in self._legs:
            self._attachments.append(_Attachment(leg, self._handle.tap(channel)))

    def _detach(self) -> None:
        # Reverse order, so that chained taps unwind the way they were stacked.
        for attachment in reversed(self._attachments):
            attachment.detach()
        self._attachments.clear()

    @property
    def dropped_packets(self) -> int:
        return 0 if self._handle is None else self._handle.dropped
