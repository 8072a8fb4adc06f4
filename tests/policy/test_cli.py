"""`recorder policy check` and `recorder policy explain`: argv in, stdout and exit code out."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from recorder.cli.policy import add_policy_commands, main
from recorder.policy import load_policy
from tests.policy.conftest import EXAMPLES, ROOT

SEED_001 = ROOT.parent / "shared" / "seeds" / "001_62a684d6182ac74a.txt"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("path", [ROOT / "policy.toml", *EXAMPLES.values()], ids=lambda p: p.name)
def test_check_passes_on_shipped_policy_and_every_example(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["check", str(path)], capsys)
    assert code == 0, out
    assert out.count("\n") == 1  # one paragraph
    assert out.startswith(f"Policy {load_policy(path).name} ")


def test_check_lists_deploy_and_policy_errors_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (ROOT / "policy.toml").read_text()
    text = text.replace('ports = "20000-29999"', 'ports = "abc"')
    text = text.replace('recordings = "8 days"', 'recordings = "-1 days"')
    text = text.replace('role = "president"', 'role = "emperor"')
    path = tmp_path / "policy.toml"
    path.write_text(text)
    code, out, _ = run(["check", str(path)], capsys)
    assert code == 2
    lines = out.splitlines()
    assert len(lines) == 3
    for line in lines:
        match = re.fullmatch(rf"{re.escape(str(path))}:(\d+): ([\w.]+): .+", line)
        assert match, line
        assert int(match.group(1)) > 0
    keys = {line.split(": ")[1] for line in lines}
    assert keys == {"media.ports", "retention.recordings", "people.president.role"}


def test_check_syntax_error_reported_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[policy]\nname = "x\n')
    code, out, _ = run(["check", str(path)], capsys)
    assert code == 2
    assert len(out.splitlines()) == 1 and ":2: syntax:" in out


def test_check_warnings_go_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["check", str(EXAMPLES["SQ"])], capsys)
    assert code == 0
    assert "consent.voice.model_dir: warning:" in err  # no French model installed here
    assert "warning" not in out


def test_explain_text(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["explain", "--config", str(EXAMPLES["MER"]), "--direction", "outbound"]
    argv += ["--from", "235", "--to", "+15145550100", "--at", "2026-11-23T10:00"]
    code, out, _ = run(argv, capsys)
    assert code == 0
    assert "Decision: RECORD" in out
    assert "Mon 2026-11-23 10:00 America/Montreal" in out
    assert "S3  extension 235 is listed (Communications et TI: Directeur)" in out
    assert out.splitlines()[-1].startswith("Rules: S3")


def test_explain_issue_example_inbound_to_extension(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["explain", "--config", str(EXAMPLES["MER"]), "--direction", "inbound"]
    argv += ["--from", "+15145550100", "--to", "235", "--at", "2026-11-23T10:00"]
    code, out, _ = run(argv, capsys)
    assert code == 0 and "Decision: RECORD - notice to the caller" in out


def test_explain_json_never(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["explain", "--config", str(EXAMPLES["OPC"]), "--direction", "inbound", "--json"]
    argv += ["--from", "withheld", "--to", "+18886722556", "--site", "gaspe"]
    argv += ["--at", "2026-11-23T10:00:00-05:00"]
    code, out, _ = run(argv, capsys)
    assert code == 0
    data = json.loads(out)
    assert data["outcome"] == "never" and data["record"] is False
    assert data["call"]["from"] is None
    assert data["rule_ids"] == ["N3", "S2"]
    assert data["at"] == "2026-11-23T10:00:00-05:00"
    assert data["policy_hash"] == load_policy(EXAMPLES["OPC"]).content_hash


def test_explain_on_demand_and_private_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["explain", "--config", str(EXAMPLES["TEL"]), "--json", "--at", "2026-11-23T10:00"]
    code, out, _ = run(
        [*base, "--direction", "inbound", "--from", "+33612345678", "--to", "1001"], capsys
    )
    assert code == 0 and json.loads(out)["outcome"] == "on_demand"
    code, out, _ = run(
        [*base, "--direction", "outbound", "--from", "1001", "--to", "*70612345678"], capsys
    )
    data = json.loads(out)
    assert data["strip_prefix"] == "*7" and data["route_to"] == "0612345678"


def test_explain_seed_replays_sampling(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = EXAMPLES["CCIN"].read_text().replace('stage = "daily"', 'stage = "call"')
    path = tmp_path / "ccin.toml"
    path.write_text(text)
    argv = ["explain", "--config", str(path), "--direction", "inbound", "--json"]
    argv += ["--from", "+37793000000", "--to", "+37799990000", "--at", "2026-11-23T10:00"]
    outs = [json.loads(run([*argv, "--seed", "5"], capsys)[1])["reasons"] for _ in range(2)]
    assert outs[0] == outs[1]
    assert any(reason["rule"] == "S6" for reason in outs[0])


def test_explain_refuses_invalid_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.toml"
    path.write_text((ROOT / "policy.toml").read_text().replace('"8 days"', '"-8 days"'))
    argv = ["explain", "--config", str(path), "--direction", "inbound", "--from", "1", "--to", "2"]
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert "retention.recordings" in err


def test_explain_bad_time(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["explain", "--config", str(EXAMPLES["OPC"]), "--direction", "inbound"]
    argv += ["--from", "1", "--to", "2", "--at", "next tuesday"]
    code, _, err = run(argv, capsys)
    assert code == 2 and err.startswith("--at:")


def test_add_policy_commands_plugs_into_a_parent_parser() -> None:
    parser = argparse.ArgumentParser(prog="recorder")
    commands = parser.add_subparsers(dest="command", required=True)
    policy = commands.add_parser("policy")
    add_policy_commands(policy.add_subparsers(dest="policy_command", required=True))
    args = parser.parse_args(["policy", "check", "x.toml"])
    assert args.file == "x.toml" and callable(args.handler)


def test_mer_annex_a_is_complete() -> None:
    mer = load_policy(EXAMPLES["MER"])
    # The seed's Annex A lists 55 extensions (25 on its first page, 30 on the second).
    assert len(mer.extensions) == 55
    assert mer.extensions["809"].description == "Téléphone des patrouilleurs"
    if not SEED_001.exists():
        pytest.skip("seed 001 not available here")
    annex = SEED_001.read_text(encoding="utf-8").split("ANNEXE A")[1]
    rows = [line.split("\t") for line in annex.splitlines()]
    seed = {row[0]: row for row in rows if len(row) == 3 and row[0].isdigit()}
    assert set(seed) == set(mer.extensions)
    for number, (_, department, description) in seed.items():
        row = mer.extensions[number]
        assert row.description == description
        assert row.department.replace(" / ", " ") == department
