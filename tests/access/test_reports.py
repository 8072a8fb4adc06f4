"""Reports through the desk (T1, T2, X4, A11, A12, A5) and as the CLI lays them out."""

from __future__ import annotations

import csv
import io
import struct
from datetime import timedelta
from pathlib import Path

import pytest

from recorder.cli.reports import draw_chart, write_csv, write_table

from .test_desk import CALL_AT, DIRECTOR, LEAD, SAME_DAY, STATS, World, approved, refused
from .test_desk import world as world  # the fixture


def test_T1_the_annual_report_counts_the_year_month_by_month(world: World) -> None:
    world.add_recording(CALL_AT + timedelta(days=1), "+15145550111")
    approved(world)
    view = world.desk.report(world.policy, DIRECTOR, SAME_DAY, kind="annual", params={"year": 2026})
    december = next(row for row in view["rows"] if row["month"] == "2026-12")
    total = view["rows"][-1]
    assert (december["calls"], december["recorded_calls"], december["requests_made"]) == (2, 2, 1)
    assert december["requests_approved"] == 1
    assert total["month"] == "total" and total["calls"] == 2
    assert len(view["chart"]["labels"]) == 12 and view["chart"]["series"]["calls"][11] == 2
    entry = world.trail().entries()[-1]
    assert (entry.action, entry.object, entry.outcome) == ("report.read", "report:annual", "ok")


def test_A11_statistics_only_reads_counts_never_per_agent_figures(world: World) -> None:
    params = {"from": "2026-12-01", "to": "2026-12-31"}
    view = world.desk.report(world.policy, STATS, SAME_DAY, kind="quality", params=params)
    assert "agent" not in view["columns"]
    with refused("A11"):
        world.desk.report(
            world.policy, STATS, SAME_DAY, kind="quality", params={**params, "per_agent": True}
        )
    with refused("X4"):
        world.desk.report(world.policy, STATS, SAME_DAY, kind="inventory", params={})
    assert world.last()[1] == "refused"


def test_T2_per_agent_figures_leave_out_agents_with_few_calls(world: World) -> None:
    for hour in range(5):
        world.add_recording(CALL_AT + timedelta(hours=hour + 1), "+15145550111", agent="4711")
    world.add_recording(CALL_AT, "+15145550111", agent="4799")
    params = {"from": "2026-12-01", "to": "2026-12-31", "per_agent": True}
    view = world.desk.report(world.policy, DIRECTOR, SAME_DAY, kind="quality", params=params)
    assert [row["agent"] for row in view["rows"]] == ["4711"]  # 6 calls; 4799 had one
    assert view["suppressed"] == 1


def test_X4_the_inventory_names_every_kind_of_personal_data(world: World) -> None:
    view = world.desk.report(world.policy, DIRECTOR, SAME_DAY, kind="inventory", params={})
    kinds = {row["kind"]: row for row in view["rows"]}
    assert kinds["recordings"]["count"] == 1 and kinds["recordings"]["bytes"] == len(world.wav)
    assert "(D1)" in kinds["recordings"]["retention"]
    assert {"call_log", "audit_trail", "catalog", "exports", "logs"} <= set(kinds)


def test_A12_the_people_report_is_the_policy_s_list(world: World) -> None:
    view = world.desk.report(world.policy, DIRECTOR, SAME_DAY, kind="people", params={})
    assert {row["id"] for row in view["rows"]} == set(world.policy.people)
    with refused("A12"):
        world.desk.report(world.policy, LEAD, SAME_DAY, kind="people", params={})


def test_bad_report_parameters_are_refused_with_the_rule(world: World) -> None:
    with refused("T1"):
        world.desk.report(world.policy, DIRECTOR, SAME_DAY, kind="annual", params={"year": "x"})
    with refused("T2"):
        world.desk.report(
            world.policy, DIRECTOR, SAME_DAY, kind="quality", params={"from": "2026-13-01"}
        )


def test_table_csv_and_a_chart_that_is_a_real_png(world: World, tmp_path: Path) -> None:
    view = world.desk.report(world.policy, DIRECTOR, SAME_DAY, kind="annual", params={"year": 2026})
    text = io.StringIO()
    write_table(text, view["columns"], view["rows"])
    lines = text.getvalue().splitlines()
    assert lines[0].split()[:3] == ["month", "calls", "recorded_calls"] and len(lines) == 14
    out = io.StringIO()
    write_csv(out, view["columns"], view["rows"])
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert parsed[11]["month"] == "2026-12" and parsed[11]["calls"] == "1"
    chart = tmp_path / "annual.png"
    draw_chart(view, chart)
    data = chart.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1000, 700) and 10_000 < len(data) < 500_000


@pytest.mark.parametrize("kind", ["quality", "inventory", "people"])
def test_every_report_draws(world: World, tmp_path: Path, kind: str) -> None:
    params = {"from": "2026-12-01", "to": "2026-12-31"} if kind == "quality" else {}
    view = world.desk.report(world.policy, DIRECTOR, SAME_DAY, kind=kind, params=params)
    draw_chart(view, tmp_path / f"{kind}.png")
    assert (tmp_path / f"{kind}.png").read_bytes()[:4] == b"\x89PNG"
