"""`recorder calls list`, `recorder recordings list`, `recorder recordings show ID`.

Times are printed in the policy's time zone (the one calendar days and file names use) in
the table, and as UTC ISO 8601 in `--json`. Phone numbers are printed as stored: the catalog
is the one place they live (N3), and the D2 purge replaces them by `erased`.

Exit codes: 0 done, 1 nothing found or the catalog is unreadable, 2 bad arguments or policy.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, TextIO

from recorder.cli.common import (
    CliExit,
    catalog_handler,
    config_path,
    dump_json,
    local_time,
)
from recorder.config import ConfigError, load_config
from recorder.ops.logs import mask_numbers
from storage import audit
from storage.db import CatalogMissing
from storage.models import Direction, RecordingState
from storage.repository import CallInfo, Catalog, RecordingInfo


class _Opened:
    """An open catalog, the policy's zone, and where the audit chain is anchored."""

    def __init__(self, catalog: Catalog, zone: tzinfo, anchor: Path) -> None:
        self.catalog = catalog
        self.zone = zone
        self.anchor = anchor

    def audit(self, action: str, object_: str, detail: dict[str, Any]) -> None:
        """A10, A5: every listing or reading of the catalog leaves a trace, or fails."""
        self.anchor.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        clean = {k: mask_numbers(v) if isinstance(v, str) else v for k, v in detail.items()}
        audit.record(
            self.catalog,
            self.anchor,
            at=datetime.now(UTC),
            actor=f"{getpass.getuser()} (uid {os.getuid()})",
            action=action,
            object=object_,
            detail=clean,
        )


def _open_audited(args: argparse.Namespace) -> _Opened:
    catalog, zone = _open(args)
    config = load_config(config_path(args.config))
    return _Opened(catalog, zone, audit.default_anchor_path(config.storage.dir))


def _open(args: argparse.Namespace) -> tuple[Catalog, tzinfo]:
    try:
        config = load_config(config_path(args.config))
    except ConfigError as exc:
        raise CliExit(2, "\n".join(exc.problems)) from None
    database = config.storage.database
    try:
        # Reading commands never create a catalog: an empty one would hide a wrong path.
        catalog = Catalog.open(database, create=False)
    except CatalogMissing as exc:
        raise CliExit(1, f"{exc} (storage.database in {config.path})") from None
    return catalog, config.service.timezone


