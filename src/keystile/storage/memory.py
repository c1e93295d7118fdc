"""In-process fixed-window counters: the embedded default's rate limiting.

Exact within one process. With several worker processes and no Redis each
process counts on its own (see docs/rate-limits.md).
"""

from __future__ import annotations

import math

from keystile import clock as clocks
from keystile.ratelimit.models import Count, Guard
from keystile.ratelimit.quota import Period, QuotaCount


class MemoryWindows:
    def __init__(self, clock: clocks.Clock = clocks.system_clock) -> None:
        self._clock = clock
        # window length -> (current window index, counts in that window). A
        # new window replaces the old dict whole: memory holds only the keys
        # seen in the current window.
        self._windows: dict[int, tuple[int, dict[str, int]]] = {}

    async def hit(
        self, key: str, window_seconds: int, cost: int = 1, guard: Guard | None = None
    ) -> Count:
        return self.hit_now(key, window_seconds, cost, guard)

    def hit_now(
        self, key: str, window_seconds: int, cost: int = 1, guard: Guard | None = None
    ) -> Count:
        if guard is not None:
            guarding = self.hit_now(guard.key, guard.limit.window_seconds, 0)
            if guarding.count >= guard.limit.amount:
                return Count(guarding.count, guarding.reset, guarded=True)
        index = math.floor(self._clock() / window_seconds)
        current = self._windows.get(window_seconds)
        if current is None or current[0] != index:
            current = (index, {})
            self._windows[window_seconds] = current
        counts = current[1]
        count = counts.get(key, 0) + cost
        if cost:
            counts[key] = count
        return Count(count=count, reset=float((index + 1) * window_seconds))

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._windows.clear()


class MemoryQuotas:
    """:class:`~keystile.ratelimit.quota.QuotaCounter` in this process: exact
    when this process is the only one counting (one worker, no Redis), and
    the fallback of the Redis counters in ``open`` mode. Holds one entry per
    counter, for its current period only."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, int]] = {}  # name -> (period start, used)

    async def consume(self, name: str, period: Period, limit: int, cost: int) -> QuotaCount | None:
        return self.consume_now(name, period, limit, cost)

    def consume_now(self, name: str, period: Period, limit: int, cost: int) -> QuotaCount | None:
        entry = self._counts.get(name)
        if entry is None or entry[0] != period.start:
            return None
        used = entry[1]
        if cost and used + cost > limit:
            return QuotaCount(used, admitted=False)
        if cost:
            used += cost
            self._counts[name] = (period.start, used)
        return QuotaCount(used, admitted=True)

    async def seed(self, name: str, period: Period, used: int) -> None:
        self.seed_now(name, period, used)

    def seed_now(self, name: str, period: Period, used: int) -> None:
        entry = self._counts.get(name)
        if entry is None or entry[0] != period.start:
            self._counts[name] = (period.start, used)
