"""The recording writer: a separate process that turns RTP batches into WAV files.

Why a process (DESIGN.md measurements): a writer *thread* holding the GIL for
its numpy and libsndfile batches added 130-210 ms of event-loop lag p99 at
1000 calls; a process fed by a pipe cost ~1.5 ms. So the event loop only
appends each packet, behind an 11-byte record header (channel, arrival,
length), to a per-call bytearray (the relay's tap), and every
`batch_interval` pickles all calls' buffers into one frame written to a
non-blocking socket. Bytearrays rather than lists of tuples because pickling
15,000 tuples took 7.6 ms of loop time per batch at 500 calls, where
copying 500 byte buffers is a memcpy. Decoding, placement (`StereoTimeline`),
naming, file writes, fsync and SHA-256 all happen in the writer process.

Back-pressure: the loop never blocks on the pipe. Frames that the socket does
not take at once wait in a queue watched by `loop.add_writer`; once the queue
holds `max_buffer_bytes`, further packet batches are dropped and counted per
call (control messages are tiny and always queued). A slow disk thus costs
audio, never RTP latency.

Files: `NAME.wav.part` is claimed with O_EXCL, mode 0640, in a 0750 day
directory (see `naming`), written by libsndfile as each batch comes (it keeps
no user-space buffer, so what it wrote survives the writer's death), closed,
fsynced, then linked to its final name (never replacing a file) and hashed.
libsndfile writes through `_Sink` (its virtual I/O) rather than the bare
descriptor: its own descriptor I/O reports a failed write as "System error",
where the sink keeps the `OSError`, so that a full disk is told apart.

Full disk (ENOSPC, EDQUOT): that call's recording stops where the disk
stopped it, and nothing else does. What was written stays; the writer tells
the client at once (`full`), and at the call's close the `.part` gets a header
that matches what it holds (`repair.fix_header`), is fsynced, published and
hashed like any file, and reported `truncated` with the reason. Every other
call meets the full disk on its own next write, and is handled the same way;
the writer serves on (a call opened once there is room again is written).

Writer death (crash, OOM kill): the client sees EOF on the pipe, starts a new
writer, has it repair each open call's `.part` into a final file reported as
`interrupted` (what was written is kept), and re-opens each call under the
next free name (`NAME-2.wav`), so the rest of the call is recorded too. A call
whose writer died therefore ends with several files. Packets still queued for
the dead writer are lost and counted. After `restart_limit` deaths within
`restart_window` seconds the client gives up and fails the open calls.

Wire format: multiprocessing's `Connection` framing (4-byte big-endian length,
then a pickle), so the process side can use `recv_bytes`/`send_bytes` while
the loop side does its own non-blocking I/O on the same socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import multiprocessing
import os
import pickle
import signal
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import soundfile as sf

from recorder.recording.naming import claim, publish
from recorder.recording.repair import file_sha256, repair_part
from recorder.recording.timeline import CLOCK_RATE, RECORD, StereoTimeline

RecordingFormat = Literal["pcm16", "ulaw", "alaw"]
# truncated: the disk filled mid-call; the file holds the call up to then, and plays.
RecordingState = Literal["complete", "interrupted", "truncated"]
PacketTap = Callable[[bytes, float], None]
WriteFn = Callable[[int, memoryview], int]  # os.write's signature; tests pass a failing one


FORMATS: Final[dict[str, str]] = {"pcm16": "PCM_16", "ulaw": "ULAW", "alaw": "ALAW"}
_FRAME_HEADER: Final = struct.Struct("!i")
_READ_SIZE: Final = 1 << 16
DISK_FULL: Final = "disk full"
# A call's placed audio goes to its file at most this often. Each write has a fixed cost
# (numpy placement, libsndfile, the syscall) whatever it holds: written every batch
# (150 ms), that was half of the writer's CPU (bench/bench_writer.py, 250 calls: 0.28 ->
# 0.14 core). A writer killed outright loses what it held: up to this much more audio.
# The first write comes once the timeline has audio; a full disk is met at a write.
WRITE_INTERVAL: Final = 1.0
# Errors that mean "no room", as opposed to a broken disk: the file is truncated, not failed.
_NO_ROOM: Final = {errno.ENOSPC: DISK_FULL, errno.EDQUOT: "disk quota exceeded"}


def no_room_reason(error: BaseException | None) -> str | None:
    """Why `error` means no room left ("disk full", "disk quota exceeded"), else None."""
    if isinstance(error, OSError) and error.errno is not None:
        return _NO_ROOM.get(error.errno)
    return None


@dataclass(frozen=True, slots=True)
class RecordingFile:
    """One finished file of a call (normally the only one)."""

    path: Path
    sha256: str
    size: int
    duration_s: float
    format: str
    state: RecordingState
    # Paused intervals, seconds from the start of this file.
    pauses: tuple[tuple[float, float], ...] = ()
    stats: dict[str, int] = field(default_factory=dict)
    reason: str | None = None  # why the file is interrupted or truncated


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """What `close` resolves to: the call's files, and what went wrong, if anything."""

    call_id: str
    files: tuple[RecordingFile, ...]
    error: str | None
    dropped_packets: int  # lost to back-pressure or to a writer's death

    @property
    def complete(self) -> bool:
        return self.error is None and all(f.state == "complete" for f in self.files)

    @property
    def truncated(self) -> bool:
        """A file of the call was cut short by a full disk."""
        return any(f.state == "truncated" for f in self.files)


