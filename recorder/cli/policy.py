"""`recorder policy check` and `recorder policy explain`.

`recorder.cli.main` calls `add_policy_commands()` on its `policy` sub-parsers; the
handlers take the parsed arguments, print to stdout (errors of `explain` to
stderr) and return the exit code. This is the only place in the policy
package that reads a clock (the default `--at`) or the file system.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from recorder.call.agent_codes import agent_codes_for
from recorder.cli.common import config_path
from recorder.config import Config, ConfigError, load_config
from recorder.policy.engine import CallFacts, Decision, decide
from recorder.policy.model import WEEKDAYS, Policy, PolicyError, load_policy

# Same search order as `recorder serve` (recorder.cli.main): the working directory, then /etc.
WITHHELD = frozenset({"", "withheld", "anonymous", "unknown", "restricted"})


def add_policy_commands(policy_subparsers: Any) -> None:
    """Register `check` and `explain` on the `recorder policy` sub-parsers."""
    check = policy_subparsers.add_parser(
        "check",
        help="validate a policy file: deployment and rules (exit 2 on error)",
        description="Print every problem as FILE:LINE: key: message and exit 2, "
        "or a one-paragraph summary of what the policy does and exit 0.",
    )
    check.add_argument("file")
    check.set_defaults(handler=cmd_check)

    explain = policy_subparsers.add_parser(
        "explain",
        help="print the decision for a call and the rule IDs behind it",
        description="Apply the policy to one described call, without placing it.",
    )
    explain.add_argument("--config", help="policy file (default ./policy.toml, then /etc/recorder)")
    explain.add_argument("--direction", choices=("inbound", "outbound"), required=True)
    explain.add_argument(
        "--from", dest="caller", required=True, help="caller number, or 'withheld'"
    )
    explain.add_argument("--to", dest="callee", required=True, help="callee number or extension")
    explain.add_argument("--at", help="ISO 8601 time (default now); without offset: policy zone")
    explain.add_argument("--site", help="the site that handles the call (S2)")
    explain.add_argument("--trunk", help="the trunk the call uses (S2)")
    explain.add_argument("--extension", help="the internal party's extension, if known")
    explain.add_argument("--internal", action="store_true", help="the classifier says: internal")
    explain.add_argument("--seed", type=int, help="seed of the per-call sampling draw (S6)")
    explain.add_argument("--json", action="store_true", help="print JSON")
    explain.set_defaults(handler=cmd_explain)


def cmd_check(args: argparse.Namespace) -> int:
    path = Path(args.file)
    problems: list[str] = []
    config: Config | None = None
    policy: Policy | None = None
    warnings: tuple[str, ...] = ()
    try:
        config = load_config(path)
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        policy = load_policy(path)
        warnings = policy.warnings
    except PolicyError as exc:
        problems.extend(exc.problems)
        warnings = exc.warnings
    if policy is not None:
        # The agent's codes are matched digit by digit: one may not be the start of another.
        try:
            agent_codes_for(policy)
        except ValueError as exc:
            problems.append(f"{path}:0: recording codes: {exc}")
    # Both loaders report an unreadable file, a syntax error or a bad zone the same way.
    problems = list(dict.fromkeys(problems))
    for warning in warnings:
        print(warning, file=sys.stderr)
    if problems or config is None or policy is None:
        for problem in problems:
            print(problem)
        return 2
    print(summarize(policy, config))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    try:
        at = _parse_at(args.at, policy)
    except ValueError as exc:
        print(f"--at: {exc}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    caller = None if args.caller.strip().lower() in WITHHELD else args.caller
    call = CallFacts(
        direction=args.direction,
        caller=caller,
        callee=args.callee,
        extension=args.extension,
        external=False if args.internal else None,
        site=args.site,
        trunk=args.trunk,
        draw=rng.random,
    )
    decision = decide(policy, call, at)
    if args.json:
        print(json.dumps(_explain_dict(policy, call, at, decision), indent=2, ensure_ascii=False))
    else:
        print(_explain_text(policy, call, at, decision))
    return 0


def _parse_at(text: str | None, policy: Policy) -> datetime:
    if text is None:
        return datetime.now(policy.timezone)
    at = datetime.fromisoformat(text)
    return at.replace(tzinfo=policy.timezone) if at.tzinfo is None else at


def _explain_dict(
    policy: Policy, call: CallFacts, at: datetime, decision: Decision
) -> dict[str, Any]:
    return {
        "policy": policy.name,
        "at": at.astimezone(policy.timezone).isoformat(),
        "call": {
            "direction": call.direction,
            "from": call.caller,
            "to": call.callee,
            "extension": call.extension,
            "site": call.site,
            "trunk": call.trunk,
        },
        **decision.to_dict(),
    }


def _explain_text(policy: Policy, call: CallFacts, at: datetime, decision: Decision) -> str:
    local = at.astimezone(policy.timezone)
    headline = {
        "record": "RECORD",
        "on_demand": "ON DEMAND ONLY (not recorded unless the agent starts it)",
        "never": "DO NOT RECORD",
    }[decision.outcome]
    details: list[str] = []
    if decision.notice_to:
        details.append(f"notice to the {decision.notice_to}")
        details.append(
            f"{(decision.consent_mode or '').replace('_', '-')}, listening "
            f"{decision.listen_seconds:g} s"
        )
    if decision.strip_prefix:
        details.append(f"prefix {decision.strip_prefix} stripped, routed to {decision.route_to}")
    lines = [
        f"Policy {policy.name} ({policy.path}, sha256 {policy.content_hash[:12]}): "
        f"{call.direction} call from {call.caller or 'withheld'} to {call.callee} at "
        f"{local:%a %Y-%m-%d %H:%M} {policy.timezone.key}",
        f"Decision: {headline}" + (f" - {'; '.join(details)}" if details else ""),
    ]
    lines.extend(f"  {rule:<3} {text}" for rule, text in decision.reasons)
    lines.append(f"Rules: {', '.join(decision.rule_ids)}")
    return "\n".join(lines)


def summarize(policy: Policy, config: Config) -> str:
    """One paragraph saying what the policy does, for `recorder policy check`."""
    rules = policy.recording
    sentences: list[str] = [
        f"Policy {policy.name}" + (f" ({policy.title})" if policy.title else "")
    ]
    if not rules.directions:
        sentences[0] += " records no call."
    else:
        scope = (
            f"the {len(policy.extensions)} listed extensions"
            if rules.extensions == "listed"
            else "any extension"
        )
        how = "on demand only" if rules.mode == "on_demand" else "automatically"
        where = ""
        if rules.service_numbers:
            where = f" to {', '.join(p.text for p in rules.service_numbers)}"
        sentences[0] += (
            f" records {' and '.join(sorted(rules.directions))} external calls{where} "
            f"of {scope} {how}; internal calls never"
        )
        excluded = [f"site {e.key}" for e in rules.excluded_sites]
        excluded += [f"trunk {e.key}" for e in rules.excluded_trunks]
        excluded += [f"extension {e.key}" for e in rules.excluded_extensions]
        if excluded:
            sentences[0] += f", nor calls of {', '.join(excluded)}"
        sentences[0] += "."
        if rules.private_prefix:
            sentences.append(
                f"Calls dialled with {rules.private_prefix} are private and unrecorded."
            )
        if policy.windows.enabled:
            days = [
                f"{day} {policy.windows.describe_day(i)}"
                for i, day in enumerate(WEEKDAYS)
                if policy.windows.by_day[i]
            ]
            sentences.append(f"Automatic recording only within {'; '.join(days)}.")
        if rules.on_demand and rules.mode == "automatic":
            sentences.append("Agents may also start a recording on demand.")
        if policy.sampling is not None:
            stage = "by the daily pass" if policy.sampling.stage == "daily" else "per call"
            sentences.append(f"A random {policy.sampling.fraction:.0%} is kept {stage}.")
        if policy.notice.play:
            listeners = "callers and callees" if policy.notice.to_callee else "callers"
            refusal = _refusal_summary(policy)
            sentences.append(
                f"{listeners.capitalize()} hear the notice "
                f"({', '.join(policy.notice.prompts)}); {refusal}."
            )
        classes = "; ".join(
            f"{name.replace('_', ' ')} {rule.describe()}"
            for name, rule in policy.retention.classes.items()
        )
        sentences.append(
            f"Files are named {policy.naming.template}; retention: {classes}"
            + ("; holds allowed." if policy.retention.holds else ".")
        )
    sentences.append(
        f"Access list: {_count(len(policy.people), 'person', 'people')} in "
        f"{_count(len(policy.roles), 'role', 'roles')}, "
        f"{_count(len(policy.purposes), 'access purpose', 'access purposes')}."
    )
    ext, internal = config.external, config.internal
    sentences.append(
        f"Trunk side {ext.listen[0]}:{ext.listen[1]}, PBX at {internal.next_hop[0]}:"
        f"{internal.next_hop[1]}, recordings under {config.storage.dir}, "
        f"calendar days in {policy.timezone.key}."
    )
    return " ".join(sentences)


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def _refusal_summary(policy: Policy) -> str:
    consent = policy.consent
    ways: list[str] = []
    if consent.mode == "opt_in":
        return f"opt-in: recorded only after key {', '.join(sorted(consent.accept_keys))}"
    if consent.refusal_keys:
        ways.append(f"key {', '.join(sorted(consent.refusal_keys))}")
    if consent.voice is not None:
        ways.append("voice")
    if consent.agent_refusal_code:
        ways.append("telling the agent")
    if consent.refusal_elsewhere:
        ways.append(f"another channel ({consent.refusal_elsewhere})")
    if not ways:
        return "they cannot refuse"
    return f"they may refuse by {' or '.join(ways)} and are served anyway"


def main(argv: list[str] | None = None) -> int:
    """`recorder policy ...` alone: for tests, and until recorder.cli.main is wired."""
    parser = argparse.ArgumentParser(prog="recorder policy")
    add_policy_commands(parser.add_subparsers(dest="policy_command", required=True))
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
