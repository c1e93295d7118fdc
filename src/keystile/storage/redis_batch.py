"""Calling one Lua script for every request of an event-loop turn, with the
rules for a Redis that is slow, refusing or gone.

One Redis round trip costs far more client CPU than the work it does, so the
calls of all requests waiting in the same event-loop turn are sent together,
as one script call (coalescing); a script handles each entry atomically, so
exactness is unchanged.

A slow Redis is not a failed one. A call whose reply has not been read may
already have counted in Redis, and a busy event loop (or machine) makes a
live Redis look slow; counting such a request again elsewhere could admit
more than a limit. So:

- a reply read within the reply deadline (``reply_timeout_ms``) counts,
  however slow it was;
- no reply by then, or a connection lost mid-call: the requests of that call
  are refused (:class:`RateLimiterUnavailable` → 503, never admitted), and a
  reachability probe, not the timeout, decides whether Redis is unreachable
  (see :class:`Reachability`);
- Redis unreachable, or answering with an error instead of counting (LOADING
  after a restart, READONLY after a failover, OOM, BUSY): :class:`Unreachable`
  is raised and the caller's failure policy applies. A circuit opens for a
  second, so a dead Redis does not cost a failed call per request.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    RedisError,
    ResponseError,
)

from keystile.ratelimit.models import RateLimiterUnavailable

log = logging.getLogger("keystile.ratelimit")

CIRCUIT_SECONDS = 1.0
# Errors that are Redis's own answer (it is up, but will not count): the
# request was not counted there, and waiting longer would not help.
REFUSALS = (ResponseError, BusyLoadingError, AuthenticationError, AuthorizationError)
FAILURES = (RedisError, OSError, TimeoutError)


class Unreachable(Exception):
    """Redis cannot count this request: the failure policy decides."""


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


@dataclass(slots=True)
class _Entry:
    keys: list[str]
    args: list[Any]
    future: asyncio.Future[list[Any]]


class ScriptBatcher:
    """One Lua script, called for the entries of all requests waiting in one
    event-loop turn at once.

    The script receives the entries' ``KEYS`` and ``ARGV`` one after the other
    (``keys_per_entry`` and ``args_per_entry`` each) and returns
    ``results_per_entry`` values per entry, in order. :meth:`call` returns an
    entry's values, or raises :class:`Unreachable` (apply the failure policy)
    or :class:`RateLimiterUnavailable` (a live Redis did not answer in time:
    refuse the request).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        script: str,
        *,
        what: str,
        results_per_entry: int,
        timeout_ms: int,
        reply_timeout_ms: int,
        failure_mode: str,
    ) -> None:
        self.client = client
        self._script = client.register_script(script)
        self._what = what
        self._width = results_per_entry
        self._reply_timeout = reply_timeout_ms / 1000
        self._reachability = Reachability(client, timeout_ms)
        self._failure_mode = failure_mode
        self._pending: list[_Entry] = []
        self._circuit_open_until = 0.0
        self._slow_logged_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def circuit_open(self) -> bool:
        """True for a second after Redis was found unreachable: skip it."""
        return time.monotonic() < self._circuit_open_until

    async def call(self, keys: list[str], args: list[Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._pending.append(_Entry(keys, args, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)  # after every request already runnable this turn
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Entry]) -> None:
        try:
            async with asyncio.timeout(self._reply_timeout):
                result: list[Any] = await self._script(
                    keys=[key for entry in batch for key in entry.keys],
                    args=[arg for entry in batch for arg in entry.args],
                )
        except REFUSALS as exc:
            self._trip(exc)
            self._fail(batch, Unreachable(str(exc)))
            return
        except FAILURES as exc:
            if not await self._reachability.reachable():
                self._trip(exc)
                self._fail(batch, Unreachable(str(exc)))
                return
            # Live but slow, or the connection broke mid-call: these requests
            # may have been counted in Redis, so they are neither admitted nor
            # counted again here.
            self._log_slow(exc, len(batch))
            self._fail(batch, RateLimiterUnavailable("Redis did not answer in time"))
            return
        width = self._width
        for index, entry in enumerate(batch):
            if not entry.future.done():
                entry.future.set_result(result[width * index : width * index + width])

    @staticmethod
    def _fail(batch: list[_Entry], exc: Exception) -> None:
        for entry in batch:
            if not entry.future.done():
                entry.future.set_exception(exc)

    def _trip(self, exc: BaseException) -> None:
        if time.monotonic() >= self._circuit_open_until:
            log.warning(
                "Redis is unavailable for %s (%s); failing %s for %.0f s",
                self._what,
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
                "Redis is reachable but gave no %s reply within %.0f ms (%s); "
                "%d requests refused with 503",
                self._what,
                self._reply_timeout * 1000,
                type(exc).__name__,
                requests,
            )

    async def close(self) -> None:
        for task in list(self._tasks):
            await task
