"""The request pipeline: a pure ASGI app that every request passes through.

It does, in the contract's order (§3): routing (404, 405), authentication
(401), the rate limit (429), authorization (403); then hands the request to
its endpoint, which validates the body (400) and does the work. Around all of
it: the request id, keystile's security headers, the error envelope for any
failure (a 500 included), one access-log line and the metrics.

FastAPI serves the management API behind this pipeline, but the hot paths
(key verification, the gateway) are plain ASGI endpoints, so they do not pay
for FastAPI's dependency solving on every request.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keystile import errors
from keystile.api.clients import client_address
from keystile.api.context import SCOPE_KEY, RequestContext
from keystile.api.deps import Services
from keystile.api.errors import as_keystile_error, send_error
from keystile.api.idempotency import IdempotencyLayer
from keystile.api.observability import ACCESS_LOGGER, AccessLog, key_pattern
from keystile.gateway.proxy import Proxy
from keystile.gateway.routes import GatewayRoute, RouteTable
from keystile.keys.models import ApiKey
from keystile.keys.verifier import INVALID
from keystile.ratelimit.models import AddressBlocked

log = logging.getLogger("keystile.api")
access_log = logging.getLogger(ACCESS_LOGGER)

SECURITY_HEADERS = (
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
)
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
PERMISSION_EXTENSION = "x-keystile-permission"
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
TOO_MANY_FAILURES = "Too many failed authentications from this address."


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a request resolved to, and what the pipeline must check before it."""

    name: str  # a route template, used as the metrics label
    app: ASGIApp
    protected: bool = True  # needs a valid key
    permission: str | None = None  # the scope the key must hold
    own: bool = True  # keystile's own response (not a proxied one)


# Generated ids: a random per-process prefix and a counter. Unique across
# processes and instances (80 random bits), and far cheaper than a ULID or
# UUID per request.
_ID_PREFIX = f"req_{secrets.token_hex(10)}"
_id_counter = itertools.count(1)


