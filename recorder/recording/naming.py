"""Recording file names (N1, N2): template rendering, day directories, collision-safe claims.

`render_stem` and `day_directory` are pure. `claim` and `publish` touch the
disk and run in the writer process (or at start-up repair), never on the
event loop. A name is never reused: a final name or a `.part` that exists
makes the next candidate `NAME-2`, `NAME-3`, ...; a final file is made with
`os.link`, which fails rather than replace, so nothing is ever overwritten.
"""

from __future__ import annotations

import os
import re
import string
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Final

DIR_MODE: Final = 0o750
FILE_MODE: Final = 0o640
SUFFIX: Final = ".wav"
PART_SUFFIX: Final = ".part"
FIELDS: Final = frozenset({"date", "time", "agent", "extension", "call_id"})
MAX_STEM: Final = 200
MAX_ATTEMPTS: Final = 10_000

_UNSAFE = re.compile(r"[^A-Za-z0-9._+@-]+")


def sanitize(value: str | None) -> str:
    """A template field value that cannot name another directory: no separators, no `..`."""
    if not value:
        return "unknown"
    cleaned = _UNSAFE.sub("_", value)
    cleaned = re.sub(r"\.{2,}", "_", cleaned)
    cleaned = re.sub(r"_{2,}", "_", cleaned).strip("._")
    return cleaned[:64] or "unknown"


def check_template(template: str) -> None:
    """Raise ValueError for an unknown template field, a format spec or a path separator."""
    if not template:
        raise ValueError("empty file name template")
    for literal, field, spec, conversion in string.Formatter().parse(template):
        if "/" in literal or "\\" in literal or "\x00" in literal:
            raise ValueError(f"file name template may not contain a path separator: {template!r}")
        if field is None:
            continue
        if field not in FIELDS:
            raise ValueError(
                f"unknown template field {{{field}}} in {template!r}; known: {sorted(FIELDS)}"
            )
        if spec or conversion:
            raise ValueError(f"template field {{{field}}} takes no format spec in {template!r}")


def _local(arrival: datetime, tz: tzinfo | None) -> datetime:
    if arrival.tzinfo is None or arrival.utcoffset() is None:
        raise ValueError("arrival time must be timezone-aware")
    return arrival.astimezone(tz) if tz is not None else arrival


def render_stem(
    template: str,
    *,
    arrival: datetime,
    agent: str | None = None,
    extension: str | None = None,
    call_id: str | None = None,
    tz: tzinfo | None = None,
) -> str:
    """File name without `.wav`: `{date}_{time}_agent-{agent}` -> `2026-11-23_1042_agent-4711`.

    `arrival` is the call's arrival, timezone-aware; `tz` (the policy
    timezone) converts it first, if given.
    """
    check_template(template)
    local = _local(arrival, tz)
    stem = template.format(
        date=local.strftime("%Y-%m-%d"),
        time=local.strftime("%H%M"),
        agent=sanitize(agent),
        extension=sanitize(extension),
        call_id=sanitize(call_id),
    )
    stem = stem.strip().lstrip(".")[:MAX_STEM]
    if not stem or stem in {".", ".."}:
        raise ValueError(f"template {template!r} renders an empty file name")
    return stem


def day_directory(storage_dir: Path, arrival: datetime, tz: tzinfo | None = None) -> Path:
    """`storage_dir/YYYY/MM/DD/` of the call's arrival (in `tz` if given)."""
    local = _local(arrival, tz)
    return storage_dir / f"{local:%Y}" / f"{local:%m}" / f"{local:%d}"


def ensure_directory(directory: Path) -> None:
    """Create `directory` and missing parents with mode 0750, whatever the umask."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            continue  # another process made it meanwhile; its mode is its own doing
        os.chmod(path, DIR_MODE)


def candidate(directory: Path, stem: str, attempt: int) -> Path:
    name = stem if attempt == 1 else f"{stem}-{attempt}"
    return directory / f"{name}{SUFFIX}"


def part_path(final: Path) -> Path:
    return final.with_name(final.name + PART_SUFFIX)


def claim(directory: Path, stem: str) -> tuple[int, Path, Path]:
    """Create `NAME.wav.part` exclusively (mode 0640); return (fd, part path, final path).

    The first candidate whose final name and `.part` both do not exist wins;
    the `.part` is created with O_EXCL so two writers cannot claim the same one.
    """
    ensure_directory(directory)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        final = candidate(directory, stem, attempt)
        if final.exists():
            continue
        part = part_path(final)
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except FileExistsError:
            continue
        os.fchmod(fd, FILE_MODE)
        if final.exists():  # made between our check and our create
            os.close(fd)
            os.unlink(part)
            continue
        return fd, part, final
    raise FileExistsError(f"no free name for {stem!r} in {directory} after {MAX_ATTEMPTS} tries")


def publish(part: Path, final: Path | None = None) -> Path:
    """Give `part` its final name without ever replacing a file; return that name.

    Tries `final` (default: `part` without `.part`), then `-2`, `-3`, ... of
    its stem. The directory is fsynced so that the rename survives a crash.
    """
    if final is None:
        if not part.name.endswith(PART_SUFFIX):
            raise ValueError(f"not a .part file: {part}")
        final = part.with_name(part.name[: -len(PART_SUFFIX)])
    directory = final.parent
    stem = final.name[: -len(SUFFIX)] if final.name.endswith(SUFFIX) else final.stem
    targets = [final] + [candidate(directory, stem, n) for n in range(2, MAX_ATTEMPTS + 1)]
    for target in targets:
        if part_path(target).exists() and part_path(target) != part:
            continue  # claimed by a call still being written
        try:
            os.link(part, target)
        except FileExistsError:
            continue
        os.unlink(part)
        _fsync_directory(directory)
        return target
    raise FileExistsError(f"no free final name for {part}")


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