# --- process side -----------------------------------------------------------


class _Sink:
    """The file object libsndfile writes a `.part` through (soundfile's virtual I/O).

    Writes go to the descriptor with `write` (os.write), whole or as far as the
    disk takes them; the first `OSError` is kept in `error` and the short count
    returned, which libsndfile and soundfile report as a failed write.
    """

    __slots__ = ("_write", "error", "fd")

    def __init__(self, fd: int, write: WriteFn = os.write) -> None:
        self.fd = fd
        self._write = write
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        done = 0
        while done < len(view):
            try:
                written = self._write(self.fd, view[done:])
            except InterruptedError:
                continue
            except OSError as exc:
                if self.error is None:
                    self.error = exc
                break
            if written <= 0:
                break
            done += written
        return done

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self.fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_CUR)

    def read(self, size: int) -> bytes:  # soundfile asks for it; never used in write mode
        return os.read(self.fd, size)


class _Call:
    __slots__ = (
        "error",
        "fd",
        "file",
        "final",
        "format",
        "part",
        "sink",
        "timeline",
        "truncated",
        "written_at",
    )

    def __init__(
        self, sink: _Sink, part: Path, final: Path, fmt: str, timeline: StereoTimeline
    ) -> None:
        self.sink = sink
        self.fd = sink.fd
        self.part = part
        self.final = final
        self.format = fmt
        self.timeline = timeline
        self.error: str | None = None
        self.truncated: str | None = None  # why the disk stopped this file ("disk full")
        self.written_at = float("-inf")  # the batch time of its last write
        self.file: sf.SoundFile | None = sf.SoundFile(
            sink, "w", CLOCK_RATE, 2, FORMATS[fmt], format="WAV"
        )

    def write(self, block: np.ndarray[Any, Any]) -> None:
        if not len(block) or self.file is None:
            return
        failure: BaseException | None = None
        try:
            self.file.write(block)
        # soundfile raises RuntimeError on libsndfile errors, AssertionError on a short write.
        except (OSError, RuntimeError, AssertionError) as exc:
            failure = exc
        if self.sink.error is not None or failure is not None:
            self._failed(self.sink.error or failure)

    def _failed(self, error: BaseException | None) -> None:
        """No more writes to this file: a full disk truncates it, anything else breaks it."""
        reason = no_room_reason(error)
        if reason is not None:
            self.truncated = self.truncated or reason
        else:
            self.error = self.error or f"write failed: {error}"
        self._abandon()

    def _abandon(self) -> None:
        if self.file is not None:
            with contextlib.suppress(Exception):
                self.file.close()
            self.file = None

    def close_file(self) -> None:
        """Close libsndfile (it rewrites the header), fsync, close the descriptor."""
        try:
            if self.file is not None:
                self.file.close()
                self.file = None
                if self.sink.error is not None and self.truncated is None and self.error is None:
                    self._failed(self.sink.error)
            os.fsync(self.fd)
        finally:
            os.close(self.fd)


