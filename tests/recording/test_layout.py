"""Several nodes, one storage root (issue 19): each node repairs only what it wrote."""

from __future__ import annotations

from pathlib import Path

from recorder.recording.layout import (
    legacy_directories,
    node_directory,
    own_directories,
    repair_node,
)
from tests.recording.test_repair import unclosed_part


def test_a_node_repairs_its_own_and_the_pre_node_parts_never_another_nodes(
    tmp_path: Path,
) -> None:
    ours = node_directory(tmp_path, "n1") / "2026" / "12" / "06"
    theirs = node_directory(tmp_path, "n2") / "2026" / "12" / "06"
    legacy = tmp_path / "2026" / "11" / "23"
    for day in (ours, theirs, legacy):
        day.mkdir(parents=True)
        unclosed_part(day / "call.wav.part", "PCM_16", 800)
    (tmp_path / "training").mkdir()

    assert legacy_directories(tmp_path) == [tmp_path / "2026"]
    assert own_directories(tmp_path, "n1") == [tmp_path / "n1", tmp_path / "2026"]
    report = repair_node(tmp_path, "n1")

    assert sorted(r.path for r in report.repaired) == sorted(
        [ours / "call.wav", legacy / "call.wav"]
    )
    assert not report.errors
    # Node 2's `.part` may be a call it is recording right now: untouched.
    assert (theirs / "call.wav.part").exists() and not (theirs / "call.wav").exists()


def test_a_storage_root_not_made_yet_has_nothing_to_repair(tmp_path: Path) -> None:
    report = repair_node(tmp_path / "absent", "n1")
    assert report.repaired == [] and report.errors == []
