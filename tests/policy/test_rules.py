"""decide() against the shipped policy and the examples: one or more cases per rule ID."""

from __future__ import annotations

import random
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from recorder.policy import CallFacts, Decision, Policy, decide, select_sample

MONTREAL = ZoneInfo("America/Montreal")
PARIS = ZoneInfo("Europe/Paris")
MONDAY_10H = datetime(2026, 11, 23, 10, 0, tzinfo=MONTREAL)
TUESDAY_10H_PARIS = datetime(2026, 11, 24, 10, 0, tzinfo=PARIS)
OPC_NUMBER = "+18886722556"


def inbound(caller: str | None, callee: str, **extra: object) -> CallFacts:
    return CallFacts("inbound", caller, callee, **extra)  # type: ignore[arg-type]


def outbound(caller: str | None, callee: str, **extra: object) -> CallFacts:
    return CallFacts("outbound", caller, callee, **extra)  # type: ignore[arg-type]


def run(policy: Policy, call: CallFacts, now: datetime = MONDAY_10H) -> Decision:
    decision = decide(policy, call, now)
    if call.draw is None:  # a draw is consumed by each call: compare only deterministic ones
        assert decision == decide(policy, call, now)  # deterministic
    return decision


# (policy, call, when, expected outcome, a rule ID that must be among the reasons)
CASES = [
    # S1 (OPC): inbound calls to the call centre only; never outbound, never a desk line
    ("S1", "shipped", inbound("+15145550100", OPC_NUMBER), MONDAY_10H, "record", "S1"),
    ("S1", "OPC", inbound("+15145550100", "1 888 672-2556"), MONDAY_10H, "record", "S1"),
    ("S1", "OPC", outbound("4711", "+15145550100"), MONDAY_10H, "never", "S1"),
    ("S1", "shipped", outbound("4711", "+15145550100"), MONDAY_10H, "never", "S1"),
    ("S1", "OPC", inbound("+15145550100", "+14185550123"), MONDAY_10H, "never", "S1"),
    # S2 (OPC): the Gaspé and Rimouski offices are never recorded
    ("S2", "OPC", inbound("+15145550100", OPC_NUMBER, site="gaspe"), MONDAY_10H, "never", "S2"),
    ("S2", "OPC", inbound("+15145550100", OPC_NUMBER, site="Rimouski"), MONDAY_10H, "never", "S2"),
    ("S2", "OPC", inbound("+15145550100", OPC_NUMBER, site="quebec"), MONDAY_10H, "record", "S1"),
    # S3 (MER): listed extensions, both directions, external only
    ("S3", "MER", outbound("235", "+15145550100"), MONDAY_10H, "record", "S3"),
    ("S3", "MER", inbound("+15145550100", "235"), MONDAY_10H, "record", "S3"),
    ("S3", "MER", outbound("235", "250"), MONDAY_10H, "never", "S3"),
    ("S3", "MER", inbound("+15145550100", "999"), MONDAY_10H, "never", "S3"),
    ("S3", "MER", outbound("+15145550100", "235", external=False), MONDAY_10H, "never", "S3"),
    ("S3", "MER", inbound("+15145550100", "+14505550199"), MONDAY_10H, "never", "S3"),
    # S4 (MER): the detainee line is never recorded
    ("S4", "MER", outbound("829", "+15145550100"), MONDAY_10H, "never", "S4"),
    ("S4", "MER", inbound("+15145550100", "829"), MONDAY_10H, "never", "S4"),
    # S5 (TEL): inside a window -> record; outside -> on demand only
    ("S5", "TEL", inbound("+33123456789", "1001"), TUESDAY_10H_PARIS, "record", "S5"),
    ("S5", "TEL", inbound("+33123456789", "1001"), MONDAY_10H, "on_demand", "S5"),
    # S7 (TEL): outside the published windows nothing starts by itself; private prefix
    ("S7", "TEL", inbound("+33123456789", "1001"), MONDAY_10H, "on_demand", "S7"),
    ("S7", "TEL", outbound("1001", "*70612345678"), TUESDAY_10H_PARIS, "never", "S7"),
    # S8 (TEL): a recorded call can be paused for card data
    ("S8", "TEL", outbound("1001", "0612345678"), TUESDAY_10H_PARIS, "record", "S8"),
    # S6 (CCIN): everything is recorded, the daily pass keeps 5%
    ("S6", "CCIN", inbound("+37793000000", "+37799990000"), MONDAY_10H, "record", "S6"),
    ("S1", "CCIN", outbound("2001", "+37793000000"), MONDAY_10H, "never", "S1"),
    # SQ: only the service number, key or voice refusal
    ("C4", "SQ", inbound("+33612345678", "03 23 06 30 06"), MONDAY_10H, "record", "C4"),
    ("S1", "SQ", inbound("+33612345678", "+33323000000"), MONDAY_10H, "never", "S1"),
]