class _Writer:
    """The process's state: open calls by id, and the pipe to answer on."""

    def __init__(self, conn: Connection, finalizers: int = 4, write: WriteFn = os.write) -> None:
        self.conn = conn
        self.write = write
        self.calls: dict[str, _Call] = {}
        # Closing a call costs two fsyncs (~25 ms on a virtual disk) and a
        # read-back for the SHA-256; done inline, 100 calls ending together
        # would stall every other call's writes for seconds. Threads are fine
        # here: this process has no event loop whose latency they could hurt.
        self.pool = ThreadPoolExecutor(finalizers, thread_name_prefix="finalize")
        self._send_lock = threading.Lock()

    def reply(self, *message: object) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self._send_lock:
            self.conn.send_bytes(data)

    def handle(self, message: tuple[Any, ...]) -> bool:
        kind = message[0]
        if kind == "tick":
            self.tick(message[1], message[2])
        elif kind == "open":
            self.open(*message[1:])
        elif kind == "pause" or kind == "resume":
            call = self.calls.get(message[1])
            if call is not None:
                getattr(call.timeline, kind)(message[2])
        elif kind == "close":
            self.close(message[1], message[2])
        elif kind == "recover":
            self.recover(message[1], Path(message[2]), Path(message[3]))
        elif kind == "stop":
            self.abandon_all()
            self.reply("stopped")
            return False
        return True

    def open(self, call_id: str, directory: str, stem: str, fmt: str, jitter: float) -> None:
        try:
            fd, part, final = claim(Path(directory), stem)
        except (OSError, ValueError) as exc:
            self._no_room(call_id, exc)
            self.reply("failed", call_id, f"cannot create file: {exc}")
            return
        sink = _Sink(fd, self.write)
        call: _Call | None = None
        try:
            call = _Call(sink, part, final, fmt, StereoTimeline(jitter_window=jitter))
            if sink.error is not None:  # libsndfile does not fail on a header it could not write
                raise sink.error
        except Exception as exc:
            if call is not None:
                call._abandon()
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(part)
            self._no_room(call_id, sink.error)
            self.reply("failed", call_id, f"cannot open writer: {sink.error or exc}")
            return
        self.calls[call_id] = call
        self.reply("opened", call_id, str(part), str(final))

    def _no_room(self, call_id: str, error: BaseException | None) -> None:
        reason = no_room_reason(error)
        if reason is not None:
            self.reply("full", call_id, reason)

    def _write(self, call_id: str, call: _Call, block: np.ndarray[Any, Any]) -> None:
        """Write `block`; the first time the disk refuses, say so at once (`full`)."""
        already = call.truncated
        call.write(block)
        if call.truncated is not None and already is None:
            self.reply("full", call_id, call.truncated)

    def tick(self, now: float, batch: dict[str, bytes]) -> None:
        calls = self.calls
        for call_id, raw in batch.items():
            call = calls.get(call_id)
            if call is None or call.file is None:
                continue
            call.timeline.add_records(raw)
        for call_id, call in calls.items():
            # Calls opened at different times write at different ticks: no burst.
            if call.file is not None and now - call.written_at >= WRITE_INTERVAL:
                block = call.timeline.flush(now)
                if len(block):
                    call.written_at = now
                    self._write(call_id, call, block)

    def close(self, call_id: str, at: float) -> None:
        call = self.calls.pop(call_id, None)
        if call is None:
            self.reply("failed", call_id, "not open in this writer")
            return
        self._write(call_id, call, call.timeline.finish(at))
        self.pool.submit(self._finalize, call_id, call)

    def _finalize(self, call_id: str, call: _Call) -> None:
        try:
            self._finalize_or_raise(call_id, call)
        except Exception as exc:  # an answer must come, or the call's close never resolves
            self.reply("failed", call_id, f"finalize failed: {type(exc).__name__}: {exc}")

    def _finalize_or_raise(self, call_id: str, call: _Call) -> None:
        timeline = call.timeline
        try:
            call.close_file()
        except OSError as exc:
            # fsync can be where a full disk shows (delayed allocation): fsynced what could be.
            reason = no_room_reason(exc)
            if reason is not None:
                call.truncated = call.truncated or reason
            else:
                call.error = call.error or f"close failed: {exc}"
        if call.error is not None:
            # What did reach the disk is still worth keeping.
            self.recover(call_id, call.part, call.final, reason=call.error)
            return
        if call.truncated is not None:
            self._truncated(call_id, call, call.truncated)
            return
        try:
            path = publish(call.part, call.final)
            info = RecordingFile(
                path=path,
                sha256=file_sha256(path),
                size=path.stat().st_size,
                duration_s=timeline.duration,
                format=call.format,
                state="complete",
                pauses=tuple(timeline.pauses()),
                stats=_stats(timeline),
            )
        except OSError as exc:
            self.reply("failed", call_id, f"finalize failed: {exc}")
            return
        self.reply("finalized", call_id, info)

    def _truncated(self, call_id: str, call: _Call, reason: str) -> None:
        """The disk filled: keep what it took, with a header that says so, hashed as it is."""
        try:
            repaired = repair_part(call.part, call.final)
        except (OSError, ValueError) as exc:
            self.reply("failed", call_id, f"{reason}; finalizing {call.part} failed: {exc}")
            return
        timeline = call.timeline
        end = repaired.duration_s
        info = RecordingFile(
            path=repaired.path,
            sha256=repaired.sha256,
            size=repaired.size,
            duration_s=end,
            format=repaired.format,
            state="truncated",
            pauses=tuple((a, min(b, end)) for a, b in timeline.pauses() if a < end),
            stats=_stats(timeline),
            reason=reason,
        )
        self.reply("finalized", call_id, info)

    def recover(self, call_id: str, part: Path, final: Path, reason: str | None = None) -> None:
        if not part.exists() and final.exists() and reason is None:
            # The dead writer had closed and published it: complete, only unannounced.
            self._announce_published(call_id, final)
            return
        try:
            repaired = repair_part(part, final)
        except (OSError, ValueError) as exc:
            self.reply("failed", call_id, f"repair of {part} failed: {exc}")
            return
        info = RecordingFile(
            path=repaired.path,
            sha256=repaired.sha256,
            size=repaired.size,
            duration_s=repaired.duration_s,
            format=repaired.format,
            state="interrupted",
            reason=reason or "writer process died",
        )
        self.reply("finalized", call_id, info)

    def _announce_published(self, call_id: str, final: Path) -> None:
        try:
            with sf.SoundFile(final) as f:
                duration, subtype = f.frames / f.samplerate, f.subtype
            info = RecordingFile(
                path=final,
                sha256=file_sha256(final),
                size=final.stat().st_size,
                duration_s=duration,
                format={v: k for k, v in FORMATS.items()}.get(subtype, subtype.lower()),
                state="complete",
                reason="finalized by a writer that then died; pauses not known",
            )
        except (OSError, RuntimeError) as exc:
            self.reply("failed", call_id, f"cannot read {final}: {exc}")
            return
        self.reply("finalized", call_id, info)

    def abandon_all(self) -> None:
        """Put what is held into the `.part`s and leave them for start-up repair.

        Used when the service is gone (EOF) or stops with calls open: nobody
        is left to catalog a final file, and a `.part` is what repair catalogs
        as interrupted.
        """
        for call in self.calls.values():
            call.write(call.timeline.finish(time.monotonic()))
            with contextlib.suppress(OSError):
                call.close_file()  # a truncated .part is repaired at start-up like any other
        self.calls.clear()
        self.pool.shutdown(wait=True)  # calls already closing still finish


