"""Every kind of mistake in the policy part is reported with its file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from recorder import config
from recorder.policy import POLICY_TABLES, PolicyError, load_policy, parse_policy

DEPLOY = """\
[service]
timezone = "America/Montreal"

[sip.external]
listen = "127.0.0.1:5060"
allow = ["127.0.0.0/8"]
next_hop = "127.0.0.1:5080"

[sip.internal]
listen = "127.0.0.1:5062"
allow = ["127.0.0.1/32"]
next_hop = "127.0.0.1:5070"

[media]
address = "127.0.0.1"
ports = "20000-29999"

[storage]
dir = "var/recordings"
database = "sqlite:///var/recorder.db"
"""

POLICY = """\
[policy]
name = "T"

[recording]
directions = ["inbound", "outbound"]
extensions = "listed"
extension_patterns = ["2XX"]
pause_code = "*8"
resume_code = "*9"

[recording.exclude.extensions]
299 = "detainee line"

[windows]
mon = ["09:00-12:00", "13:00-17:00"]

[sampling]
fraction = 0.05
stage = "call"

[notice]
prompts = { fr = "prompts/fr.wav" }

[consent]
refusal_keys = ["9"]
listen_seconds = 5

[naming]
template = "{date}_{time}_agent-{agent}"
agent_sources = ["header:X-Agent-Code"]

[retention]
recordings = "8 days"
sampled_recordings = "1 month"

[purposes.quality]
description = "quality"

[roles.lead]
description = "team lead"
purposes = ["quality"]
scope = "team"
window = "call_day"
approves = ["quality"]

[people.ann]
name = "Ann"
role = "lead"
team = "A"

