"""``KeystileMiddleware``: pure ASGI protection for any ASGI app (Starlette,
FastAPI, Litestar, ...), with no dependency beyond httpx.

Every HTTP request must carry ``Authorization: Bearer <key>``, verified by
an :class:`~keystile_client.verifier.AsyncVerifier` (cache, single flight,
fail closed). A refusal is answered here with keystile's §3 body; an allowed
request reaches the app with the verification in
``scope["state"]["keystile"]`` (``request.state.keystile`` in Starlette) and
its response gains the key's ``X-RateLimit-*`` / ``X-Quota-*`` headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from keystile_client.decision import Decision, bearer
from keystile_client.verifier import AsyncVerifier

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def send_refusal(send: Send, decision: Decision, request_id: str | None) -> None:
    """The §3 error response of a refused request."""
    body = decision.body(request_id)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *decision.encoded,
    ]
    await send({"type": "http.response.start", "status": decision.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class KeystileMiddleware:
    """Protects ``app``: each request needs a key holding ``permission``
    (``None``: any valid key). Paths in ``exempt`` (exact match, e.g.
    ``/healthz``) and non-HTTP scopes pass unchecked (WebSockets are not
    covered in this version)."""

    def __init__(
        self,
        app: ASGIApp,
        verifier: AsyncVerifier,
        permission: str | None = None,
        exempt: Collection[str] = (),
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.permission = permission
        self.exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        token = bearer(_header(scope, b"authorization"))
        decision = await self.verifier.check(token, self.permission)
        if not decision.allowed:
            await send_refusal(send, decision, _header(scope, b"x-request-id"))
            return
        scope.setdefault("state", {})["keystile"] = decision.identity
        extra = decision.encoded

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_limits)
