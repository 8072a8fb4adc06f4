"""De-identified copies of recordings kept for training (P5).

A recording kept for training must have everything that identifies the caller removed:
the operator names the spans where the caller says who they are (name, number, account,
address) and `deidentified_wav` returns a copy with those spans zeroed, on the caller's
channel (left: the external party) or on both, and with no metadata at all: the output is
a bare RIFF/WAVE of a format chunk and the samples (no LIST/INFO, no date, no title).
`month_name` names it with nothing finer than the month.

Pure: reads the source file given, returns bytes; no clock, no database.
"""

from __future__ import annotations

import io
import math
import re
import struct
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

Channels = Literal["left", "both"]

_TIME = r"\d+(?:\.\d*)?|\.\d+|\d+:[0-5]\d(?:\.\d*)?|\d+:[0-5]\d:[0-5]\d(?:\.\d*)?"
_RANGE = re.compile(rf"\s*({_TIME})\s*-\s*({_TIME})\s*")
_ALLOWED_CHUNKS = frozenset({b"fmt ", b"data"})
_ECHO_MAX = 40


def _check_range(label: str, start: float, end: float) -> None:
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"{label}: bounds must be finite numbers of seconds")
    if start < 0:
        raise ValueError(f"{label}: start is negative")
    if end <= start:
        raise ValueError(f"{label}: end must be after start")


def riff_chunks(wav: bytes) -> list[bytes]:
    """The chunk ids of a RIFF/WAVE file, in order (``[b"fmt ", b"data"]`` for a bare one)."""
    if len(wav) < 12 or wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    ids: list[bytes] = []
    pos = 12
    while pos + 8 <= len(wav):
        chunk_id = wav[pos : pos + 4]
        (size,) = struct.unpack_from("<I", wav, pos + 4)
        ids.append(chunk_id)
        pos += 8 + size + (size & 1)
    return ids


def deidentified_wav(
    source: Path,
    mute: Sequence[tuple[float, float]],
    *,
    channels: Channels = "left",
) -> bytes:
    """A PCM_16 WAV copy of the stereo recording ``source`` with the ``mute`` ranges (seconds,
    ``(start, end)``) zeroed on ``channels``: "left" (the external party, the default) or
    "both". Ranges may overlap; they are clamped to the file, widened to whole samples
    (start down, end up). The copy carries no metadata. Raises ValueError for a bad range
    (negative, not finite, end <= start) or a source that is not two channels.
    """
    if channels not in ("left", "both"):
        raise ValueError(f"channels must be 'left' or 'both', not {channels!r}")
    for number, (start, end) in enumerate(mute, start=1):
        _check_range(f"mute range {number} ({start}-{end})", float(start), float(end))
    data, rate = sf.read(source, dtype="int16", always_2d=True)
    if data.shape[1] != 2:
        raise ValueError(
            f"{source}: {data.shape[1]} channel(s), expected stereo (left caller, right agent)"
        )
    frames = data.shape[0]
    columns = slice(0, 1) if channels == "left" else slice(None)
    for start, end in mute:
        first = min(frames, math.floor(float(start) * rate))
        last = min(frames, math.ceil(float(end) * rate))
        data[first:last, columns] = 0
    out = io.BytesIO()
    sf.write(out, np.ascontiguousarray(data), rate, subtype="PCM_16", format="WAV")
    wav = out.getvalue()
    extra = [c for c in riff_chunks(wav) if c not in _ALLOWED_CHUNKS]
    if extra:  # never hand out metadata, whatever a libsndfile version adds
        raise RuntimeError(f"WAV writer added chunks {extra!r}: refusing to emit metadata")
    return wav


def _seconds(text: str) -> float:
    parts = text.split(":")
    seconds = float(parts[-1])
    for unit, part in zip((60, 3600), reversed(parts[:-1]), strict=False):
        seconds += unit * int(part)
    return seconds


def parse_ranges(text: str) -> list[tuple[float, float]]:
    """Mute ranges from a command line: ``"0-15,62.5-70"`` (seconds) or ``"0:00-0:15,1:02-1:10"``
    (m:ss, also h:mm:ss, fractions allowed). Raises ValueError naming the bad part."""
    if not text.strip():
        raise ValueError("no mute ranges given (expected e.g. 0-15,62.5-70 or 0:00-0:15)")
    ranges: list[tuple[float, float]] = []
    for number, part in enumerate(text.split(","), start=1):
        shown = part.strip()
        if len(shown) > _ECHO_MAX:
            shown = shown[:_ECHO_MAX] + "..."
        match = _RANGE.fullmatch(part)
        if match is None:
            raise ValueError(
                f"mute range {number} {shown!r}: expected START-END in seconds (62.5-70) "
                "or m:ss (1:02-1:10)"
            )
        start, end = _seconds(match[1]), _seconds(match[2])
        _check_range(f"mute range {number} {shown!r}", start, end)
        ranges.append((start, end))
    return ranges


def month_name(at: datetime, index: int) -> str:
    """A training file name with no date finer than the month: ``training_2026-12_007.wav``.

    ``at`` is taken as given (the caller passes it in the zone its policy uses)."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"index must be a non-negative integer, not {index!r}")
    return f"training_{at.year:04d}-{at.month:02d}_{index:03d}.wav"
