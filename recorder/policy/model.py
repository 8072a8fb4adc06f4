"""The policy part of `policy.toml`: a typed, frozen model built once, and its loader.

The deployment tables ([service], [sip.*], [media], [storage]) belong to
`recorder.config`; this module reads the rules and the people. Every problem
is collected (not only the first) as `FILE:LINE: key: message`, with the line
found by `recorder.config._Reader`, so `recorder policy check` can list them all.
Nothing here decides a call: that is `recorder.policy.engine`.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

from recorder.config import _KNOWN_TOP, _Reader
from recorder.policy.numbers import NumberPattern, matches_any, parse_pattern
from recorder.policy.periods import RetentionRule, parse_period

Direction = Literal["inbound", "outbound"]
RecordingMode = Literal["automatic", "on_demand"]
ExtensionScope = Literal["all", "listed"]
SamplingStage = Literal["call", "daily"]
ConsentMode = Literal["opt_out", "opt_in"]
AccessScope = Literal["all", "department", "team", "own", "statistics", "none"]
AccessWindow = Literal["call_day", "retention"]

# The top-level tables this module owns; recorder.config tolerates exactly these.
POLICY_TABLES = frozenset(
    {
        "policy",
        "recording",
        "windows",
        "sampling",
        "notice",
        "consent",
        "naming",
        "agents",
        "retention",
        "extensions",
        "purposes",
        "roles",
        "people",
        "reports",
        "passwords",
    }
)
REPORTS = ("annual", "quality", "inventory", "people")  # T1, T2, X4, A12

DTMF_KEYS = frozenset("0123456789*#ABCD")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
NAMING_FIELDS = frozenset({"date", "time", "agent", "extension"})
DEFAULT_TEMPLATE = "{date}_{time}_ext-{extension}"
RETENTION_CLASSES: Mapping[str, str] = MappingProxyType(
    {
        # class -> the rule its default reason cites (a policy may cite another with `rule`)
        "recordings": "D1",
        "sampled_recordings": "S6",
        "call_logs": "D4",
        "call_log_numbers": "D2",
        "access_trace": "A5",
        "training_copies": "P5",
        "summary_sheets": "P6",
    }
)
# Voice refusal needs a speech model per language; pocketsphinx's wheel bundles English only.
BUNDLED_VOICE_LANGUAGES = frozenset({"en"})


class PolicyError(Exception):
    """One or more problems in a policy file; `problems` holds `FILE:LINE: key: message` lines."""

    def __init__(self, problems: list[str], warnings: tuple[str, ...] = ()) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.warnings = warnings


# --- the model -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Extension:
    """A row of MER's Annex A: an extension whose external calls are recorded (S3)."""

    number: str
    department: str
    description: str


@dataclass(frozen=True, slots=True)
class Exclusion:
    """Extensions (by pattern), sites or trunks never recorded, and why (S2, S4)."""

    key: str
    reason: str
    pattern: NumberPattern | None = None  # for extensions


@dataclass(frozen=True, slots=True)
class RecordingRules:
    mode: RecordingMode = "automatic"
    directions: frozenset[Direction] = frozenset()
    extension_patterns: tuple[NumberPattern, ...] = ()
    extensions: ExtensionScope = "all"
    service_numbers: tuple[NumberPattern, ...] = ()
    private_prefix: str | None = None
    private_numbers: tuple[NumberPattern, ...] = ()
    on_demand: bool = False
    start_code: str | None = None
    pause_code: str | None = None
    resume_code: str | None = None
    excluded_extensions: tuple[Exclusion, ...] = ()
    excluded_sites: tuple[Exclusion, ...] = ()
    excluded_trunks: tuple[Exclusion, ...] = ()


@dataclass(frozen=True, slots=True)
class Window:
    """[start, end) in minutes since local midnight."""

    start: int
    end: int

    def __str__(self) -> str:
        return (
            f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"
        )


@dataclass(frozen=True, slots=True)
class Windows:
    """Weekly recording windows (S5, S7); `by_day[0]` is Monday. Disabled = always."""

    enabled: bool = False
    by_day: tuple[tuple[Window, ...], ...] = ((),) * 7

    def window_at(self, local: datetime) -> Window | None:
        minute = local.hour * 60 + local.minute
        for window in self.by_day[local.weekday()]:
            if window.start <= minute < window.end:
                return window
        return None

    def describe_day(self, weekday: int) -> str:
        windows = self.by_day[weekday]
        return ", ".join(map(str, windows)) if windows else "none"


@dataclass(frozen=True, slots=True)
class Sampling:
    """S6: keep a random `fraction`; drawn per call (`call`) or by the daily pass (`daily`)."""

    fraction: float
    stage: SamplingStage


@dataclass(frozen=True, slots=True)
class Notice:
    play: bool = True
    to_callee: bool = False  # C2: the callee of an outbound call hears it too
    early_media: bool = False  # 183 + notice before answering, instead of answering first
    prompts: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    default_language: str | None = None


@dataclass(frozen=True, slots=True)
class VoiceRefusal:
    """C4: refusal phrases spotted in the caller's audio, each with its detection threshold."""

    language: str
    model_dir: str | None
    phrases: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Consent:
    mode: ConsentMode = "opt_out"
    refusal_keys: frozenset[str] = frozenset()
    accept_keys: frozenset[str] = frozenset()
    listen_seconds: float = 0.0
    barge_in: bool = True
    agent_refusal_code: str | None = None  # C5: the agent records a verbal refusal
    refusal_elsewhere: str | None = None  # a refusal channel outside the call (MER: in person)
    voice: VoiceRefusal | None = None


@dataclass(frozen=True, slots=True)
class AgentSource:
    """Where the agent code of N1 comes from: a header of the PBX's answer, PAI, or a table."""

    kind: Literal["header", "p-asserted-identity", "table"]
    header: str | None = None

    def __str__(self) -> str:
        return f"header:{self.header}" if self.kind == "header" else self.kind


