"""`recorder console add-user | set-password | list-users | disable`: the web console's accounts.

Administrator commands, run by the service's administrator on the catalog itself (like
`recorder hold add`), not through the access socket. Every account is nominative (A12): PERSON
is an id of the policy's `[people.*]`, and there is at most one account per person. Its
password must satisfy the policy's `[passwords]` rule (X3); it is read twice from the
terminal (`getpass`), or as one line from standard input with `--password-stdin`, and is
never echoed, printed, logged or audited, nor is its hash. Each change is written to the
audit trail in the same transaction (`console.account_added`, `console.password_set`,
`console.account_disabled`, object `person:ID`, actor the OS user behind sudo); a refusal
is audited too, with what the password lacked, never the password.

A person removed from the policy can still be disabled (and shows as such in `list-users`):
the list of who can log in must be kept current (A12).

Exit codes: 0 done; 1 refused by the catalog's state (an account already exists, none
exists, already disabled) or an unreadable catalog; 2 bad arguments or policy, a person not
in `[people.*]` (A12), or a password the rule refuses (X3).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from sqlalchemy.orm import Session

from recorder.cli.common import (
    CatalogContext,
    CliExit,
    catalog_handler,
    dump_json,
    local_time,
    opened_catalog,
    os_actor,
)
from recorder.console.passwords import check_password, hash_password
from recorder.policy.model import Person
from storage.accounts import AccountExists, AccountInfo, Accounts
from storage.audit import AuditTrail, append, contains_phone_number, record
from storage.repository import InvalidState, NotFound

ADDED = "console.account_added"
PASSWORD_SET = "console.password_set"
DISABLED = "console.account_disabled"


def _object(person: str) -> str:
    # The trail never holds a phone number: a PERSON argument that looks like one is not named.
    if contains_phone_number(person) or len(person) > 200:
        return "person:?"
    return f"person:{person}"


def _refuse(
    ctx: CatalogContext, action: str, person: str, code: int, rule: str, message: str
) -> CliExit:
    """Audit a refused step (A10) and return the exit that says it in one line."""
    reason = f"{rule}: {message}"[:1024]
    if contains_phone_number(reason):
        reason = f"{rule}: refused (the arguments held a phone number: not kept)"
    record(
        ctx.catalog,
        ctx.anchor,
        at=datetime.now(UTC),
        actor=os_actor(),
        action=action,
        object=_object(person),
        outcome="refused",
        reason=reason,
    )
    return CliExit(code, f"refused ({rule}): {message}")


def _hook(action: str, now: datetime, reason: str | None = None) -> Callable[..., None]:
    def audit(session: Session, info: AccountInfo) -> None:
        append(
            session,
            at=now,
            actor=os_actor(),
            action=action,
            object=f"person:{info.person}",
            reason=reason,
            detail={"account": info.id},
        )

    return audit


def _person(ctx: CatalogContext, action: str, person_id: str) -> Person:
    person = ctx.policy.people.get(person_id)
    if person is None:
        ids = sorted(ctx.policy.people)
        known = ", ".join(ids[:20]) + (f" ... (+{len(ids) - 20})" if len(ids) > 20 else "")
        raise _refuse(
            ctx,
            action,
            person_id,
            2,
            "A12",
            f"{person_id!r} is not a person of the policy's [people.*] (known: {known or 'none'});"
            " console accounts are nominative",
        )
    return person


def _read_password(args: argparse.Namespace) -> str:
    """The new password: one line of stdin with --password-stdin, else typed twice."""
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
        if not password:
            raise CliExit(2, "--password-stdin: no password on standard input")
        return password
    prompt = f"New console password for {args.person}: "
    try:
        first = getpass.getpass(prompt)
        second = getpass.getpass("Again: ")
    except EOFError:
        raise CliExit(2, "no password given") from None
    if first != second:
        raise CliExit(2, "the two passwords differ; nothing changed")
    if not first:
        raise CliExit(2, "no password given")
    return first


def _new_hash(ctx: CatalogContext, action: str, person: Person, args: argparse.Namespace) -> str:
    password = _read_password(args)
    problems = check_password(ctx.policy.password_rule, password, person=person)
    if problems:
        raise _refuse(
            ctx,
            action,
            person.id,
            2,
            "X3",
            f"the password for {person.id} is not strong enough: {'; '.join(problems)}",
        )
    return hash_password(password)


def _print_account(out: TextIO, verb: str, info: AccountInfo, args: argparse.Namespace) -> None:
    if args.json:
        dump_json(out, info.to_json())
    else:
        out.write(f"{verb} (account {info.id})\n")


def _add_user(args: argparse.Namespace, out: TextIO) -> int:
    with opened_catalog(args) as ctx:
        person = _person(ctx, ADDED, args.person)
        accounts = Accounts(ctx.catalog)
        if accounts.get(person.id) is not None:
            raise _refuse(
                ctx, ADDED, person.id, 1, "A12", f"{person.id} already has a console account"
            )
        password_hash = _new_hash(ctx, ADDED, person, args)
        now = datetime.now(UTC)
        try:
            info = accounts.create(
                person.id, password_hash, now, os_actor(), audit=_hook(ADDED, now)
            )
        except AccountExists as exc:
            raise _refuse(ctx, ADDED, person.id, 1, "A12", str(exc)) from None
        AuditTrail(ctx.catalog, ctx.anchor).anchor(now)
    _print_account(out, f"console account added for {person.id} ({person.name})", info, args)
    return 0


def _set_password(args: argparse.Namespace, out: TextIO) -> int:
    with opened_catalog(args) as ctx:
        person = _person(ctx, PASSWORD_SET, args.person)
        accounts = Accounts(ctx.catalog)
        if accounts.get(person.id) is None:
            raise _refuse(
                ctx,
                PASSWORD_SET,
                person.id,
                1,
                "A12",
                f"{person.id} has no console account (recorder console add-user {person.id})",
            )
        password_hash = _new_hash(ctx, PASSWORD_SET, person, args)
        now = datetime.now(UTC)
        try:
            info = accounts.set_password(
                person.id, password_hash, now, audit=_hook(PASSWORD_SET, now)
            )
        except NotFound as exc:
            raise _refuse(ctx, PASSWORD_SET, person.id, 1, "A12", str(exc)) from None
        AuditTrail(ctx.catalog, ctx.anchor).anchor(now)
    verb = f"password set for {person.id}"
    if info.disabled:
        verb += "; the account stays disabled"
    _print_account(out, verb, info, args)
    return 0


def _disable(args: argparse.Namespace, out: TextIO) -> int:
    if args.reason is not None and contains_phone_number(args.reason):
        raise CliExit(2, "--reason: the audit trail never holds a phone number (D2)")
    with opened_catalog(args) as ctx:
        now = datetime.now(UTC)
        try:
            info = Accounts(ctx.catalog).disable(
                args.person, now, audit=_hook(DISABLED, now, args.reason)
            )
        except (NotFound, InvalidState) as exc:
            raise _refuse(ctx, DISABLED, args.person, 1, "A12", str(exc)) from None
        AuditTrail(ctx.catalog, ctx.anchor).anchor(now)
    _print_account(out, f"console account of {info.person} disabled", info, args)
    return 0


def _state(info: AccountInfo, people: Mapping[str, Person], now: datetime) -> str:
    if info.disabled:
        return "disabled"
    if info.person not in people:
        return "not in policy"  # A12: cannot log in; disable it to keep the list current
    if info.locked(now):
        return "locked"
    return "active"


def _list_users(args: argparse.Namespace, out: TextIO) -> int:
    with opened_catalog(args) as ctx:
        accounts = Accounts(ctx.catalog).list()
    people = ctx.policy.people
    now = datetime.now(UTC)
    if args.json:
        rows: list[dict[str, Any]] = []
        for info in accounts:
            person = people.get(info.person)
            row = info.to_json()
            row["name"] = None if person is None else person.name
            row["role"] = None if person is None else person.role
            row["in_policy"] = person is not None
            row["state"] = _state(info, people, now)
            rows.append(row)
        dump_json(out, rows)
        return 0
    out.write(
        f"{'PERSON':<16} {'NAME':<24} {'ROLE':<14} {'STATE':<14} {'CREATED':<19}  "
        f"{'BY':<12} {'PASSWORD SET':<19}  {'LAST LOGIN':<19}  FAILED\n"
    )
    for info in accounts:
        person = people.get(info.person)
        out.write(
            f"{info.person:<16} {person.name if person else '-':<24}"
            f" {person.role if person else '-':<14} {_state(info, people, now):<14}"
            f" {local_time(info.created_at, ctx.zone):<19}  {info.created_by:<12}"
            f" {local_time(info.password_changed_at, ctx.zone):<19}"
            f"  {local_time(info.last_login_at, ctx.zone):<19}  {info.failed_logins}\n"
        )
    return 0


def _options(parser: argparse.ArgumentParser, *, password: bool = False) -> None:
    parser.add_argument("--config", help="policy file (default ./policy.toml, then /etc/recorder)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    if password:
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password as one line of standard input instead of asking twice",
        )


def add_console_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `console` on the `recorder` command's subparsers."""
    console = subparsers.add_parser(
        "console", help="the web console's nominative accounts (A12, X3); administrators only"
    )
    commands = console.add_subparsers(dest="console_command", required=True)

    add = commands.add_parser(
        "add-user", help="give a person of [people.*] a console account (A12)"
    )
    add.add_argument("person", metavar="PERSON", help="a person id of the policy's [people.*]")
    _options(add, password=True)
    add.set_defaults(handler=catalog_handler(_add_user))

    set_password = commands.add_parser(
        "set-password", help="a new password for a console account (clears a lock)"
    )
    set_password.add_argument("person", metavar="PERSON")
    _options(set_password, password=True)
    set_password.set_defaults(handler=catalog_handler(_set_password))

    listing = commands.add_parser("list-users", help="every console account and its state")
    _options(listing)
    listing.set_defaults(handler=catalog_handler(_list_users))

    disable = commands.add_parser(
        "disable", help="stop a console account from logging in (the row stays)"
    )
    disable.add_argument("person", metavar="PERSON")
    disable.add_argument("--reason", help="why (kept in the audit trail)")
    _options(disable)
    disable.set_defaults(handler=catalog_handler(_disable))
