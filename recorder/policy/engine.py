"""The decision: may this call be recorded, who hears the notice, and why.

`decide(policy, call, now)` is pure: facts and the wall clock in, a frozen
`Decision` out, with every rule ID that shaped it so that the log, the catalog
and `recorder policy explain` can say why. The random draw used for per-call
sampling is passed in (`CallFacts.draw`), so tests replay it with a seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from recorder.policy.model import ConsentMode, Direction, Policy
from recorder.policy.numbers import matches_any, normalize_number

Outcome = Literal["record", "on_demand", "never"]
NoticeParty = Literal["caller", "callee"]
Reason = tuple[str, str]
_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What the SIP layer knows about a new call when it must decide.

    `caller` is None when the number is withheld. `dialled` is the number as
    dialled, private prefix included (defaults to `callee`). `extension` is the
    internal party's extension when the classifier knows it; otherwise it is
    taken from the caller (outbound) or callee (inbound) when that matches the
    policy's extension patterns. `external=False` marks a call the classifier
    knows to be internal.
    """

    direction: Direction
    caller: str | None
    callee: str
    extension: str | None = None
    external: bool | None = None
    site: str | None = None
    trunk: str | None = None
    dialled: str | None = None
    draw: Callable[[], float] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Decision:
    record: bool  # start recording when the call is bridged (if consent allows)
    on_demand: bool  # the agent may start a recording that is not running (S5)
    notice: bool  # a recording notice plays before the parties are bridged
    notice_to: NoticeParty | None
    consent_mode: ConsentMode | None  # None: nobody is asked (no notice)
    listen_seconds: float  # how long refusals are heard after the prompt
    strip_prefix: str | None  # S7: the private prefix taken off before routing
    route_to: str  # the number to send the call to, prefix stripped
    sampling: float | None  # S6 daily stage: the fraction the daily pass keeps
    retention_class: str  # which retention class the recording falls under
    reasons: tuple[Reason, ...]
    policy_hash: str

    @property
    def outcome(self) -> Outcome:
        if self.record:
            return "record"
        return "on_demand" if self.on_demand else "never"

    @property
    def rule_ids(self) -> tuple[str, ...]:
        """The distinct rule IDs behind the decision, in the order they were applied."""
        return tuple(dict.fromkeys(rule for rule, _ in self.reasons))

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "record": self.record,
            "on_demand": self.on_demand,
            "notice": self.notice,
            "notice_to": self.notice_to,
            "consent_mode": self.consent_mode,
            "listen_seconds": self.listen_seconds,
            "strip_prefix": self.strip_prefix,
            "route_to": self.route_to,
            "sampling": self.sampling,
            "retention_class": self.retention_class,
            "rule_ids": list(self.rule_ids),
            "reasons": [{"rule": rule, "text": text} for rule, text in self.reasons],
            "policy_hash": self.policy_hash,
        }


def decide(policy: Policy, call: CallFacts, now: datetime) -> Decision:
    """Apply the policy to one call at wall-clock `now` (timezone-aware)."""
    if now.tzinfo is None:
        raise ValueError("decide() needs a timezone-aware datetime")
    rules = policy.recording
    reasons: list[Reason] = []

    dialled = normalize_number(call.dialled if call.dialled is not None else call.callee)
    strip_prefix: str | None = None
    route_to = dialled
    if (
        rules.private_prefix
        and call.direction == "outbound"
        and dialled.startswith(rules.private_prefix)
    ):
        strip_prefix = rules.private_prefix
        route_to = dialled[len(rules.private_prefix) :]

    if call.caller is None:
        reasons.append(("N3", "caller number withheld: the call log says 'withheld'"))
    extension = _extension_of(policy, call, route_to)
    blocked = list(_blocking_reasons(policy, call, route_to, extension, strip_prefix))
    if blocked:
        return _never(policy, reasons + blocked, strip_prefix, route_to)

    if call.direction == "inbound":
        reasons.append(("S1", "inbound call, recorded direction"))
    else:
        reasons.append(("S3", "outbound external call, recorded direction"))
    if rules.extensions == "listed" and extension is not None:
        row = policy.extensions[extension]
        reasons.append(
            ("S3", f"extension {extension} is listed ({row.department}: {row.description})")
        )

    record, sampling, retention_class = _automatic(policy, call, now, reasons)
    on_demand = rules.on_demand and not record
    if on_demand:
        how = f"with {rules.start_code}" if rules.start_code else "by control command"
        reasons.append(("S5", f"the agent may start a recording on demand ({how})"))
    if record and rules.pause_code:
        reasons.append(
            (
                "S8",
                f"the agent pauses with {rules.pause_code} for card data, "
                f"resumes with {rules.resume_code}",
            )
        )

    if not (record or on_demand):
        # Outside every window, or not drawn: nothing may be recorded, so nobody is told.
        return _never(policy, reasons, strip_prefix, route_to)
    notice_to = _notice_party(policy, call.direction, reasons)
    consent_mode: ConsentMode | None = None
    listen = 0.0
    if notice_to is not None:
        consent_mode = policy.consent.mode
        listen = policy.consent.listen_seconds
        reasons.extend(_consent_reasons(policy))
    reasons.extend(_naming_and_retention_reasons(policy, now, retention_class))
    return Decision(
        record=record,
        on_demand=on_demand,
        notice=notice_to is not None,
        notice_to=notice_to,
        consent_mode=consent_mode,
        listen_seconds=listen,
        strip_prefix=strip_prefix,
        route_to=route_to,
        sampling=sampling,
        retention_class=retention_class,
        reasons=tuple(reasons),
        policy_hash=policy.content_hash,
    )