[extensions]
235 = { department = "IT", description = "Director" }
"""
GOOD = DEPLOY + "\n" + POLICY


def problems_for(tmp_path: Path, old: str, new: str) -> tuple[list[str], str, Path]:
    assert old in GOOD, old
    text = GOOD.replace(old, new, 1)
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    return info.value.problems, text, path


def line_of(text: str, fragment: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if fragment in line)


def test_good_policy_loads(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(GOOD)
    policy = load_policy(path)
    assert policy.name == "T" and policy.warnings == ()
    assert policy.extensions["235"].department == "IT"


# (what is wrong, text replaced, replacement, the line to blame holds, key, words in the message)
MISTAKES = [
    (
        "unknown key",
        'name = "T"',
        'name = "T"\ncolour = "red"',
        "colour",
        "policy.colour",
        "unknown key",
    ),
    (
        "unknown table",
        "[policy]",
        "[polciy]\nx = 1\n\n[policy]",
        "[polciy]",
        "polciy",
        "unknown table",
    ),
    (
        "wrong type",
        'stage = "call"',
        "stage = 3",
        "stage = 3",
        "sampling.stage",
        "must be a string",
    ),
    (
        "bool for number",
        "listen_seconds = 5",
        "listen_seconds = true",
        "listen_seconds",
        "consent.listen_seconds",
        "must be a number",
    ),
    (
        "negative retention",
        'recordings = "8 days"',
        'recordings = "-1 days"',
        "recordings =",
        "retention.recordings",
        "at least 1",
    ),
    (
        "negative retention inline",
        'recordings = "8 days"',
        'recordings = { period = "-3 months" }',
        "recordings =",
        "retention.recordings.period",
        "at least 1",
    ),
    (
        "listed and excluded",
        '299 = "detainee line"',
        '2XX = "all of them"',
        "235 = {",
        "extensions.235",
        "both listed and excluded",
    ),
    ("overlapping windows", '"13:00-17:00"', '"11:00-17:00"', "mon =", "windows.mon", "overlap"),
    (
        "window end before start",
        '"13:00-17:00"',
        '"17:00-13:00"',
        "mon =",
        "windows.mon",
        "start before end",
    ),
    (
        "sampling fraction",
        "fraction = 0.05",
        "fraction = 1.5",
        "fraction =",
        "sampling.fraction",
        "within [0, 1]",
    ),
    (
        "unknown role",
        'role = "lead"',
        'role = "boss"',
        'role = "boss"',
        "people.ann.role",
        "unknown role 'boss'",
    ),
    (
        "unknown purpose",
        'purposes = ["quality"]',
        'purposes = ["gossip"]',
        "purposes =",
        "roles.lead.purposes",
        "unknown purpose 'gossip'",
    ),
    (
        "A3 approves an unknown purpose",
        'approves = ["quality"]',
        'approves = ["gossip"]',
        "approves =",
        "roles.lead.approves",
        "unknown purpose 'gossip'",
    ),
    (
        "A13 grant hours out of range",
        'approves = ["quality"]',
        'approves = ["quality"]\ngrant_hours = 0',
        "grant_hours =",
        "roles.lead.grant_hours",
        "within 1..744 hours",
    ),
    (
        "A12 uid that is not a uid",
        'team = "A"',
        'team = "A"\nuid = -4',
        "uid =",
        "people.ann.uid",
        "not a Unix uid",
    ),
    (
        "A12 one account for two people",
        'team = "A"',
        'team = "A"\naccount = "ann"\n\n[people.bob]\nname = "Bob"\nrole = "lead"\n'
        'team = "B"\naccount = "ann"  # again',
        '"ann"  # again',
        "people.bob.account",
        "one person per account",
    ),
    (
        "R2 unknown number region",
        'name = "T"',
        'name = "T"\nnumber_region = "QQ"',
        "number_region =",
        "policy.number_region",
        "not a region code",
    ),
    (
        "P5 mute ranges",
        'description = "quality"',
        'description = "quality"\nmute_seconds = [[5, 2]]',
        "mute_seconds =",
        "purposes.quality.mute_seconds",
        "empty or negative",
    ),
    (
        "team lead without team",
        'team = "A"',
        "",
        "[people.ann]",
        "people.ann.team",
        "team is required",
    ),
    (
        "bad DTMF key",
        'refusal_keys = ["9"]',
        'refusal_keys = ["99"]',
        "refusal_keys",
        "consent.refusal_keys",
        "not one DTMF key",
    ),
    (
        "same key accepts and refuses",
        'refusal_keys = ["9"]',
        'refusal_keys = ["9"]\naccept_keys = ["9"]',
        "accept_keys",
        "consent.accept_keys",
        "both accept and refuse",
    ),
    (
        "pause and resume same code",
        'resume_code = "*9"',
        'resume_code = "*8"',
        "resume_code",
        "recording.resume_code",
        "same code",
    ),
    (
        "unknown template field",
        "agent-{agent}",
        "agent-{agnet}",
        "template =",
        "naming.template",
        "unknown template field {agnet}",
    ),
    (
        "path in file name",
        '"{date}_{time}_agent-{agent}"',
        '"{date}/{time}_agent-{agent}"',
        "template =",
        "naming.template",
        "no path separators",
    ),
    (
        "bad agent source",
        '["header:X-Agent-Code"]',
        '["from the moon"]',
        "agent_sources",
        "naming.agent_sources",
        "is not 'header:NAME'",
    ),
    (
        "bad direction",
        '"inbound", "outbound"',
        '"inbound", "sideways"',
        "directions",
        "recording.directions",
        "'sideways'",
    ),
    (
        "bad pattern",
        '299 = "detainee line"',
        '"2?9" = "oops"',
        '"2?9"',
        "recording.exclude.extensions.2?9",
        "not a number pattern",
    ),
    (
        "missing retention",
        'recordings = "8 days"\n',
        "",
        "[retention]",
        "retention.recordings",
        "is required",
    ),
    (
        "sampling without sampled retention",
        'sampled_recordings = "1 month"\n',
        "",
        "[retention]",
        "retention.sampled_recordings",
        "is required with [sampling]",
    ),
    (
        "bad fiscal year end",
        "[retention]",
        '[retention]\nfiscal_year_end = "02-30"',
        "fiscal_year_end",
        "retention.fiscal_year_end",
        "MM-DD",
    ),
    (
        "bad choice",
        'extensions = "listed"',
        'extensions = "some"',
        'extensions = "some"',
        "recording.extensions",
        "must be one of",
    ),
    (
        "extension outside patterns",
        "235 = {",
        "735 = {",
        "735 = {",
        "extensions.735",
        "not an extension by",
    ),
    (
        "unknown key in inline row",
        'description = "Director" }',
        'description = "Director", floor = 2 }',
        "235 = {",
        "extensions.235.floor",
        "unknown key",
    ),
    (
        "opt-in without accept key",
        "listen_seconds = 5",
        'listen_seconds = 5\nmode = "opt_in"',
        "[consent]",
        "consent.accept_keys",
        "opt-in needs",
    ),
    (
        "single-word voice phrase",
        "listen_seconds = 5",
        'listen_seconds = 5\nvoice = { phrases = { "no" = 0.5 } }',
        "voice =",
        "consent.voice.phrases.no",
        "two words",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "blamed", "key", "words"),
    [case[1:] for case in MISTAKES],
    ids=[case[0] for case in MISTAKES],
)
def test_mistake_names_file_line_and_key(
    tmp_path: Path, old: str, new: str, blamed: str, key: str, words: str
) -> None:
    problems, text, path = problems_for(tmp_path, old, new)
    expected_prefix = f"{path}:{line_of(text, blamed)}: {key}: "
    assert any(p.startswith(expected_prefix) and words in p for p in problems), problems


def test_every_problem_is_listed_not_only_the_first(tmp_path: Path) -> None:
    text = GOOD.replace("fraction = 0.05", "fraction = -2").replace('role = "lead"', 'role = "x"')
    with pytest.raises(PolicyError) as info:
        parse_policy(text, tmp_path / "p.toml")
    assert len(info.value.problems) == 2


def test_syntax_error_names_line(tmp_path: Path) -> None:
    text = GOOD.replace('name = "T"', 'name = "T')
    with pytest.raises(PolicyError) as info:
        parse_policy(text, Path("p.toml"))
    assert info.value.problems[0].startswith(f"p.toml:{line_of(text, 'name = ')}: syntax:")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.toml")


def test_warnings_do_not_fail(tmp_path: Path) -> None:
    text = GOOD.replace(
        "listen_seconds = 5",
        'listen_seconds = 5\nvoice = { language = "fr", phrases = { "stop recording" = 1e-20 } }',
    )
    policy = parse_policy(text, Path("p.toml"))
    assert any("no bundled speech model for 'fr'" in w for w in policy.warnings)


def test_deploy_only_file_records_nothing() -> None:
    policy = parse_policy(DEPLOY, Path("p.toml"))
    assert not policy.recording.directions
    assert any("records no call" in warning for warning in policy.warnings)


def test_config_tolerates_exactly_the_policy_tables() -> None:
    assert set(POLICY_TABLES) == config._POLICY_TABLES


def test_hash_changes_with_content(tmp_path: Path) -> None:
    first = parse_policy(GOOD, Path("p.toml"))
    second = parse_policy(GOOD + "\n# a comment\n", Path("p.toml"))
    assert first.content_hash != second.content_hash
    path = tmp_path / "policy.toml"
    path.write_text(GOOD)
    assert load_policy(path).content_hash == first.content_hash