@pytest.mark.parametrize(
    ("rule", "name", "call", "when", "outcome", "cited"),
    CASES,
    ids=[f"{case[0]}-{case[1]}-{i}" for i, case in enumerate(CASES)],
)
def test_rule_table(
    policies: dict[str, Policy],
    rule: str,
    name: str,
    call: CallFacts,
    when: datetime,
    outcome: str,
    cited: str,
) -> None:
    decision = run(policies[name], call, when)
    assert decision.outcome == outcome, decision.reasons
    assert cited in decision.rule_ids, decision.reasons
    assert decision.policy_hash == policies[name].content_hash


def test_S3_internal_is_never_recorded_whatever_else_says(policies: dict[str, Policy]) -> None:
    mer = policies["MER"]
    # 235 and 250 are both listed, recorded directions both ways: still internal, still never.
    for call in (
        outbound("235", "250"),
        inbound("250", "235"),
        outbound("235", "250", dialled="250"),
    ):
        decision = run(mer, call)
        assert decision.outcome == "never"
        assert not decision.notice
        assert any(rule == "S3" and "internal" in text for rule, text in decision.reasons)


def test_S3_listed_extension_reason_names_department(policies: dict[str, Policy]) -> None:
    decision = run(policies["MER"], outbound("801", "+15145550100"))
    assert ("S3", "extension 801 is listed (Police: Directeur)") in decision.reasons


def test_S5_on_demand_mode(policies: dict[str, Policy]) -> None:
    from dataclasses import replace

    tel = policies["TEL"]
    on_demand = replace(tel, recording=replace(tel.recording, mode="on_demand"))
    decision = run(on_demand, inbound("+33123456789", "1001"), TUESDAY_10H_PARIS)
    assert decision.outcome == "on_demand"
    assert decision.notice  # whoever may be recorded is told first (C2)
    assert any("on-demand mode" in text for _, text in decision.reasons)


def test_S6_per_call_sampling_is_reproducible_and_fair(policies: dict[str, Policy]) -> None:
    from dataclasses import replace

    from recorder.policy.model import Sampling

    ccin = policies["CCIN"]
    per_call = replace(ccin, sampling=Sampling(0.05, "call"))

    def outcomes(seed: int) -> list[bool]:
        rng = random.Random(seed)
        calls = [inbound(f"+3779300{n:04d}", "+37799990000", draw=rng.random) for n in range(4000)]
        return [run(per_call, call).record for call in calls]

    first = outcomes(7)
    assert first == outcomes(7)  # a seed replays the draw
    assert first != outcomes(8)
    kept = sum(first)
    # Binomial(4000, 0.05): mean 200, sd ~13.8; 5 sd either side.
    assert 130 < kept < 270
    with pytest.raises(ValueError, match="draw"):
        run(per_call, inbound("+37793000000", "+37799990000"))


def test_S6_daily_sample_is_independent_of_agent() -> None:
    # 10,000 recordings spread over 20 agents; the draw sees only ids, never agents.
    agents = {f"rec-{n:05d}": f"agent-{n % 20}" for n in range(10_000)}
    kept = select_sample(agents, 0.05, random.Random(2017))
    assert kept == select_sample(reversed(list(agents)), 0.05, random.Random(2017))
    assert 400 < len(kept) < 600  # mean 500, sd ~21.8
    per_agent = [sum(1 for rec in kept if agents[rec] == f"agent-{a}") for a in range(20)]
    # Each agent has 500 recordings: mean 25 kept, sd ~4.9; no agent is spared or targeted.
    assert all(5 < count < 50 for count in per_agent)


