"""Structured logs (structlog): JSON lines for journald, key=value on a TTY.

Phone numbers never reach an operational log: every string value goes through
`mask_numbers`, so that the catalog stays the only place numbers live (D2).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# A run of 7+ digits (an optional leading +) is taken for a phone number wherever it appears;
# fields known to hold a party (caller, callee...) are masked whatever their shape.
_NUMBER = re.compile(r"(?<![\w.:])(\+?)(\d{7,})(?![\w])")
PARTY_FIELDS = frozenset({"caller", "callee", "from_user", "to_user", "number", "pai"})


def mask_number(number: str) -> str:
    """'+15145550100' -> '+1514***0100'; short numbers (extensions) are kept."""
    digits = re.sub(r"\D", "", number)
    if len(digits) < 7:
        return number
    plus = "+" if number.startswith("+") else ""
    return f"{plus}{digits[:4]}***{digits[-4:]}"


def mask_numbers(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        return mask_number(match.group(1) + match.group(2))

    return _NUMBER.sub(replace, text)


def _mask_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = mask_number(value) if key in PARTY_FIELDS else mask_numbers(value)
    return event_dict


# What `configure_logging` was last given: the service's child processes (media workers) log
# the same way.
settings: tuple[str, str] = ("auto", "info")


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    """`log_format`: 'json', 'console' or 'auto' (console on a TTY, JSON otherwise)."""
    global settings
    settings = (log_format, level)
    use_json = log_format == "json" or (log_format == "auto" and not sys.stdout.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO
    # stdlib logging (sip/, alembic) goes to the same stream in the same format, masked too,
    # so that journald gets one kind of line.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _mask_processor,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    # Schema migrations narrate every step at INFO: only their problems are news.
    logging.getLogger("alembic").setLevel(max(numeric_level, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _mask_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "recorder") -> Any:
    return structlog.get_logger(name)
