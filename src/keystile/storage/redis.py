"""Fixed-window counters in Redis: one truth for every instance and worker.

Each request's increment is atomic (INCR in a Lua script), and the window is
computed from Redis's own clock (TIME), so instances with skewed clocks still
count into the same window: admissions per window never exceed the limit.
The calls of one event-loop turn are sent as one script call, with the rules
for a slow, refusing or unreachable Redis of :mod:`keystile.storage.redis_batch`;
when Redis is unreachable, ``open`` keeps serving with this process's own
counters (each process then enforces the limit alone), ``closed`` refuses
with 503.

Also here: idempotency locks and the revocation feed, shared through Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Literal

import redis.asyncio as aioredis

from keystile.periodic import BackgroundTask
from keystile.ratelimit.models import Count, Guard, RateLimiterUnavailable
from keystile.storage.memory import MemoryWindows
from keystile.storage.redis_batch import FAILURES, ScriptBatcher, Unreachable

log = logging.getLogger("keystile.ratelimit")

FailureMode = Literal["open", "closed"]

# For entry i: KEYS[2i-1] is a counter's name without its window, KEYS[2i] its
# guard's name ('' for none); ARGV[4i-3] the window in ms, ARGV[4i-2] the cost
# (0 reads without counting), ARGV[4i-1] the guard's window in ms, ARGV[4i]
# the guard's limit. Returns (count, reset in ms, guarded) triples; a guard
# whose count has reached its limit vetoes the hit and reports its own count.
_HIT_SCRIPT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local out = {}
for i = 1, #KEYS / 2 do
  local guard = KEYS[2 * i]
  local vetoed = false
  if guard ~= '' then
    local guard_window = tonumber(ARGV[4 * i - 1])
    local guard_index = math.floor(now_ms / guard_window)
    local failures = tonumber(redis.call('GET', guard .. ':' .. guard_index) or '0')
    if failures >= tonumber(ARGV[4 * i]) then
      vetoed = true
      out[#out + 1] = failures
      out[#out + 1] = (guard_index + 1) * guard_window
      out[#out + 1] = 1
    end
  end
  if not vetoed then
    local window = tonumber(ARGV[4 * i - 3])
    local cost = tonumber(ARGV[4 * i - 2])
    local index = math.floor(now_ms / window)
    local key = KEYS[2 * i - 1] .. ':' .. index
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
    out[#out + 1] = 0
  end
end
return out
"""


def connect(url: str, reply_timeout_ms: int, *, subscriber: bool = False) -> aioredis.Redis:
    """A client (a connection pool) whose calls, connecting included, wait up
    to the reply deadline: how slow Redis may be, not whether it is up.

    A subscriber waits for messages indefinitely, so it has no read timeout;
    a health check every 2 s notices a connection that died silently.
    """
    timeout = reply_timeout_ms / 1000
    if subscriber:
        return aioredis.Redis.from_url(url, socket_connect_timeout=timeout, health_check_interval=2)
    return aioredis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
    )