_URI_USER = re.compile(r"(?:sips?|tel):\+?([^@;>]+)")
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9+_\-]")


@dataclass(frozen=True, slots=True)
class Naming:
    """N1/N2: file names from a template with {date} {time} {agent} {extension}."""

    template: str = DEFAULT_TEMPLATE
    agent_sources: tuple[AgentSource, ...] = ()
    unknown: str = "unknown"
    agents: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def resolve_agent(
        self,
        headers: Mapping[str, str],
        p_asserted_identity: str | None,
        extension: str | None,
    ) -> str | None:
        """The agent code, trying each configured source in order (N1)."""
        lowered = {name.lower(): value for name, value in headers.items()}
        for source in self.agent_sources:
            if source.kind == "header" and source.header:
                value = lowered.get(source.header.lower(), "").strip()
                if value:
                    return value
            elif source.kind == "p-asserted-identity" and p_asserted_identity:
                match = _URI_USER.search(p_asserted_identity)
                if match:
                    return match.group(1)
            elif source.kind == "table" and extension is not None and extension in self.agents:
                return self.agents[extension]
        return None

    def file_stem(
        self, at: datetime, tz: ZoneInfo, agent: str | None, extension: str | None
    ) -> str:
        """The file name without extension, date and time of the call in the policy zone."""
        local = at.astimezone(tz)

        def safe(value: str | None) -> str:
            # Agent codes come from a PBX header: never let one carry a path separator.
            return _UNSAFE_NAME_CHARS.sub("_", value) if value else self.unknown

        return self.template.format(
            date=local.strftime("%Y-%m-%d"),
            time=local.strftime("%H%M"),
            agent=safe(agent),
            extension=safe(extension),
        )


@dataclass(frozen=True, slots=True)
class Retention:
    fiscal_year_end: tuple[int, int] = (3, 31)
    holds: bool = False  # D4: a complaint or dispute may keep data past its expiry
    classes: Mapping[str, RetentionRule] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Purpose:
    """P1-P4: why a recording may be accessed."""

    id: str
    description: str
    rule_id: str | None = None
    approvers: int = 1  # A9: complaint requests approved by two people
    deidentify: bool = False  # P5: training copies lose what identifies the caller
    # P5: seconds of the caller's channel silenced in every training copy ([start, end]).
    mute_seconds: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Role:
    """A1-A14 as data: what a role may see, for which purposes, and when."""

    id: str
    description: str
    purposes: frozenset[str]
    scope: AccessScope
    window: AccessWindow
    exclude_confidential: bool = False  # A8: not the calls of confidentiality-bound staff
    can_override: bool = False  # A14: the head of the organisation
    approves: frozenset[str] = frozenset()  # A3, A9: the purposes whose requests it approves
    grant_hours: int = 24  # A13: how long an approved request may be used
    subject_access: bool = False  # R2: answers a person's request for their own data
    reports: frozenset[str] = frozenset()  # T1, T2, X4, A12: the reports it may read
    per_agent: bool = False  # T2, A11: quality figures per agent, not only per team
    audit: bool = False  # A10: reads the audit trail (who accessed what, when, why)


@dataclass(frozen=True, slots=True)
class Person:
    """One line of the nominative list (A10, A12)."""

    id: str
    name: str
    role: str
    team: str | None = None
    department: str | None = None
    confidential: bool = False  # A8: member of a professional order bound to confidentiality
    agent_code: str | None = None
    extension: str | None = None
    # A12, X3: the Unix account the service recognises on its control socket (SO_PEERCRED).
    account: str | None = None
    uid: int | None = None


@dataclass(frozen=True, slots=True)
class PasswordRule:
    """X3: what a strong password is for the web console's nominative accounts (A12), and
    how many failed logins lock an account, for how long. Read from `[passwords]`."""

    min_length: int = 12
    # Of the four classes: lowercase letters, uppercase letters, digits, anything else.
    min_classes: int = 3
    max_failures: int = 5  # failed logins in a row before the account locks
    lock_minutes: int = 15


@dataclass(frozen=True, slots=True)
class Policy:
    path: Path
    name: str
    title: str
    timezone: ZoneInfo
    content_hash: str  # SHA-256 of the file: stored with every decision
    recording: RecordingRules
    windows: Windows
    sampling: Sampling | None
    notice: Notice
    consent: Consent
    naming: Naming
    retention: Retention
    extensions: Mapping[str, Extension]
    purposes: Mapping[str, Purpose]
    roles: Mapping[str, Role]
    people: Mapping[str, Person]
    warnings: tuple[str, ...] = ()
    # R2: where numbers dialled without a country code belong, to compare them in E.164.
    number_region: str | None = None
    # T2, A11: an agent with fewer calls than this in a report's period is left out of it.
    report_min_calls: int = 5
    # X3: the web console's password rule and login lock.
    password_rule: PasswordRule = PasswordRule()

    def expiry(self, retention_class: str, at: datetime) -> datetime | None:
        """When data of `retention_class` created at `at` must be gone; None = no period set."""
        if retention_class not in RETENTION_CLASSES:
            raise KeyError(f"unknown retention class {retention_class!r}")
        rule = self.retention.classes.get(retention_class)
        if rule is None:
            return None
        return rule.expiry(at, self.timezone, self.retention.fiscal_year_end)

    def is_extension(self, number: str | None) -> bool:
        return matches_any(self.recording.extension_patterns, number) is not None

    def people_with_role(self, role: str) -> tuple[Person, ...]:
        return tuple(person for person in self.people.values() if person.role == role)


# --- the loader -------------------------------------------------------------------------------

