"""Verifying the keys your app's callers present, through keystile's
``POST /v1/keys/verify`` (contract §7), for the ASGI, FastAPI and Django
integrations.

- The service key must hold ``verify:keys`` and belong to the same account as
  the keys it checks (keystile answers ``INVALID`` for any other account's
  key); an operator key with ``account=`` (sent as ``Keystile-Account``)
  works too.
- Answers are cached (:mod:`keystile_client.cache`, default 5 s, bounded).
- Single flight: concurrent requests presenting the same uncached key share
  one verify call.
- Fail closed: when keystile cannot be reached, times out, or answers with
  an error (a bad service key included), the request is refused with ``503``;
  such failures are never cached.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from keystile_client.async_client import AsyncClient
from keystile_client.cache import DEFAULT_SIZE, DEFAULT_TTL, VerificationCache, cache_key
from keystile_client.client import Client
from keystile_client.decision import MISSING_KEY, Decision, current, decide
from keystile_client.errors import KeystileError
from keystile_client.models import Verification

Cached = tuple[Verification, Decision]  # a verification and what it decided

log = logging.getLogger("keystile_client")

# Verification sits on every request's path: a short timeout and one retry
# (on a connection error, 429 or 503) within a second keep a stalled keystile
# from holding requests for long before they fail closed.
DEFAULT_TIMEOUT = 2.0
DEFAULT_DEADLINE = 3.0


def _failed(exc: KeystileError) -> None:
    log.warning("keystile verification failed, refusing the request (503): %s", exc)


class AsyncVerifier:
    """Key verification for asyncio apps; one per app (its cache is the app's).

    Give ``service_key`` and ``base_url``, or a ready ``client`` (tests,
    custom transports). ``cache_size`` entries of at most ``cache_ttl``
    seconds; ``consume``: each verify call uses one unit of the key's rate
    limit and quota (cache hits use none)."""

    def __init__(
        self,
        service_key: str | None = None,
        *,
        base_url: str = "http://127.0.0.1:8080",
        account: str | None = None,
        cache_size: int = DEFAULT_SIZE,
        cache_ttl: float = DEFAULT_TTL,
        timeout: float = DEFAULT_TIMEOUT,
        consume: bool = True,
        client: AsyncClient | None = None,
    ) -> None:
        self.client = client or AsyncClient(
            service_key, base_url=base_url, account=account, timeout=timeout,
            max_retries=1, deadline=DEFAULT_DEADLINE,
        )  # fmt: skip
        self.cache: VerificationCache[Cached] = VerificationCache(cache_size, cache_ttl)
        self._consume = consume
        self._flights: dict[bytes, asyncio.Future[Verification | None]] = {}

    async def check(self, token: str | None, permission: str | None = None) -> Decision:
        """The decision for a request presenting ``token`` (``None``: no key)."""
        if token is None:
            return MISSING_KEY
        key = cache_key(token, permission)
        cached = self.cache.get(key)
        if cached is not None:
            return current(*cached)
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.get_running_loop().create_future()
            self._flights[key] = flight
            try:
                flight.set_result(await self._verify(key, token, permission))
            finally:
                del self._flights[key]
                if not flight.done():  # cancelled: the others verify again
                    flight.cancel()
        try:
            result = await asyncio.shield(flight)
        except asyncio.CancelledError:
            if flight.cancelled():
                return await self.check(token, permission)
            raise
        return decide(result)

    async def _verify(self, key: bytes, token: str, permission: str | None) -> Verification | None:
        try:
            result = await self.client.api_keys.verify(
                token, permission, consume=self._consume, idempotent=False
            )
        except KeystileError as exc:
            _failed(exc)
            return None
        self.cache.put(key, (result, decide(result)))
        return result

    async def aclose(self) -> None:
        await self.client.aclose()


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Verification | None = None


class SyncVerifier:
    """Key verification for threaded apps (Django, WSGI): the same contract
    as :class:`AsyncVerifier`, with a lock around the cache and an event per
    flight."""

    def __init__(
        self,
        service_key: str | None = None,
        *,
        base_url: str = "http://127.0.0.1:8080",
        account: str | None = None,
        cache_size: int = DEFAULT_SIZE,
        cache_ttl: float = DEFAULT_TTL,
        timeout: float = DEFAULT_TIMEOUT,
        consume: bool = True,
        client: Client | None = None,
    ) -> None:
        self.client = client or Client(
            service_key, base_url=base_url, account=account, timeout=timeout,
            max_retries=1, deadline=DEFAULT_DEADLINE,
        )  # fmt: skip
        self.cache: VerificationCache[Cached] = VerificationCache(cache_size, cache_ttl)
        self._consume = consume
        self._lock = threading.Lock()
        self._flights: dict[bytes, _Flight] = {}

    def check(self, token: str | None, permission: str | None = None) -> Decision:
        """The decision for a request presenting ``token`` (``None``: no key)."""
        if token is None:
            return MISSING_KEY
        key = cache_key(token, permission)
        with self._lock:
            cached = self.cache.get(key)
            if cached is not None:
                return current(*cached)
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.done.wait()
            return decide(flight.result)
        try:
            flight.result = self._verify(token, permission)
        finally:
            with self._lock:
                if flight.result is not None:
                    self.cache.put(key, (flight.result, decide(flight.result)))
                del self._flights[key]
            flight.done.set()
        return decide(flight.result)

    def _verify(self, token: str, permission: str | None) -> Verification | None:
        try:
            return self.client.api_keys.verify(
                token, permission, consume=self._consume, idempotent=False
            )
        except KeystileError as exc:
            _failed(exc)
            return None

    def close(self) -> None:
        self.client.close()
