"""Crash repair: turn every `NAME.wav.part` left by a dead writer into a playable `NAME.wav`.

The writer streams audio into the `.part` without touching the header (the
RIFF and data sizes are only right once libsndfile closes the file), so after
a `kill -9` the header says less than the file holds. Repair trusts the file,
not the header: the data chunk runs to the end of the file, cut down to whole
frames, and the RIFF, data and `fact` sizes are rewritten to match. Nothing
that reached the disk is lost.

Blocking file I/O throughout: the service runs `repair_all` before it starts
taking calls (or in an executor); the writer process uses `repair_part` for
the calls it inherits from a writer that died.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from recorder.recording.naming import FILE_MODE, PART_SUFFIX, SUFFIX, publish

_FORMAT_TAGS: Final = {1: "pcm16", 6: "alaw", 7: "ulaw"}
_EXTENSIBLE: Final = 0xFFFE
_HEADER_READ: Final = 4096


@dataclass(frozen=True, slots=True)
class WavLayout:
    format: str
    channels: int
    rate: int
    block_align: int
    data_offset: int  # first byte of audio
    fact_offset: int | None  # the fact chunk's sample count, when there is one


@dataclass(frozen=True, slots=True)
class RepairedRecording:
    """A recording recovered from a `.part`: catalog it as `interrupted`."""

    path: Path
    part: Path
    sha256: str
    size: int
    duration_s: float
    frames: int
    format: str


@dataclass(frozen=True, slots=True)
class RepairReport:
    repaired: list[RepairedRecording]
    errors: list[tuple[Path, str]]  # left in place, for a human


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def parse_layout(head: bytes) -> WavLayout:
    """Chunks of a WAV header up to the start of the data; ValueError if it is not one."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    fact_offset = None
    while pos + 8 <= len(head):
        chunk_id = head[pos : pos + 4]
        (size,) = struct.unpack_from("<I", head, pos + 4)
        body = pos + 8
        if chunk_id == b"data":
            if fmt is None:
                raise ValueError("data chunk before fmt chunk")
            tag, channels, rate, block_align = fmt
            if tag not in _FORMAT_TAGS or channels < 1 or block_align < 1 or rate < 1:
                raise ValueError(f"unsupported WAV format tag {tag:#x}")
            return WavLayout(_FORMAT_TAGS[tag], channels, rate, block_align, body, fact_offset)
        if chunk_id == b"fmt ":
            if body + 16 > len(head):
                break
            tag, channels, rate, _, block_align = struct.unpack_from("<HHIIH", head, body)
            if tag == _EXTENSIBLE and size >= 40 and body + 26 <= len(head):
                (tag,) = struct.unpack_from("<H", head, body + 24)
            fmt = (tag, channels, rate, block_align)
        elif chunk_id == b"fact" and size >= 4:
            fact_offset = body
        pos = body + size + (size & 1)
    raise ValueError("WAV header incomplete: no data chunk")


def fix_header(path: Path) -> tuple[WavLayout, int]:
    """Rewrite the sizes of the WAV at `path` to the whole frames it holds.

    Returns the layout and the number of frames.
    """
    with open(path, "r+b") as f:
        head = f.read(_HEADER_READ)
        layout = parse_layout(head)
        length = os.fstat(f.fileno()).st_size
        data = max(0, length - layout.data_offset)
        data -= data % layout.block_align
        f.truncate(layout.data_offset + data)
        f.seek(4)
        f.write(struct.pack("<I", layout.data_offset + data - 8))
        f.seek(layout.data_offset - 4)
        f.write(struct.pack("<I", data))
        frames = data // layout.block_align
        if layout.fact_offset is not None:
            f.seek(layout.fact_offset)
            f.write(struct.pack("<I", frames))
        f.flush()
        os.fsync(f.fileno())
    return layout, frames


def _write_empty_header(path: Path) -> None:
    # A writer killed between creating the file and libsndfile's first header
    # write leaves fewer bytes than a header: there is no audio to save, but
    # an empty WAV keeps the call's catalog entry pointing at a real file.
    header = b"RIFF" + struct.pack("<I", 36) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 2, 8000, 8000 * 4, 4, 16)
    header += b"data" + struct.pack("<I", 0)
    with open(path, "wb") as f:
        f.write(header)
        f.flush()
        os.fsync(f.fileno())


def repair_part(part: Path, final: Path | None = None) -> RepairedRecording:
    """Fix `part`'s header, give it its final name (collision-safe), hash it."""
    try:
        layout, frames = fix_header(part)
    except ValueError:
        if part.stat().st_size >= 44:
            raise
        _write_empty_header(part)
        layout, frames = fix_header(part)
    os.chmod(part, FILE_MODE)
    path = publish(part, final)
    size = path.stat().st_size
    return RepairedRecording(
        path=path,
        part=part,
        sha256=file_sha256(path),
        size=size,
        duration_s=frames / layout.rate,
        frames=frames,
        format=layout.format,
    )


def describe_published(path: Path) -> RepairedRecording:
    """What a final file holds, read without changing it.

    For a file the writer had closed and renamed into place when the service died, before
    the catalog heard of it: its header is right (libsndfile closed it), so only the sizes
    are read; OSError or ValueError if it is not there or not a WAV.
    """
    with open(path, "rb") as f:
        head = f.read(_HEADER_READ)
        length = os.fstat(f.fileno()).st_size
    layout = parse_layout(head)
    (declared,) = struct.unpack_from("<I", head, layout.data_offset - 4)
    frames = min(declared, max(0, length - layout.data_offset)) // layout.block_align
    return RepairedRecording(
        path=path,
        part=path,
        sha256=file_sha256(path),
        size=length,
        duration_s=frames / layout.rate,
        frames=frames,
        format=layout.format,
    )


def find_parts(storage_dir: Path) -> list[Path]:
    return sorted(p for p in storage_dir.rglob(f"*{SUFFIX}{PART_SUFFIX}") if p.is_file())


def repair_all(storage_dir: Path) -> RepairReport:
    """Repair every `.part` under `storage_dir`; run before any writer is started."""
    repaired: list[RepairedRecording] = []
    errors: list[tuple[Path, str]] = []
    if not storage_dir.exists():
        return RepairReport(repaired, errors)
    for part in find_parts(storage_dir):
        try:
            repaired.append(repair_part(part))
        except (OSError, ValueError) as exc:
            errors.append((part, f"{type(exc).__name__}: {exc}"))
    return RepairReport(repaired, errors)
