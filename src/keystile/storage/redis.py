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
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from keystile.periodic import BackgroundTask
from keystile.ratelimit.models import Count, RateLimiterUnavailable
from keystile.storage.memory import MemoryWindows

log = logging.getLogger("keystile.ratelimit")

FailureMode = Literal["open", "closed"]
CIRCUIT_SECONDS = 1.0

# KEYS[i]: a counter's name without its window; ARGV[2i-1]: its window in ms,
# ARGV[2i]: the cost (0 reads without counting). Returns count, reset-in-ms pairs.
_HIT_SCRIPT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local out = {}
for i, name in ipairs(KEYS) do
  local window = tonumber(ARGV[2 * i - 1])
  local cost = tonumber(ARGV[2 * i])
  local index = math.floor(now_ms / window)
  local key = name .. ':' .. index
  local count
  if cost == 0 then
    count = tonumber(redis.call('GET', key) or '0')
  else
    count = redis.call('INCRBY', key, cost)
    if count == cost then
      redis.call('PEXPIRE', key, window + 1000)
    end
  end
  out[#out + 1] = count
  out[#out + 1] = (index + 1) * window
end
return out
"""

_Pending = tuple[str, int, int, "asyncio.Future[Count]"]


def connect(url: str, timeout_ms: int, *, subscriber: bool = False) -> aioredis.Redis:
    """A client (a connection pool) whose every call gives up after the timeout.

    A subscriber waits for messages indefinitely, so it has no read timeout;
    a health check every 2 s notices a connection that died silently.
    """
    timeout = timeout_ms / 1000
    if subscriber:
        return aioredis.Redis.from_url(url, socket_connect_timeout=timeout, health_check_interval=2)
    return aioredis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
    )


class RedisWindows:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "keystile",
        timeout_ms: int = 250,
        failure_mode: FailureMode = "open",
        fallback: MemoryWindows | None = None,
    ) -> None:
        self.client = client
        timeout = timeout_ms / 1000
        self._prefix = f"{prefix}:rl:"
        self._timeout = timeout
        self._failure_mode = failure_mode
        self._fallback = fallback or MemoryWindows()
        self._script = self.client.register_script(_HIT_SCRIPT)
        self._pending: list[_Pending] = []
        self._circuit_open_until = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    async def hit(self, key: str, window_seconds: int, cost: int = 1) -> Count:
        if time.monotonic() < self._circuit_open_until:
            return self._degraded(key, window_seconds, cost)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Count] = loop.create_future()
        self._pending.append((self._prefix + key, window_seconds * 1000, cost, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)  # after every request already runnable this turn
        try:
            return await future
        except RateLimiterUnavailable:
            return self._degraded(key, window_seconds, cost)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                result: list[Any] = await self._script(
                    keys=[name for name, _, _, _ in batch],
                    args=[value for _, window, cost, _ in batch for value in (window, cost)],
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self._trip(exc)
            for _, _, _, future in batch:
                if not future.done():
                    future.set_exception(RateLimiterUnavailable(str(exc)))
            return
        for index, (_, _, _, future) in enumerate(batch):
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

    def _degraded(self, key: str, window_seconds: int, cost: int) -> Count:
        if self._failure_mode == "closed":
            raise RateLimiterUnavailable("Redis is unavailable")
        return self._fallback.hit_now(key, window_seconds, cost)

    async def ping(self) -> None:
        async with asyncio.timeout(self._timeout):
            await self.client.ping()

    async def close(self) -> None:
        for task in list(self._tasks):
            await task


# Release a lock only if we still hold it (our token), atomically.
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisInFlight:
    """Idempotency locks shared by every instance (``SET NX PX``).

    Only decides who answers ``409 idempotency_key_in_use`` while the first
    request runs; exactly-once rests on the database (see ``idempotency``).
    So when Redis fails, this falls back to process-local locks instead of
    failing requests.
    """

    def __init__(
        self, client: aioredis.Redis, *, prefix: str, timeout_ms: int, ttl_seconds: float = 60.0
    ) -> None:
        from keystile.idempotency.locks import LocalInFlight

        self._client = client
        self._prefix = f"{prefix}:idem:"
        self._timeout = timeout_ms / 1000
        self._ttl_ms = int(ttl_seconds * 1000)
        self._tokens: dict[str, str] = {}
        self._local = LocalInFlight()
        self._release = client.register_script(_RELEASE_SCRIPT)

    async def acquire(self, name: str) -> bool:
        if not await self._local.acquire(name):
            return False
        token = uuid.uuid4().hex
        try:
            async with asyncio.timeout(self._timeout):
                taken = await self._client.set(self._prefix + name, token, nx=True, px=self._ttl_ms)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("Redis unavailable for idempotency locks, using local ones: %s", exc)
            return True
        if not taken:
            await self._local.release(name)
            return False
        self._tokens[name] = token
        return True

    async def release(self, name: str) -> None:
        await self._local.release(name)
        token = self._tokens.pop(name, None)
        if token is None:
            return
        try:
            async with asyncio.timeout(self._timeout):
                await self._release(keys=[self._prefix + name], args=[token])
        except (RedisError, OSError, TimeoutError):
            pass  # the lock expires on its own after its TTL


class RedisRevocations(BackgroundTask):
    """Revocations fanned out to every instance through Redis pub/sub.

    Each instance caches verified keys; a revocation is published, and every
    subscriber evicts the key at once (well under a second). While the
    subscription is down, a message could be missed, so the cache is not
    used at all (``live`` is False) until it is back, and it is cleared on
    every (re)subscription.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        timeout_ms: int,
        on_revoked: Callable[[str], Awaitable[None]],
        on_resubscribed: Callable[[], None],
    ) -> None:
        self._client = client
        self._channel = f"{prefix}:revocations"
        self._timeout = timeout_ms / 1000
        self._on_revoked = on_revoked
        self._on_resubscribed = on_resubscribed
        self.live = False
        super().__init__("revocations")

    async def publish(self, key_id: str) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.publish(self._channel, key_id)
        except (RedisError, OSError, TimeoutError) as exc:
            # Other instances' subscriptions are then broken too (their
            # cache is off) or their cache entries expire within the TTL.
            log.error("could not publish the revocation of %s: %s", key_id, exc)

    async def _run(self) -> None:
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self._on_resubscribed()  # anything may have been missed before
                        self.live = True
                    elif message["type"] == "message":
                        await self._on_revoked(message["data"].decode())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.live:
                    log.warning("revocation feed lost (%s); verifying without cache", exc)
                self.live = False
                await asyncio.sleep(0.2)
            finally:
                self.live = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