def test_S6_daily_stage_marks_the_decision(policies: dict[str, Policy]) -> None:
    decision = run(policies["CCIN"], inbound("+37793000000", "+37799990000"))
    assert decision.sampling == 0.05
    assert decision.retention_class == "sampled_recordings"


def test_S7_private_prefix_is_stripped(policies: dict[str, Policy]) -> None:
    decision = run(policies["TEL"], outbound("1001", "*7 06 12 34 56 78"), TUESDAY_10H_PARIS)
    assert decision.strip_prefix == "*7"
    assert decision.route_to == "0612345678"
    assert decision.outcome == "never"
    assert not decision.notice


def test_S8_pause_codes_are_policy(policies: dict[str, Policy]) -> None:
    rules = policies["TEL"].recording
    assert (rules.pause_code, rules.resume_code, rules.start_code) == ("*8", "*9", "*1")


def test_C1_caller_hears_notice(policies: dict[str, Policy]) -> None:
    for name, call in (
        ("shipped", inbound("+15145550100", OPC_NUMBER)),
        ("MER", inbound("+15145550100", "235")),
    ):
        decision = run(policies[name], call)
        assert decision.notice and decision.notice_to == "caller"
        assert "C1" in decision.rule_ids


def test_C1_no_notice_when_nothing_may_be_recorded(policies: dict[str, Policy]) -> None:
    decision = run(policies["OPC"], inbound("+15145550100", OPC_NUMBER, site="gaspe"))
    assert not decision.notice and decision.consent_mode is None


def test_C2_callee_of_outbound_call_is_told(policies: dict[str, Policy]) -> None:
    decision = run(policies["TEL"], outbound("1001", "0612345678"), TUESDAY_10H_PARIS)
    assert decision.notice_to == "callee"
    assert "C2" in decision.rule_ids
    # MER records outbound calls but its notice is for callers only.
    mer = run(policies["MER"], outbound("235", "+15145550100"))
    assert mer.record and not mer.notice and "C2" in mer.rule_ids


def test_C3_key_refusal(policies: dict[str, Policy]) -> None:
    decision = run(policies["CCIN"], inbound("+37793000000", "+37799990000"))
    assert decision.consent_mode == "opt_out"
    assert decision.listen_seconds == 5
    assert policies["CCIN"].consent.refusal_keys == frozenset({"9"})
    assert "C3" in decision.rule_ids


def test_C4_key_or_voice_before_operator(policies: dict[str, Policy]) -> None:
    sq = policies["SQ"]
    assert sq.consent.voice is not None
    assert sq.consent.voice.language == "fr"
    assert "refuser l'enregistrement" in sq.consent.voice.phrases
    assert sq.consent.refusal_keys == frozenset({"9"})
    decision = run(sq, inbound("+33612345678", "+33323063006"))
    assert {"C3", "C4", "C5"} <= set(decision.rule_ids)


def test_C5_refusal_never_blocks_service(policies: dict[str, Policy]) -> None:
    opc = policies["OPC"]
    assert opc.consent.agent_refusal_code == "*86"
    decision = run(opc, inbound("+15145550100", OPC_NUMBER))
    assert ("C5", "a caller who refuses is still served, and not recorded") in decision.reasons
    mer = run(policies["MER"], inbound("+15145550100", "235"))
    assert any("Guichet unique" in text for rule, text in mer.reasons if rule == "C5")


