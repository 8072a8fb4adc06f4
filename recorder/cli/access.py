"""`recorder access check`: may this person hear this recording, for this purpose, now?

The answer comes from the policy's people, roles and purposes (`check_access`) and what the
catalog holds of the recording; every check, allowed or refused, is written to the audit
trail with the person, the purpose and the reason given (A3, A5, A10), so that the trail
shows who asked for what, when and why, whatever the answer.

Exit codes: 0 allowed, 1 refused or no such recording, 2 bad arguments or policy.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TextIO

from recorder.access.rules import RecordingFacts, check_access
from recorder.cli.common import (
    CatalogContext,
    CliExit,
    catalog_handler,
    dump_json,
    local_time,
    opened_catalog,
    os_actor,
    parse_instant,
)
from storage import audit
from storage.models import RecordingState


def _trace(
    context: CatalogContext, args: argparse.Namespace, now: datetime, decision: dict[str, object]
) -> None:
    audit.record(
        context.catalog,
        audit.default_anchor_path(context.config.storage.dir),
        at=datetime.now(UTC),
        actor=f"{args.person} via {os_actor()}",
        action="access.check",
        object=f"recording:{args.recording}",
        outcome="allowed" if decision["allowed"] else "refused",
        purpose=args.purpose,
        reason=args.reason,
        detail={"at": now.isoformat(), **decision},
    )


def _access_check(args: argparse.Namespace, out: TextIO) -> int:
    with opened_catalog(args) as context:
        policy, catalog = context.policy, context.catalog
        zone = policy.timezone
        now = datetime.now(UTC) if args.at is None else parse_instant(args.at, zone, "--at")
        recording = catalog.get_recording(args.recording)
        call = None if recording is None else catalog.get_call(recording.call_id)
        if recording is None or call is None:
            decision_json: dict[str, object] = {"allowed": False, "found": False}
        else:
            facts = RecordingFacts(
                call_at=call.arrived_at,
                expires_at=recording.expires_at,
                destroyed=recording.state in (RecordingState.DESTROYING, RecordingState.DESTROYED)
                or recording.destroyed_at is not None,
                agent=call.agent,
                extension=call.extension,
            )
            decision = check_access(policy, args.person, args.purpose, facts, now)
            decision_json = decision.to_json()
        # No answer without its trace: a reason the trail cannot hold (a phone number, which
        # would outlive the call log's D2 erasure there) refuses the check itself.
        try:
            _trace(context, args, now, decision_json)
        except ValueError as exc:
            raise CliExit(2, f"access check refused: {exc}") from None
    if recording is None or call is None:
        raise CliExit(1, f"no recording {args.recording}")
    if args.json:
        dump_json(out, {"recording": args.recording, "person": args.person, **decision_json})
        return 0 if decision.allowed else 1
    verdict = "ALLOWED" if decision.allowed else "REFUSED"
    out.write(
        f"{verdict}: {args.person} / recording {args.recording} / {args.purpose}"
        f" at {local_time(now, zone)}\n"
    )
    for rule, text in decision.reasons:
        out.write(f"  [{rule}] {text}\n")
    if decision.allowed and decision.approvers > 1:
        out.write(f"  the request needs {decision.approvers} approvers (A9)\n")
    return 0 if decision.allowed else 1


def add_access_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `access` on the `recorder` command's subparsers."""
    access = subparsers.add_parser(
        "access", help="who may hear which recording, for what, and when (A1-A11)"
    )
    commands = access.add_subparsers(dest="access_command", required=True)
    check = commands.add_parser(
        "check", help="may PERSON hear RECORDING for PURPOSE now? (audited, A5, A10)"
    )
    check.add_argument("recording", type=int, metavar="RECORDING")
    check.add_argument("--as", dest="person", required=True, help="a [people.*] id")
    check.add_argument("--purpose", required=True, help="a [purposes.*] id (P1-P4)")
    check.add_argument("--reason", required=True, help="the written reason for asking (A3)")
    check.add_argument(
        "--at", metavar="ISO8601", help="check as of this instant (no offset: policy zone)"
    )
    check.add_argument("--config", help="policy file (default ./policy.toml, then /etc/recorder)")
    check.add_argument("--json", action="store_true", help="print JSON instead of text")
    check.set_defaults(handler=catalog_handler(_access_check))
