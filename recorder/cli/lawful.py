"""Lawful use from the command line: request, approve, deny, listen, export, subject access.

Nobody names themselves here: each command talks to the running service over its access
socket, and the service knows the caller by their uid (SO_PEERCRED) from the policy's
nominative list (A12). Every step, allowed or refused, is in the service's audit trail.

Exit codes: 0 done; 2 refused by the policy or bad input (the message names the rule);
1 the service cannot be reached or failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Final, TextIO

from recorder.access.deidentify import parse_ranges
from recorder.access.sealing import bundle_from_wire, write_bundle
from recorder.cli.common import CliExit, catalog_handler, dump_json
from recorder.ops.control import ServiceUnreachable, control_exchange

SYSTEMD_ACCESS_SOCKET: Final = Path("/run/recorder/access.sock")
LOCAL_ACCESS_SOCKET: Final = Path("var/access.sock")
TIMEOUT: Final = 60.0  # an export of many long recordings is sealed before the answer


def _socket(args: argparse.Namespace) -> Path:
    if args.socket:
        return Path(args.socket)
    return SYSTEMD_ACCESS_SOCKET if SYSTEMD_ACCESS_SOCKET.exists() else LOCAL_ACCESS_SOCKET


def ask_service(args: argparse.Namespace, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    try:
        response, payload = control_exchange(_socket(args), request, timeout=TIMEOUT)
    except ServiceUnreachable as exc:
        raise CliExit(1, str(exc)) from None
    if not response.get("ok"):
        rule = response.get("rule")
        message = response.get("message", "refused")
        if response.get("error") == "internal":
            raise CliExit(1, f"{request['cmd']}: {message}")
        raise CliExit(2, f"refused ({rule}): {message}" if rule else f"{request['cmd']}: {message}")
    return response, payload


def _print_request(out: TextIO, info: dict[str, Any]) -> None:
    approvals = sum(1 for v in info["verdicts"] if v["verdict"] == "approved")
    out.write(
        f"{info['public_id']}  {info['state']}  {info['purpose']}  by {info['requester']}"
        f"  recordings {', '.join(map(str, info['recording_ids']))}"
        f"  approvals {approvals}/{info['approvals_needed']}"
    )
    if info.get("valid_until"):
        out.write(f"  valid until {info['valid_until']}")
    out.write(f"\n  reason: {info['reason']}\n")
    for verdict in info["verdicts"]:
        why = f": {verdict['reason']}" if verdict.get("reason") else ""
        out.write(f"  {verdict['verdict']} by {verdict['person']} at {verdict['at']}{why}\n")


def _whoami(args: argparse.Namespace, out: TextIO) -> int:
    response, _ = ask_service(args, {"cmd": "whoami"})
    if args.json:
        dump_json(out, response)
        return 0
    out.write(f"{response['person']}: {response['name']} ({response['role']})\n")
    out.write(f"  may ask for: {', '.join(response['purposes']) or 'nothing'}")
    out.write(f" ({response['scope']}, {response['window']})\n")
    out.write(f"  approves: {', '.join(response['approves']) or 'nothing'}\n")
    if response["subject_access"]:
        out.write("  answers subject-access requests (R2)\n")
    return 0


def _request(args: argparse.Namespace, out: TextIO) -> int:
    request: dict[str, Any] = {"cmd": "request", "purpose": args.purpose, "reason": args.reason}
    chosen = sum(bool(x) for x in (args.recordings, args.calls, args.number))
    if chosen != 1:
        raise CliExit(2, "name RECORDING ids, or --call ids, or --number with --from and --to")
    if args.recordings:
        request["recordings"] = args.recordings
    elif args.calls:
        request["calls"] = args.calls
    else:
        request |= {"number": args.number, "from": args.since, "to": args.until}
    response, _ = ask_service(args, request)
    info = response["request"]
    if args.json:
        dump_json(out, info)
        return 0
    out.write(f"request {info['public_id']} registered, {info['state']}")
    out.write(f" (needs {info['approvals_needed']} approval(s))\n")
    return 0


def _verdict(args: argparse.Namespace, out: TextIO) -> int:
    request: dict[str, Any] = {"cmd": args.verdict, "request": args.request}
    if args.reason is not None:
        request["reason"] = args.reason
    response, _ = ask_service(args, request)
    info = response["request"]
    if args.json:
        dump_json(out, info)
        return 0
    _print_request(out, info)
    return 0


def _requests(args: argparse.Namespace, out: TextIO) -> int:
    response, _ = ask_service(args, {"cmd": "requests", "state": args.state})
    if args.json:
        dump_json(out, response["requests"])
        return 0
    for info in response["requests"]:
        _print_request(out, info)
    if not response["requests"]:
        out.write("no request\n")
    return 0


def _player() -> list[str] | None:
    for name, extra in (("aplay", ["-q"]), ("play", ["-q"]), ("paplay", [])):
        path = shutil.which(name)
        if path:
            return [path, *extra]
    return None


def _listen(args: argparse.Namespace, out: TextIO) -> int:
    request: dict[str, Any] = {"cmd": "listen", "request": args.request}
    if args.recording is not None:
        request["recording"] = args.recording
    to_terminal = args.out is None and sys.stdout.isatty()
    player = _player() if to_terminal else None
    if to_terminal and player is None:
        raise CliExit(2, "stdout is a terminal and no player (aplay, play): use --out FILE or |")
    response, data = ask_service(args, request)
    if args.out is not None and args.out != "-":
        _write_private(Path(args.out), data)
        print(f"recording {response['recording']} -> {args.out}", file=sys.stderr)
    elif player is not None:
        # A private temporary file, gone when the player ends (D3: no copy left behind).
        with tempfile.NamedTemporaryFile(suffix=".wav") as wav:
            wav.write(data)
            wav.flush()
            subprocess.run([*player, wav.name], check=False)
    else:
        out.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return 0


def _write_private(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CliExit(2, f"{path} exists: not overwritten") from None
    except OSError as exc:
        raise CliExit(2, f"{path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _write_export(response: dict[str, Any], payload: bytes, directory: Path) -> list[Path]:
    parts = []
    offset = 0
    for entry in response["files"]:
        size = int(entry["bytes"])
        parts.append((str(entry["name"]), payload[offset : offset + size]))
        offset += size
    try:
        bundle = bundle_from_wire(parts)
        return write_bundle(bundle, directory)
    except (ValueError, OSError) as exc:
        raise CliExit(1 if isinstance(exc, ValueError) else 2, f"export: {exc}") from None


def _export(args: argparse.Namespace, out: TextIO) -> int:
    response, payload = ask_service(
        args, {"cmd": "export", "request": args.request, "recipient": args.recipient}
    )
    written = _write_export(response, payload, Path(args.to))
    if args.json:
        dump_json(out, {"files": [str(p) for p in written]})
        return 0
    out.write(f"{len(written)} files in {args.to} (age-encrypted to the recipient, X2);")
    out.write(" check with `sha256sum -c SHA256SUMS`, decrypt with `age -d -i KEY`\n")
    return 0


def _training_copy(args: argparse.Namespace, out: TextIO) -> int:
    try:
        mute = parse_ranges(args.mute) if args.mute else []
    except ValueError as exc:
        raise CliExit(2, f"--mute: {exc}") from None
    response, _ = ask_service(
        args,
        {
            "cmd": "training-copy",
            "request": args.request,
            "recording": args.recording,
            "mute": [list(r) for r in mute],
        },
    )
    copy = response["training_copy"]
    if args.json:
        dump_json(out, copy)
        return 0
    out.write(f"training copy {copy['id']}: {copy['name']} (P5)\n")
    return 0


def _summary(args: argparse.Namespace, out: TextIO) -> int:
    text = args.text if args.text is not None else sys.stdin.read()
    response, _ = ask_service(
        args,
        {"cmd": "summary", "request": args.request, "recording": args.recording, "text": text},
    )
    sheet = response["summary"]
    if args.json:
        dump_json(out, sheet)
        return 0
    out.write(f"summary sheet {sheet['id']} kept until {sheet['expires_at'] or 'no limit'} (P6)\n")
    return 0


def _subject_access(args: argparse.Namespace, out: TextIO) -> int:
    if (args.export is None) != (args.recipient is None):
        raise CliExit(2, "--export and --recipient go together (exports are encrypted, X2)")
    response, payload = ask_service(
        args,
        {
            "cmd": "subject-access",
            "number": args.number,
            "from": args.since,
            "to": args.until,
            "reason": args.reason,
            "recipient": args.recipient,
        },
    )
    findings = response["findings"]
    written = _write_export(response, payload, Path(args.export)) if args.export else []
    if args.json:
        dump_json(out, {**findings, "files": [str(p) for p in written]})
        return 0
    calls, recordings = findings["calls"], findings["recordings"]
    out.write(f"{len(calls)} calls and {len(recordings)} recordings hold this number (R2)\n")
    for call in calls:
        out.write(
            f"  call {call['id']}  {call['arrived_at']}  {call['direction']}"
            f"  recorded: {'yes' if call.get('policy_record') else 'no'}\n"
        )
    for recording in recordings:
        out.write(f"  recording {recording['id']}  {recording['state']}  {recording['name']}\n")
    if findings.get("erased"):
        before = findings.get("erased_before") or "-"
        out.write(
            f"  {findings['erased']} older call logs hold no number any more (D2, erased;"
            f" newest {before}): they cannot be searched\n"
        )
    if written:
        out.write(f"  {len(findings['exported'])} recordings exported to {args.export}\n")
    return 0


def common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--socket", help="the access socket (default /run/recorder/access.sock, else var/)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def add_lawful_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the lawful-use commands on the `recorder` command's subparsers."""
    who = subparsers.add_parser("whoami", help="who the service takes you for (A12)")
    common_options(who)
    who.set_defaults(handler=catalog_handler(_whoami))

    req = subparsers.add_parser("request", help="a motivated request for recordings (A3, A4)")
    req.add_argument("recordings", nargs="*", type=int, metavar="RECORDING")
    req.add_argument("--call", dest="calls", type=int, action="append", metavar="CALL")
    req.add_argument("--number", help="every recording of a number, with --from and --to")
    req.add_argument("--from", dest="since", metavar="DATE")
    req.add_argument("--to", dest="until", metavar="DATE")
    req.add_argument("--purpose", required=True, help="a purpose of the policy (P1-P4)")
    req.add_argument("--reason", required=True, help="the written reason (A3)")
    common_options(req)
    req.set_defaults(handler=catalog_handler(_request))

    for verdict, helptext in (
        ("approve", "approve a request (A3; A9: a second, different person)"),
        ("deny", "deny a request, with a reason"),
    ):
        parser = subparsers.add_parser(verdict, help=helptext)
        parser.add_argument("request", metavar="REQUEST", help="e.g. R12-ab3d9k")
        parser.add_argument("--reason", required=verdict == "deny")
        common_options(parser)
        parser.set_defaults(handler=catalog_handler(_verdict), verdict=verdict)

    reqs = subparsers.add_parser("requests", help="the register: your requests, those you answer")
    reqs.add_argument("--state", choices=("pending", "approved", "denied"))
    common_options(reqs)
    reqs.set_defaults(handler=catalog_handler(_requests))

    listen = subparsers.add_parser("listen", help="hear an approved recording (audited)")
    listen.add_argument("request", metavar="REQUEST")
    listen.add_argument("--recording", type=int, help="which one, when the request has several")
    listen.add_argument("--out", help="write the WAV to this new file (- for stdout)")
    common_options(listen)
    listen.set_defaults(handler=catalog_handler(_listen))

    export = subparsers.add_parser("export", help="age-encrypted copies of a request (X1, X2)")
    export.add_argument("request", metavar="REQUEST")
    export.add_argument("--to", required=True, metavar="DIR", help="a new or empty directory")
    export.add_argument("--recipient", required=True, metavar="AGE_PUBLIC_KEY")
    common_options(export)
    export.set_defaults(handler=catalog_handler(_export))

    training = subparsers.add_parser("training-copy", help="a de-identified training copy (P5)")
    training.add_argument("request", metavar="REQUEST")
    training.add_argument("--recording", type=int, required=True)
    training.add_argument("--mute", help="more ranges of the caller to silence, e.g. 0:40-0:55")
    common_options(training)
    training.set_defaults(handler=catalog_handler(_training_copy))

    summary = subparsers.add_parser("summary", help="attach a summary sheet to a recording (P6)")
    summary.add_argument("request", metavar="REQUEST")
    summary.add_argument("--recording", type=int, required=True)
    summary.add_argument("--text", help="the summary (default: read from stdin)")
    common_options(summary)
    summary.set_defaults(handler=catalog_handler(_summary))

    subject = subparsers.add_parser(
        "subject-access", help="everything held about a phone number, and its export (R2)"
    )
    subject.add_argument("--number", required=True)
    subject.add_argument("--from", dest="since", metavar="DATE")
    subject.add_argument("--to", dest="until", metavar="DATE")
    subject.add_argument("--reason", required=True, help="e.g. the request's reference (A3)")
    subject.add_argument("--export", metavar="DIR", help="export the recordings here, encrypted")
    subject.add_argument("--recipient", metavar="AGE_PUBLIC_KEY")
    common_options(subject)
    subject.set_defaults(handler=catalog_handler(_subject_access))
