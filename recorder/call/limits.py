"""Admission limits for new calls, sans-IO: token buckets per source and overall, a cap on
concurrent calls (issue 20: an INVITE flood from one source must not take the service from
the others).

`Admission.admit(source, active_calls, now)` says whether a new INVITE may start a call;
when not, how long the sender should wait (the 503's Retry-After) and whether this refusal
is the first of its second for that source, so that a flood costs one log line a second,
not one per INVITE. Memory is bounded: at most `max_sources` buckets, the least recently
seen forgotten first (a forgotten source starts again with a full bucket, which only ever
errs towards letting a call in).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from recorder.config import Limits

MAX_SOURCES = 10_000


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def ready(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= 1.0

    def take(self) -> None:
        self.tokens -= 1.0

    def wait(self, now: float) -> float:
        """Seconds until one token is there again."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


@dataclass(frozen=True, slots=True)
class Refusal:
    retry_after: int  # whole seconds, at least 1 (RFC 3261 §20.33)
    reason: str  # "source_rate" | "global_rate" | "max_calls"
    log: bool  # the first refusal of this source in this second


class Admission:
    def __init__(self, limits: Limits, *, max_sources: int = MAX_SOURCES) -> None:
        self.limits = limits
        self.max_sources = max_sources
        self._sources: OrderedDict[str, TokenBucket] = OrderedDict()
        self._global: TokenBucket | None = None
        self._last_logged: dict[str, int] = {}
        self.refused = {"source_rate": 0, "global_rate": 0, "max_calls": 0}

    def __len__(self) -> int:
        return len(self._sources)

    def _source(self, source: str, now: float) -> TokenBucket | None:
        rate = self.limits.per_source_rate
        if rate is None:
            return None
        bucket = self._sources.get(source)
        if bucket is None:
            bucket = TokenBucket(rate, self.limits.per_source_burst, now)
            self._sources[source] = bucket
            while len(self._sources) > self.max_sources:
                forgotten, _ = self._sources.popitem(last=False)
                self._last_logged.pop(forgotten, None)
        else:
            self._sources.move_to_end(source)
        return bucket

    def _overall(self, now: float) -> TokenBucket | None:
        if self.limits.global_rate is None:
            return None
        if self._global is None:
            self._global = TokenBucket(self.limits.global_rate, self.limits.global_burst, now)
        return self._global

    def admit(self, source: str, active_calls: int, now: float) -> Refusal | None:
        if self.limits.max_calls is not None and active_calls >= self.limits.max_calls:
            return self._refuse(source, "max_calls", 5.0, now)
        mine = self._source(source, now)
        if mine is not None and not mine.ready(now):
            return self._refuse(source, "source_rate", mine.wait(now), now)
        overall = self._overall(now)
        if overall is not None and not overall.ready(now):
            return self._refuse(source, "global_rate", overall.wait(now), now)
        # Both buckets pay only for an admitted call: a refused flood does not drain the
        # global bucket that other sources share.
        if mine is not None:
            mine.take()
        if overall is not None:
            overall.take()
        return None

    def _refuse(self, source: str, reason: str, wait: float, now: float) -> Refusal:
        self.refused[reason] += 1
        second = int(now)
        first = self._last_logged.get(source) != second
        if first:
            self._last_logged[source] = second
            if len(self._last_logged) > self.max_sources:
                self._last_logged.clear()
        return Refusal(max(1, math.ceil(wait)), reason, first)
