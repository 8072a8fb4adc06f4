"""X3: the console's password rule is policy (`[passwords]`), checked like every other table."""

from __future__ import annotations

from pathlib import Path

import pytest

from recorder import config
from recorder.policy import POLICY_TABLES, Policy, PolicyError, load_policy, parse_policy
from recorder.policy.model import PasswordRule
from tests.policy.test_errors import GOOD, line_of

PASSWORDS = """
[passwords]
min_length = 16
min_classes = 4
max_failures = 3
lock_minutes = 30
"""


def test_X3_defaults_without_a_passwords_table() -> None:
    policy = parse_policy(GOOD, Path("p.toml"))
    assert policy.password_rule == PasswordRule(
        min_length=12, min_classes=3, max_failures=5, lock_minutes=15
    )


def test_X3_the_example_policies_load_with_a_rule(policies: dict[str, Policy]) -> None:
    for policy in policies.values():
        assert policy.password_rule.min_length >= 8


def test_X3_passwords_table_is_read() -> None:
    policy = parse_policy(GOOD + PASSWORDS, Path("p.toml"))
    assert policy.password_rule == PasswordRule(
        min_length=16, min_classes=4, max_failures=3, lock_minutes=30
    )
    assert policy.warnings == ()


def test_X3_passwords_is_a_policy_table_config_tolerates() -> None:
    assert "passwords" in POLICY_TABLES
    assert set(POLICY_TABLES) == config._POLICY_TABLES


PASSWORD_MISTAKES = [
    ("too short a minimum", "min_length = 16", "min_length = 4", "passwords.min_length", "8..128"),
    ("too long a minimum", "min_length = 16", "min_length = 500", "passwords.min_length", "8..128"),
    ("five classes", "min_classes = 4", "min_classes = 5", "passwords.min_classes", "1..4"),
    ("no class", "min_classes = 4", "min_classes = 0", "passwords.min_classes", "1..4"),
    ("no failure", "max_failures = 3", "max_failures = 0", "passwords.max_failures", "1..100"),
    ("lock of 0", "lock_minutes = 30", "lock_minutes = 0", "passwords.lock_minutes", "1..1440"),
    (
        "a string",
        "lock_minutes = 30",
        'lock_minutes = "15"',
        "passwords.lock_minutes",
        "must be an integer",
    ),
    ("a bool", "min_length = 16", "min_length = true", "passwords.min_length", "must be"),
    ("a float", "max_failures = 3", "max_failures = 2.5", "passwords.max_failures", "must be"),
    (
        "unknown key",
        "lock_minutes = 30",
        "lock_minutes = 30\nmax_age = 90",
        "passwords.max_age",
        "unknown key",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "key", "words"),
    [case[1:] for case in PASSWORD_MISTAKES],
    ids=[case[0] for case in PASSWORD_MISTAKES],
)
def test_X3_mistake_names_file_line_and_key(
    tmp_path: Path, old: str, new: str, key: str, words: str
) -> None:
    text = (GOOD + PASSWORDS).replace(old, new, 1)
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    problems = info.value.problems
    blamed = new.splitlines()[-1].split("=")[0].strip()  # the key's own line
    expected_prefix = f"{path}:{line_of(text, blamed + ' =')}: {key}: "
    assert any(p.startswith(expected_prefix) and words in p for p in problems), problems


def test_X3_range_errors_cite_the_rule(tmp_path: Path) -> None:
    text = GOOD + PASSWORDS.replace("min_length = 16", "min_length = 6")
    path = tmp_path / "policy.toml"
    with pytest.raises(PolicyError) as info:
        parse_policy(text, path)
    (problem,) = info.value.problems
    assert problem == (
        f"{path}:{line_of(text, 'min_length =')}: passwords.min_length:"
        " must be within 8..128 characters (X3), got 6"
    )


def test_X3_passwords_must_be_a_table(tmp_path: Path) -> None:
    text = 'passwords = "strong"\n' + GOOD  # a top-level key, before any table
    path = tmp_path / "p.toml"
    with pytest.raises(PolicyError) as info:
        parse_policy(text, path)
    assert f"{path}:1: passwords: must be a table" in info.value.problems
