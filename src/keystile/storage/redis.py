"""Fixed-window counters in Redis: one truth for every instance and worker.

Each request's increment is atomic (INCR in a Lua script), and the window is
computed from Redis's own clock (TIME), so instances with skewed clocks still
count into the same window: admissions per window never exceed the limit.

One Redis round trip costs far more client CPU than the work it does, so the
increments of all requests waiting in the same event-loop turn are sent
together, as one script call (coalescing): exactness is unchanged, since the
script increments each counter atomically.

A slow Redis is not a failed one. A call whose reply has not been read may
already have been counted in Redis, and a busy event loop (or machine) makes
a live Redis look slow; counting such a request again in this process could
admit more than the limit. So:

- a reply read within the reply deadline (``reply_timeout_ms``) counts,
  however slow it was;
- no reply by then, or a connection lost mid-call: the requests of that call
  are refused (503, never admitted), and a reachability probe, not the
  timeout, decides whether Redis is unreachable (see :class:`Reachability`);
- Redis unreachable, or answering with an error instead of counting (LOADING
  after a restart, READONLY after a failover, OOM, BUSY): the failure policy
  applies. ``open`` keeps serving with this process's own counters (each
  process then enforces the limit alone), ``closed`` refuses with 503. A
  circuit opens for a second, so a dead Redis does not cost a failed call per
  request; then the next request tries Redis again and, if it answers, all is
  back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    RedisError,
    ResponseError,
)

from keystile.periodic import BackgroundTask
from keystile.ratelimit.models import Count, Guard, RateLimiterUnavailable
from keystile.storage.memory import MemoryWindows

log = logging.getLogger("keystile.ratelimit")

FailureMode = Literal["open", "closed"]
CIRCUIT_SECONDS = 1.0
# Errors that are Redis's own answer (it is up, but will not count): the
# request was not counted there, and waiting longer would not help.
_REFUSALS = (ResponseError, BusyLoadingError, AuthenticationError, AuthorizationError)
_FAILURES = (RedisError, OSError, TimeoutError)

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


class Reachability:
    """Whether Redis can be reached at all: a fresh connection to its address
    (TCP, or its Unix socket) within ``timeout_ms``, made in a thread.

    A live Redis accepts connections even while it is busy (the kernel
    completes the handshake), so a slow Redis is reachable; a stopped one
    refuses, a lost host does not answer. The connection is made in a thread
    so that a busy event loop cannot make a live Redis look unreachable: the
    timeout is measured by the kernel, not by this loop. Probes that overlap
    share one attempt.
    """

    def __init__(self, client: aioredis.Redis, timeout_ms: int) -> None:
        kwargs = client.connection_pool.connection_kwargs
        self._path: str | None = kwargs.get("path")
        self._address = (str(kwargs.get("host", "localhost")), int(kwargs.get("port", 6379)))
        self._timeout = timeout_ms / 1000
        self._running: asyncio.Future[bool] | None = None

    async def reachable(self) -> bool:
        if self._running is None:
            running = asyncio.ensure_future(asyncio.to_thread(self._connect))
            self._running = running
            running.add_done_callback(lambda _: setattr(self, "_running", None))
        return await asyncio.shield(self._running)

    def _connect(self) -> bool:
        try:
            if self._path is not None:
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.settimeout(self._timeout)
                    sock.connect(self._path)
            else:
                with socket.create_connection(self._address, timeout=self._timeout):
                    pass
        except OSError:
            return False
        return True


class _Unreachable(Exception):
    """Redis cannot count this request: the failure policy decides."""


@dataclass(slots=True)
class _Pending:
    name: str
    window_ms: int
    cost: int
    guard: str  # '' for none
    guard_window_ms: int
    guard_limit: int
    future: asyncio.Future[Count]


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
        self._reply_timeout = reply_timeout_ms / 1000
        self._reachability = Reachability(client, timeout_ms)
        self._failure_mode = failure_mode
        self._fallback = fallback or MemoryWindows()
        self._script = self.client.register_script(_HIT_SCRIPT)
        self._pending: list[_Pending] = []
        self._circuit_open_until = 0.0
        self._slow_logged_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    async def hit(
        self, key: str, window_seconds: int, cost: int = 1, guard: Guard | None = None
    ) -> Count:
        if time.monotonic() < self._circuit_open_until:
            return self._degraded(key, window_seconds, cost, guard)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Count] = loop.create_future()
        pending = _Pending(self._prefix + key, window_seconds * 1000, cost, "", 0, 0, future)
        if guard is not None:
            pending.guard = self._prefix + guard.key
            pending.guard_window_ms = guard.limit.window_seconds * 1000
            pending.guard_limit = guard.limit.amount
        self._pending.append(pending)
        if len(self._pending) == 1:
            loop.call_soon(self._flush)  # after every request already runnable this turn
        try:
            return await future
        except _Unreachable:
            return self._degraded(key, window_seconds, cost, guard)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            async with asyncio.timeout(self._reply_timeout):
                result: list[Any] = await self._script(
                    keys=[name for p in batch for name in (p.name, p.guard)],
                    args=[
                        value
                        for p in batch
                        for value in (p.window_ms, p.cost, p.guard_window_ms, p.guard_limit)
                    ],
                )
        except _REFUSALS as exc:
            self._trip(exc)
            self._fail(batch, _Unreachable(str(exc)))
            return
        except _FAILURES as exc:
            if not await self._reachability.reachable():
                self._trip(exc)
                self._fail(batch, _Unreachable(str(exc)))
                return
            # Live but slow, or the connection broke mid-call: these requests
            # may have been counted in Redis, so they are neither admitted nor
            # counted again here.
            self._log_slow(exc, len(batch))
            self._fail(batch, RateLimiterUnavailable("Redis did not answer in time"))
            return
        for index, pending in enumerate(batch):
            if not pending.future.done():
                count, reset_ms, guarded = result[3 * index : 3 * index + 3]
                pending.future.set_result(
                    Count(count=int(count), reset=int(reset_ms) / 1000, guarded=bool(guarded))
                )

    @staticmethod
    def _fail(batch: list[_Pending], exc: Exception) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(exc)

    def _trip(self, exc: BaseException) -> None:
        if time.monotonic() >= self._circuit_open_until:
            log.warning(
                "Redis is unavailable for rate limiting (%s); failing %s for %.0f s",
                type(exc).__name__,
                self._failure_mode,
                CIRCUIT_SECONDS,
            )
        self._circuit_open_until = time.monotonic() + CIRCUIT_SECONDS

    def _log_slow(self, exc: BaseException, requests: int) -> None:
        now = time.monotonic()
        if now - self._slow_logged_at >= CIRCUIT_SECONDS:
            self._slow_logged_at = now
            log.warning(
                "Redis is reachable but gave no rate-limit reply within %.0f ms (%s); "
                "%d requests refused with 503",
                self._reply_timeout * 1000,
                type(exc).__name__,
                requests,
            )

    def _degraded(self, key: str, window_seconds: int, cost: int, guard: Guard | None) -> Count:
        if self._failure_mode == "closed":
            raise RateLimiterUnavailable("Redis is unavailable")
        return self._fallback.hit_now(key, window_seconds, cost, guard)

    async def ping(self) -> None:
        async with asyncio.timeout(self._reply_timeout):
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
        except _FAILURES as exc:
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
        except _FAILURES:
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
        except _FAILURES as exc:
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
