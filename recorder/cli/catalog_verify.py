"""`recorder catalog verify`: the catalog and the recordings directory agree (X1, C5, D1).

    recorder catalog verify [--config FILE] [--json] [--service-socket PATH]

Checks, read-only (storage/verify.py): every `.wav` under `storage.dir` catalogued (the
`training/` subdirectory against the training copies), every live recording's file present
with its catalogued size and SHA-256, no `.part` older than the running service's start, no
row left `recording` by a service that is gone, no file for a call whose consent was refused,
the audit chain intact. Rows a killed purge left in `destroying` are printed as notes
("purge interrupted"): the next purge finishes them.

With several nodes on one catalog and storage root (`service.node`), it checks this node's
rows (and those of no node) and its own directory, not the other nodes' (their `.part` files
and open rows may be calls in progress): run it as each node.

Whether a service runs, and since when, is read from its control socket: a socket that
accepts a connection is a live service, bound when it started (after it repaired the
`.part` files a crash left). No live socket: no service, and every `.part` is unrepaired.

The run itself is audited (`catalog.verify`, outcome `ok` or `problems`, the counts only).

Output: one `PROBLEM kind: ...` or `NOTE kind: ...` line each, then a summary line; with
`--json`, the report (`ok`, `counts`, `problems`, `notes`, `audit`). Exit codes: 0 no
problem (notes allowed), 1 a problem or an unreadable catalog, 2 bad arguments or policy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from recorder.cli.common import CatalogContext, catalog_handler, dump_json, opened_catalog, os_actor
from recorder.ops.control import SYSTEMD_SOCKET, service_socket_path
from storage import audit
from storage.verify import CatalogReport, verify_catalog


def service_started(sockets: list[Path]) -> datetime | None:
    """When the running service bound its control socket, or None if none is running."""
    for path in dict.fromkeys(sockets):
        try:
            info = os.stat(path)
        except OSError:
            continue
        if not stat.S_ISSOCK(info.st_mode):
            continue
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2.0)
        try:
            probe.connect(os.fspath(path))
        except PermissionError:
            pass  # not ours to talk to, but a socket someone listens on: take it as live
        except OSError:
            continue  # refused or gone: left by a service that died
        finally:
            with contextlib.suppress(OSError):
                probe.close()
        return datetime.fromtimestamp(info.st_mtime, UTC)
    return None


def _sockets(args: argparse.Namespace, ctx: CatalogContext) -> list[Path]:
    if args.service_socket:
        return [Path(args.service_socket)]
    return [service_socket_path(ctx.config.storage.dir.parent), SYSTEMD_SOCKET]


def _summary(report: CatalogReport) -> str:
    counts = report.counts
    seen = (
        f"{counts.get('recording_files', 0)} files, {counts.get('live_recordings', 0)} live"
        f" recordings of {counts.get('recordings', 0)}, {counts.get('training_copies', 0)}"
        f" training copies, {counts.get('part_files', 0)} .part,"
        f" {counts.get('audit_entries', 0)} audit entries"
    )
    notes = f", {len(report.notes)} notes" if report.notes else ""
    if report.ok:
        return f"catalog verify: ok ({seen}{notes})"
    return f"catalog verify: {len(report.problems)} problems ({seen}{notes})"


def _verify(args: argparse.Namespace, out: TextIO) -> int:
    with opened_catalog(args) as ctx:
        now = datetime.now(UTC)
        report = verify_catalog(
            ctx.catalog,
            ctx.config.storage.dir,
            anchor_path=ctx.anchor,
            service_started=service_started(_sockets(args, ctx)),
            now=now,
            node=ctx.config.service.node,
        )
        # After the chain was checked, so that the check never sees its own entry half-made.
        audit.record(
            ctx.catalog,
            ctx.anchor,
            at=datetime.now(UTC),
            actor=os_actor(),
            action="catalog.verify",
            object="catalog",
            outcome="ok" if report.ok else "problems",
            detail={
                "counts": report.counts,
                "problems": report.problem_kinds(),
                "notes": len(report.notes),
            },
        )
    if args.json:
        dump_json(out, report.to_json())
    else:
        for finding in (*report.problems, *report.notes):
            out.write(finding.line() + "\n")
        out.write(_summary(report) + "\n")
    return 0 if report.ok else 1


def add_catalog_verify_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register `catalog verify` on the `recorder` command's subparsers."""
    catalog = subparsers.add_parser("catalog", help="the catalog against the recordings on disk")
    commands = catalog.add_subparsers(dest="catalog_command", required=True)
    verify = commands.add_parser(
        "verify",
        help="every file catalogued, every catalogued file present and hash-correct (X1),"
        " no file for a refused call (C5), the audit chain intact; exit 1 on any problem",
    )
    verify.add_argument("--config", help="policy file (default ./policy.toml, then /etc/recorder)")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument(
        "--service-socket",
        metavar="PATH",
        help="the running service's control socket (default: beside the catalog, then"
        " /run/recorder/control.sock)",
    )
    verify.set_defaults(handler=catalog_handler(_verify))
