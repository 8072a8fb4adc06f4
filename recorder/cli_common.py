"""What every `recorder` subcommand shares: finding the policy, exit codes, output helpers."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.exc import SQLAlchemyError

# `--config`, then ./policy.toml, then the system-wide file (DESIGN.md's CLI contract).
DEFAULT_CONFIGS = (Path("policy.toml"), Path("/etc/recorder/policy.toml"))


class CliExit(Exception):
    """Stop a command with an exit code and one line for stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def config_path(given: str | None) -> Path:
    if given:
        return Path(given)
    for candidate in DEFAULT_CONFIGS:
        if candidate.exists():
            return candidate
    return DEFAULT_CONFIGS[0]


def local_time(value: datetime | None, zone: tzinfo) -> str:
    return "-" if value is None else value.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def dump_json(out: TextIO, value: Any) -> None:
    json.dump(value, out, indent=2, ensure_ascii=False)
    out.write("\n")


def catalog_handler(
    command: Callable[[argparse.Namespace, TextIO], int],
) -> Callable[[argparse.Namespace], int]:
    """Wrap a catalog command so that every failure is one line on stderr and an exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args, sys.stdout)
        except CliExit as exc:
            print(exc.message, file=sys.stderr)
            return exc.code
        except SQLAlchemyError as exc:
            # e.g. a catalog never migrated (no tables) or a database that is down.
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"catalog error: {first}", file=sys.stderr)
            return 1

    return run
