"""Where a node's recordings live under a storage root several nodes may share (issue 19).

    storage.dir/
      NODE/YYYY/MM/DD/NAME.wav     recordings of node NODE (`service.node`)
      YYYY/MM/DD/NAME.wav          recordings made before node names (rows with no node)
      training/                    training copies (P5), every node's
      audit-anchors.jsonl          the audit trail's anchor file, shared (appended under a lock)

Two nodes never write into one directory, so their file names never meet. Only the node
that writes a directory repairs its `.part` files at start: another node's `.part` may be a
recording in progress. Pure path arithmetic plus one directory listing.
"""

from __future__ import annotations

from pathlib import Path

from recorder.recording.repair import RepairedRecording, RepairReport, repair_all


def node_directory(storage_dir: Path, node: str) -> Path:
    """`storage_dir/NODE`: the root of this node's day directories."""
    return Path(storage_dir) / node


def legacy_directories(storage_dir: Path) -> list[Path]:
    """The `YYYY` directories of the layout before node names (a single node's), if any."""
    root = Path(storage_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and len(p.name) == 4 and p.name.isdigit())


def own_directories(storage_dir: Path, node: str) -> list[Path]:
    """What this node repairs at start: its own directory, and the pre-node layout's (whose
    rows have no node: they are every node's, as for purge and verify)."""
    return [node_directory(storage_dir, node), *legacy_directories(storage_dir)]


def repair_node(storage_dir: Path, node: str) -> RepairReport:
    """`repair_all` over `own_directories`: what a crash of this node left, nothing else."""
    repaired: list[RepairedRecording] = []
    errors: list[tuple[Path, str]] = []
    for directory in own_directories(storage_dir, node):
        report = repair_all(directory)
        repaired.extend(report.repaired)
        errors.extend(report.errors)
    return RepairReport(repaired, errors)
