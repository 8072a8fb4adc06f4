"""`recorder people list`: the nominative list of people with access, produced at once (A12).

The list is the policy's `[people.*]` tables joined with their `[roles.*]`: who each person
is, and what the policy lets them hear (purposes, scope, window), so that the list an
auditor asks for is the one the recorder enforces (A10), not a copy kept elsewhere.

Exit codes: 0 done, 2 bad arguments or policy.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from recorder.access.roster import people_rows
from recorder.cli.common import CliExit, config_path, dump_json
from recorder.policy import Policy, PolicyError, load_policy

# What a scope lets a role hear, in the words of the rules it implements.
SCOPE_WORDS = {
    "all": "all recordings",
    "department": "its department's extensions",
    "team": "its team's agents",
    "own": "own calls",
    "statistics": "statistics only (A11)",
    "none": "no recording",
}
WINDOW_WORDS = {"call_day": "the day of the call", "retention": "the whole retention period"}


def _access_words(row: dict[str, Any]) -> str:
    if row["scope"] is None:
        return "-"
    words = SCOPE_WORDS[row["scope"]]
    if row["scope"] not in ("statistics", "none"):
        words += f", {WINDOW_WORDS[row['window']]}"
    if row["exclude_confidential"]:
        words += ", not confidential staff (A8)"
    if row["can_override"]:
        words += "; may override (A14)"
    return words


def _print(policy: Policy, rows: list[dict[str, Any]], out: TextIO) -> None:
    out.write(
        f"{policy.title or policy.name}: {len(rows)} people (policy {policy.content_hash[:12]})\n"
    )
    for row in rows:
        where = ", ".join(
            f"{label} {row[key]}"
            for key, label in (
                ("team", "team"),
                ("department", "department"),
                ("extension", "ext"),
                ("agent_code", "agent"),
            )
            if row[key]
        )
        out.write(
            f"\n{row['id']}  {row['name']}{'  (confidential, A8)' if row['confidential'] else ''}\n"
        )
        out.write(f"  role      {row['role']}: {row['role_description'] or '-'}\n")
        if where:
            out.write(f"  where     {where}\n")
        out.write(f"  purposes  {', '.join(row['purposes']) or 'none'}\n")
        out.write(f"  access    {_access_words(row)}\n")


def _people_list(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(config_path(args.config))
        if args.role is not None and args.role not in policy.roles:
            known = ", ".join(sorted(policy.roles)) or "none"
            raise CliExit(2, f"--role: unknown role {args.role!r} (defined: {known})")
    except PolicyError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    except CliExit as exc:
        print(exc.message, file=sys.stderr)
        return exc.code
    rows = people_rows(policy, args.role)
    if args.json:
        dump_json(sys.stdout, rows)
    else:
        _print(policy, rows, sys.stdout)
    return 0


def add_people_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `people` on the `recorder` command's subparsers."""
    people = subparsers.add_parser(
        "people", help="the nominative list of people with access (A10, A12)"
    )
    commands = people.add_subparsers(dest="people_command", required=True)
    listing = commands.add_parser("list", help="everyone on the list, and what they may hear")
    listing.add_argument("--config", help="policy file (default ./policy.toml, then /etc/recorder)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of text")
    listing.add_argument("--role", help="only the people of this role")
    listing.set_defaults(handler=_people_list)