_T = TypeVar("_T")
_HHMM = re.compile(r"([01]\d|2[0-4]):([0-5]\d)")
_DTMF_CODE = re.compile(r"[0-9*#A-D]+")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!%'*+\-.^_`|~]+")
_IDENT = re.compile(r"[a-z][a-z0-9_\-]*")


class _PolicyReader(_Reader):
    """`_Reader` plus typed getters, warnings, and lines of keys inside inline tables."""

    def __init__(self, path: Path, text: str) -> None:
        super().__init__(path, text)
        self.warnings: list[str] = []

    def line_of(self, dotted: str) -> int:
        # `extensions.235.department` sits in an inline table on the line of `235 = {...}`:
        # when the exact key has no line of its own, the nearest enclosing key's line is it.
        parts = dotted.split(".")
        while parts:
            found = super().line_of(".".join(parts))
            if found:
                return found
            parts.pop()
        # A table only ever written as `[people.jdoe]` has no line of its own: use the first such.
        for number, text in enumerate(self.lines, start=1):
            if re.match(rf"\[\[?\s*{re.escape(dotted)}[.\]\s]", text.strip()):
                return number
        return 0

    def warn(self, dotted: str, message: str) -> None:
        self.warnings.append(f"{self.path}:{self.line_of(dotted)}: {dotted}: warning: {message}")

    def mapping(self, table: Mapping[str, Any], dotted: str) -> Mapping[str, Any]:
        """A table whose keys are data (extension numbers, person ids), not a fixed schema."""
        value = table.get(dotted.split(".")[-1], {})
        if not isinstance(value, dict):
            self.error(dotted, f"must be a table, not {type(value).__name__}")
            return {}
        return value

    def typed(
        self,
        table: Mapping[str, Any],
        dotted: str,
        kind: type[_T],
        default: _T,
        check: Callable[[_T], str | None] | None = None,
    ) -> _T:
        value = table.get(dotted.split(".")[-1], default)
        # TOML booleans are ints to Python; a `true` where a number belongs is a mistake.
        wrong_bool = isinstance(value, bool) and kind is not bool
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if wrong_bool or not isinstance(value, kind):
            self.error(dotted, f"must be {_kind_name(kind)}, not {_toml_type(value)}")
            return default
        if check is not None:
            problem = check(value)
            if problem:
                self.error(dotted, problem)
                return default
        return value

    def optional_str(self, table: Mapping[str, Any], dotted: str) -> str | None:
        if dotted.split(".")[-1] not in table:
            return None
        value = self.typed(table, dotted, str, "")
        return value or None

    def choice(
        self, table: Mapping[str, Any], dotted: str, choices: tuple[str, ...], default: str
    ) -> str:
        value = self.typed(table, dotted, str, default)
        if value not in choices:
            self.error(dotted, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
            return default
        return value

    def str_list(self, table: Mapping[str, Any], dotted: str) -> tuple[str, ...]:
        value = table.get(dotted.split(".")[-1], [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.error(dotted, f"must be a list of strings, not {_toml_type(value)}")
            return ()
        return tuple(value)

    def patterns(self, table: Mapping[str, Any], dotted: str) -> tuple[NumberPattern, ...]:
        parsed: list[NumberPattern] = []
        for text in self.str_list(table, dotted):
            try:
                parsed.append(parse_pattern(text))
            except ValueError as exc:
                self.error(dotted, str(exc))
        return tuple(parsed)

    def dtmf_code(self, table: Mapping[str, Any], dotted: str) -> str | None:
        code = self.optional_str(table, dotted)
        if code is not None and not _DTMF_CODE.fullmatch(code):
            self.error(dotted, f"must be DTMF keys (0-9 * # A-D), got {code!r}")
            return None
        return code


def _toml_type(value: object) -> str:
    names = {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "table",
    }
    return names.get(type(value), type(value).__name__)


def _kind_name(kind: type) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        kind, kind.__name__
    )


def _read_exclusions(
    reader: _PolicyReader, table: Mapping[str, Any], dotted: str, as_pattern: bool
) -> tuple[Exclusion, ...]:
    exclusions: list[Exclusion] = []
    for key, reason in reader.mapping(table, dotted).items():
        key_dotted = f"{dotted}.{key}"
        if not isinstance(reason, str) or not reason.strip():
            reader.error(key_dotted, "must be the reason, a non-empty string (S2, S4)")
            continue
        pattern = None
        if as_pattern:
            try:
                pattern = parse_pattern(key)
            except ValueError as exc:
                reader.error(key_dotted, str(exc))
                continue
        exclusions.append(Exclusion(key, reason, pattern))
    return tuple(exclusions)


def _read_recording(reader: _PolicyReader, data: Mapping[str, Any]) -> RecordingRules:
    known = {
        "mode", "directions", "extension_patterns", "extensions", "service_numbers",
        "private_prefix", "private_numbers", "on_demand", "start_code", "pause_code",
        "resume_code", "exclude",
    }  # fmt: skip
    table = reader.table(data, "recording", known)
    if "recording" not in data:
        reader.warn("recording", "no [recording] table: this policy records no call")
    directions: set[Direction] = set()
    for direction in reader.str_list(table, "recording.directions"):
        if direction == "inbound":
            directions.add("inbound")
        elif direction == "outbound":
            directions.add("outbound")
        else:
            reader.error(
                "recording.directions", f"must hold 'inbound' and/or 'outbound', got {direction!r}"
            )
    mode = reader.choice(table, "recording.mode", ("automatic", "on_demand"), "automatic")
    scope = reader.choice(table, "recording.extensions", ("all", "listed"), "all")
    prefix = reader.dtmf_code(table, "recording.private_prefix")
    codes = {
        name: reader.dtmf_code(table, f"recording.{name}")
        for name in ("start_code", "pause_code", "resume_code")
    }
    seen: dict[str, str] = {}
    for name, code in codes.items():
        if code is None:
            continue
        if code in seen:
            reader.error(f"recording.{name}", f"same code {code!r} as recording.{seen[code]}")
        seen[code] = name
    if (codes["pause_code"] is None) != (codes["resume_code"] is None):
        reader.error("recording.pause_code", "pause_code and resume_code go together (S8)")
    on_demand = reader.typed(table, "recording.on_demand", bool, mode == "on_demand")
    if (mode == "on_demand" or on_demand) and codes["start_code"] is None:
        reader.warn(
            "recording.start_code",
            "on-demand recording without a start code: only "
            "the control command `recorder ctl` can start one (S5)",
        )
    exclude = reader.table(table, "recording.exclude", {"extensions", "sites", "trunks"})
    return RecordingRules(
        mode=mode,  # type: ignore[arg-type]  # narrowed by choice()
        directions=frozenset(directions),
        extension_patterns=reader.patterns(table, "recording.extension_patterns"),
        extensions=scope,  # type: ignore[arg-type]
        service_numbers=reader.patterns(table, "recording.service_numbers"),
        private_prefix=prefix,
        private_numbers=reader.patterns(table, "recording.private_numbers"),
        on_demand=on_demand,
        start_code=codes["start_code"],
        pause_code=codes["pause_code"],
        resume_code=codes["resume_code"],
        excluded_extensions=_read_exclusions(reader, exclude, "recording.exclude.extensions", True),
        excluded_sites=_read_exclusions(reader, exclude, "recording.exclude.sites", False),
        excluded_trunks=_read_exclusions(reader, exclude, "recording.exclude.trunks", False),
    )


def _read_extensions(
    reader: _PolicyReader, data: Mapping[str, Any], rules: RecordingRules
) -> Mapping[str, Extension]:
    extensions: dict[str, Extension] = {}
    for number, row in reader.mapping(data, "extensions").items():
        dotted = f"extensions.{number}"
        if not isinstance(row, dict):
            reader.error(dotted, "must be a table { department = ..., description = ... }")
            continue
        for key in row:
            if key not in ("department", "description"):
                reader.error(f"{dotted}.{key}", "unknown key (known: department, description)")
        if not re.fullmatch(r"[0-9*#]+", number):
            reader.error(dotted, f"an extension number is digits, got {number!r}")
            continue
        if rules.extension_patterns and matches_any(rules.extension_patterns, number) is None:
            reader.error(dotted, "is not an extension by recording.extension_patterns")
        excluded = next(
            (ex for ex in rules.excluded_extensions if ex.pattern and ex.pattern.matches(number)),
            None,
        )
        if excluded is not None:
            reader.error(
                dotted,
                f"is both listed and excluded (recording.exclude.extensions {excluded.key!r})",
            )
        extensions[number] = Extension(
            number,
            reader.typed(row, f"{dotted}.department", str, ""),
            reader.typed(row, f"{dotted}.description", str, ""),
        )
    if rules.extensions == "listed" and not extensions:
        reader.error("recording.extensions", "is 'listed' but the [extensions] table is empty (S3)")
    return MappingProxyType(extensions)


def _read_windows(reader: _PolicyReader, data: Mapping[str, Any]) -> Windows:
    if "windows" not in data:
        return Windows()
    table = reader.table(data, "windows", set(WEEKDAYS))
    by_day: list[tuple[Window, ...]] = []
    for day in WEEKDAYS:
        dotted = f"windows.{day}"
        windows: list[Window] = []
        for text in reader.str_list(table, dotted):
            window = _parse_window(text)
            if window is None:
                reader.error(dotted, f"must be 'HH:MM-HH:MM' with start before end, got {text!r}")
            else:
                windows.append(window)
        windows.sort(key=lambda window: window.start)
        for before, after in itertools.pairwise(windows):
            if after.start < before.end:
                reader.error(dotted, f"windows {before} and {after} overlap")
        by_day.append(tuple(windows))
    if not any(by_day):
        reader.warn("windows", "no window on any day: automatic recording never happens (S5)")
    return Windows(True, tuple(by_day))


def _parse_window(text: str) -> Window | None:
    start_text, _, end_text = text.partition("-")
    start, end = _minutes(start_text.strip()), _minutes(end_text.strip())
    if start is None or end is None or start >= end or start >= 24 * 60:
        return None
    return Window(start, end)


def _minutes(text: str) -> int | None:
    match = _HHMM.fullmatch(text)
    if not match:
        return None
    minutes = int(match.group(1)) * 60 + int(match.group(2))
    return minutes if minutes <= 24 * 60 else None


def _read_sampling(reader: _PolicyReader, data: Mapping[str, Any]) -> Sampling | None:
    if "sampling" not in data:
        return None
    table = reader.table(data, "sampling", {"fraction", "stage"})

    def fraction_check(value: float) -> str | None:
        return None if 0.0 <= value <= 1.0 else f"must be a fraction within [0, 1], got {value}"

    fraction = reader.typed(table, "sampling.fraction", float, 1.0, fraction_check)
    if "fraction" not in table:
        reader.error("sampling.fraction", "is required (S6)")
    stage = reader.choice(table, "sampling.stage", ("call", "daily"), "daily")
    return Sampling(fraction, stage)  # type: ignore[arg-type]


def _read_notice(reader: _PolicyReader, data: Mapping[str, Any]) -> Notice:
    table = reader.table(
        data, "notice", {"play", "to_callee", "early_media", "prompts", "default_language"}
    )
    prompts: dict[str, str] = {}
    for language, prompt in reader.mapping(table, "notice.prompts").items():
        if not isinstance(prompt, str) or not prompt:
            reader.error(f"notice.prompts.{language}", "must be the path of a prompt file")
        else:
            prompts[language] = prompt
    play = reader.typed(table, "notice.play", bool, True)
    default_language = reader.optional_str(table, "notice.default_language")
    if default_language is None and prompts:
        default_language = next(iter(prompts))
    if default_language is not None and default_language not in prompts:
        reader.error(
            "notice.default_language", f"{default_language!r} has no prompt in notice.prompts"
        )
    if play and not prompts and "recording" in data:
        reader.error("notice.prompts", "a notice plays (C1) but no prompt file is given")
    return Notice(
        play=play,
        to_callee=reader.typed(table, "notice.to_callee", bool, False),
        early_media=reader.typed(table, "notice.early_media", bool, False),
        prompts=MappingProxyType(prompts),
        default_language=default_language,
    )


def _read_keys(reader: _PolicyReader, table: Mapping[str, Any], dotted: str) -> frozenset[str]:
    keys = reader.str_list(table, dotted)
    for key in keys:
        if key not in DTMF_KEYS:
            reader.error(dotted, f"{key!r} is not one DTMF key (0-9 * # A-D)")
    return frozenset(key for key in keys if key in DTMF_KEYS)


def _read_consent(reader: _PolicyReader, data: Mapping[str, Any], notice: Notice) -> Consent:
    known = {
        "mode",
        "refusal_keys",
        "accept_keys",
        "listen_seconds",
        "barge_in",
        "agent_refusal_code",
        "refusal_elsewhere",
        "voice",
    }
    table = reader.table(data, "consent", known)
    mode = reader.choice(table, "consent.mode", ("opt_out", "opt_in"), "opt_out")
    refusal = _read_keys(reader, table, "consent.refusal_keys")
    accept = _read_keys(reader, table, "consent.accept_keys")
    if refusal & accept:
        reader.error(
            "consent.accept_keys", f"keys {sorted(refusal & accept)} both accept and refuse"
        )

    def listen_check(value: float) -> str | None:
        return None if 0.0 <= value <= 120.0 else f"must be within [0, 120] seconds, got {value}"

    listen = reader.typed(table, "consent.listen_seconds", float, 0.0, listen_check)
    voice = _read_voice(reader, table)
    agent_code = reader.dtmf_code(table, "consent.agent_refusal_code")
    if mode == "opt_in" and not accept:
        reader.error("consent.accept_keys", "opt-in needs at least one accept key (C3)")
    elsewhere = reader.optional_str(table, "consent.refusal_elsewhere")
    if (
        mode == "opt_out"
        and "consent" in data
        and not (refusal or voice or agent_code or elsewhere)
    ):
        reader.error(
            "consent.mode",
            "opt-out with no refusal key, voice phrase, agent refusal code or "
            "consent.refusal_elsewhere: nobody could refuse (C3, C5)",
        )
    if (refusal or accept or voice) and listen <= 0:
        reader.error(
            "consent.listen_seconds", "must be > 0 when callers may answer by key or voice"
        )
    if (refusal or accept or voice) and not notice.play:
        reader.error(
            "consent", "a caller cannot refuse a notice that never plays (notice.play = false)"
        )
    return Consent(
        mode=mode,  # type: ignore[arg-type]
        refusal_keys=refusal,
        accept_keys=accept,
        listen_seconds=listen,
        barge_in=reader.typed(table, "consent.barge_in", bool, True),
        agent_refusal_code=agent_code,
        refusal_elsewhere=elsewhere,
        voice=voice,
    )


def _read_voice(reader: _PolicyReader, consent: Mapping[str, Any]) -> VoiceRefusal | None:
    if "voice" not in consent:
        return None
    table = reader.table(consent, "consent.voice", {"language", "model_dir", "phrases"})
    language = reader.typed(table, "consent.voice.language", str, "en")
    model_dir = reader.optional_str(table, "consent.voice.model_dir")
    phrases: dict[str, float] = {}
    for phrase, threshold in reader.mapping(table, "consent.voice.phrases").items():
        dotted = f"consent.voice.phrases.{phrase}"
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            reader.error(
                dotted, f"must be the detection threshold, a number, not {_toml_type(threshold)}"
            )
        elif not 0.0 < threshold < 1.0:
            reader.error(dotted, f"threshold must be within (0, 1), got {threshold}")
        elif len(phrase.split()) < 2:
            # A single short word ("no") was never spotted reliably and fires on speech.
            reader.error(dotted, "use a phrase of two words or more (e.g. 'stop recording')")
        else:
            phrases[phrase] = float(threshold)
    if not phrases:
        reader.error("consent.voice.phrases", "voice refusal needs at least one phrase (C4)")
    if model_dir is not None and not Path(model_dir).is_dir():
        reader.warn(
            "consent.voice.model_dir",
            f"{model_dir} is not a directory: voice refusal in {language!r} will not work "
            "until a model is installed there; key refusal still does",
        )
    if model_dir is None and language not in BUNDLED_VOICE_LANGUAGES:
        reader.warn(
            "consent.voice.language",
            f"no bundled speech model for {language!r}: set "
            "consent.voice.model_dir, or only key refusal will work",
        )
    return VoiceRefusal(language, model_dir, MappingProxyType(phrases))


def _read_naming(reader: _PolicyReader, data: Mapping[str, Any]) -> Naming:
    table = reader.table(data, "naming", {"template", "agent_sources", "unknown"})
    template = reader.typed(table, "naming.template", str, DEFAULT_TEMPLATE)
    fields: set[str] = set()
    try:
        for _, name, spec, conversion in string.Formatter().parse(template):
            if name is None:
                continue
            if name not in NAMING_FIELDS or spec or conversion:
                reader.error(
                    "naming.template",
                    f"unknown template field {{{name}}} (known: "
                    f"{', '.join('{' + f + '}' for f in sorted(NAMING_FIELDS))})",
                )
            fields.add(name)
    except ValueError as exc:
        reader.error("naming.template", f"not a valid template: {exc}")
    if "/" in template or "\\" in template or template.startswith("."):
        reader.error("naming.template", "is a file name: no path separators, no leading dot")
    if not {"date", "time"} <= fields:
        reader.error("naming.template", "must hold {date} and {time} (N1, N2)")
    if not fields & {"agent", "extension"}:
        reader.error("naming.template", "must hold {agent} (N1) or {extension} (N2)")
    sources: list[AgentSource] = []
    for text in reader.str_list(table, "naming.agent_sources"):
        if text.lower().startswith("header:") and _HEADER_NAME.fullmatch(text[7:]):
            sources.append(AgentSource("header", text[7:]))
        elif text.lower() in ("p-asserted-identity", "table"):
            sources.append(AgentSource(text.lower()))  # type: ignore[arg-type]
        else:
            reader.error(
                "naming.agent_sources",
                f"{text!r} is not 'header:NAME', 'p-asserted-identity' or 'table'",
            )
    if "agent" in fields and not sources and "agent_sources" not in table:
        reader.error(
            "naming.agent_sources",
            "the template names the agent: say where the code comes from (N1)",
        )
    agents: dict[str, str] = {}
    for extension, code in reader.mapping(data, "agents").items():
        if not isinstance(code, str) or not code:
            reader.error(f"agents.{extension}", "must be the agent code, a non-empty string")
        else:
            agents[extension] = code
    if any(source.kind == "table" for source in sources) and not agents:
        reader.warn("agents", "naming.agent_sources uses 'table' but [agents] is empty")
    return Naming(
        template=template,
        agent_sources=tuple(sources),
        unknown=reader.typed(table, "naming.unknown", str, "unknown"),
        agents=MappingProxyType(agents),
    )


def _read_retention(
    reader: _PolicyReader, data: Mapping[str, Any], records: bool, sampling: Sampling | None
) -> Retention:
    table = reader.table(data, "retention", {"fiscal_year_end", "holds", *RETENTION_CLASSES})
    fiscal = (3, 31)
    fiscal_text = reader.typed(table, "retention.fiscal_year_end", str, "03-31")
    match = re.fullmatch(r"(\d\d)-(\d\d)", fiscal_text)
    try:
        if not match:
            raise ValueError
        fiscal = (int(match.group(1)), int(match.group(2)))
        # 2001 is not a leap year, so 02-29 (a fiscal year end that exists 1 year in 4) fails here.
        datetime(2001, *fiscal)
    except ValueError:
        reader.error(
            "retention.fiscal_year_end", f"must be a day of the year as MM-DD, got {fiscal_text!r}"
        )
        fiscal = (3, 31)
    classes: dict[str, RetentionRule] = {}
    for name, default_rule in RETENTION_CLASSES.items():
        if name not in table:
            continue
        rule = _read_retention_rule(reader, table[name], f"retention.{name}", default_rule)
        if rule is not None:
            classes[name] = rule
    if records and "recordings" not in table:
        reader.error(
            "retention.recordings", "is required: how long recordings are kept (D1, D4, D5)"
        )
    if sampling is not None and sampling.fraction < 1.0 and "sampled_recordings" not in table:
        reader.error("retention.sampled_recordings", "is required with [sampling] (S6)")
    return Retention(
        fiscal_year_end=fiscal,
        holds=reader.typed(table, "retention.holds", bool, False),
        classes=MappingProxyType(classes),
    )


def _read_retention_rule(
    reader: _PolicyReader, value: object, dotted: str, default_rule: str
) -> RetentionRule | None:
    row: Mapping[str, Any]
    if isinstance(value, str):
        row = {"period": value}
    elif isinstance(value, dict):
        row = value
        for key in row:
            if key not in ("period", "minimum", "after", "rule"):
                reader.error(f"{dotted}.{key}", "unknown key (known: after, minimum, period, rule)")
    else:
        reader.error(dotted, f"must be a period like '8 days' or a table, not {_toml_type(value)}")
        return None
    period_text = reader.typed(row, f"{dotted}.period", str, "")
    try:
        period = parse_period(period_text)
    except ValueError as exc:
        reader.error(f"{dotted}.period" if isinstance(value, dict) else dotted, str(exc))
        return None
    anchor = reader.choice(row, f"{dotted}.after", ("call", "fiscal_year_end"), "call")
    return RetentionRule(
        period=period,
        rule_id=reader.typed(row, f"{dotted}.rule", str, default_rule),
        minimum=reader.typed(row, f"{dotted}.minimum", bool, False),
        anchor=anchor,  # type: ignore[arg-type]
    )


def _read_purposes(reader: _PolicyReader, data: Mapping[str, Any]) -> Mapping[str, Purpose]:
    purposes: dict[str, Purpose] = {}
    for purpose_id, row in reader.mapping(data, "purposes").items():
        dotted = f"purposes.{purpose_id}"
        if not isinstance(row, dict):
            reader.error(dotted, "must be a table { description = ..., rule = ... }")
            continue
        for key in row:
            if key not in ("description", "rule", "approvers", "deidentify", "mute_seconds"):
                reader.error(
                    f"{dotted}.{key}",
                    "unknown key (known: approvers, deidentify, description, mute_seconds, rule)",
                )

        def approvers_check(value: int) -> str | None:
            return None if 1 <= value <= 5 else f"must be within 1..5, got {value}"

        purposes[purpose_id] = Purpose(
            id=purpose_id,
            description=reader.typed(row, f"{dotted}.description", str, ""),
            rule_id=reader.optional_str(row, f"{dotted}.rule"),
            approvers=reader.typed(row, f"{dotted}.approvers", int, 1, approvers_check),
            deidentify=reader.typed(row, f"{dotted}.deidentify", bool, False),
            mute_seconds=_mute_ranges(reader, row, f"{dotted}.mute_seconds"),
        )
    return MappingProxyType(purposes)


def _mute_ranges(
    reader: _PolicyReader, row: Mapping[str, Any], dotted: str
) -> tuple[tuple[float, float], ...]:
    value = row.get(dotted.rsplit(".", 1)[1], [])
    ranges: list[tuple[float, float]] = []
    shape = "must be a list of [start, end] pairs in seconds, e.g. [[0, 20]]"
    if not isinstance(value, list):
        reader.error(dotted, shape)
        return ()
    for item in value:
        numbers = isinstance(item, list) and len(item) == 2
        if not numbers or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in item
        ):
            reader.error(dotted, shape)
            return ()
        start, end = float(item[0]), float(item[1])
        if start < 0 or end <= start:
            reader.error(dotted, f"range [{item[0]}, {item[1]}] is empty or negative")
            return ()
        ranges.append((start, end))
    return tuple(ranges)


def _read_roles(
    reader: _PolicyReader, data: Mapping[str, Any], purposes: Mapping[str, Purpose]
) -> Mapping[str, Role]:
    known = {
        "description",
        "purposes",
        "scope",
        "window",
        "exclude_confidential",
        "can_override",
        "approves",
        "grant_hours",
        "subject_access",
        "reports",
        "per_agent",
        "audit",
    }
    roles: dict[str, Role] = {}
    for role_id, row in reader.mapping(data, "roles").items():
        dotted = f"roles.{role_id}"
        if not isinstance(row, dict):
            reader.error(dotted, "must be a table")
            continue
        row = reader.table(data["roles"], dotted, known)
        role_purposes = reader.str_list(row, f"{dotted}.purposes")
        for purpose in role_purposes:
            if purpose not in purposes:
                reader.error(
                    f"{dotted}.purposes",
                    f"unknown purpose {purpose!r} (defined: "
                    f"{', '.join(sorted(purposes)) or 'none'})",
                )
        approves = reader.str_list(row, f"{dotted}.approves")
        for purpose in approves:
            if purpose not in purposes:
                reader.error(
                    f"{dotted}.approves",
                    f"unknown purpose {purpose!r} (defined: "
                    f"{', '.join(sorted(purposes)) or 'none'})",
                )

        reports = reader.str_list(row, f"{dotted}.reports")
        for report in reports:
            if report not in REPORTS:
                reader.error(
                    f"{dotted}.reports", f"unknown report {report!r} (one of {', '.join(REPORTS)})"
                )

        def hours_check(value: int) -> str | None:
            return None if 1 <= value <= 24 * 31 else f"must be within 1..744 hours, got {value}"

        scope = reader.choice(
            row,
            f"{dotted}.scope",
            ("all", "department", "team", "own", "statistics", "none"),
            "none",
        )
        if scope == "statistics" and role_purposes:
            reader.error(
                f"{dotted}.purposes",
                "a statistics-only role (A11) has no purpose to hear recordings",
            )
        roles[role_id] = Role(
            id=role_id,
            description=reader.typed(row, f"{dotted}.description", str, ""),
            purposes=frozenset(role_purposes),
            scope=scope,  # type: ignore[arg-type]
            window=reader.choice(row, f"{dotted}.window", ("call_day", "retention"), "retention"),  # type: ignore[arg-type]
            exclude_confidential=reader.typed(row, f"{dotted}.exclude_confidential", bool, False),
            can_override=reader.typed(row, f"{dotted}.can_override", bool, False),
            approves=frozenset(approves),
            grant_hours=reader.typed(row, f"{dotted}.grant_hours", int, 24, hours_check),
            subject_access=reader.typed(row, f"{dotted}.subject_access", bool, False),
            reports=frozenset(reports),
            per_agent=reader.typed(row, f"{dotted}.per_agent", bool, False),
            audit=reader.typed(row, f"{dotted}.audit", bool, False),
        )
    return MappingProxyType(roles)


def _read_people(
    reader: _PolicyReader, data: Mapping[str, Any], roles: Mapping[str, Role]
) -> Mapping[str, Person]:
    known = {
        "name",
        "role",
        "team",
        "department",
        "confidential",
        "agent_code",
        "extension",
        "account",
        "uid",
    }
    people: dict[str, Person] = {}
    agent_codes: dict[str, str] = {}
    accounts: dict[str | int, str] = {}

    def uid_check(value: int) -> str | None:
        return None if 0 <= value < 2**32 else f"not a Unix uid: {value}"

    for person_id, row in reader.mapping(data, "people").items():
        dotted = f"people.{person_id}"
        if not isinstance(row, dict):
            reader.error(dotted, "must be a table { name = ..., role = ... }")
            continue
        row = reader.table(data["people"], dotted, known)
        role = reader.typed(row, f"{dotted}.role", str, "")
        if role not in roles:
            reader.error(
                f"{dotted}.role",
                f"unknown role {role!r} (defined: {', '.join(sorted(roles)) or 'none'})",
            )
        name = reader.typed(row, f"{dotted}.name", str, "")
        if not name.strip():
            reader.error(f"{dotted}.name", "is required: the list is nominative (A10, A12)")
        person = Person(
            id=person_id,
            name=name,
            role=role,
            team=reader.optional_str(row, f"{dotted}.team"),
            department=reader.optional_str(row, f"{dotted}.department"),
            confidential=reader.typed(row, f"{dotted}.confidential", bool, False),
            agent_code=reader.optional_str(row, f"{dotted}.agent_code"),
            extension=reader.optional_str(row, f"{dotted}.extension"),
            account=reader.optional_str(row, f"{dotted}.account"),
            uid=reader.typed(row, f"{dotted}.uid", int, 0, uid_check) if "uid" in row else None,
        )
        for key, login in (("account", person.account), ("uid", person.uid)):
            if login is None:
                continue
            if login in accounts:
                reader.error(
                    f"{dotted}.{key}",
                    f"{key} {login!r} is also people.{accounts[login]}'s: one person per account"
                    " (A12, X3)",
                )
            accounts[login] = person_id
        scope = roles[role].scope if role in roles else None
        if scope == "team" and person.team is None:
            reader.error(
                f"{dotted}.team", f"role {role!r} sees its team's calls (A1): a team is required"
            )
        if scope == "department" and person.department is None:
            reader.error(
                f"{dotted}.department",
                f"role {role!r} sees its department (A8): a department is required",
            )
        if person.agent_code is not None:
            if person.agent_code in agent_codes:
                reader.error(
                    f"{dotted}.agent_code",
                    f"agent code {person.agent_code!r} is also "
                    f"people.{agent_codes[person.agent_code]}'s",
                )
            agent_codes[person.agent_code] = person_id
        people[person_id] = person
    return MappingProxyType(people)


def _read_passwords(reader: _PolicyReader, data: Mapping[str, Any]) -> PasswordRule:
    table = reader.table(
        data, "passwords", {"min_length", "min_classes", "max_failures", "lock_minutes"}
    )
    default = PasswordRule()

    def within(low: int, high: int, unit: str = "") -> Callable[[int], str | None]:
        def check(value: int) -> str | None:
            if low <= value <= high:
                return None
            return f"must be within {low}..{high}{unit} (X3), got {value}"

        return check

    return PasswordRule(
        min_length=reader.typed(
            table, "passwords.min_length", int, default.min_length, within(8, 128, " characters")
        ),
        min_classes=reader.typed(
            table,
            "passwords.min_classes",
            int,
            default.min_classes,
            within(1, 4, " of lowercase, uppercase, digits, other"),
        ),
        max_failures=reader.typed(
            table, "passwords.max_failures", int, default.max_failures, within(1, 100)
        ),
        lock_minutes=reader.typed(
            table, "passwords.lock_minutes", int, default.lock_minutes, within(1, 1440, " minutes")
        ),
    )


def load_policy(path: str | Path) -> Policy:
    """Read and validate the policy part of a file; raises PolicyError listing every problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError([f"{path}:0: cannot read: {exc.strerror}"]) from exc
    return parse_policy(
        raw.decode("utf-8", errors="replace"), path, hashlib.sha256(raw).hexdigest()
    )


def parse_policy(text: str, path: Path, content_hash: str | None = None) -> Policy:
    """Build the model from the text of a policy file (`path` is for messages only)."""
    if content_hash is None:
        content_hash = hashlib.sha256(text.encode("utf-8")).hexdigest()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise PolicyError([f"{path}:{match.group(1) if match else '0'}: syntax: {exc}"]) from exc
    reader = _PolicyReader(path, text)
    for key in data:
        if key not in _KNOWN_TOP and key not in POLICY_TABLES:
            reader.error(key, "unknown table")

    meta = reader.table(data, "policy", {"name", "title", "number_region"})
    name = reader.typed(meta, "policy.name", str, path.stem)
    title = reader.typed(meta, "policy.title", str, "")
    number_region = reader.optional_str(meta, "policy.number_region")
    if number_region is not None and number_region not in phonenumbers.SUPPORTED_REGIONS:
        reader.error(
            "policy.number_region",
            f"{number_region!r} is not a region code of the numbering plan (e.g. CA, FR, MC)",
        )
        number_region = None
    service = data.get("service", {})
    tz_name = service.get("timezone", "UTC") if isinstance(service, dict) else "UTC"
    try:
        timezone = ZoneInfo(str(tz_name))
    except (ZoneInfoNotFoundError, ValueError):
        reader.error("service.timezone", f"unknown time zone {tz_name!r}")  # same text as config
        timezone = ZoneInfo("UTC")

    report_table = reader.table(data, "reports", {"min_agent_calls"})

    def min_check(value: int) -> str | None:
        return None if 1 <= value <= 1000 else f"must be within 1..1000, got {value}"

    report_min_calls = reader.typed(report_table, "reports.min_agent_calls", int, 5, min_check)
    password_rule = _read_passwords(reader, data)
    recording = _read_recording(reader, data)
    extensions = _read_extensions(reader, data, recording)
    windows = _read_windows(reader, data)
    sampling = _read_sampling(reader, data)
    notice = _read_notice(reader, data)
    consent = _read_consent(reader, data, notice)
    naming = _read_naming(reader, data)
    records = bool(recording.directions)
    retention = _read_retention(reader, data, records, sampling)
    purposes = _read_purposes(reader, data)
    roles = _read_roles(reader, data, purposes)
    people = _read_people(reader, data, roles)
    for purpose_id in purposes:
        if roles and not any(purpose_id in role.approves for role in roles.values()):
            reader.warn(
                f"purposes.{purpose_id}",
                "no role approves it (roles.*.approves): its requests can never be approved (A3)",
            )
    if records and not notice.play:
        reader.warn("notice.play", "calls are recorded but no notice plays (C1)")

    if reader.problems:
        raise PolicyError(reader.problems, tuple(reader.warnings))
    return Policy(
        path=path,
        name=name,
        title=title,
        timezone=timezone,
        content_hash=content_hash,
        recording=recording,
        windows=windows,
        sampling=sampling,
        notice=notice,
        consent=consent,
        naming=naming,
        retention=retention,
        extensions=extensions,
        purposes=purposes,
        roles=roles,
        people=people,
        warnings=tuple(reader.warnings),
        number_region=number_region,
        report_min_calls=report_min_calls,
        password_rule=password_rule,
    )
