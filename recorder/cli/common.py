"""What every `recorder` subcommand shares: finding the policy, exit codes, output helpers."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.exc import SQLAlchemyError

from recorder.config import Config, ConfigError, load_config
from recorder.ops.retention import anchor_path
from recorder.policy import Policy, PolicyError, load_policy
from storage.db import CatalogMissing
from storage.repository import Catalog

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


@dataclass(frozen=True, slots=True)
class CatalogContext:
    config: Config
    policy: Policy
    catalog: Catalog

    @property
    def zone(self) -> tzinfo:
        return self.policy.timezone

    @property
    def anchor(self) -> Path:
        return anchor_path(self.config)


def load_config_and_policy(args: argparse.Namespace) -> tuple[Config, Policy]:
    path = config_path(args.config)
    try:
        return load_config(path), load_policy(path)
    except ConfigError as exc:
        raise CliExit(2, "\n".join(exc.problems)) from None
    except PolicyError as exc:
        raise CliExit(2, "\n".join(exc.problems)) from None


@contextmanager
def opened_catalog(args: argparse.Namespace) -> Iterator[CatalogContext]:
    config, policy = load_config_and_policy(args)
    try:
        # Never create a catalog here: an empty one would hide a wrong path.
        catalog = Catalog.open(config.storage.database, create=False)
    except CatalogMissing as exc:
        raise CliExit(1, f"{exc} (storage.database in {config.path})") from None
    try:
        yield CatalogContext(config, policy, catalog)
    finally:
        catalog.close()


def os_actor() -> str:
    # The person behind sudo, not root: the trail must say who (A10).
    return os.environ.get("SUDO_USER") or getpass.getuser()


def parse_instant(text: str, zone: tzinfo, option: str) -> datetime:
    """ISO 8601; a date, or a time without offset, is read in the policy's time zone."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CliExit(2, f"{option}: not an ISO 8601 date or time: {text!r}") from None
    return value.replace(tzinfo=zone) if value.tzinfo is None else value
