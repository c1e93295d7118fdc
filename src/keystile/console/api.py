"""The console acts through keystile's own API, in process.

Every action a signed-in browser takes is one request to the same pipeline
the API's clients use, with the session's key as the bearer token (and, for
an operator key, ``Keystile-Account``): the same authentication, failed-sign-in
limit, rate limit, scope checks, validation, messages, audit events and
idempotency. The console adds no rule of its own, so it cannot drift from
the API. The browser's address and the console request's id are passed on,
so the audit log names the browser and the console page's request id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.types import ASGIApp

from keystile.idempotency.service import HEADER as IDEMPOTENCY_HEADER


@dataclass(frozen=True, slots=True)
class ApiResult:
    status: int
    body: dict[str, Any]
    replayed: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def data(self) -> Any:
        return self.body.get("data")

    @property
    def error(self) -> dict[str, Any]:
        error = self.body.get("error")
        return error if isinstance(error, dict) else {}

    @property
    def message(self) -> str:
        return str(self.error.get("message", "The request failed."))

    @property
    def field_errors(self) -> dict[str, str]:
        """``details`` of a 400 (or the field a 409 names) by field name."""
        found: dict[str, str] = {}
        for detail in self.error.get("details") or []:
            found.setdefault(str(detail.get("field")), str(detail.get("message")))
        if self.error.get("code") == "duplicate_name":
            found.setdefault("name", self.message)
        return found


@dataclass(frozen=True, slots=True)
class Caller:
    """Who the console acts as, for one browser request."""

    credential: str
    account_id: str | None  # sent as Keystile-Account with an operator key
    client: str | None
    request_id: str


class ApiClient:
    def __init__(self) -> None:
        self.app: ASGIApp | None = None  # the pipeline, attached once it is built

    async def call(
        self,
        caller: Caller,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        idempotency_key: str | None = None,
    ) -> ApiResult:
        assert self.app is not None, "the console's API client was not attached"
        headers = {
            "Authorization": f"Bearer {caller.credential}",
            "X-Request-ID": caller.request_id,
        }
        if caller.account_id is not None:
            headers["Keystile-Account"] = caller.account_id
        if idempotency_key is not None:
            headers[IDEMPOTENCY_HEADER] = f"console-{idempotency_key}"
        transport = httpx.ASGITransport(app=self.app, client=(caller.client or "unknown", 0))
        async with httpx.AsyncClient(transport=transport, base_url="http://keystile") as client:
            response = await client.request(method, path, params=params, json=json, headers=headers)
        try:
            body = response.json()
        except ValueError:
            body = {}
        return ApiResult(
            status=response.status_code,
            body=body if isinstance(body, dict) else {},
            replayed=response.headers.get("idempotent-replayed") == "true",
            headers=dict(response.headers),
        )
