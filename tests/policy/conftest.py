"""Shared fixtures: the shipped policy and the five example policies, loaded once."""

from __future__ import annotations

from pathlib import Path

import pytest

from recorder.policy import Policy, load_policy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {
    "OPC": ROOT / "examples" / "opc.toml",
    "MER": ROOT / "examples" / "mer.toml",
    "TEL": ROOT / "examples" / "tel.toml",
    "CCIN": ROOT / "examples" / "ccin.toml",
    "SQ": ROOT / "examples" / "sq.toml",
}


@pytest.fixture(scope="session")
def policies() -> dict[str, Policy]:
    loaded = {name: load_policy(path) for name, path in EXAMPLES.items()}
    loaded["shipped"] = load_policy(ROOT / "policy.toml")
    return loaded