def _stats(timeline: StereoTimeline) -> dict[str, int]:
    s = timeline.stats
    left, right = timeline.channel_spans()
    return {
        "left_span_ms": round(left * 1000),
        "right_span_ms": round(right * 1000),
        "packets": s.packets,
        "late": s.late,
        "skipped_non_audio": s.skipped_non_audio,
        "dropped_paused": s.dropped_paused,
        "malformed": s.malformed,
        "reanchors": s.reanchors,
        "drift_corrections": s.drift_corrections,
    }


def writer_main(conn: Connection, write: WriteFn = os.write) -> None:
    """Entry point of the writer process (`write`: how file bytes are written; for tests)."""
    # The service owns shutdown: Ctrl-C or systemd's SIGTERM to the process
    # group must not cut files short; the writer ends when its pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    writer = _Writer(conn, write=write)
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            writer.abandon_all()
            return
        if not writer.handle(pickle.loads(raw)):
            return


# --- event-loop side --------------------------------------------------------


class RecordingHandle:
    """The loop side of one call being recorded; made by `RecordingWriterClient.open`."""

    def __init__(
        self, client: RecordingWriterClient, call_id: str, directory: Path, stem: str, fmt: str
    ) -> None:
        self.call_id = call_id
        self.directory = directory
        self.stem = stem
        self.format = fmt
        self.buffer = bytearray()  # RECORD + packet, for each packet since the last batch
        self.count = 0  # packets in `buffer`, for drop accounting
        self.part: Path | None = None
        self.final: Path | None = None  # final name of the file being written now
        self.files: list[RecordingFile] = []
        self.error: str | None = None
        self.dropped = 0
        self.closing = False
        self.active = True  # False once the writer could not open a file for it, or the disk filled
        self.truncated: str | None = None  # the writer's "full": why its file stopped growing
        self.awaiting = 0  # finalized/failed answers still due from the writer
        self._client = client
        loop = client.loop
        # Resolves to the final path of the first file, or None if it could not be opened.
        self.opened: asyncio.Future[Path | None] = loop.create_future()
        self.result: asyncio.Future[RecordingResult] = loop.create_future()

    def tap(self, channel: int) -> PacketTap:
        """A `MediaLeg.on_packet` callable for `channel` (0 = external party, 1 = agent side)."""
        # Runs for every recorded packet: `+=` on the bytearray (in place; `_discard` clears
        # it, never replaces it) is cheaper than two `extend` method calls.
        buffer = self.buffer
        pack = RECORD.pack

        def on_packet(data: bytes, arrival: float) -> None:
            nonlocal buffer
            buffer += pack(channel, arrival, len(data))
            buffer += data
            self.count += 1

        # A media worker packs the records itself (`recorder.media.workers`): they go in whole.
        on_packet.record_channel = channel  # type: ignore[attr-defined]
        on_packet.append_records = self._append_records  # type: ignore[attr-defined]
        return on_packet

    def _append_records(self, records: memoryview, count: int) -> None:
        self.buffer += records
        self.count += count

    def add(self, channel: int, data: bytes, arrival: float) -> None:
        """Same as calling `tap(channel)`; for tests and tools."""
        self.buffer += RECORD.pack(channel, arrival, len(data))
        self.buffer += data
        self.count += 1

    def _discard(self) -> None:
        self.buffer.clear()
        self.count = 0

    def pause(self, at: float) -> None:
        self._client._control(self, "pause", at)

    def resume(self, at: float) -> None:
        self._client._control(self, "resume", at)

    def close(self, at: float) -> asyncio.Future[RecordingResult]:
        """Finish the file(s) with what arrived until `at`; idempotent."""
        if not self.closing:
            self.closing = True
            self._client._close(self, at)
        return self.result


