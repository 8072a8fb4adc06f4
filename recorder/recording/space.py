"""Is there room for recordings? The free space of `storage.dir`, and whether it counts as full.

Issue 20 (full disk): a call that must be recorded while the disk is full is refused (503)
or connected unrecorded, as `[storage] when_full` says; the service asks `StorageSpace`
at each such call. The disk counts as full when

- `statvfs` says less than `storage.min_free_mb` is free for the service's user (measured
  at most once per `cache_seconds`: a flood of INVITEs costs no flood of syscalls), or
- the writer ran out of space (`report_full`: ENOSPC or EDQUOT on a recording). Then the
  disk counts as full until `max(min_free, RECOVERY_FLOOR)` is free again, so that a
  threshold of 0 does not call a disk with a few freed bytes "recovered".

Sans-IO but for `statvfs`, which is injected: the caller passes `now` (a monotonic clock)
and logs the `SpaceChange` each call returns when the state flips (`storage.full`,
`storage.recovered`). A `statvfs` that fails (the directory gone, a stale mount) leaves
the state as it was: the writer's own errors say the rest.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

BELOW_MINIMUM: Final = "free space below storage.min_free_mb"
RECOVERY_FLOOR: Final = 1 << 20  # after ENOSPC, at least this much must be free again
MIB: Final = 1 << 20

StatVfs = Callable[[Path], os.statvfs_result]


@dataclass(frozen=True, slots=True)
class SpaceChange:
    """The disk became full (`full`, with the `reason`) or has room again (not `full`)."""

    full: bool
    reason: str  # why full; for a recovery, why it had been full
    free_bytes: int | None
    full_seconds: float | None = None  # for a recovery: how long it was full


def _statvfs(path: Path) -> os.statvfs_result:
    return os.statvfs(path)


class StorageSpace:
    def __init__(
        self,
        directory: Path,
        *,
        min_free_bytes: int,
        cache_seconds: float = 1.0,
        statvfs: StatVfs = _statvfs,
    ) -> None:
        if min_free_bytes < 0:
            raise ValueError(f"min_free_bytes must be >= 0, got {min_free_bytes}")
        self.directory = directory
        self.min_free_bytes = min_free_bytes
        self.cache_seconds = cache_seconds
        self._statvfs = statvfs
        self.full = False
        self.reason: str | None = None  # why it is full, while it is
        self.free_bytes: int | None = None  # at the last measure
        self.full_since: float | None = None
        self.became_full = 0  # times the state went from room to full
        self._reported = False  # full because the writer hit ENOSPC/EDQUOT
        self._measured: float | None = None

    def measure(self) -> int | None:
        """Bytes free for an unprivileged writer in the directory (or its nearest parent)."""
        path = self.directory
        while not path.exists() and path.parent != path:
            path = path.parent
        try:
            st = self._statvfs(path)
        except OSError:
            return None
        return int(st.f_bavail) * int(st.f_frsize)

    def poll(self, now: float) -> SpaceChange | None:
        """Measure again (at most once per `cache_seconds`); the change, if the state flips."""
        if self._measured is not None and 0 <= now - self._measured < self.cache_seconds:
            return None
        self._measured = now
        free = self.measure()
        if free is None:
            return None
        self.free_bytes = free
        if self.full:
            floor = self.min_free_bytes
            if self._reported:
                floor = max(floor, RECOVERY_FLOOR)
            if free >= floor:
                return self._recovered(now)
            return None
        if free < self.min_free_bytes:
            return self._became_full(now, BELOW_MINIMUM)
        return None

    def report_full(self, now: float, reason: str) -> SpaceChange | None:
        """The writer found no room (`reason`: "disk full", "disk quota exceeded")."""
        self._reported = True
        self._measured = now
        free = self.measure()
        if free is not None:
            self.free_bytes = free
        if self.full:
            return None
        return self._became_full(now, reason)

    def _became_full(self, now: float, reason: str) -> SpaceChange:
        self.full = True
        self.reason = reason
        self.full_since = now
        self.became_full += 1
        return SpaceChange(True, reason, self.free_bytes)

    def _recovered(self, now: float) -> SpaceChange:
        reason = self.reason or BELOW_MINIMUM
        since = self.full_since
        self.full = False
        self.reason = None
        self.full_since = None
        self._reported = False
        return SpaceChange(
            False, reason, self.free_bytes, None if since is None else max(0.0, now - since)
        )
