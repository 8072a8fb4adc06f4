"""The reports as people read them (T1, T2, X4, A12): title, columns, rows, chart series.

Built from `storage.reports` figures and the policy; the desk authorizes and audits the
reading, the CLI (or a console) lays the rows out and draws the chart. A report never
holds a phone number: the figures are counts, the people list is the policy's.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from recorder.access.roster import people_rows
from recorder.policy import Policy
from recorder.policy.periods import local_midnight
from storage.reports import annual_report, inventory, quality_report
from storage.repository import Catalog

View = dict[str, Any]
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _retention_rules(policy: Policy) -> dict[str, str]:
    """X4: each kind of data with the retention the policy gives it, in words and rule ID."""
    classes = policy.retention.classes

    def rule(name: str) -> str | None:
        found = classes.get(name)
        return None if found is None else f"{found.describe()} ({found.rule_id})"

    trace = rule("access_trace")
    numbers = rule("call_log_numbers")
    logs = rule("call_logs")
    call_log = "; ".join(
        part
        for part in (
            f"rows {logs}" if logs else None,
            f"numbers erased after {numbers}" if numbers else None,
        )
        if part
    )
    found = {
        "recordings": rule("recordings"),
        "training_copies": rule("training_copies"),
        "summary_sheets": rule("summary_sheets"),
        "call_log": call_log or None,
        "access_register": trace,
        "audit_trail": trace,
        "exports": "destroyed by their holder when no longer needed (D3)",
        "catalog": "holds the call log, the register and the trail: their rules",
        "logs": "the journal's own rotation; numbers are masked in every line",
        "catalog_journal": "until the catalog answers again, then put in it and deleted",
    }
    return {kind: text for kind, text in found.items() if text is not None}


def annual_view(policy: Policy, catalog: Catalog, year: int) -> View:
    report = annual_report(catalog, year, policy.timezone)
    rows = report.rows()
    months = [row for row in rows if row["month"] != "total"]
    totals = report.totals
    by_method = ", ".join(f"{m} {n}" for m, n in sorted(totals.refusals_by_method.items()))
    return {
        "kind": "annual",
        "title": f"{policy.name}: {year}, month by month (T1, A5)",
        "columns": list(report.columns()),
        "rows": rows,
        "refusals_by_method": report.method_rows(),
        "requests_by_purpose": report.purpose_rows(),
        "footnote": f"Refusals by method in {year}: {by_method or 'none'}. "
        f"Calendar months in {policy.timezone.key}.",
        "chart": {
            "labels": list(MONTHS),
            "series": {
                "calls": [row["calls"] for row in months],
                "recorded": [row["recorded_calls"] for row in months],
                "destroyed": [
                    sum(v for k, v in row.items() if k.startswith("destroyed_")) for row in months
                ],
            },
            "unit": "calls and files",
            "lower": {
                "refusals": [row["refusals"] for row in months],
                "communications (A5)": [row["listens"] + row["exports"] for row in months],
                "requests": [row["requests_made"] for row in months],
            },
            "lower_unit": "count",
        },
    }


def _day(text: str, policy: Policy, *, end: bool) -> datetime:
    day = date.fromisoformat(text)
    return local_midnight(day + timedelta(days=1) if end else day, policy.timezone)


def quality_view(
    policy: Policy, catalog: Catalog, since: str, until: str, *, per_agent: bool
) -> View:
    """T2: per team for everyone who reads it; per agent where the role allows (A11)."""
    start, end = _day(since, policy, end=False), _day(until, policy, end=True)
    team_of = {
        person.agent_code: person.team
        for person in policy.people.values()
        if person.agent_code is not None and person.team is not None
    }
    report = quality_report(
        catalog,
        start,
        end,
        team_of=team_of,
        per_agent=per_agent,
        min_count=policy.report_min_calls,
    )
    level: Literal["team", "agent"] = "agent" if per_agent else "team"
    rows = report.rows(level)
    teams = report.rows("team")[:-1]  # the all-teams row is the table's, not the chart's
    footnote = f"Calls arrived {since} to {until} ({policy.timezone.key})."
    if per_agent:
        footnote += (
            f" Agents with fewer than {policy.report_min_calls} calls are left out"
            f" ({report.suppressed} suppressed, A11)."
        )
    return {
        "kind": "quality",
        "title": f"{policy.name}: quality {since} to {until} (T2)",
        "columns": list(report.columns(level)),
        "rows": rows,
        "suppressed": report.suppressed,
        "footnote": footnote,
        "chart": {
            "labels": [row["team"] for row in teams],
            "series": {
                "answered": [row["answered"] for row in teams],
                "lost": [row["lost"] for row in teams],
            },
            "unit": "calls",
        },
    }


def inventory_view(
    policy: Policy,
    catalog: Catalog,
    storage_dir: Path,
    database: str,
    journal: Path | None = None,
) -> View:
    rules = _retention_rules(policy)
    report = inventory(catalog, storage_dir, database, rules=rules, journal=journal)
    rows = report.rows()
    return {
        "kind": "inventory",
        "title": f"{policy.name}: personal data kept (X4)",
        "columns": list(report.columns()),
        "rows": rows,
        "footnote": "Each file of personal data, where it is, how much, since when, how long.",
        "chart": {
            "labels": [row["kind"] for row in rows if row["bytes"]],
            "series": {"MiB": [round(row["bytes"] / 2**20, 2) for row in rows if row["bytes"]]},
            "unit": "MiB",
        },
    }


def people_view(policy: Policy, role: str | None) -> View:
    rows = people_rows(policy, role)
    columns = ["id", "name", "role", "team", "department", "purposes", "scope", "window"]
    columns += ["approves", "subject_access", "reports", "has_account"]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["role"]] = counts.get(row["role"], 0) + 1
    return {
        "kind": "people",
        "title": f"{policy.name}: the nominative list (A10, A12)",
        "columns": columns,
        "rows": rows,
        "footnote": f"{len(rows)} people; policy {policy.content_hash[:12]}.",
        "chart": {"labels": list(counts), "series": {"people": list(counts.values())}},
    }


def build_view(
    policy: Policy,
    catalog: Catalog,
    kind: str,
    params: Mapping[str, Any],
    *,
    storage_dir: Path,
    database: str,
    journal: Path | None = None,
) -> View:
    if kind == "annual":
        return annual_view(policy, catalog, int(params["year"]))
    if kind == "quality":
        return quality_view(
            policy,
            catalog,
            str(params["from"]),
            str(params["to"]),
            per_agent=bool(params.get("per_agent")),
        )
    if kind == "inventory":
        return inventory_view(policy, catalog, storage_dir, database, journal)
    return people_view(policy, params.get("role"))
