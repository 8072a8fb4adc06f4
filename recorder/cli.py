"""The `recorder` command line: one entry point, `--help` everywhere."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recorder.config import Config, ConfigError, load_config

DEFAULT_CONFIGS = (Path("policy.toml"), Path("/etc/recorder/policy.toml"))


def _find_config(given: str | None) -> Path:
    if given:
        return Path(given)
    for candidate in DEFAULT_CONFIGS:
        if candidate.exists():
            return candidate
    return DEFAULT_CONFIGS[0]


def _load_or_exit(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(2) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    from recorder.logs import configure_logging
    from recorder.service import run_service

    config = _load_or_exit(_find_config(args.config))
    configure_logging(args.log_format, args.log_level)
    return run_service(config)


def _summary(config: Config) -> str:
    ext, internal = config.external, config.internal
    return (
        f"Trunk side listens on {ext.listen[0]}:{ext.listen[1]} (UDP+TCP) and accepts INVITEs from "
        f"{', '.join(map(str, ext.allow)) or 'nobody'}; inbound calls go to the PBX at "
        f"{internal.next_hop[0]}:{internal.next_hop[1]}. PBX side listens on "
        f"{internal.listen[0]}:{internal.listen[1]} and accepts INVITEs from "
        f"{', '.join(map(str, internal.allow)) or 'nobody'}; outbound calls go to the trunk at "
        f"{ext.next_hop[0]}:{ext.next_hop[1]}. Media is anchored on {config.media.address}, "
        f"ports {config.media.port_first}-{config.media.port_last}; recordings under "
        f"{config.storage.dir}, catalog {config.storage.database}; calendar days in "
        f"{config.service.timezone.key}."
    )


def _cmd_policy_check(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        return 2
    print(_summary(config))
    return 0


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
    check = policy_commands.add_parser("check", help="validate a policy file (exit 2 on error)")
    check.add_argument("file")
    check.set_defaults(handler=_cmd_policy_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
