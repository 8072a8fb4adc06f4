"""File names from the policy template, day directories, collision-safe claims and publishes."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from recorder.recording.naming import (
    claim,
    day_directory,
    publish,
    render_stem,
    sanitize,
)

MONTREAL = ZoneInfo("America/Montreal")
ARRIVAL = datetime(2026, 11, 23, 10, 42, 17, tzinfo=MONTREAL)


def test_templates_of_n1_and_n2() -> None:
    assert render_stem("{date}_{time}_agent-{agent}", arrival=ARRIVAL, agent="4711") == (
        "2026-11-23_1042_agent-4711"
    )
    assert render_stem("{date}_{time}_ext-{extension}", arrival=ARRIVAL, extension="235") == (
        "2026-11-23_1042_ext-235"
    )


def test_arrival_is_converted_to_the_policy_timezone_for_name_and_directory() -> None:
    utc = datetime(2026, 11, 24, 3, 5, tzinfo=UTC)  # 22:05 the day before in Montreal
    assert render_stem("{date}_{time}", arrival=utc, tz=MONTREAL) == "2026-11-23_2205"
    assert day_directory(Path("/r"), utc, MONTREAL) == Path("/r/2026/11/23")
    assert day_directory(Path("/r"), utc) == Path("/r/2026/11/24")


def test_naive_arrival_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        render_stem("{date}", arrival=datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4711", "4711"),
        ("../../etc/passwd", "etc_passwd"),
        ("a/b\\c", "a_b_c"),
        ("..", "unknown"),
        ("", "unknown"),
        (None, "unknown"),
        ("Jean Tremblay", "Jean_Tremblay"),
        ("+15145550100", "+15145550100"),
    ],
)
def test_placeholder_values_are_sanitised(value: str | None, expected: str) -> None:
    assert sanitize(value) == expected
    stem = render_stem("{agent}", arrival=ARRIVAL, agent=value)
    assert "/" not in stem and ".." not in stem and not stem.startswith(".")


@pytest.mark.parametrize("template", ["{date}/{agent}", "{nope}", "{date:%Y}", "", "../{date}"])
def test_bad_templates_are_refused(template: str) -> None:
    with pytest.raises(ValueError):
        render_stem(template, arrival=ARRIVAL)


def test_claim_skips_existing_final_and_part_names(tmp_path: Path) -> None:
    directory = tmp_path / "2026" / "11" / "23"
    fd1, part1, final1 = claim(directory, "call")
    assert (part1.name, final1.name) == ("call.wav.part", "call.wav")
    # A .part in progress reserves its name...
    fd2, _, final2 = claim(directory, "call")
    assert final2.name == "call-2.wav"
    # ...and so does a final file.
    (directory / "call-3.wav").write_bytes(b"x")
    fd3, _, final3 = claim(directory, "call")
    assert final3.name == "call-4.wav"
    for fd in (fd1, fd2, fd3):
        os.close(fd)
    assert stat.S_IMODE(part1.stat().st_mode) == 0o640


def test_claim_makes_day_directories_0750_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        fd, part, _ = claim(tmp_path / "2026" / "11" / "23", "x")
    finally:
        os.umask(old)
    os.close(fd)
    for directory in ("2026", "2026/11", "2026/11/23"):
        assert stat.S_IMODE((tmp_path / directory).stat().st_mode) == 0o750
    assert stat.S_IMODE(part.stat().st_mode) == 0o640


def test_publish_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "call.wav").write_bytes(b"older recording")
    part = tmp_path / "call.wav.part"
    part.write_bytes(b"new")
    final = publish(part, tmp_path / "call.wav")
    assert final.name == "call-2.wav"
    assert final.read_bytes() == b"new"
    assert (tmp_path / "call.wav").read_bytes() == b"older recording"
    assert not part.exists()