def _extension_of(policy: Policy, call: CallFacts, route_to: str) -> str | None:
    if call.extension is not None:
        return normalize_number(call.extension)
    candidate = call.caller if call.direction == "outbound" else route_to
    if candidate is None or not policy.is_extension(candidate):
        return None
    return normalize_number(candidate)


def _blocking_reasons(
    policy: Policy, call: CallFacts, route_to: str, extension: str | None, strip_prefix: str | None
) -> Iterable[Reason]:
    """Every rule that forbids recording this call (all of them, for `explain`)."""
    rules = policy.recording
    if strip_prefix is not None:
        yield ("S7", f"private call: prefix {strip_prefix} dialled, stripped, never recorded")
    callee_is_ext = policy.is_extension(route_to)
    if call.external is False or (policy.is_extension(call.caller) and callee_is_ext):
        # S3 holds whatever else the policy says: calls between colleagues are never taped.
        yield ("S3", f"internal call ({call.caller or 'withheld'} -> {route_to}): never recorded")
    if call.direction not in rules.directions:
        recorded = " and ".join(sorted(rules.directions)) or "no"
        yield (
            "S1",
            f"{call.direction} calls are not recorded (this policy records {recorded} calls)",
        )
    if (
        call.direction == "inbound"
        and rules.service_numbers
        and not matches_any(rules.service_numbers, route_to)
    ):
        yield ("S1", f"{route_to} is not a service number (a direct line): not recorded")
    if matches_any(rules.private_numbers, route_to if call.direction == "inbound" else call.caller):
        yield ("S7", "private line: never recorded")
    for exclusion in rules.excluded_sites:
        if call.site is not None and call.site.lower() == exclusion.key.lower():
            yield ("S2", f"site {call.site} excluded: {exclusion.reason}")
    for exclusion in rules.excluded_trunks:
        if call.trunk is not None and call.trunk.lower() == exclusion.key.lower():
            yield ("S2", f"trunk {call.trunk} excluded: {exclusion.reason}")
    for exclusion in rules.excluded_extensions:
        if exclusion.pattern is not None and exclusion.pattern.matches(extension):
            yield ("S4", f"extension {extension} excluded: {exclusion.reason}")
    if rules.extensions == "listed":
        if extension is None:
            yield ("S3", "extension unknown: only listed extensions are recorded")
        elif extension not in policy.extensions:
            yield ("S3", f"extension {extension} is not listed: not recorded")


def _automatic(
    policy: Policy, call: CallFacts, now: datetime, reasons: list[Reason]
) -> tuple[bool, float | None, str]:
    """Whether recording starts by itself: mode, windows (S5, S7) and sampling (S6)."""
    if policy.recording.mode == "on_demand":
        reasons.append(("S5", "on-demand mode: recorded only when the agent starts it"))
        return False, None, "recordings"
    if policy.windows.enabled:
        local = now.astimezone(policy.timezone)
        window = policy.windows.window_at(local)
        day = _WEEKDAY_NAMES[local.weekday()]
        if window is None:
            reasons.append(
                (
                    "S7",
                    f"{day} {local:%H:%M} is outside the recording windows "
                    f"({policy.windows.describe_day(local.weekday())})",
                )
            )
            return False, None, "recordings"
        reasons.append(("S5", f"{day} {local:%H:%M} is inside the recording window {window}"))
    sampling = policy.sampling
    if sampling is None:
        return True, None, "recordings"
    percent = f"{sampling.fraction:.0%}"
    if sampling.stage == "daily":
        reasons.append(
            ("S6", f"recorded; the daily pass keeps a random {percent} and destroys the rest")
        )
        return True, sampling.fraction, "sampled_recordings"
    if call.draw is None:
        raise ValueError("this policy samples per call (S6): CallFacts.draw is required")
    drawn = call.draw()
    if keep_sample(drawn, sampling.fraction):
        reasons.append(("S6", f"drawn into the {percent} random sample ({drawn:.4f})"))
        return True, None, "sampled_recordings"
    reasons.append(("S6", f"not drawn into the {percent} random sample ({drawn:.4f})"))
    return False, None, "sampled_recordings"