def request_id_for(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when it is safe to echo, else a new one."""
    supplied = [value for name, value in scope["headers"] if name == b"x-request-id"]
    if len(supplied) == 1:
        candidate: str = supplied[0].decode("latin-1")
        if _CLIENT_REQUEST_ID.fullmatch(candidate):
            return candidate
    return f"{_ID_PREFIX}{next(_id_counter):x}"


def bearer_token(scope: Scope) -> str | None:
    """The token of the one ``Authorization: Bearer`` header, else ``None``.

    The scheme is case-insensitive (RFC 9110 §11.1); two Authorization
    headers are ambiguous and refused.
    """
    values = [value for name, value in scope["headers"] if name == b"authorization"]
    if len(values) != 1:
        return None
    scheme, _, token = values[0].decode("latin-1").partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip(" ")
    return token or None


class Router:
    """Resolves a request to an :class:`Endpoint` (or a 404 / 405)."""

    def __init__(
        self,
        management: FastAPI,
        hot: dict[tuple[str, str], Endpoint],
        gateway: RouteTable | None = None,
        proxy: Proxy | None = None,
    ) -> None:
        self._hot = hot
        self._gateway = gateway or RouteTable([])
        self._gateway_endpoints: dict[GatewayRoute, Endpoint] = {}
        if proxy is not None:
            for gateway_route in self._gateway.routes:
                self._gateway_endpoints[gateway_route] = Endpoint(
                    name=gateway_route.name,
                    app=proxy.endpoint(gateway_route),
                    permission=gateway_route.scope,
                    own=False,
                )
        self._hot_paths = {path: method for method, path in hot}
        self._routes: list[tuple[Route, Endpoint]] = []
        for route in management.router.routes:
            if not isinstance(route, Route):
                # Secure by default: a route we cannot see could not be guarded.
                raise TypeError(f"unsupported route {route!r}: add routes to the app directly")
            permission = None
            if isinstance(route, APIRoute) and route.openapi_extra:
                permission = route.openapi_extra.get(PERMISSION_EXTENSION)
            endpoint = Endpoint(
                name=route.path,
                app=management,
                protected=route.path not in PUBLIC_PATHS,
                permission=permission,
            )
            self._routes.append((route, endpoint))

    def resolve(self, scope: Scope) -> Endpoint:
        method: str = scope["method"]
        path: str = scope["path"]
        endpoint = self._hot.get((method, path))
        if endpoint is not None:
            return endpoint
        allowed: list[str] = []
        if path in self._hot_paths:
            allowed += [m for m, p in self._hot if p == path]
        for route, endpoint in self._routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                scope.update(child)
                return endpoint
            if match is Match.PARTIAL:
                allowed += sorted(route.methods or ())
        # keystile's own endpoints take precedence over gateway routes.
        if not allowed and self._gateway:
            matched = self._gateway.match(method, path)
            if isinstance(matched, GatewayRoute):
                return self._gateway_endpoints[matched]
            allowed = matched or []
        if allowed:
            raise errors.MethodNotAllowed(sorted(set(allowed)))
        raise errors.NotFound(f"No such endpoint: {method} {path}")


class Pipeline:
    def __init__(
        self,
        *,
        services: Services,
        router: Router,
        idempotency: IdempotencyLayer,
        lifespan: Callable[[], AbstractAsyncContextManager[None]],
    ) -> None:
        self.idempotency = idempotency
        self.services = services
        self.router = router
        self.lifespan = lifespan
        """Start-up and shutdown, as an async context manager (tests enter it directly)."""
        self.verifier = services.verifier
        self.metrics = services.metrics
        self.ratelimiter = services.ratelimiter
        self._proxies = services.settings.proxies
        self._body_timeout = services.settings.body_timeout_seconds
        self._access_log_enabled = services.settings.access_log
        self._access = AccessLog()
        self._key_in_path = key_pattern(services.settings.key_prefix)
        self._key_marker = f"{services.settings.key_prefix}_live_"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._run_lifespan(receive, send)
        else:  # websockets are not part of the contract
            await send({"type": "websocket.close", "code": 1003})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = RequestContext(
            request_id=request_id_for(scope),
            started=time.perf_counter(),
            body_timeout=self._body_timeout,
        )
        ctx.client = client_address(scope, self._proxies)
        scope[SCOPE_KEY] = ctx
        request_id_header = (b"x-request-id", ctx.request_id.encode())

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append(request_id_header)
                if ctx.own_response:
                    headers.extend(SECURITY_HEADERS)
                headers.extend(ctx.extra_headers)
                message = {**message, "headers": headers}
                ctx.status = message["status"]
                ctx.response_started = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                ctx.response_complete = True
            await send(message)

        try:
            await self._handle(scope, receive, send_with_headers, ctx)
        except Exception as exc:
            error = as_keystile_error(exc)
            if not isinstance(exc, errors.KeystileError):
                log.error(
                    "request failed: %s",
                    type(exc).__name__,
                    exc_info=not isinstance(error, errors.ServiceUnavailable),
                    extra={"request_id": ctx.request_id},
                )
            if ctx.response_complete:
                return  # an inner handler already answered (FastAPI sends its 500, then re-raises)
            if ctx.response_started:
                raise  # half a response is out: the server must close the connection
            ctx.own_response = True
            await send_error(send_with_headers, error, ctx.request_id)
        finally:
            self._observe(scope, ctx)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        endpoint = self.router.resolve(scope)
        ctx.route = endpoint.name
        ctx.own_response = endpoint.own
        if endpoint.protected:
            key = await self.authenticate(scope, ctx)
            decision = await self.ratelimiter.admit_from(ctx.client or "unknown", key)
            if isinstance(decision, AddressBlocked):  # blocked by another instance
                raise errors.RateLimited(decision.retry_after, TOO_MANY_FAILURES)
            if decision is not None:
                ctx.extra_headers.extend(decision.headers())
                if not decision.allowed:
                    raise errors.RateLimited(decision.retry_after)
            if endpoint.permission is not None and endpoint.permission not in key.permissions:
                raise errors.InsufficientPermissions(
                    f"This request needs the {endpoint.permission} permission."
                )
        if endpoint.own and endpoint.protected and scope["method"] == "POST":
            # Every POST to a keystile endpoint may carry an Idempotency-Key
            # (contract §6); gateway routes forward the header untouched.
            await self.idempotency(endpoint.app, scope, receive, send, ctx)
        else:
            await endpoint.app(scope, receive, send)

    async def authenticate(self, scope: Scope, ctx: RequestContext) -> ApiKey:
        """The calling key, or 401; 429 once the address has failed too often.

        An address over ``KEYSTILE_AUTH_FAILURE_LIMIT`` is refused before its
        key is looked up, whatever the key, until the window ends: first from
        this process's own list (no I/O), then, just before a storage lookup,
        from the shared counter (blocks made by other instances); a cached key
        is checked in the rate-limit call (``admit_from``).
        """
        address = ctx.client or "unknown"
        blocked = self.ratelimiter.blocked(address)
        if blocked is not None:
            raise errors.RateLimited(blocked.retry_after, TOO_MANY_FAILURES)

        async def refuse_if_blocked() -> None:  # blocks made by other instances
            blocked = await self.ratelimiter.check_address(address)
            if blocked is not None:
                raise errors.RateLimited(blocked.retry_after, TOO_MANY_FAILURES)

        token = bearer_token(scope)
        result = INVALID
        if token is not None:
            result = await self.verifier.verify(token, before_lookup=refuse_if_blocked)
        self.metrics.verified(result.outcome.value)
        if result.valid and result.key is not None:
            ctx.key = result.key
            return result.key
        # Failed authentications are limited per client address; they never
        # count against any key's quota.
        decision = await self.ratelimiter.failed_authentication(address)
        if not decision.allowed:
            raise errors.RateLimited(decision.retry_after, TOO_MANY_FAILURES)
        raise errors.InvalidKey()

    def _observe(self, scope: Scope, ctx: RequestContext) -> None:
        elapsed = time.perf_counter() - ctx.started
        status = ctx.status or 500
        self.metrics.observe(scope["method"], ctx.route, status, elapsed)
        if self._access_log_enabled and access_log.isEnabledFor(logging.INFO):
            path: str = scope["path"]
            if self._key_marker in path:
                path = self._key_in_path.sub("[redacted]", path)
            self._access.write(
                {
                    "request_id": ctx.request_id,
                    "method": scope["method"],
                    "path": path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "key_id": ctx.key.id if ctx.key else None,
                    "account_id": ctx.key.account_id if ctx.key else None,
                    "client": ctx.client,
                }
            )

    async def _run_lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        try:
            async with self.lifespan():
                await send({"type": "lifespan.startup.complete"})
                message = await receive()
                assert message["type"] == "lifespan.shutdown"
        except BaseException as exc:
            log.error("startup or shutdown failed: %s", exc)
            failure = "shutdown" if message["type"] == "lifespan.shutdown" else "startup"
            await send({"type": f"lifespan.{failure}.failed", "message": str(exc)})
            raise
        await send({"type": "lifespan.shutdown.complete"})
