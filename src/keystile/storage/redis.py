"""Fixed-window counters in Redis: one truth for every instance and worker.

Each request's increment is atomic (INCR in a Lua script), and the window is
computed from Redis's own clock (TIME), so instances with skewed clocks still
count into the same window: admissions per window never exceed the limit.

One Redis round trip costs far more client CPU than the work it does, so the
increments of all requests waiting in the same event-loop turn are sent
together, as one script call (coalescing): exactness is unchanged, since the
script increments each counter atomically.

When Redis fails or is slower than the timeout, the policy decides:
``open`` keeps serving with this process's own counters (each process then
enforces the limit alone), ``closed`` refuses with 503. A failed call opens a
circuit for a second, so a dead Redis does not cost a timeout per request;
then the next request tries Redis again and, if it answers, all is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from keystile.ratelimit.models import Count, RateLimiterUnavailable
from keystile.storage.memory import MemoryWindows

log = logging.getLogger("keystile.ratelimit")

FailureMode = Literal["open", "closed"]
CIRCUIT_SECONDS = 1.0

# KEYS[i]: a counter's name without its window; ARGV[i]: its window in ms.
# Returns count, reset-in-ms pairs.
_HIT_SCRIPT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local out = {}
for i, name in ipairs(KEYS) do
  local window = tonumber(ARGV[i])
  local index = math.floor(now_ms / window)
  local key = name .. ':' .. index
  local count = redis.call('INCR', key)
  if count == 1 then
    redis.call('PEXPIRE', key, window + 1000)
  end
  out[#out + 1] = count
  out[#out + 1] = (index + 1) * window
end
return out
"""

_Pending = tuple[str, int, "asyncio.Future[Count]"]


class RedisWindows:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "keystile",
        timeout_ms: int = 250,
        failure_mode: FailureMode = "open",
        fallback: MemoryWindows | None = None,
    ) -> None:
        timeout = timeout_ms / 1000
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
        )
        self._prefix = f"{prefix}:rl:"
        self._timeout = timeout
        self._failure_mode = failure_mode
        self._fallback = fallback or MemoryWindows()
        self._script = self.client.register_script(_HIT_SCRIPT)
        self._pending: list[_Pending] = []
        self._circuit_open_until = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    async def hit(self, key: str, window_seconds: int) -> Count:
        if time.monotonic() < self._circuit_open_until:
            return self._degraded(key, window_seconds)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Count] = loop.create_future()
        self._pending.append((self._prefix + key, window_seconds * 1000, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)  # after every request already runnable this turn
        try:
            return await future
        except RateLimiterUnavailable:
            return self._degraded(key, window_seconds)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                result: list[Any] = await self._script(
                    keys=[name for name, _, _ in batch], args=[window for _, window, _ in batch]
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self._trip(exc)
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(RateLimiterUnavailable(str(exc)))
            return
        for index, (_, _, future) in enumerate(batch):
            if not future.done():
                count, reset_ms = int(result[2 * index]), int(result[2 * index + 1])
                future.set_result(Count(count=count, reset=reset_ms / 1000))

    def _trip(self, exc: BaseException) -> None:
        if time.monotonic() >= self._circuit_open_until:
            log.warning(
                "Redis is unavailable for rate limiting (%s); failing %s for %.0f s",
                type(exc).__name__,
                self._failure_mode,
                CIRCUIT_SECONDS,
            )
        self._circuit_open_until = time.monotonic() + CIRCUIT_SECONDS

    def _degraded(self, key: str, window_seconds: int) -> Count:
        if self._failure_mode == "closed":
            raise RateLimiterUnavailable("Redis is unavailable")
        return self._fallback.hit_now(key, window_seconds)

    async def ping(self) -> None:
        async with asyncio.timeout(self._timeout):
            await self.client.ping()

    async def close(self) -> None:
        for task in list(self._tasks):
            await task
        await self.client.aclose()