def _notice_party(
    policy: Policy, direction: Direction, reasons: list[Reason]
) -> NoticeParty | None:
    if not policy.notice.play:
        reasons.append(("C1", "no notice is played (notice.play = false)"))
        return None
    if direction == "inbound":
        reasons.append(("C1", "the caller hears the recording notice before reaching an agent"))
        return "caller"
    if policy.notice.to_callee:
        reasons.append(("C2", "the callee hears the recording notice before the agent is bridged"))
        return "callee"
    reasons.append(("C2", "the callee of an outbound call is not told (notice.to_callee = false)"))
    return None


def _consent_reasons(policy: Policy) -> Iterable[Reason]:
    consent = policy.consent
    if consent.mode == "opt_in":
        keys = ", ".join(sorted(consent.accept_keys))
        yield (
            "C3",
            f"opt-in: recorded only if the caller presses {keys} within "
            f"{consent.listen_seconds:g} s",
        )
    elif consent.refusal_keys:
        keys = ", ".join(sorted(consent.refusal_keys))
        yield ("C3", f"opt-out: pressing {keys} within {consent.listen_seconds:g} s refuses")
    if consent.voice is not None:
        phrases = ", ".join(repr(phrase) for phrase in consent.voice.phrases)
        yield ("C4", f"saying {phrases} refuses too ({consent.voice.language})")
    if consent.agent_refusal_code:
        yield (
            "C5",
            f"a refusal told to the agent is recorded with {consent.agent_refusal_code}: "
            "recording stops and what was written is deleted",
        )
    if consent.refusal_elsewhere:
        yield ("C5", f"who refuses recording may instead: {consent.refusal_elsewhere}")
    yield ("C5", "a caller who refuses is still served, and not recorded")


def _naming_and_retention_reasons(
    policy: Policy, now: datetime, retention_class: str
) -> Iterable[Reason]:
    template = policy.naming.template
    if "{agent}" in template:
        sources = ", then ".join(map(str, policy.naming.agent_sources)) or "nowhere"
        yield ("N1", f"file named {template} (agent code from {sources})")
    elif "{extension}" in template:
        yield ("N2", f"file named {template}")
    rule = policy.retention.classes.get(retention_class)
    if rule is not None:
        expiry = rule.expiry(now, policy.timezone, policy.retention.fiscal_year_end)
        yield (
            rule.rule_id,
            f"{retention_class.replace('_', ' ')} kept {rule.describe()}: "
            f"destroyed from {expiry:%Y-%m-%d %H:%M} {policy.timezone.key}",
        )


def _never(
    policy: Policy, reasons: list[Reason], strip_prefix: str | None, route_to: str
) -> Decision:
    return Decision(
        record=False,
        on_demand=False,
        notice=False,
        notice_to=None,
        consent_mode=None,
        listen_seconds=0.0,
        strip_prefix=strip_prefix,
        route_to=route_to,
        sampling=None,
        retention_class="recordings",
        reasons=tuple(reasons),
        policy_hash=policy.content_hash,
    )


def keep_sample(draw: float, fraction: float) -> bool:
    """S6: a uniform draw in [0, 1) keeps the item with probability `fraction`."""
    return draw < fraction


def select_sample(ids: Iterable[str], fraction: float, rng: random.Random) -> frozenset[str]:
    """S6 daily pass: the ids kept, each independently with probability `fraction`.

    Ids are drawn in sorted order so that a given seed picks the same ones
    whatever order the catalog returned them in; nothing about a call or its
    agent enters the draw, which is what "random with respect to calls and
    agents" requires.
    """
    return frozenset(item for item in sorted(ids) if keep_sample(rng.random(), fraction))
