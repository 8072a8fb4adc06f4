"""`recorder purge`, `recorder hold ...`, `recorder audit ...`, `recorder recompute-expiry`.

The service runs the same purge hourly (`purge_once`); the command is for admins who prefer
a systemd timer, for `--dry-run` previews, and for tests that move the clock with `--now`.
A timer instead of (or besides) the service's schedule; purges are idempotent and safe to
overlap with the service's, so running both does no harm:

    # /etc/systemd/system/recorder-purge.service
    [Service]
    Type=oneshot
    User=recorder
    ExecStart=/usr/bin/recorder purge --config /etc/recorder/policy.toml

    # /etc/systemd/system/recorder-purge.timer
    [Timer]
    OnCalendar=hourly
    Persistent=true
    [Install]
    WantedBy=timers.target

Exit codes: 0 done; 1 a refusal, an integrity failure (X1), a broken audit chain, or an
unreadable catalog; 2 bad arguments or policy.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime, tzinfo
from pathlib import Path
from typing import TextIO

from recorder.cli.common import (
    CliExit,
    catalog_handler,
    dump_json,
    load_config_and_policy,
    local_time,
    opened_catalog,
    os_actor,
    parse_instant,
)
from recorder.ops.retention import purge_once, settings_from_policy
from storage.audit import AuditTrail
from storage.db import CatalogMissing
from storage.repository import NotFound
from storage.retention import (
    HoldInfo,
    HoldRefused,
    PurgeError,
    PurgeReport,
    add_hold,
    end_of_day,
    list_holds,
    recompute_expiry,
    release_holds,
)


def _until(text: str | None, zone: tzinfo) -> datetime | None:
    """`--until 2026-12-31` keeps the recording through that whole day (calendar days)."""
    if text is None:
        return None
    try:
        return end_of_day(date.fromisoformat(text), zone)
    except ValueError:
        return parse_instant(text, zone, "--until")


def _ids(values: list[int]) -> str:
    shown = ", ".join(map(str, values[:20]))
    return shown + (f" ... (+{len(values) - 20})" if len(values) > 20 else "")


def _print_report(report: PurgeReport, zone: tzinfo, out: TextIO) -> None:
    would = report.dry_run
    out.write(f"purge at {local_time(report.now, zone)}{' (dry run)' if would else ''}\n")
    if report.resumed:
        label = "to finish" if would else "finished"
        out.write(f"{label} from an interrupted run: {_ids(report.resumed)}\n")
    destroyed = [d.recording_id for d in report.destroyed]
    label = "to destroy" if would else "destroyed"
    out.write(f"recordings {label}: {len(destroyed)}")
    out.write(f" ({_ids(destroyed)})\n" if destroyed else "\n")
    if report.held:
        out.write(f"kept by a hold: {_ids(report.held)}\n")
    if report.expiry_set:
        out.write(f"expiry filled in: {_ids(report.expiry_set)}\n")
    for draw in report.sampling:
        if would:
            out.write(f"sample of {draw.day}: {draw.candidates} recordings to draw from\n")
        else:
            out.write(
                f"sample of {draw.day}: {draw.candidates} recordings,"
                f" {len(draw.kept)} kept, {len(draw.dropped)} not kept\n"
            )
    label = "to erase" if would else "erased"
    out.write(f"call-log rows with numbers {label}: {report.numbers_erased}\n")
    label = "to prune" if would else "pruned"
    out.write(f"audit entries {label}: {report.audit_pruned}\n")
    for failure in report.integrity_failures:
        out.write(
            f"INTEGRITY FAILURE (X1) recording {failure.recording_id}: {failure.problem}"
            f" {failure.path or ''}\n"
        )
    for error in report.errors:
        out.write(f"ERROR {error}\n")


def _purge(args: argparse.Namespace, out: TextIO) -> int:
    config, policy = load_config_and_policy(args)
    now = (
        datetime.now(UTC) if args.now is None else parse_instant(args.now, policy.timezone, "--now")
    )
    try:
        report = purge_once(
            config, policy, now, dry_run=args.dry_run, actor=os_actor(), seed=args.seed
        )
    except CatalogMissing as exc:
        raise CliExit(1, f"{exc} (storage.database in {config.path})") from None
    except PurgeError as exc:
        raise CliExit(1, str(exc)) from None
    if args.json:
        dump_json(out, report.to_json())
    else:
        _print_report(report, policy.timezone, out)
    return 0 if report.ok else 1


def _hold_row(hold: HoldInfo, zone: tzinfo, now: datetime) -> str:
    state = "active" if hold.active(now) else ("released" if hold.released_at else "ended")
    return (
        f"{hold.id:<5} {hold.recording_id:<9} {state:<8} {local_time(hold.created_at, zone)}  "
        f"{hold.created_by:<12} {local_time(hold.until, zone):<19}  {hold.reason}"
    )


def _hold_add(args: argparse.Namespace, out: TextIO) -> int:
    with opened_catalog(args) as ctx:
        now = datetime.now(UTC)
        try:
            hold = add_hold(
                ctx.catalog,
                args.recording,
                reason=args.reason,
                actor=os_actor(),
                now=now,
                settings=settings_from_policy(ctx.policy),
                until=_until(args.until, ctx.zone),
                purpose=args.purpose,
                anchor_path=ctx.anchor,
            )
        except HoldRefused as exc:
            raise CliExit(1, f"hold refused: {exc}") from None
        except ValueError as exc:
            raise CliExit(2, f"hold refused: {exc}") from None
    if args.json:
        dump_json(out, hold.to_json())
    else:
        until = local_time(hold.until, ctx.zone) if hold.until else "released"
        out.write(f"hold {hold.id} on recording {hold.recording_id} until {until}\n")
    return 0


def _hold_release(args: argparse.Namespace, out: TextIO) -> int:
    with opened_catalog(args) as ctx:
        try:
            released = release_holds(
                ctx.catalog,
                args.recording,
                actor=os_actor(),
                now=datetime.now(UTC),
                reason=args.reason,
                anchor_path=ctx.anchor,
            )
        except (HoldRefused, NotFound) as exc:
            raise CliExit(1, str(exc)) from None
    if args.json:
        dump_json(out, [hold.to_json() for hold in released])
    else:
        for hold in released:
            out.write(f"released hold {hold.id} on recording {hold.recording_id}\n")
    return 0


def _hold_list(args: argparse.Namespace, out: TextIO) -> int:
    with opened_catalog(args) as ctx:
        now = datetime.now(UTC)
        holds = list_holds(ctx.catalog, now=now, include_inactive=args.all)
        # A listing of recordings is itself traced (A10).
        AuditTrail(ctx.catalog, ctx.anchor).record(
            at=now,
            actor=os_actor(),
            action="hold.list",
            object="holds",
            detail={"count": len(holds), "all": args.all},
        )
    if args.json:
        dump_json(out, [hold.to_json() for hold in holds])
        return 0
    out.write(
        "ID    RECORDING STATE    CREATED              BY           UNTIL                REASON\n"
    )
    for hold in holds:
        out.write(_hold_row(hold, ctx.zone, now) + "\n")
    return 0


def _audit_verify(args: argparse.Namespace, out: TextIO) -> int:
    with opened_catalog(args) as ctx:
        anchor = Path(args.anchor) if args.anchor else ctx.anchor
        report = AuditTrail(ctx.catalog, anchor).verify()
    if args.json:
        dump_json(out, report.to_json())
    elif report.ok:
        out.write(
            f"audit trail intact: {report.entries} entries"
            f" ({report.first_seq}..{report.last_seq}), {report.anchors_checked} anchors\n"
        )
    bad = report.first_bad
    if bad is not None:
        where = "anchor file" if bad.seq is None else f"entry {bad.seq}"
        print(f"audit trail BROKEN at {where}: {bad.message}", file=sys.stderr)
        for problem in report.problems:
            if problem is not bad:
                print(f"  also: {problem.message}", file=sys.stderr)
        return 1
    return 0


def _audit_list(args: argparse.Namespace, out: TextIO) -> int:
    with opened_catalog(args) as ctx:
        entries = AuditTrail(ctx.catalog, ctx.anchor).entries(limit=args.limit)
    if args.json:
        dump_json(out, [entry.to_json() for entry in entries])
        return 0
    for entry in entries:
        out.write(
            f"{entry.seq:<7} {local_time(entry.at, ctx.zone)}  {entry.actor:<10} {entry.action:<28}"
            f" {entry.object:<18} {entry.outcome:<10} {entry.reason or ''}\n"
        )
    return 0


def _recompute(args: argparse.Namespace, out: TextIO) -> int:
    with opened_catalog(args) as ctx:
        changes = recompute_expiry(
            ctx.catalog,
            settings_from_policy(ctx.policy),
            now=datetime.now(UTC),
            actor=os_actor(),
            dry_run=args.dry_run,
            anchor_path=ctx.anchor,
            policy_hash=ctx.policy.content_hash,
        )
    if args.json:
        dump_json(out, [change.to_json() for change in changes])
        return 0
    verb = "would change" if args.dry_run else "changed"
    for change in changes:
        out.write(
            f"recording {change.recording_id}: {local_time(change.old, ctx.zone)}"
            f" -> {local_time(change.new, ctx.zone)}\n"
        )
    out.write(f"{len(changes)} expiries {verb}\n")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="policy file (default ./policy.toml, then /etc/recorder)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def add_retention_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register `purge`, `hold`, `audit` and `recompute-expiry` on `recorder`'s subparsers."""
    purge = subparsers.add_parser(
        "purge", help="apply retention now: expiry, sampling, holds, number erasure (D1-D5)"
    )
    _common(purge)
    purge.add_argument(
        "--now",
        metavar="ISO8601",
        help="act as if it were this time (no offset: the policy's time zone)",
    )
    purge.add_argument("--dry-run", action="store_true", help="report, change nothing")
    purge.add_argument(
        "--seed", type=int, help="seed the S6 draw (reproducible tests; default: the OS)"
    )
    purge.set_defaults(handler=catalog_handler(_purge))

    hold = subparsers.add_parser("hold", help="legal holds on recordings (D4, P4)")
    hold_commands = hold.add_subparsers(dest="hold_command", required=True)
    hold_add = hold_commands.add_parser("add", help="keep a recording past its expiry")
    hold_add.add_argument("recording", type=int, metavar="RECORDING")
    hold_add.add_argument("--reason", required=True, help="the complaint or dispute (no numbers)")
    hold_add.add_argument(
        "--until", metavar="DATE", help="kept through this day (default: until released)"
    )
    hold_add.add_argument("--purpose", help="the purpose behind the hold (P1-P4)")
    _common(hold_add)
    hold_add.set_defaults(handler=catalog_handler(_hold_add))
    hold_release = hold_commands.add_parser("release", help="release a recording's holds")
    hold_release.add_argument("recording", type=int, metavar="RECORDING")
    hold_release.add_argument("--reason", help="why the hold ends")
    _common(hold_release)
    hold_release.set_defaults(handler=catalog_handler(_hold_release))
    hold_list = hold_commands.add_parser("list", help="active holds")
    hold_list.add_argument("--all", action="store_true", help="released and ended ones too")
    _common(hold_list)
    hold_list.set_defaults(handler=catalog_handler(_hold_list))

    audit = subparsers.add_parser("audit", help="the tamper-evident audit trail (A10, X1)")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify", help="check the hash chain and the anchor file; exit 1 on any break"
    )
    verify.add_argument("--anchor", metavar="FILE", help="anchor file (default: in storage.dir)")
    _common(verify)
    verify.set_defaults(handler=catalog_handler(_audit_verify))
    audit_list = audit_commands.add_parser("list", help="the latest audit entries")
    audit_list.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    _common(audit_list)
    audit_list.set_defaults(handler=catalog_handler(_audit_list))

    recompute = subparsers.add_parser(
        "recompute-expiry",
        help="apply the current policy's periods to kept recordings (explicit, audited)",
    )
    recompute.add_argument("--dry-run", action="store_true", help="report, change nothing")
    _common(recompute)
    recompute.set_defaults(handler=catalog_handler(_recompute))