class RecordingWriterClient:
    """Owns the writer process and the pipe to it; one per service."""

    def __init__(
        self,
        *,
        batch_interval: float = 0.15,
        max_buffer_bytes: int = 32 << 20,
        jitter_window: float = 0.1,
        restart_limit: int = 5,
        restart_window: float = 60.0,
        mp_context: str = "spawn",
        loop: asyncio.AbstractEventLoop | None = None,
        write: WriteFn | None = None,
    ) -> None:
        """`write`: a picklable stand-in for os.write in the writer process (tests: a full
        disk on demand)."""
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.batch_interval = batch_interval
        self.max_buffer_bytes = max_buffer_bytes
        self.jitter_window = jitter_window
        self.restart_limit = restart_limit
        self.restart_window = restart_window
        # A SpawnContext or ForkServerContext: both start a fresh interpreter,
        # which inherits neither the loop's threads nor its sockets.
        self._context: Any = multiprocessing.get_context(mp_context)
        self._write = write
        self._handles: dict[str, RecordingHandle] = {}
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._fd = -1
        # Frames not yet taken by the socket, each with the packet counts it carries.
        self._out: deque[tuple[memoryview, dict[str, int] | None]] = deque()
        self._out_offset = 0
        self._out_bytes = 0
        self._writing = False
        self._inbuf = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._deaths: deque[float] = deque()
        self._stopped: asyncio.Future[None] | None = None
        self.closed = False
        self.failed: str | None = None
        # Called (call id, reason) the moment the writer finds no room left for a call's file.
        self.on_disk_full: Callable[[str, str], None] | None = None
        # Counters for the service's stats.
        self.bytes_sent = 0
        self.dropped_packets = 0
        self.dropped_batches = 0
        self.restarts = 0
        self.max_buffered_bytes = 0
        self.recordings_complete = 0
        self.recordings_failed = 0
        self.files_complete = 0
        self.files_interrupted = 0
        self.files_truncated = 0
        self.recordings_truncated = 0
        self.disk_full_events = 0  # `full` answers: calls whose file the disk stopped
        self.bytes_written = 0

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        self._spawn()

    def _spawn(self) -> None:
        parent, child = self._context.Pipe(duplex=True)
        args = (child,) if self._write is None else (child, self._write)
        process = self._context.Process(
            target=writer_main, args=args, name="recorder-writer", daemon=True
        )
        process.start()
        child.close()  # so that the writer's death reads as EOF here
        self._process = process
        self._conn = parent
        self._fd = parent.fileno()
        os.set_blocking(self._fd, False)
        self._inbuf.clear()
        self.loop.add_reader(self._fd, self._on_readable)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop the writer once queued frames are written; open calls are left as `.part`."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._conn is not None:
            self._stopped = self.loop.create_future()
            self._send(("stop",))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._stopped), timeout)
        self._detach()
        process = self._process
        if process is not None:
            await self.loop.run_in_executor(None, process.join, timeout)
            if process.is_alive():
                process.kill()
                await self.loop.run_in_executor(None, process.join)
            self._process = None
        for handle in list(self._handles.values()):
            self._fail(handle, "writer stopped")

    def _detach(self) -> None:
        if self._conn is None:
            return
        self.loop.remove_reader(self._fd)
        if self._writing:
            self.loop.remove_writer(self._fd)
            self._writing = False
        self._conn.close()
        self._conn = None
        self._fd = -1

    # --- calls ------------------------------------------------------------

    def open(
        self, call_id: str, *, directory: Path, stem: str, format: RecordingFormat = "pcm16"
    ) -> RecordingHandle:
        """Start recording a call into `directory/stem.wav` (or the next free name)."""
        if format not in FORMATS:
            raise ValueError(f"unknown recording format {format!r}")
        if call_id in self._handles:
            raise ValueError(f"call {call_id!r} is already being recorded")
        handle = RecordingHandle(self, call_id, directory, stem, format)
        if self.closed or self.failed is not None:
            self._fail(handle, self.failed or "writer stopped")
            return handle
        self._handles[call_id] = handle
        self._send_open(handle)
        if self._timer is None:
            self._timer = self.loop.call_later(self.batch_interval, self._on_timer)
        return handle

    def _send_open(self, handle: RecordingHandle) -> None:
        self._send(
            ("open", handle.call_id, str(handle.directory), handle.stem, handle.format,
             self.jitter_window)
        )  # fmt: skip

    def _control(self, handle: RecordingHandle, kind: str, at: float) -> None:
        if handle.closing or self._handles.get(handle.call_id) is not handle:
            return
        self._send((kind, handle.call_id, at))

    def _close(self, handle: RecordingHandle, at: float) -> None:
        if self._handles.get(handle.call_id) is not handle:
            return
        self._send_batch()  # the call's last packets go before its close
        handle.awaiting += 1
        self._send(("close", handle.call_id, at))

    def _on_timer(self) -> None:
        self._timer = None
        self._send_batch()
        if self._handles and not self.closed:
            self._timer = self.loop.call_later(self.batch_interval, self._on_timer)

    def _send_batch(self) -> None:
        now = time.monotonic()
        batch: dict[str, bytearray] = {}
        counts: dict[str, int] = {}
        handles = list(self._handles.values())
        for handle in handles:
            if handle.count and handle.active:
                batch[handle.call_id] = handle.buffer
                counts[handle.call_id] = handle.count
        # An empty batch still moves every call's commit horizon forward.
        self._send(("tick", now, batch), counts)
        for handle in handles:
            if handle.count:
                handle._discard()

    # --- pipe output ----------------------------------------------------------

    def _send(self, message: tuple[Any, ...], counts: dict[str, int] | None = None) -> None:
        if self._conn is None:
            if counts:
                self._count_dropped(counts)
            return
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        size = 4 + len(payload)
        if counts is not None and self._out_bytes + size > self.max_buffer_bytes:
            self.dropped_batches += 1
            self._count_dropped(counts)
            return
        # Header and payload queued apart: joining them would copy megabytes.
        self._out.append((memoryview(_FRAME_HEADER.pack(len(payload))), None))
        self._out.append((memoryview(payload), counts))
        self._out_bytes += size
        if self._out_bytes > self.max_buffered_bytes:
            self.max_buffered_bytes = self._out_bytes
        if not self._writing:
            self._write_out()

    def _count_dropped(self, counts: dict[str, int]) -> None:
        for call_id, count in counts.items():
            self.dropped_packets += count
            handle = self._handles.get(call_id)
            if handle is not None:
                handle.dropped += count

    def _write_out(self) -> None:
        out = self._out
        while out:
            frame = out[0][0]
            try:
                sent = os.write(self._fd, frame[self._out_offset :])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._on_writer_died()
                return
            self.bytes_sent += sent
            self._out_offset += sent
            if self._out_offset < len(frame):
                break
            out.popleft()
            self._out_bytes -= len(frame)
            self._out_offset = 0
        if out and not self._writing:
            self.loop.add_writer(self._fd, self._write_out)
            self._writing = True
        elif not out and self._writing:
            self.loop.remove_writer(self._fd)
            self._writing = False

    # --- pipe input -------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, _READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._on_writer_died()
            return
        buf = self._inbuf
        buf += data
        while len(buf) >= 4:
            (size,) = _FRAME_HEADER.unpack_from(buf)
            if len(buf) < 4 + size:
                break
            message = pickle.loads(bytes(buf[4 : 4 + size]))
            del buf[: 4 + size]
            self._on_message(message)

    def _on_message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "stopped":
            if self._stopped is not None and not self._stopped.done():
                self._stopped.set_result(None)
            return
        handle = self._handles.get(message[1])
        if handle is None:
            return
        if kind == "opened":
            handle.part = Path(message[2])
            handle.final = Path(message[3])
            if not handle.opened.done():
                handle.opened.set_result(handle.final)
        elif kind == "full":
            # The disk took no more of this call's file: stop shipping its packets (its close
            # still finalizes what was written, as truncated).
            reason: str = message[2]
            self.disk_full_events += 1
            handle.truncated = handle.truncated or reason
            handle.active = False
            handle._discard()
            if self.on_disk_full is not None:
                self.on_disk_full(handle.call_id, reason)
        elif kind == "finalized":
            info: RecordingFile = message[2]
            handle.files.append(info)
            if info.state == "complete":
                self.files_complete += 1
            elif info.state == "truncated":
                self.files_truncated += 1
            else:
                self.files_interrupted += 1
            self.bytes_written += info.size
            self._answered(handle)
        elif kind == "failed":
            error: str = message[2]
            handle.error = handle.error or error
            if not handle.opened.done():
                handle.opened.set_result(None)
            if handle.awaiting:
                self._answered(handle)
            elif not handle.closing:
                # Nothing open in the writer for this call: stop shipping its packets.
                handle.active = False
                handle.part = None
                handle._discard()

    def _answered(self, handle: RecordingHandle) -> None:
        handle.awaiting = max(0, handle.awaiting - 1)
        if handle.closing and handle.awaiting == 0:
            self._resolve(handle)

    def _resolve(self, handle: RecordingHandle) -> None:
        if self._handles.get(handle.call_id) is handle:
            del self._handles[handle.call_id]
        if not handle.opened.done():
            handle.opened.set_result(None)
        if not handle.result.done():
            result = RecordingResult(
                handle.call_id, tuple(handle.files), handle.error, handle.dropped
            )
            if result.complete:
                self.recordings_complete += 1
            else:
                self.recordings_failed += 1
            if result.truncated:
                self.recordings_truncated += 1
            handle.result.set_result(result)

    def _fail(self, handle: RecordingHandle, reason: str) -> None:
        handle.error = handle.error or reason
        handle.closing = True
        handle._discard()
        self._resolve(handle)

    # --- writer death -----------------------------------------------------

    def _on_writer_died(self) -> None:
        process = self._process
        self._detach()
        for _, counts in self._out:
            if counts:
                self._count_dropped(counts)
        self._out.clear()
        self._out_bytes = 0
        self._out_offset = 0
        if process is not None:
            # Reaping takes a moment; not on the loop.
            self.loop.run_in_executor(None, process.join)
            self._process = None
        if self.closed:
            if self._stopped is not None and not self._stopped.done():
                self._stopped.set_result(None)
            return
        now = time.monotonic()
        self._deaths.append(now)
        while self._deaths and self._deaths[0] < now - self.restart_window:
            self._deaths.popleft()
        if len(self._deaths) > self.restart_limit:
            self.failed = f"writer process died {len(self._deaths)} times in {self.restart_window}s"
            for handle in list(self._handles.values()):
                self._fail(handle, self.failed)
            return
        self.restarts += 1
        self._spawn()
        for handle in list(self._handles.values()):
            # Answers due from the dead writer will never come; recovery replaces them.
            handle.awaiting = 0
            if handle.part is not None and handle.final is not None:
                handle.awaiting += 1
                self._send(("recover", handle.call_id, str(handle.part), str(handle.final)))
                handle.part = None
            if handle.closing:
                if handle.awaiting == 0:
                    self._resolve(handle)
            elif handle.active:
                self._send_open(handle)

    def stats(self) -> dict[str, int]:
        return {
            "calls": len(self._handles),
            "bytes_sent": self.bytes_sent,
            "buffered_bytes": self._out_bytes,
            "max_buffered_bytes": self.max_buffered_bytes,
            "dropped_packets": self.dropped_packets,
            "dropped_batches": self.dropped_batches,
            "restarts": self.restarts,
            "recordings_complete": self.recordings_complete,
            "recordings_failed": self.recordings_failed,
            "files_complete": self.files_complete,
            "files_interrupted": self.files_interrupted,
            "files_truncated": self.files_truncated,
            "recordings_truncated": self.recordings_truncated,
            "disk_full_events": self.disk_full_events,
            "bytes_written": self.bytes_written,
        }