def test_N1_agent_code_sources_and_name(policies: dict[str, Policy]) -> None:
    tel = policies["TEL"]
    naming = tel.naming
    headers = {"x-agent-code": "4711"}
    assert naming.resolve_agent(headers, None, "1001") == "4711"
    assert naming.resolve_agent({}, "<sip:4712@pbx.example>;tag=x", "1001") == "4712"
    assert naming.resolve_agent({}, None, "1001") == "A1001"
    assert naming.resolve_agent({}, None, "1999") is None
    at = datetime(2026, 11, 23, 15, 42, tzinfo=ZoneInfo("UTC"))
    assert naming.file_stem(at, tel.timezone, "4711", "1001") == "2026-11-23_1642_agent-4711"
    assert naming.file_stem(at, tel.timezone, "../etc", None) == "2026-11-23_1642_agent-___etc"
    assert naming.file_stem(at, tel.timezone, None, None) == "2026-11-23_1642_agent-unknown"
    decision = run(policies["shipped"], inbound("+15145550100", OPC_NUMBER))
    assert "N1" in decision.rule_ids


def test_N2_extension_in_name(policies: dict[str, Policy]) -> None:
    mer = policies["MER"]
    at = datetime(2026, 11, 23, 10, 42, tzinfo=MONTREAL)
    assert mer.naming.file_stem(at, mer.timezone, None, "235") == "2026-11-23_1042_ext-235"
    assert "N2" in run(mer, outbound("235", "+15145550100")).rule_ids


def test_N3_withheld_caller_is_noted(policies: dict[str, Policy]) -> None:
    decision = run(policies["OPC"], inbound(None, OPC_NUMBER))
    assert decision.record and "N3" in decision.rule_ids


def test_D_reason_cites_retention(policies: dict[str, Policy]) -> None:
    opc = run(policies["OPC"], inbound("+15145550100", OPC_NUMBER))
    assert ("D1" in opc.rule_ids) and any("2026-12-01 00:00" in t for r, t in opc.reasons)
    assert "D4" in run(policies["MER"], outbound("235", "+15145550100")).rule_ids
    assert "D5" in run(policies["SQ"], inbound("+33612345678", "+33323063006")).rule_ids


def test_naive_time_is_refused(policies: dict[str, Policy]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(policies["OPC"], inbound("+15145550100", OPC_NUMBER), datetime(2026, 11, 23, 10))


def test_decision_is_frozen_and_serialisable(policies: dict[str, Policy]) -> None:
    decision = run(policies["OPC"], inbound("+15145550100", OPC_NUMBER))
    with pytest.raises(AttributeError):
        decision.record = False  # type: ignore[misc]
    data = decision.to_dict()
    assert data["outcome"] == "record" and data["rule_ids"][0] == "S1"


def test_people_roles_purposes_are_data(policies: dict[str, Policy]) -> None:
    mer = policies["MER"]
    assert mer.roles["director"].exclude_confidential  # A8
    assert mer.people["clerk"].confidential
    assert mer.purposes["complaints"].approvers == 2  # A9
    assert mer.purposes["training"].deidentify  # P5
    assert mer.roles["head"].can_override  # A14
    ccin = policies["CCIN"]
    assert ccin.roles["client_department"].scope == "statistics"  # A11
    assert not ccin.roles["client_department"].purposes
    opc = policies["OPC"]
    assert opc.roles["team_lead"].window == "call_day"  # A1
    assert opc.roles["administrator"].window == "retention"  # A2
    assert set(opc.purposes) >= {"quality", "complaints", "training", "quality_programme"}  # P1
    assert opc.people_with_role("president")[0].name == "Louis Borgeat"
    assert set(policies["SQ"].purposes) == {"statistics", "quality", "organisation", "evidence"}


def test_shipped_policy_is_opc(policies: dict[str, Policy]) -> None:
    shipped, opc = policies["shipped"], policies["OPC"]
    assert shipped.name == opc.name == "OPC"
    for field in ("recording", "notice", "consent", "naming", "retention", "roles", "people"):
        assert getattr(shipped, field) == getattr(opc, field), field


def test_number_patterns() -> None:
    from recorder.policy.numbers import parse_pattern

    assert parse_pattern("200-299").matches("235")
    assert not parse_pattern("200-299").matches("2350")
    assert parse_pattern("8XX").matches("809") and not parse_pattern("8XX").matches("8090")
    assert parse_pattern("+1 888 672-2556").matches("+18886722556")
    assert not parse_pattern("235").matches(None)
    for bad in ("20-299", "299-200", "2?9", ""):
        with pytest.raises(ValueError):
            parse_pattern(bad)
