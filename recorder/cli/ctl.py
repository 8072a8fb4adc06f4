"""`recorder ctl`: talk to the running service over its control socket.

    recorder ctl calls            active calls (no phone numbers)
    recorder ctl pause CALL       S8: pause a recording (paused time is written as silence)
    recorder ctl resume CALL
    recorder ctl start CALL       S5: start an on-demand recording
    recorder ctl stop CALL

Exit codes: 0 done, 1 the service refused the command, 2 the service is unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from recorder.ops.control import ServiceUnreachable, client_socket_path, control_request

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2

_ACTIONS = {
    "pause": "pause the recording of a call (S8)",
    "resume": "resume a paused recording (S8)",
    "start": "start recording a call on demand (S5)",
    "stop": "stop recording a call",
}
_COLUMNS = (
    ("ID", "id"),
    ("DIRECTION", "direction"),
    ("STATE", "state"),
    ("RECORDING", "recording"),
    ("STARTED", "started"),
    ("EXT", "extension"),
    ("AGENT", "agent"),
)


def _socket(args: argparse.Namespace) -> Path:
    return Path(args.socket) if args.socket else client_socket_path()


def _ask(args: argparse.Namespace, request: dict[str, Any], err: TextIO) -> dict[str, Any] | None:
    try:
        return control_request(_socket(args), request, timeout=args.timeout)
    except ServiceUnreachable as exc:
        err.write(f"recorder ctl: service unreachable: {exc}\n")
        return None


def _refused(response: dict[str, Any], err: TextIO) -> int:
    err.write(f"recorder ctl: {response.get('error', 'error')}: {response.get('message', '')}\n")
    return EXIT_REFUSED


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _calls(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    response = _ask(args, {"cmd": "calls"}, err)
    if response is None:
        return EXIT_UNREACHABLE
    if args.json:
        json.dump(response, out, indent=2, ensure_ascii=False)
        out.write("\n")
    if not response.get("ok"):
        return _refused(response, err)
    if args.json:
        return EXIT_OK
    calls = response.get("calls") or []
    rows = [[title for title, _ in _COLUMNS]]
    rows += [[_cell(call.get(key)) for _, key in _COLUMNS] for call in calls]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")
    return EXIT_OK


def _action(cmd: str) -> Callable[[argparse.Namespace, TextIO, TextIO], int]:
    def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        response = _ask(args, {"cmd": cmd, "call": args.call}, err)
        if response is None:
            return EXIT_UNREACHABLE
        if args.json:
            json.dump(response, out, indent=2, ensure_ascii=False)
            out.write("\n")
        if not response.get("ok"):
            return _refused(response, err)
        if not args.json:
            out.write(f"{response.get('message', 'done')}\n")
        return EXIT_OK

    return run


def _handler(
    command: Callable[[argparse.Namespace, TextIO, TextIO], int],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return command(args, sys.stdout, sys.stderr)

    return run


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="control socket (default /run/recorder/control.sock if present, else "
        "var/control.sock)",
    )
    parser.add_argument("--json", action="store_true", help="print the service's JSON answer")
    parser.add_argument(
        "--timeout", type=float, default=5.0, metavar="SECONDS", help=argparse.SUPPRESS
    )


def add_ctl_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `ctl` on the `recorder` command's subparsers."""
    ctl = subparsers.add_parser("ctl", help="control the running service (pause, resume, ...)")
    commands = ctl.add_subparsers(dest="ctl_command", required=True)
    calls = commands.add_parser("calls", help="list the active calls")
    _common(calls)
    calls.set_defaults(handler=_handler(_calls))
    for cmd, help_text in _ACTIONS.items():
        action = commands.add_parser(cmd, help=help_text)
        action.add_argument("call", metavar="CALL", help="call id, as `recorder ctl calls` shows")
        _common(action)
        action.set_defaults(handler=_handler(_action(cmd)))
