"""S6 (CCIN): each day keep a uniformly random 5% for a month, destroy the rest at once."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from storage.models import RecordingState, SamplingDraw
from storage.repository import read_session
from storage.retention import (
    RetentionSettings,
    add_hold,
    day_rng,
    draw_sample,
    release_holds,
)
from tests.retention.conftest import Store, local, make_settings

FRACTION = 0.05
N = 10_000
AGENTS = [f"A{i:02d}" for i in range(12)]
# Chi-square critical values at p = 0.001.
CHI2_DF11 = 31.26


def ccin() -> RetentionSettings:
    return make_settings(
        recordings="6 months",
        sampling=f'[sampling]\nfraction = {FRACTION}\nstage = "daily"',
        extra='sampled_recordings = { period = "1 month", rule = "S6" }',
    )


def synthetic_day() -> dict[int, str]:
    """10,000 recordings, agents in blocks of consecutive ids and very uneven volumes, so that
    any selection by position or by agent shows up as a dependence on the agent."""
    weights = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144]
    total = sum(weights)
    agent_of: dict[int, str] = {}
    next_id = 1
    for agent, weight in zip(AGENTS, weights, strict=True):
        for _ in range(N * weight // total):
            agent_of[next_id] = agent
            next_id += 1
    while next_id <= N:
        agent_of[next_id] = AGENTS[-1]
        next_id += 1
    return agent_of


def chi_square_by_agent(agent_of: dict[int, str], kept: frozenset[int]) -> float:
    """Pearson's statistic for independence of (kept, agent) in a 2 x 12 table."""
    totals = Counter(agent_of.values())
    kept_by = Counter(agent_of[i] for i in kept)
    rate = len(kept) / len(agent_of)
    statistic = 0.0
    for agent, total in totals.items():
        for observed, expected in (
            (kept_by[agent], total * rate),
            (total - kept_by[agent], total * (1 - rate)),
        ):
            statistic += (observed - expected) ** 2 / expected
    return statistic