class RedisWindows:
    """:class:`~keystile.ratelimit.models.WindowCounter` on Redis.

    ``timeout_ms`` bounds the reachability probe (a fresh connection);
    ``reply_timeout_ms`` is how long a call may wait for Redis's reply.
    ``hit`` raises :class:`RateLimiterUnavailable` when a reachable Redis did
    not answer in time (both modes), or when Redis is unreachable and the mode
    is ``closed``.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "keystile",
        timeout_ms: int = 250,
        reply_timeout_ms: int = 5000,
        failure_mode: FailureMode = "open",
        fallback: MemoryWindows | None = None,
    ) -> None:
        self.client = client
        self._prefix = f"{prefix}:rl:"
        self._failure_mode = failure_mode
        self._fallback = fallback or MemoryWindows()
        self._batch = ScriptBatcher(
            client,
            _HIT_SCRIPT,
            what="rate limiting",
            results_per_entry=3,
            timeout_ms=timeout_ms,
            reply_timeout_ms=reply_timeout_ms,
            failure_mode=failure_mode,
        )
        self._reply_timeout = reply_timeout_ms / 1000

    async def hit(
        self, key: str, window_seconds: int, cost: int = 1, guard: Guard | None = None
    ) -> Count:
        if self._batch.circuit_open:
            return self._degraded(key, window_seconds, cost, guard)
        guard_args: tuple[str, int, int] = ("", 0, 0)
        if guard is not None:
            guard_args = (
                self._prefix + guard.key,
                guard.limit.window_seconds * 1000,
                guard.limit.amount,
            )
        try:
            count, reset_ms, guarded = await self._batch.call(
                [self._prefix + key, guard_args[0]],
                [window_seconds * 1000, cost, guard_args[1], guard_args[2]],
            )
        except Unreachable:
            return self._degraded(key, window_seconds, cost, guard)
        return Count(count=int(count), reset=int(reset_ms) / 1000, guarded=bool(guarded))

    def _degraded(self, key: str, window_seconds: int, cost: int, guard: Guard | None) -> Count:
        if self._failure_mode == "closed":
            raise RateLimiterUnavailable("Redis is unavailable")
        return self._fallback.hit_now(key, window_seconds, cost, guard)

    async def ping(self) -> None:
        async with asyncio.timeout(self._reply_timeout):
            await self.client.ping()

    async def close(self) -> None:
        await self._batch.close()


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
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        reply_timeout_ms: int,
        ttl_seconds: float = 60.0,
    ) -> None:
        from keystile.idempotency.locks import LocalInFlight

        self._client = client
        self._prefix = f"{prefix}:idem:"
        self._timeout = reply_timeout_ms / 1000
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
        except FAILURES as exc:
            # The SET may have been made all the same: keep the token, so that
            # release removes our lock rather than leave it for its TTL.
            self._tokens[name] = token
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
        except FAILURES:
            pass  # the lock expires on its own after its TTL


class RedisRevocations(BackgroundTask):
    """Revocations fanned out to every instance through Redis pub/sub.

    Each instance caches verified keys; a revocation is published, and every
    subscriber evicts the key at once (well under a second). While the
    subscription is down, a message could be missed, so the cache is not
    used at all (``live`` is False) until it is back, and it is cleared on
    every (re)subscription.

    A publish waits for Redis up to the reply deadline (a slow Redis is not a
    lost message), and one that fails is retried in the background until
    ``retry_seconds`` (the key cache's TTL) have passed: by then no instance
    can still hold the key in its cache. Evicting twice is harmless, so a
    publish whose reply was lost is simply sent again.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        reply_timeout_ms: int,
        retry_seconds: float,
        on_revoked: Callable[[str], Awaitable[None]],
        on_resubscribed: Callable[[], None],
    ) -> None:
        self._client = client
        self._channel = f"{prefix}:revocations"
        self._timeout = reply_timeout_ms / 1000
        self._retry_seconds = retry_seconds
        self._on_revoked = on_revoked
        self._on_resubscribed = on_resubscribed
        self._retries: set[asyncio.Task[None]] = set()
        self.live = False
        super().__init__("revocations")

    async def publish(self, key_id: str) -> None:
        """Tell every instance; returns once Redis took the message or the
        first attempt failed (then it is retried in the background)."""
        if await self._publish_once(key_id):
            return
        loop = asyncio.get_running_loop()
        retry = loop.create_task(self._keep_publishing(key_id, loop.time() + self._retry_seconds))
        self._retries.add(retry)
        retry.add_done_callback(self._retries.discard)

    async def _publish_once(self, key_id: str) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.publish(self._channel, key_id)
        except FAILURES as exc:
            log.warning("could not publish the revocation of %s yet: %r", key_id, exc)
            return False
        return True

    async def _keep_publishing(self, key_id: str, give_up_at: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < give_up_at:
            await asyncio.sleep(0.2)
            if await self._publish_once(key_id):
                return
        # Other instances' caches drop the key within their TTL all the same.
        log.error("gave up publishing the revocation of %s", key_id)

    async def stop(self) -> None:
        for retry in list(self._retries):
            retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retry
        await super().stop()

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