def _since(text: str | None, zone: tzinfo) -> datetime | None:
    """ISO 8601; a date or a time without offset is read in the policy's time zone."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CliExit(2, f"--since: not an ISO 8601 date or time: {text!r}") from None
    return value.replace(tzinfo=zone) if value.tzinfo is None else value


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(title) for title in header]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    for row in (header, *rows):
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        out.write("\n")


def _consent(call: CallInfo) -> str:
    if call.consent_outcome is None:
        return "-"
    return f"{call.consent_outcome}/{call.consent_method or '?'}"


def _filters_used(args: argparse.Namespace) -> dict[str, Any]:
    names = ("since", "extension", "agent", "direction", "state")
    return {name: getattr(args, name) for name in names if getattr(args, name, None)}


def _calls_list(args: argparse.Namespace, out: TextIO) -> int:
    opened = _open_audited(args)
    catalog, zone = opened.catalog, opened.zone
    try:
        calls = catalog.list_calls(
            since=_since(args.since, zone),
            extension=args.extension,
            agent=args.agent,
            direction=args.direction,
        )
        opened.audit("calls.list", "calls", {**_filters_used(args), "count": len(calls)})
    finally:
        catalog.close()
    if args.json:
        dump_json(out, [call.to_json() for call in calls])
        return 0
    rows = [
        [
            str(call.id),
            local_time(call.arrived_at, zone),
            call.direction.value,
            call.caller_number,
            call.callee_number,
            call.extension or "-",
            call.agent or "-",
            call.site or "-",
            _seconds(call.talk_seconds),
            "yes" if call.policy_record else "no",
            ",".join(call.policy_rules) or "-",
            _consent(call),
            call.status.value,
            call.end_reason or "-",
        ]
        for call in calls
    ]
    header = [
        "ID",
        "ARRIVED",
        "DIR",
        "FROM",
        "TO",
        "EXT",
        "AGENT",
        "SITE",
        "TALK",
        "REC",
        "RULES",
        "CONSENT",
        "STATUS",
        "END",
    ]
    _table(out, header, rows)
    return 0


def _recordings_list(args: argparse.Namespace, out: TextIO) -> int:
    opened = _open_audited(args)
    catalog, zone = opened.catalog, opened.zone
    try:
        recordings = catalog.list_recordings(
            since=_since(args.since, zone),
            extension=args.extension,
            agent=args.agent,
            direction=args.direction,
            state=args.state,
        )
        calls = catalog.get_calls(recording.call_id for recording in recordings)
        opened.audit(
            "recordings.list", "recordings", {**_filters_used(args), "count": len(recordings)}
        )
    finally:
        catalog.close()
    if args.json:
        dump_json(out, [recording.to_json() for recording in recordings])
        return 0
    rows = []
    for recording in recordings:
        call = calls[recording.call_id]
        rows.append(
            [
                str(recording.id),
                str(recording.call_id),
                local_time(recording.created_at, zone),
                recording.state.value,
                _seconds(recording.duration),
                "-" if recording.size is None else str(recording.size),
                call.extension or "-",
                call.agent or "-",
                local_time(recording.expires_at, zone),
                recording.name,
            ]
        )
    header = ["ID", "CALL", "STARTED", "STATE", "SECONDS", "BYTES", "EXT", "AGENT", "EXPIRES"]
    _table(out, [*header, "NAME"], rows)
    return 0


def _show_lines(recording: RecordingInfo, call: CallInfo | None, zone: tzinfo) -> list[str]:
    pauses = ", ".join(f"{start:.2f}-{end:.2f}" for start, end in recording.pauses) or "none"
    lines = [
        f"recording     {recording.id}",
        f"state         {recording.state.value}",
        f"name          {recording.name}",
        f"path          {recording.path or '-'}",
        f"node          {recording.node or '-'}",
        f"format        {recording.format}",
        f"channels      left={recording.channel_map.get('left', '?')} "
        f"right={recording.channel_map.get('right', '?')}",
        f"duration      {_seconds(recording.duration)} s",
        f"size          {'-' if recording.size is None else recording.size} bytes",
        f"sha256        {recording.sha256 or '-'}",
        f"pauses        {pauses}",
        f"started       {local_time(recording.created_at, zone)}",
        f"finalized     {local_time(recording.finalized_at, zone)}",
        f"expires       {local_time(recording.expires_at, zone)}",
    ]
    if recording.destroyed_at is not None:
        lines.append(
            f"destroyed     {local_time(recording.destroyed_at, zone)} ({recording.destroy_reason})"
        )
    if call is not None:
        lines += [
            f"call          {call.id} ({call.direction.value}, {call.status.value})",
            f"call-ids      A {call.call_id_a}  B {call.call_id_b or '-'}",
            f"from / to     {call.caller_number} -> {call.callee_number}",
            f"extension     {call.extension or '-'}   agent {call.agent or '-'}"
            f"   site {call.site or '-'}",
            f"arrived       {local_time(call.arrived_at, zone)}",
            f"answered      {local_time(call.answered_at, zone)}",
            f"ended         {local_time(call.ended_at, zone)} ({call.end_reason or '-'})",
            f"policy        record={'yes' if call.policy_record else 'no'} "
            f"rules={','.join(call.policy_rules) or '-'} hash={call.policy_hash or '-'}",
            f"consent       {_consent(call)} digit={call.consent_digit or '-'} "
            f"at {local_time(call.consent_at, zone)}",
        ]
    return lines


def _recordings_show(args: argparse.Namespace, out: TextIO) -> int:
    opened = _open_audited(args)
    catalog, zone = opened.catalog, opened.zone
    try:
        recording = catalog.get_recording(args.id)
        opened.audit("recording.read", f"recording:{args.id}", {"found": recording is not None})
        if recording is None:
            raise CliExit(1, f"no recording {args.id}")
        call = catalog.get_call(recording.call_id)
        events = catalog.list_events(recording.call_id)
    finally:
        catalog.close()
    if args.json:
        dump_json(
            out,
            {
                "recording": recording.to_json(),
                "call": None if call is None else call.to_json(),
                "events": [event.to_json() for event in events],
            },
        )
        return 0
    for line in _show_lines(recording, call, zone):
        out.write(line + "\n")
    if events:
        out.write("events\n")
        for event in events:
            detail = json.dumps(event.detail, ensure_ascii=False, sort_keys=True)
            out.write(f"  {local_time(event.at, zone)}  {event.name}  {detail}\n")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="policy file (default ./policy.toml, then /etc/recorder)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since",
        metavar="ISO8601",
        help="only from this date/time on (no offset: the policy's time zone)",
    )
    parser.add_argument("--extension", help="only calls of this extension")
    parser.add_argument("--agent", help="only calls answered by this agent code")
    parser.add_argument(
        "--direction", choices=[d.value for d in Direction], help="only this direction"
    )


def add_catalog_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `calls` and `recordings` on the `recorder` command's subparsers."""
    calls = subparsers.add_parser("calls", help="the call log (N3)")
    calls_commands = calls.add_subparsers(dest="calls_command", required=True)
    calls_list = calls_commands.add_parser("list", help="list calls, oldest first")
    _common(calls_list)
    _filters(calls_list)
    calls_list.set_defaults(handler=catalog_handler(_calls_list))

    recordings = subparsers.add_parser("recordings", help="recordings in the catalog")
    recordings_commands = recordings.add_subparsers(dest="recordings_command", required=True)
    recordings_list = recordings_commands.add_parser("list", help="list recordings, oldest first")
    _common(recordings_list)
    _filters(recordings_list)
    recordings_list.add_argument(
        "--state", choices=[s.value for s in RecordingState], help="only this state"
    )
    recordings_list.set_defaults(handler=catalog_handler(_recordings_list))

    show = recordings_commands.add_parser("show", help="one recording, its call and events")
    show.add_argument("id", type=int, metavar="ID")
    _common(show)
    show.set_defaults(handler=catalog_handler(_recordings_show))
