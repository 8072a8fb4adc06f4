"""`StorageSpace` without a disk: an injected statvfs, a hand-driven clock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recorder.recording.space import BELOW_MINIMUM, MIB, RECOVERY_FLOOR, StorageSpace


class FakeVfs:
    """statvfs of a disk with `free` bytes available, in 4 KiB fragments; counts its calls."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.calls = 0
        self.paths: list[Path] = []
        self.fail = False

    def __call__(self, path: Path) -> os.statvfs_result:
        self.calls += 1
        self.paths.append(path)
        if self.fail:
            raise OSError(116, "Stale file handle")
        # (bsize, frsize, blocks, bfree, bavail, files, ffree, favail, flag, namemax)
        return os.statvfs_result((4096, 4096, 1000, 0, self.free // 4096, 0, 0, 0, 0, 255))


def space(tmp_path: Path, free: int, minimum: int = 64 * MIB) -> tuple[StorageSpace, FakeVfs]:
    vfs = FakeVfs(free)
    return StorageSpace(tmp_path, min_free_bytes=minimum, statvfs=vfs), vfs


def test_room_then_below_the_minimum_then_room_again(tmp_path: Path) -> None:
    storage, vfs = space(tmp_path, 100 * MIB)
    assert storage.poll(0.0) is None and not storage.full
    assert storage.free_bytes == 100 * MIB
    vfs.free = 10 * MIB
    change = storage.poll(1.5)
    assert change is not None and change.full and change.reason == BELOW_MINIMUM
    assert change.free_bytes == 10 * MIB
    assert storage.full and storage.reason == BELOW_MINIMUM and storage.became_full == 1
    assert storage.poll(3.0) is None  # still full: said once
    vfs.free = 80 * MIB
    back = storage.poll(10.0)
    assert back is not None and not back.full and back.reason == BELOW_MINIMUM
    assert back.full_seconds == pytest.approx(8.5)
    assert not storage.full and storage.reason is None and storage.became_full == 1


def test_measures_at_most_once_per_cache_period(tmp_path: Path) -> None:
    storage, vfs = space(tmp_path, 100 * MIB)
    for k in range(100):  # a burst of calls within one second
        storage.poll(5.0 + k * 0.009)
    assert vfs.calls == 1
    storage.poll(6.0)
    assert vfs.calls == 2
    storage.poll(1.0)  # a clock that went back measures again rather than never
    assert vfs.calls == 3


def test_the_writer_running_out_of_space_is_full_at_once_until_real_room_is_back(
    tmp_path: Path,
) -> None:
    storage, vfs = space(tmp_path, 100 * MIB, minimum=0)
    storage.poll(0.0)
    vfs.free = 8192  # ENOSPC left a few freed bytes: a 0 threshold must not call it recovered
    change = storage.report_full(0.5, "disk full")
    assert change is not None and change.full and change.reason == "disk full"
    assert storage.free_bytes == 8192
    assert storage.report_full(0.6, "disk full") is None  # other calls hitting it: said once
    assert storage.poll(5.0) is None and storage.full
    vfs.free = RECOVERY_FLOOR
    back = storage.poll(10.0)
    assert back is not None and not back.full and back.reason == "disk full"
    # Once recovered, the plain threshold applies again.
    vfs.free = 4096
    assert storage.poll(20.0) is None and not storage.full


def test_report_full_while_already_below_the_minimum_keeps_the_first_reason(
    tmp_path: Path,
) -> None:
    storage, _ = space(tmp_path, 1 * MIB, minimum=2 * MIB)
    assert storage.poll(0.0) is not None
    assert storage.report_full(1.0, "disk full") is None
    assert storage.reason == BELOW_MINIMUM and storage.became_full == 1


def test_a_failing_statvfs_keeps_the_state(tmp_path: Path) -> None:
    storage, vfs = space(tmp_path, 1 * MIB)
    assert storage.poll(0.0) is not None and storage.full
    vfs.fail = True
    vfs.free = 100 * MIB
    assert storage.poll(5.0) is None and storage.full
    assert storage.free_bytes == 1 * MIB


def test_a_directory_not_made_yet_is_measured_at_its_nearest_parent(tmp_path: Path) -> None:
    storage = StorageSpace(tmp_path / "not" / "yet", min_free_bytes=0)
    assert storage.measure() is not None
    vfs = FakeVfs(MIB)
    StorageSpace(tmp_path / "a" / "b", min_free_bytes=0, statvfs=vfs).measure()
    assert vfs.paths == [tmp_path]


def test_real_statvfs_of_the_test_directory(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    storage = StorageSpace(tmp_path, min_free_bytes=0)
    assert storage.poll(0.0) is None and not storage.full
    assert storage.free_bytes is not None
    assert abs(storage.free_bytes - st.f_bavail * st.f_frsize) < 64 * MIB


def test_negative_minimum_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="min_free_bytes"):
        StorageSpace(tmp_path, min_free_bytes=-1)
