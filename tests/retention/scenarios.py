"""Catalog states for the crash tests, shared by the test and its child process."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta

from storage.retention import RetentionSettings, add_hold
from tests.retention.conftest import Store, local, make_settings


def opc() -> RetentionSettings:
    return make_settings(holds=True)


def ccin() -> RetentionSettings:
    return make_settings(
        holds=True,
        recordings="6 months",
        sampling='[sampling]\nfraction = 0.5\nstage = "daily"',
        extra='sampled_recordings = { period = "1 month", rule = "S6" }',
    )


# name -> (settings, seed of the S6 draw)
SCENARIOS: dict[str, tuple[Callable[[], RetentionSettings], int]] = {
    "opc": (opc, 11),
    "ccin": (ccin, 12),
}
NOW = local(2026, 11, 20, 3, 0)


def populate(store: Store, scenario: str) -> set[int]:
    """Recordings to destroy, to keep, to hold, with integrity failures; old call-log numbers
    and old audit entries. Returns the ids whose file is missing on purpose."""
    settings = SCENARIOS[scenario][0]()
    trail = store.trail()
    for month in (1, 2, 3):
        trail.record(
            at=local(2025, month, 10), actor="alice", action="recording.read", object="recording:0"
        )
    store.recording(local(2025, 6, 1, 12), settings=settings)  # numbers due for D2
    ids = [
        store.recording(local(2026, 11, 1, 9) + timedelta(hours=3 * i), settings=settings)[0]
        for i in range(6)
    ]
    ids += [
        store.recording(local(2026, 11, 19, 9) + timedelta(hours=i), settings=settings)[0]
        for i in range(2)
    ]
    add_hold(
        store.catalog,
        ids[2],
        reason="complaint",
        actor="quality",
        now=local(2026, 11, 1, 20),
        settings=settings,
        anchor_path=store.anchor,
    )
    missing = store.catalog.get_recording(ids[3])
    tampered = store.catalog.get_recording(ids[4])
    assert missing is not None and missing.path is not None
    assert tampered is not None and tampered.path is not None
    with open(tampered.path, "ab") as f:
        f.write(b"x")
    os.unlink(missing.path)
    return {ids[3]}
