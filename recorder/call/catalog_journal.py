"""The catalog journal (issue 20): the call log's writes while the catalog is unavailable.

A call-log write that fails because the catalog cannot be reached (PostgreSQL down, SQLite
locked past its busy timeout) goes to an append-only local file, and so does every write
after it, so that their order is kept; each line is fsynced before its write counts as
done. When the catalog answers again, a replay applies the entries in order, each in one
transaction with its mark (`storage.models.JournalMark`), so that an entry goes in exactly
once, also when the service dies between a commit and the line's removal.

Plain file I/O, used from the catalog's worker thread only (recorder.call.call_log).
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

_AT = "$at"  # datetimes travel as {"$at": ISO 8601}


class JournalError(RuntimeError):
    """The journal cannot be used: the service must not take calls (its writes would have
    nowhere safe to wait). The message names the file, never its content."""


def lock_journal(path: Path) -> int:
    """Hold `path`'s lock file for the life of the process: one journal, one service. Two
    services on one journal (a shared disk, two nodes with the same `storage.journal`) would
    interleave their lines and replay each other's entries."""
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalError(
            f"catalog journal {path} is in use by another recorder service; "
            "give each service its own storage.journal"
        ) from None
    return fd


def catalog_unavailable(error: BaseException) -> bool:
    """The catalog cannot be reached right now (retry later), as opposed to a write it
    refuses (a bug, or a row that is not there): only the first kind is journaled."""
    if isinstance(error, OperationalError | InterfaceError):
        return True
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


@dataclass(frozen=True, slots=True)
class Entry:
    """One call-log write: `op` on our call `call`, with the catalog rows known when it was
    made (None: an earlier entry of the journal creates them)."""

    seq: int
    op: str
    call: str
    args: dict[str, Any]
    call_row: int | None = None
    recording_row: int | None = None

    def line(self) -> str:
        return _dumps(
            {
                "seq": self.seq,
                "op": self.op,
                "call": self.call,
                "args": self.args,
                "call_row": self.call_row,
                "recording_row": self.recording_row,
            }
        )


class Journal:
    """The file `path` and the entries in it that are not applied yet, oldest first.

    The file starts with a header line naming the journal (a fresh id each time a journal
    starts, so that the marks of two outages never mix); it is removed once empty.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.id: str | None = None
        self.pending: deque[Entry] = deque()
        self.torn = 0  # lines lost to a crash in the middle of writing them
        self._next_seq = 1
        self._file: TextIO | None = None

    @classmethod
    def load(cls, path: Path) -> Journal:
        journal = cls(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return journal
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        elif lines:
            # The last line has no newline: the service died while writing it, before its
            # fsync, so its write never counted as done.
            lines.pop()
            journal.torn += 1
        if not lines:
            path.unlink(missing_ok=True)
            return journal
        header = _loads(lines[0])
        journal.id = str(header["journal"])
        for raw in lines[1:]:
            item = _loads(raw)
            entry = Entry(
                seq=int(item["seq"]),
                op=str(item["op"]),
                call=str(item["call"]),
                args=dict(item["args"]),
                call_row=item.get("call_row"),
                recording_row=item.get("recording_row"),
            )
            journal.pending.append(entry)
            journal._next_seq = entry.seq + 1
        # Rewritten whole, so that a torn last line is gone before anything is appended.
        journal._rewrite()
        return journal

    def __len__(self) -> int:
        return len(self.pending)

    def append(
        self,
        op: str,
        call: str,
        args: dict[str, Any],
        *,
        call_row: int | None,
        recording_row: int | None,
    ) -> Entry:
        """Write one entry and fsync it; raises OSError if the disk will not take it."""
        entry = Entry(self._next_seq, op, call, args, call_row, recording_row)
        stream = self._open()
        stream.write(entry.line() + "\n")
        stream.flush()
        os.fsync(stream.fileno())
        self._next_seq += 1
        self.pending.append(entry)
        return entry

    def skip_applied(self, applied: Iterable[int]) -> list[Entry]:
        """Drop the entries a replay had applied before a crash; returns them, oldest first."""
        marked = set(applied)
        done = [entry for entry in self.pending if entry.seq in marked]
        if done:
            self.pending = deque(entry for entry in self.pending if entry.seq not in marked)
            self._settle()
        return done

    def applied(self, entry: Entry) -> None:
        """`entry` (the oldest) is in the catalog, with its mark."""
        assert self.pending and self.pending[0] is entry
        self.pending.popleft()
        self._settle()

    def set_aside(self, entry: Entry, reason: str) -> None:
        """An entry the catalog refuses for good: kept beside the journal, never retried."""
        assert self.pending and self.pending[0] is entry
        rejected = self.path.with_name(self.path.name + ".rejected")
        with open(rejected, "a", encoding="utf-8") as stream:
            stream.write(_dumps({"journal": self.id, "reason": reason}) + " " + entry.line() + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        self.pending.popleft()
        self._settle()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.pending)

    def _settle(self) -> None:
        if not self.pending:
            # Everything is in the catalog: the next outage starts a journal of its own.
            self.close()
            self.path.unlink(missing_ok=True)
            _sync_directory(self.path.parent)
            self.id = None
            self._next_seq = 1

    def _open(self) -> TextIO:
        if self._file is not None:
            return self._file
        if self.id is None:
            self.id = uuid.uuid4().hex
            self._next_seq = 1
            self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            # The journal holds numbers, like the catalog: readable by the service only.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
            stream = os.fdopen(fd, "a", encoding="utf-8")
            stream.write(_dumps({"journal": self.id, "created": datetime.now(UTC)}) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
            _sync_directory(self.path.parent)
            self._file = stream
            return stream
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        return self._file

    def _rewrite(self) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(_dumps({"journal": self.id}) + "\n")
            for entry in self.pending:
                stream.write(entry.line() + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, self.path)
        _sync_directory(self.path.parent)
        if not self.pending:
            self._settle()


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return {_AT: value.isoformat()}
    raise TypeError(f"not journal data: {type(value).__name__}")


def _hook(item: dict[str, Any]) -> Any:
    if len(item) == 1 and _AT in item:
        return datetime.fromisoformat(item[_AT])
    return item


def _dumps(item: object) -> str:
    return json.dumps(item, default=_default, ensure_ascii=False, separators=(",", ":"))


def _loads(line: str) -> Any:
    return json.loads(line, object_hook=_hook)
