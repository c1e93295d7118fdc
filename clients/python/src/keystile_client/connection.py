"""What :class:`~keystile_client.Client` and
:class:`~keystile_client.AsyncClient` share: their settings, the headers of
a request, and how an answer becomes a result or an exception."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import httpx

from keystile_client import __version__
from keystile_client.endpoints import Call
from keystile_client.errors import ConnectionFailed, KeystileError, error_from_response
from keystile_client.retry import RetryPolicy

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 10.0


class Settings:
    """A client's configuration (see :class:`~keystile_client.Client`)."""

    def __init__(
        self,
        key: str | None,
        base_url: str,
        account: str | None,
        timeout: float,
        max_retries: int,
        deadline: float,
    ) -> None:
        self.key = key
        self.base_url = base_url.rstrip("/")
        self.account = account
        self.timeout = timeout
        self.retry = RetryPolicy(max_retries=max_retries, deadline=deadline)

    def headers(self) -> dict[str, str]:
        """The headers of every request: the key, and ``Keystile-Account``
        when an operator key acts for an account (contract §9)."""
        headers = {"User-Agent": f"keystile-client/{__version__}"}
        if self.key is not None:
            headers["Authorization"] = f"Bearer {self.key}"
        if self.account is not None:
            headers["Keystile-Account"] = self.account
        return headers


def request_headers(call: Call[Any]) -> dict[str, str]:
    """The per-call headers: one ``Idempotency-Key`` for every attempt of a
    ``POST``/``PATCH`` (contract §6)."""
    if not call.idempotent:
        return {}
    return {"Idempotency-Key": call.idempotency_key or f"kc_{uuid.uuid4().hex}"}


def outcome(call: Call[T], response: httpx.Response) -> T | KeystileError:
    """The parsed result of a 2xx answer, or the error it stands for."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and body is not None:
        return call.parse(body)
    return error_from_response(
        response.status_code,
        body,
        response.headers.get("x-request-id"),
        response.headers.get("retry-after"),
    )


def unreachable(exc: httpx.TransportError) -> ConnectionFailed:
    """A request that got no answer."""
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    return ConnectionFailed(f"The request to keystile {kind}: {type(exc).__name__}: {exc}")
