"""Admission limits without a clock: buckets per source and overall, the call cap, logging."""

from __future__ import annotations

from recorder.call.limits import Admission
from recorder.config import Limits


def test_a_flood_from_one_source_is_refused_and_others_still_get_in() -> None:
    admission = Admission(Limits(per_source_rate=5, per_source_burst=5, global_rate=100))
    admitted = [admission.admit("203.0.113.9", 0, 0.0) for _ in range(20)]
    assert sum(r is None for r in admitted) == 5  # the burst
    refused = [r for r in admitted if r is not None]
    assert all(r.reason == "source_rate" and r.retry_after >= 1 for r in refused)
    assert sum(r.log for r in refused) == 1  # one log line for the second, not fifteen
    assert admission.admit("198.51.100.7", 0, 0.0) is None  # another source is untouched
    # A second later the flooding source has 5 more tokens.
    later = [admission.admit("203.0.113.9", 0, 1.0) for _ in range(6)]
    assert sum(r is None for r in later) == 5 and later[-1] is not None and later[-1].log


def test_refusals_do_not_drain_the_shared_bucket() -> None:
    admission = Admission(
        Limits(per_source_rate=1, per_source_burst=1, global_rate=10, global_burst=10)
    )
    for _ in range(1000):
        admission.admit("203.0.113.9", 0, 0.0)
    others = [admission.admit(f"198.51.100.{i}", 0, 0.0) for i in range(9)]
    assert all(r is None for r in others)  # 1 + 9 = the global burst of 10
    assert admission.admit("192.0.2.1", 0, 0.0).reason == "global_rate"  # type: ignore[union-attr]


def test_the_concurrent_call_cap() -> None:
    admission = Admission(Limits(per_source_rate=None, global_rate=None, max_calls=3))
    assert admission.admit("a", 2, 0.0) is None
    refusal = admission.admit("a", 3, 0.0)
    assert refusal is not None and refusal.reason == "max_calls" and refusal.retry_after == 5


def test_limits_off() -> None:
    admission = Admission(Limits(per_source_rate=None, global_rate=None, max_calls=None))
    assert all(admission.admit("a", 10_000, 0.0) is None for _ in range(10_000))


def test_memory_is_bounded_whatever_the_number_of_sources() -> None:
    admission = Admission(Limits(per_source_rate=1, per_source_burst=1), max_sources=100)
    for index in range(10_000):
        admission.admit(f"10.{index // 65536}.{index // 256 % 256}.{index % 256}", 0, index / 1e4)
    assert len(admission) == 100
