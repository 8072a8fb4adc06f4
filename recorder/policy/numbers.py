"""Phone numbers and extension patterns as the policy writes them.

Patterns are deliberately small so that an admin can read them aloud:
an exact number (`235`, `+18886722556`), a numeric range of equal width
(`200-299`), or digits with `X` standing for any one digit (`8XX`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

# Visual separators that trunks and people put in numbers; they never carry meaning.
_SEPARATORS = re.compile(r"[\s\-.()/]")
_LITERAL = re.compile(r"\+?[0-9*#X]+")
_RANGE = re.compile(r"([0-9]+)\s*-\s*([0-9]+)")


def normalize_number(text: str) -> str:
    """The number without separators: `+1 514-555-0100` -> `+15145550100`."""
    return _SEPARATORS.sub("", text.strip())


def e164(text: str, region: str | None) -> str | None:
    """`text` in E.164 (`+15145550100`), read as dialled in `region`; None if not a number.

    R2 compares a person's number with the call log's however each was written: with or
    without the country code, with separators, with a trunk prefix.
    """
    compact = normalize_number(text)
    if not compact or not any(char.isdigit() for char in compact):
        return None
    try:
        parsed = phonenumbers.parse(compact, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True, slots=True)
class NumberPattern:
    """One pattern; `text` is what the policy file said, for messages."""

    text: str
    regex: re.Pattern[str]

    def matches(self, number: str | None) -> bool:
        if number is None:
            return False
        return self.regex.fullmatch(normalize_number(number)) is not None


def parse_pattern(text: str) -> NumberPattern:
    """Parse one pattern; raises ValueError with a message fit for `policy check`."""
    ranged = _RANGE.fullmatch(text.strip())
    if ranged:
        low, high = ranged.group(1), ranged.group(2)
        if len(low) != len(high):
            raise ValueError(f"range {text!r} must have ends of the same width")
        if int(low) > int(high):
            raise ValueError(f"range {text!r} is empty (start after end)")
        # A range of equal-width numbers: compare as integers inside a width-checked regex.
        return NumberPattern(text, _range_regex(low, high))
    compact = normalize_number(text).upper()
    if not compact or not _LITERAL.fullmatch(compact):
        raise ValueError(
            f"{text!r} is not a number pattern (digits, *, #, leading +, X for any digit, "
            "or FIRST-LAST)"
        )
    regex = "".join("[0-9]" if char == "X" else re.escape(char) for char in compact)
    return NumberPattern(text, re.compile(regex))


def _range_regex(low: str, high: str) -> re.Pattern[str]:
    # Ranges in telephony are small (a few hundred extensions); listing them keeps
    # matching a plain regex lookup with no integer parsing of untrusted input.
    if int(high) - int(low) > 100_000:
        raise ValueError(f"range {low}-{high} is too large (more than 100000 numbers)")
    width = len(low)
    numbers = (str(value).zfill(width) for value in range(int(low), int(high) + 1))
    return re.compile("|".join(numbers))


def matches_any(patterns: tuple[NumberPattern, ...], number: str | None) -> NumberPattern | None:
    """The first pattern matching `number`, or None."""
    for pattern in patterns:
        if pattern.matches(number):
            return pattern
    return None
