"""Quota counters in Redis (contract §11): exact across every instance.

One counter per key lineage and period (``{prefix}:quota:{counter}:{start}``),
expiring a day after its period ends. A consume that would pass the limit
adds nothing, so a counter never passes it. A missing counter is unseeded
(a new period, or a Redis that restarted): the limiter seeds it from the
recorded usage with ``SET NX``, so concurrent seeds keep the first.

The calls of one event-loop turn go out as one script call, with the rules
of :mod:`keystile.storage.redis_batch` for a slow or unreachable Redis; when
Redis is unreachable, ``open`` counts in this process (seeded from the
database like a new period), ``closed`` refuses with 503.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from keystile.ratelimit.models import RateLimiterUnavailable
from keystile.ratelimit.quota import DAY_SECONDS, Period, QuotaCount
from keystile.storage.memory import MemoryQuotas
from keystile.storage.redis_batch import FAILURES, REFUSALS, ScriptBatcher, Unreachable

# Entry i: KEYS[i] a counter (name:start), ARGV[2i-1] its limit, ARGV[2i] the
# cost (0 reads). Returns (used, admitted) pairs; used = -1: not seeded.
_CONSUME_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i - 1])
  local cost = tonumber(ARGV[2 * i])
  local current = redis.call('GET', key)
  if not current then
    out[#out + 1] = -1
    out[#out + 1] = 0
  else
    local used = tonumber(current)
    if cost > 0 and used + cost > limit then
      out[#out + 1] = used
      out[#out + 1] = 0
    else
      if cost > 0 then
        used = redis.call('INCRBY', key, cost)
      end
      out[#out + 1] = used
      out[#out + 1] = 1
    end
  end
end
return out
"""


class RedisQuotas:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "keystile",
        timeout_ms: int = 250,
        reply_timeout_ms: int = 5000,
        failure_mode: str = "open",
        fallback: MemoryQuotas | None = None,
    ) -> None:
        self.client = client
        self._prefix = f"{prefix}:quota:"
        self._failure_mode = failure_mode
        self._fallback = fallback or MemoryQuotas()
        self._reply_timeout = reply_timeout_ms / 1000
        self._batch = ScriptBatcher(
            client,
            _CONSUME_SCRIPT,
            what="quotas",
            results_per_entry=2,
            timeout_ms=timeout_ms,
            reply_timeout_ms=reply_timeout_ms,
            failure_mode=failure_mode,
        )
        self._degraded_now = False

    def _key(self, name: str, period: Period) -> str:
        return f"{self._prefix}{name}:{period.start}"

    async def consume(self, name: str, period: Period, limit: int, cost: int) -> QuotaCount | None:
        if self._batch.circuit_open:
            return self._degraded(name, period, limit, cost)
        try:
            used, admitted = await self._batch.call([self._key(name, period)], [limit, cost])
        except Unreachable:
            return self._degraded(name, period, limit, cost)
        self._degraded_now = False
        if int(used) < 0:
            return None
        return QuotaCount(int(used), admitted=bool(admitted))

    async def seed(self, name: str, period: Period, used: int) -> None:
        if self._degraded_now:
            self._fallback.seed_now(name, period, used)
            return
        expires_ms = (period.end + DAY_SECONDS) * 1000
        try:
            async with asyncio.timeout(self._reply_timeout):
                await self.client.set(self._key(name, period), used, nx=True, pxat=expires_ms)
        except REFUSALS + FAILURES as exc:
            # The next consume decides (it applies the failure policy).
            raise RateLimiterUnavailable(f"Redis did not take the quota seed: {exc}") from exc

    def _degraded(self, name: str, period: Period, limit: int, cost: int) -> QuotaCount | None:
        if self._failure_mode == "closed":
            raise RateLimiterUnavailable("Redis is unavailable")
        self._degraded_now = True
        return self._fallback.consume_now(name, period, limit, cost)

    async def close(self) -> None:
        await self._batch.close()
