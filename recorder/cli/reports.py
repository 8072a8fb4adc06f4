"""`recorder report annual|quality|inventory|people`: the figures the policies ask for, as a
table, CSV or JSON, and as a chart (T1, T2, X4, A12).

A report is read through the service like a recording (the access socket, the caller known
by uid): the policy says which roles read which report and who sees per-agent figures
(A11), and every reading is audited (A5). The service sends rows; this command lays them
out and draws the chart, so the service needs no plotting library.

Exit codes: 0 done; 2 refused by the policy or bad input; 1 the service cannot be reached.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from recorder.cli.common import CliExit, catalog_handler, dump_json
from recorder.cli.lawful import ask_service, common_options


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    return str(value)


def write_table(out: TextIO, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(c), *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)]
    out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    for line in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n")


def write_csv(out: TextIO, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else _cell(row.get(c)) for c in columns])


def _bars(ax: Any, labels: list[str], series: dict[str, list[float]], unit: str) -> None:
    count = max(1, len(series))
    width = 0.8 / count
    for index, (name, values) in enumerate(series.items()):
        offsets = [i + (index - (count - 1) / 2) * width for i in range(len(labels))]
        bars = ax.bar(offsets, values, width=width, label=name)
        if len(labels) * count <= 48:
            ax.bar_label(bars, labels=[f"{v:g}" if v else "" for v in values], fontsize=7)
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 12 else 0)
    ax.set_ylabel(unit)
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.margins(y=0.15)
    if len(series) > 1:
        ax.legend(frameon=False, ncols=len(series), loc="upper left", bbox_to_anchor=(0, 1.12))


def draw_chart(report: dict[str, Any], path: Path | BinaryIO) -> None:
    """A PNG of the report's series (matplotlib, no display needed): the main counts, and
    the small ones (refusals, communications...) on a panel of their own scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chart = report["chart"]
    labels = [str(x) for x in chart["labels"]]
    lower: dict[str, list[float]] | None = chart.get("lower")
    rows = 2 if lower else 1
    fig, axes = plt.subplots(rows, 1, figsize=(10, 5.5 if rows == 1 else 7), dpi=100, squeeze=False)
    _bars(axes[0][0], labels, chart["series"], chart.get("unit", "count"))
    if lower:
        _bars(axes[1][0], labels, lower, chart.get("lower_unit", "count"))
    fig.suptitle(report["title"])
    if report.get("footnote"):
        fig.text(0.01, 0.01, report["footnote"], fontsize=8, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, format="png")
    plt.close(fig)


def _show(args: argparse.Namespace, out: TextIO, report: dict[str, Any]) -> int:
    if args.chart:
        try:
            draw_chart(report, Path(args.chart))
        except OSError as exc:
            raise CliExit(2, f"--chart: {exc.strerror or exc}") from None
    fmt = args.format or ("table" if out.isatty() else "csv")
    if args.json or fmt == "json":
        dump_json(out, report)
    elif fmt == "csv":
        write_csv(out, report["columns"], report["rows"])
    else:
        out.write(f"{report['title']}\n")
        write_table(out, report["columns"], report["rows"])
        if report.get("footnote"):
            out.write(f"{report['footnote']}\n")
    return 0


def _report(args: argparse.Namespace, out: TextIO) -> int:
    request: dict[str, Any] = {"cmd": "report", "kind": args.kind}
    if args.kind == "annual":
        request["year"] = args.year
    elif args.kind == "quality":
        request |= {"from": args.since, "to": args.until, "per_agent": args.per_agent}
    elif args.kind == "people":
        request["role"] = args.role
    response, _ = ask_service(args, request)
    return _show(args, out, response["report"])


def add_report_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `report` on the `recorder` command's subparsers."""
    report = subparsers.add_parser("report", help="annual, quality, inventory, people (audited)")
    kinds = report.add_subparsers(dest="kind", required=True)

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--format", choices=("table", "csv", "json"))
        parser.add_argument("--chart", metavar="FILE.png", help="also draw the chart here")
        common_options(parser)
        parser.set_defaults(handler=catalog_handler(_report))

    annual = kinds.add_parser("annual", help="T1, A5: the year month by month")
    annual.add_argument("--year", type=int, required=True)
    options(annual)
    quality = kinds.add_parser("quality", help="T2: calls, answer times, lost calls by team")
    quality.add_argument("--from", dest="since", required=True, metavar="DATE")
    quality.add_argument("--to", dest="until", required=True, metavar="DATE")
    quality.add_argument("--per-agent", action="store_true", help="for roles the policy allows")
    options(quality)
    inventory = kinds.add_parser("inventory", help="X4: every file of personal data kept")
    options(inventory)
    people = kinds.add_parser("people", help="A12: the nominative list of people with access")
    people.add_argument("--role")
    options(people)
