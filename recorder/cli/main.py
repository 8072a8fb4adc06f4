"""The `recorder` command line: one entry point, `--help` everywhere."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recorder.cli.access import add_access_commands
from recorder.cli.catalog import add_catalog_commands
from recorder.cli.catalog_verify import add_catalog_verify_commands
from recorder.cli.common import config_path
from recorder.cli.console import add_console_commands
from recorder.cli.ctl import add_ctl_commands
from recorder.cli.lawful import add_lawful_commands
from recorder.cli.people import add_people_commands
from recorder.cli.policy import add_policy_commands
from recorder.cli.reports import add_report_commands
from recorder.cli.retention import add_retention_commands
from recorder.config import Config, ConfigError, load_config


def _load_or_exit(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(2) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    from recorder.ops.logs import configure_logging
    from recorder.policy import PolicyError, load_policy
    from recorder.service import run_service

    path = config_path(args.config)
    config = _load_or_exit(path)
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    configure_logging(args.log_format, args.log_level)
    return run_service(config, policy)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recorder", description="SIP/RTP recording proxy with policy enforcement."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service in the foreground")
    serve.add_argument("--config", help="policy file (default ./policy.toml, then /etc/recorder)")
    serve.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="JSON lines (journald) or key=value; auto picks console on a TTY",
    )
    serve.add_argument("--log-level", default="info", help="debug, info, warning, error")
    serve.set_defaults(handler=_cmd_serve)

    policy = commands.add_parser("policy", help="validate and explain a policy")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    add_policy_commands(policy_commands)
    add_catalog_commands(commands)
    add_catalog_verify_commands(commands)
    add_ctl_commands(commands)
    add_retention_commands(commands)
    add_people_commands(commands)
    add_access_commands(commands)
    add_lawful_commands(commands)
    add_report_commands(commands)
    add_console_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
