"""`CallRecording`: what the service makes for one recorded call.

It hooks `on_packet` taps on the call's two media legs (left = the external
party's leg, right = the agent/extension side's), so packets are copied to
the writer only while the recording runs: not before `start`, not while
paused, not after `stop`. It swallows nothing: the relay forwards exactly as
before (DTMF swallowing is the service's business).

A leg that already has a tap (the consent listener) keeps it: ours is
chained after it, and on detach the previous tap is put back if nobody has
replaced ours meanwhile.

`start(ready=...)` defers the file: the taps hold packets (and pauses) from
`start` on, and the writer is asked to open the file only once `ready` is
done (the catalog row that names it is written: a crash must never leave a
file without a row, issue 20), or after `HOLD_SECONDS` whatever happens.
What was held is then handed to the writer with its arrival times, so the
recording still begins at `start`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol

from recorder.recording.writer import (
    PacketTap,
    RecordingFormat,
    RecordingHandle,
    RecordingResult,
    RecordingWriterClient,
)

LEFT = 0  # the external party
RIGHT = 1  # the agent / extension side
HOLD_SECONDS: Final = 2.0  # the longest a file waits for its `ready` (the catalog may be slow)


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
        fence: Callable[[], asyncio.Future[None] | None] | None = None,
    ) -> None:
        """`directory` and `stem` come from `naming.day_directory` and `naming.render_stem`.

        `fence`: for legs relayed in a media worker, a future that resolves once every packet
        the worker received until now has reached the taps; `stop` waits for it, so the
        file ends where the call did rather than where the last batch of packets did."""
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
        # While the file waits for `ready`: what the taps got, and what start/stop promised.
        self._held: list[tuple[int, bytes, float] | tuple[str, float]] | None = None
        self._opened: asyncio.Future[Path | None] | None = None
        self._stop_at: float | None = None
        self._stopped: asyncio.Future[RecordingResult] | None = None
        self._fence = fence
        self._fenced: asyncio.Future[RecordingResult] | None = None  # stop waiting for `fence`

    @property
    def started(self) -> bool:
        return self._handle is not None

    def start(self, ready: asyncio.Future[Any] | None = None) -> asyncio.Future[Path | None]:
        """Tap both legs and open the file (once `ready` is done, if given); resolves to the
        final path (None if it failed)."""
        if self._handle is not None:
            return self._handle.opened
        if self._opened is not None:
            return self._opened
        if ready is None or ready.done():
            self._open()
            assert self._handle is not None
            return self._handle.opened
        loop = ready.get_loop()
        self._opened = loop.create_future()
        self._held = []
        if not self.paused:
            self._attach()
        ready.add_done_callback(lambda _done: self._open())
        loop.call_later(HOLD_SECONDS, self._open)
        return self._opened

    def _open(self) -> None:
        if self._handle is not None:
            return
        self._detach()  # the holding taps, if any
        handle = self._client.open(
            self.call_id, directory=self._directory, stem=self._stem, format=self._format
        )
        self._handle = handle
        for item in self._held or ():
            if len(item) == 3:
                handle.add(*item)
            elif item[0] == "pause":
                handle.pause(item[1])
            else:
                handle.resume(item[1])
        self._held = None
        if self._opened is not None:
            _chain(handle.opened, self._opened)
        if self._stopped is not None:
            assert self._stop_at is not None
            _chain(handle.close(self._stop_at), self._stopped)
        elif not self.paused:
            self._attach()

    def pause(self, at: float | None = None) -> None:
        """Paused time becomes silence; no packet is copied meanwhile."""
        if self.paused or self._closing:
            return
        when = self._clock() if at is None else at
        if self._handle is None:
            if self._held is None:
                return
            self._held.append(("pause", when))
            self.paused = True
            self._detach()
            return
        self.paused = True
        self._detach()
        self._handle.pause(when)

    def resume(self, at: float | None = None) -> None:
        if not self.paused or self._closing:
            return
        when = self._clock() if at is None else at
        if self._handle is None:
            if self._held is None:
                return
            self._held.append(("resume", when))
            self.paused = False
            self._attach()
            return
        self.paused = False
        self._handle.resume(when)
        self._attach()

    def stop(self, at: float | None = None) -> asyncio.Future[RecordingResult]:
        """Detach, finish and finalize; resolves once the writer has renamed and hashed the file."""
        if self._handle is None:
            if self._opened is None:
                raise RuntimeError("recording was never started")
            # Still waiting for `ready`: the file is opened then, and closed at once.
            if self._stopped is None:
                self._detach()
                self._stop_at = self._clock() if at is None else at
                self._stopped = self._opened.get_loop().create_future()
            return self._stopped
        if self._fenced is not None:
            return self._fenced
        when = self._clock() if at is None else at
        fence = self._fence() if self._fence is not None and not self._handle.closing else None
        if fence is None or fence.done():
            self._detach()
            return self._handle.close(when)
        handle = self._handle
        fenced: asyncio.Future[RecordingResult] = fence.get_loop().create_future()
        self._fenced = fenced

        def close(_done: asyncio.Future[None]) -> None:
            self._detach()
            _chain(handle.close(when), fenced)

        fence.add_done_callback(close)
        return fenced

    @property
    def _closing(self) -> bool:
        if self._handle is None:
            return self._stopped is not None
        return self._handle.closing or self._fenced is not None

    def _attach(self) -> None:
        if self._handle is None:
            held = self._held
            assert held is not None
            for leg, channel in self._legs:
                self._attachments.append(_Attachment(leg, _holding(held, channel)))
            return
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


def _holding(held: list[tuple[int, bytes, float] | tuple[str, float]], channel: int) -> PacketTap:
    def on_packet(data: bytes, arrival: float) -> None:
        held.append((channel, bytes(data), arrival))

    return on_packet


def _chain(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    """`target` gets `source`'s outcome."""

    def copy(done: asyncio.Future[Any]) -> None:
        if target.done():
            return
        if done.cancelled():
            target.cancel()
        elif (error := done.exception()) is not None:
            target.set_exception(error)
        else:
            target.set_result(done.result())

    source.add_done_callback(copy)