@pytest.mark.parametrize("seed", [1, 2, 3, 20261101, 987654321])
def test_the_kept_fraction_is_within_bounds_and_independent_of_agent(seed: int) -> None:
    agent_of = synthetic_day()
    kept = draw_sample(agent_of, FRACTION, random.Random(seed))
    # Binomial(10000, 0.05): mean 500, sd 21.8; 4.5 sd either side.
    assert 402 <= len(kept) <= 598
    assert chi_square_by_agent(agent_of, kept) < CHI2_DF11
    # ...and independent of the position in the day (ids grow through the day).
    first_half = sum(1 for i in kept if i <= N // 2)
    assert abs(first_half - len(kept) / 2) < 4.5 * (len(kept) * 0.25) ** 0.5


def test_the_fraction_over_many_days_converges() -> None:
    rng = random.Random(7)
    kept = sum(len(draw_sample(range(N), FRACTION, rng)) for _ in range(20))
    # 200,000 draws: sd 97.5 around 10,000.
    assert abs(kept - 20 * N * FRACTION) < 450


def test_the_independence_check_does_catch_biased_selections() -> None:
    """Guards the test above: selections that depend on agent or position fail it."""
    agent_of = synthetic_day()
    first_ids = frozenset(sorted(agent_of)[: int(N * FRACTION)])
    assert chi_square_by_agent(agent_of, first_ids) > CHI2_DF11
    rng = random.Random(1)
    favour = frozenset(
        i for i, agent in agent_of.items() if rng.random() < (0.08 if agent == "A10" else 0.04)
    )
    assert chi_square_by_agent(agent_of, favour) > CHI2_DF11


def test_the_draw_is_reproducible_with_a_seed_and_order_free() -> None:
    ids = list(range(1, 2001))
    a = draw_sample(ids, FRACTION, random.Random(42))
    b = draw_sample(reversed(ids), FRACTION, random.Random(42))
    c = draw_sample(ids, FRACTION, random.Random(43))
    assert a == b and a != c


def test_the_daily_pass_keeps_the_draw_destroys_the_rest_and_audits_it(store: Store) -> None:
    settings = ccin()
    day_one = [
        store.recording(local(2026, 11, 1, 0, 1) + timedelta(minutes=11 * i), settings=settings)
        for i in range(120)
    ]
    day_two = [
        store.recording(local(2026, 11, 2, 9) + timedelta(minutes=i), settings=settings)
        for i in range(10)
    ]
    seed = 20261102
    expected = draw_sample([rid for rid, _ in day_one], FRACTION, day_rng(seed, "2026-11-01"))
    assert expected  # the seed must exercise both sides

    report = store.purger(settings, seed=seed).run(local(2026, 11, 2, 12))
    (draw,) = report.sampling
    assert draw.day == "2026-11-01" and draw.candidates == 120
    assert frozenset(draw.kept) == expected
    assert sorted(d.recording_id for d in report.destroyed) == sorted(
        rid for rid, _ in day_one if rid not in expected
    )
    for rid, path in day_one:
        row = store.catalog.get_recording(rid)
        assert row is not None
        if rid in expected:
            assert path.exists() and row.state is RecordingState.COMPLETE
            assert row.expires_at == local(2026, 12, 1)  # S6: the sample is kept one month
        else:
            assert not path.exists() and row.state is RecordingState.DESTROYED
            assert row.destroy_reason == "S6: not kept by the daily sample of 2026-11-01"
    # Today's recordings wait for their own day's draw.
    assert all(path.exists() for _, path in day_two)
    audit = next(e for e in store.trail().entries() if e.action == "sampling.draw")
    assert audit.object == "day:2026-11-01"
    assert audit.detail["kept"] == sorted(expected) and audit.detail["seeded"] is True
    assert audit.detail["dropped"] == 120 - len(expected)

    # Drawn once: a later run the same day draws nothing again.
    assert store.purger(settings).run(local(2026, 11, 2, 13)).sampling == []
    third = store.purger(settings, seed=1).run(local(2026, 11, 3, 0, 30))
    assert [d.day for d in third.sampling] == ["2026-11-02"]
    with read_session(store.catalog) as session:
        assert len(session.scalars(select(SamplingDraw)).all()) == 2

    # The sample's month is over on 1 December.
    month = store.purger(settings).run(local(2026, 12, 1))
    gone = {d.recording_id for d in month.destroyed}
    assert expected <= gone
    assert all(d.reason.startswith("S6:") for d in month.destroyed if d.recording_id in expected)
    assert store.trail().verify().ok


def test_a_held_recording_left_out_of_the_sample_waits_for_its_release(store: Store) -> None:
    settings = make_settings(
        holds=True,
        recordings="6 months",
        sampling='[sampling]\nfraction = 0.0001\nstage = "daily"',
        extra='sampled_recordings = { period = "1 month", rule = "S6" }',
    )
    held, path = store.recording(local(2026, 11, 1, 10), settings=settings)
    add_hold(
        store.catalog,
        held,
        reason="dispute",
        actor="clerk",
        now=local(2026, 11, 1, 11),
        settings=settings,
        anchor_path=store.anchor,
    )
    report = store.purger(settings, seed=5).run(local(2026, 11, 2, 1))
    assert report.sampling[0].dropped == (held,) and report.held == [held]
    assert path.exists()
    release_holds(
        store.catalog, held, actor="clerk", now=local(2026, 11, 5), anchor_path=store.anchor
    )
    report = store.purger(settings).run(local(2026, 11, 5, 1))
    assert [d.recording_id for d in report.destroyed] == [held] and not path.exists()


def test_a_recording_finalized_after_its_day_was_drawn_is_drawn_later(store: Store) -> None:
    settings = ccin()
    store.recording(local(2026, 11, 1, 10), settings=settings)
    late, _ = store.recording(local(2026, 11, 1, 23, 50), settings=settings, finalize=False)
    first = store.purger(settings, seed=3).run(local(2026, 11, 2, 0, 5))
    assert [d.candidates for d in first.sampling] == [1]
    store.catalog.finalize_recording(
        late, at=local(2026, 11, 2, 0, 10), sha256="0" * 64, size=1, duration=1.0
    )
    second = store.purger(settings, seed=3).run(local(2026, 11, 2, 1))
    assert [(d.day, d.candidates) for d in second.sampling] == [("2026-11-01", 1)]
