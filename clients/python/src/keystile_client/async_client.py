"""The asynchronous client: :class:`~keystile_client.Client`'s twin over ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Self, TypeVar

import httpx

from keystile_client import endpoints as ep
from keystile_client.async_resources import (
    Accounts,
    ApiKeys,
    AuditEvents,
    Usage,
    WebhookEndpoints,
)
from keystile_client.connection import (
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT,
    Settings,
    outcome,
    request_headers,
    unreachable,
)
from keystile_client.errors import KeystileError

T = TypeVar("T")


class AsyncClient:
    """keystile's API for asyncio, in the manner of ``httpx.AsyncClient``::

        async with AsyncClient("wbk_live_…", base_url="https://keys.example.com") as keystile:
            async for key in keystile.api_keys.list_all(status="active"):
                print(key.id, key.name)

    ``key`` is an account key, or an operator key with ``account`` (sent as
    ``Keystile-Account``) for account endpoints. ``timeout`` (seconds) bounds
    each attempt; ``max_retries`` and ``deadline`` (seconds, all attempts and
    waits together) bound the retries of :mod:`keystile_client.retry`.
    ``transport`` replaces httpx's (tests, proxies). Raises the
    :mod:`keystile_client.errors` class of each §3 error code.
    """

    def __init__(
        self,
        key: str | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        account: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = 2,
        deadline: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = Settings(key, base_url, account, timeout, max_retries, deadline)
        self._http = httpx.AsyncClient(
            base_url=self._settings.base_url,
            headers=self._settings.headers(),
            timeout=timeout,
            transport=transport,
        )
        self.api_keys = ApiKeys(self._run)
        self.accounts = Accounts(self._run)
        self.audit_events = AuditEvents(self._run)
        self.usage = Usage(self._run)
        self.webhook_endpoints = WebhookEndpoints(self._run)

    async def health(self) -> str:
        """``GET /healthz``: ``"ok"`` while keystile runs."""
        return await self._run(ep.health("/healthz"))

    async def ready(self) -> str:
        """``GET /readyz``: ``"ready"``, or :class:`~keystile_client.errors.ServiceUnavailable`."""
        return await self._run(ep.health("/readyz"))

    async def _run(self, call: ep.Call[T]) -> T:
        headers = request_headers(call)
        policy = self._settings.retry
        started = time.monotonic()
        retries = 0
        while True:
            elapsed = time.monotonic() - started
            timeout = min(self._settings.timeout, policy.remaining(elapsed))
            result: T | KeystileError
            try:
                response = await self._http.request(
                    call.method, call.path, params=call.params, json=call.body,
                    headers=headers, timeout=timeout,
                )  # fmt: skip
            except httpx.TransportError as exc:
                result = unreachable(exc)
            else:
                result = outcome(call, response)
            if not isinstance(result, KeystileError):
                return result
            pause = policy.wait(result, retries, time.monotonic() - started)
            if pause is None:
                raise result
            await asyncio.sleep(pause)
            retries += 1

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient(base_url={self._settings.base_url!r})"
