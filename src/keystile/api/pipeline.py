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
from dataclasses import dataclass, replace

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keystile import errors
from keystile.accounts.service import existing_account
from keystile.api.deps import Services
from keystile.api.errors import as_keystile_error, send_error, status_of
from keystile.api.idempotency import IdempotencyLayer
from keystile.api.observability import ACCESS_LOGGER, AccessLog
from keystile.gateway import forward_auth
from keystile.gateway.proxy import Proxy
from keystile.gateway.routes import GatewayRoute, RouteTable
from keystile.http.clients import client_address
from keystile.http.context import SCOPE_KEY, RequestContext
from keystile.http.paths import canonical_path, raw_path_of
from keystile.keys.models import Caller, OperatorKey
from keystile.keys.verifier import INVALID
from keystile.ratelimit.models import AddressBlocked
from keystile.redaction import looks_secret, redact
from keystile.usage.models import Outcome

log = logging.getLogger("keystile.api")
access_log = logging.getLogger(ACCESS_LOGGER)

SECURITY_HEADERS = (
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
)
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
PERMISSION_EXTENSION = "x-keystile-permission"
AUDIENCE_EXTENSION = "x-keystile-audience"
ACCOUNT_HEADER = b"keystile-account"
# No bearer key: the leak-report endpoint is authenticated by its partner's
# signature instead (contract §14), in its handler.
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/v1/secret-scanning/reports"}
)
TOO_MANY_FAILURES = "Too many failed authentications from this address."
# The browser console (contract §16) authenticates by session cookie, in its
# own app (keystile.console), and acts through this pipeline's API endpoints
# with the session's key: no bearer key here, nothing else under this prefix.
CONSOLE_PREFIX = "/console"


def is_console_path(path: str) -> bool:
    return path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a request resolved to, and what the pipeline must check before it."""

    name: str  # a route template, used as the metrics label
    app: ASGIApp
    protected: bool = True  # needs a valid key
    permission: str | None = None  # the scope the key must hold
    own: bool = True  # keystile's own response (not a proxied one)
    as_get: bool = False  # a HEAD served by the GET handler (RFC 9110 §9.3.2)
    # Who may call it (contract §9): "account" endpoints act for one account
    # (an account key's own, or Keystile-Account with an operator key);
    # "operator" endpoints take operator keys only; "any" takes both, an
    # operator key with or without Keystile-Account; "gateway" routes take
    # account keys only.
    audience: str = "account"
    idempotent: bool = True  # a POST or PATCH may carry an Idempotency-Key (own endpoints)


async def _server_options(scope: Scope, receive: Receive, send: Send) -> None:
    """``OPTIONS *`` (asterisk-form, RFC 9110 §9.3.7): the server is here;
    what each resource allows is in its 405's ``Allow`` header."""
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
    )
    await send({"type": "http.response.body", "body": b""})


SERVER_OPTIONS = Endpoint(name="*", app=_server_options, protected=False)


# Generated ids: a random per-process prefix and a counter. Unique across
# processes and instances (80 random bits), and far cheaper than a ULID or
# UUID per request.
_ID_PREFIX = f"req_{secrets.token_hex(10)}"
_id_counter = itertools.count(1)


def new_request_id() -> str:
    """A fresh ``req_…`` id, unique across processes and instances."""
    return f"{_ID_PREFIX}{next(_id_counter):x}"


def request_id_for(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when it is safe to echo and to log (the
    right shape, nothing secret-shaped in it), else a new one."""
    supplied = [value for name, value in scope["headers"] if name == b"x-request-id"]
    if len(supplied) == 1:
        candidate: str = supplied[0].decode("latin-1")
        if _CLIENT_REQUEST_ID.fullmatch(candidate) and not looks_secret(candidate):
            return candidate
    return new_request_id()


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
        console: ASGIApp | None = None,
    ) -> None:
        self._hot = hot
        self._console = (
            None
            if console is None
            else Endpoint(name=CONSOLE_PREFIX, app=console, protected=False, idempotent=False)
        )
        routes = gateway or RouteTable([])
        self._gateway = routes.proxied()
        self._gateway_endpoints: dict[GatewayRoute, Endpoint] = {}
        # Forward auth (contract §15) answers for every route, with or without
        # an upstream, exactly as the gateway would check it.
        self._forward = routes
        self._forward_endpoints = {
            route: Endpoint(
                name=forward_auth.AUTH_PATH,
                app=forward_auth.allow,
                permission=route.scope,
                audience="gateway",
                idempotent=False,
            )
            for route in routes.routes
        }
        if proxy is not None:
            for gateway_route in self._gateway.routes:
                self._gateway_endpoints[gateway_route] = Endpoint(
                    name=gateway_route.name,
                    app=proxy.endpoint(gateway_route),
                    permission=gateway_route.scope,
                    own=False,
                    audience="gateway",
                )
        self._hot_paths = {path: method for method, path in hot}
        # (the route's path up to its first parameter, the route, its endpoint):
        # a request whose path does not start with that prefix cannot match,
        # so gateway requests skip the regular expressions of every route.
        self._routes: list[tuple[str, Route, Endpoint]] = []
        for route in management.router.routes:
            if not isinstance(route, Route):
                # Secure by default: a route we cannot see could not be guarded.
                raise TypeError(f"unsupported route {route!r}: add routes to the app directly")
            permission, audience = None, "account"
            if isinstance(route, APIRoute) and route.openapi_extra:
                permission = route.openapi_extra.get(PERMISSION_EXTENSION)
                audience = route.openapi_extra.get(AUDIENCE_EXTENSION, "account")
            endpoint = Endpoint(
                name=route.path,
                app=management,
                protected=route.path not in PUBLIC_PATHS,
                permission=permission,
                audience=audience,
            )
            self._routes.append((route.path.split("{", 1)[0], route, endpoint))

    def resolve(self, scope: Scope) -> Endpoint:
        """The endpoint for this request; raises 400 (a request target or
        path that is not one unambiguous path, RFC 9112 §3.2), 404 or 405.

        keystile's own endpoints are matched by the decoded path as given;
        gateway routes by its canonical form (:mod:`keystile.http.paths`).
        """
        method: str = scope["method"]
        path: str = scope["path"]
        endpoint = self._hot.get((method, path))
        if endpoint is not None:
            return endpoint
        if forward_auth.is_auth_path(path):
            return self.resolve_forwarded(scope)
        if path == "*" and method == "OPTIONS":
            return SERVER_OPTIONS
        if self._console is not None and is_console_path(path):
            return self._console
        canonical = canonical_path(raw_path_of(path, scope.get("raw_path")))
        allowed: list[str] = []
        if path in self._hot_paths:
            allowed += [m for m, p in self._hot if p == path]
        for prefix, route, endpoint in self._routes:
            if not path.startswith(prefix):
                continue
            match, child = route.matches(scope)
            if match is Match.FULL:
                scope.update(child)
                return endpoint
            if match is Match.PARTIAL:
                if method == "HEAD" and "GET" in (route.methods or ()):
                    scope.update(route.matches({**scope, "method": "GET"})[1])
                    return replace(endpoint, as_get=True)
                allowed += sorted(route.methods or ())
        # keystile's own endpoints take precedence over gateway routes.
        if not allowed and self._gateway:
            matched = self._gateway.match(method, canonical)
            if isinstance(matched, GatewayRoute):
                return self._gateway_endpoints[matched]
            allowed = matched or []
        if allowed:
            if "GET" in allowed:
                allowed.append("HEAD")
            raise errors.MethodNotAllowed(sorted(set(allowed)))
        raise errors.NotFound(f"No such endpoint: {method} {path}")

    def resolve_forwarded(self, scope: Scope) -> Endpoint:
        """The endpoint of a ``/v1/auth`` request (any method): the route of
        the original request it carries (:mod:`keystile.gateway.forward_auth`),
        matched as the gateway matches; 400, 404 (no route: there is nothing
        a key could be allowed) or 405 otherwise."""
        original = forward_auth.original_request(scope["headers"])
        matched = self._forward.match(original.method, original.path)
        if isinstance(matched, GatewayRoute):
            return self._forward_endpoints[matched]
        if matched:
            raise errors.MethodNotAllowed(
                matched, f"No route allows {original.method[:32]} on this path."
            )
        raise errors.NotFound("No route matches the forwarded request.")


def check_host(scope: Scope) -> None:
    """RFC 9112 §3.2: an HTTP/1.1 request has exactly one ``Host`` (400
    otherwise); two could route differently in two servers of one chain."""
    hosts = sum(1 for name, _ in scope["headers"] if name == b"host")
    if hosts > 1 or (hosts == 0 and scope.get("http_version", "1.1") == "1.1"):
        raise errors.ValidationFailed(
            "The request must carry exactly one Host header.",
            [errors.FieldProblem("Host", "must be given exactly once")],
        )


def _caller_key_id(ctx: RequestContext) -> str | None:
    caller = ctx.caller
    if caller is None:
        return None
    if caller.operator is not None:
        return caller.operator.id
    return caller.key.id if caller.key is not None else None


def _headers_only(send: Send) -> Send:
    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_head


def _account_header(scope: Scope) -> bytes | None:
    values = [value for name, value in scope["headers"] if name == ACCOUNT_HEADER]
    if len(values) > 1:
        raise errors.ValidationFailed(
            "The Keystile-Account header is invalid.",
            [errors.FieldProblem("Keystile-Account", "must be given once")],
        )
    return values[0] if values else None


def check_authorization(endpoint: Endpoint, caller: Caller) -> None:
    """403 unless ``caller`` may call ``endpoint`` (its audience, then its scope)."""
    if endpoint.audience == "operator" and not caller.is_operator:
        raise errors.InsufficientPermissions("Only operator keys may manage accounts.")
    if endpoint.audience == "gateway" and caller.key is None:
        raise errors.InsufficientPermissions("Gateway routes are called with account keys.")
    if endpoint.permission is not None and endpoint.permission not in caller.permissions:
        raise errors.InsufficientPermissions(
            f"This request needs the {endpoint.permission} permission."
        )


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
        self.meter = services.usage_meter
        self._proxies = services.settings.proxies
        self._body_timeout = services.settings.body_timeout_seconds
        self._access_log_enabled = services.settings.access_log
        self._access = AccessLog()

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
            if forward_auth.is_auth_path(scope["path"]):
                status, extra = forward_auth.denial(error, status_of(error), ctx.proxy_mode)
                await send_error(
                    send_with_headers, error, ctx.request_id, status=status, extra=extra
                )
            else:
                await send_error(send_with_headers, error, ctx.request_id)
        finally:
            self._observe(scope, ctx)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        check_host(scope)
        if forward_auth.is_auth_path(scope["path"]):
            if scope["method"] not in forward_auth.ALLOWED_METHODS:  # its own 405, in any mode
                raise errors.MethodNotAllowed(list(forward_auth.ALLOWED_METHODS))
            ctx.proxy_mode = forward_auth.proxy_mode(scope)
        endpoint = self.router.resolve(scope)
        ctx.route = endpoint.name
        ctx.own_response = endpoint.own
        if endpoint.protected:
            caller = await self.authenticate(scope, ctx, endpoint)
            key = caller.key
            address = ctx.client or "unknown"
            if key is None:  # an operator key: never rate limited, but never past a block
                blocked = await self.ratelimiter.check_address(address)
                if blocked is not None:
                    raise errors.RateLimited(blocked.retry_after, TOO_MANY_FAILURES)
                self._accepted(caller)
            elif key.account_suspended:
                # Before the rate limit (a suspended key uses no quota), after
                # the address block (a guesser learns nothing from a 403).
                blocked = await self.ratelimiter.check_address(address)
                if blocked is not None:
                    raise errors.RateLimited(blocked.retry_after, TOO_MANY_FAILURES)
                raise errors.AccountSuspended()
            else:
                admission = await self.ratelimiter.admit_from(address, key)
                if isinstance(admission, AddressBlocked):  # blocked by another instance
                    raise errors.RateLimited(admission.retry_after, TOO_MANY_FAILURES)
                self._accepted(caller)
                ctx.extra_headers.extend(admission.headers())
                if admission.rate is not None and admission.rate_limited:
                    self.meter.record(key, Outcome.RATE_LIMITED)
                    raise errors.RateLimited(admission.rate.retry_after)
                if admission.quota is not None and admission.quota_exceeded:
                    self.meter.record(key, Outcome.QUOTA_EXCEEDED)
                    raise errors.QuotaExceeded(admission.quota.retry_after)
            # Usage metering (contract §11) counts account keys only, from the
            # rate limit on: operator keys, and requests refused before the
            # rate limit (suspended accounts, address blocks), are not metered.
            try:
                check_authorization(endpoint, caller)
            except errors.InsufficientPermissions:
                if key is not None:
                    self.meter.record(key, Outcome.FORBIDDEN)
                raise
            if key is not None:
                self.meter.record(key, Outcome.ALLOWED)
            self.services.faults.hit("handler.hang")
        if (
            endpoint.own
            and endpoint.protected
            and endpoint.idempotent
            and scope["method"] in ("POST", "PATCH")
        ):
            # Every POST and PATCH to a keystile endpoint may carry an
            # Idempotency-Key (contract §6, §9); gateway routes forward it.
            await self.idempotency(endpoint.app, scope, receive, send, ctx)
        elif endpoint.as_get:
            # The GET handler answers; the server's own scope keeps saying
            # HEAD, and no body goes out whatever the handler sends.
            await endpoint.app({**scope, "method": "GET"}, receive, _headers_only(send))
        else:
            await endpoint.app(scope, receive, send)

    async def authenticate(self, scope: Scope, ctx: RequestContext, endpoint: Endpoint) -> Caller:
        """Who calls and for which account: 401; 429 once the address has
        failed too often; 400/404 for a ``Keystile-Account`` header that does
        not fit the key and the endpoint (contract §9).

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
        if token is not None and self.verifier.is_operator_token(token):
            operator = await self.verifier.verify_operator(token, before_lookup=refuse_if_blocked)
            if operator is not None:
                ctx.caller = await self._operator_caller(scope, operator, endpoint)
                return ctx.caller
            self.metrics.verified(INVALID.outcome.value)
            return await self._refuse(ctx)
        result = INVALID
        if token is not None:
            result = await self.verifier.verify(token, before_lookup=refuse_if_blocked)
        if result.valid and result.key is not None:
            ctx.key = result.key
            if _account_header(scope) is not None:
                raise errors.ValidationFailed(
                    "The Keystile-Account header is for operator keys only.",
                    [errors.FieldProblem("Keystile-Account", "not allowed with an account key")],
                )
            ctx.caller = Caller(
                account_id=result.key.account_id,
                permissions=frozenset(result.key.permissions),
                key=result.key,
            )
            return ctx.caller
        # Every failure counts as INVALID: /metrics is anonymous, and must not
        # tell a caller whether a key it presented was revoked or expired.
        self.metrics.verified(INVALID.outcome.value)
        return await self._refuse(ctx)

    def _accepted(self, caller: Caller) -> None:
        """A key that passed authentication and the address block: counted
        VALID, its use recorded. (A request refused by a block elsewhere
        records nothing: /metrics must not tell that the key was good.)"""
        self.metrics.verified("VALID")
        self.verifier.note_use(caller.operator or caller.key)  # type: ignore[arg-type]

    async def _operator_caller(
        self, scope: Scope, operator: OperatorKey, endpoint: Endpoint
    ) -> Caller:
        catalog = self.services.settings.catalog
        raw = _account_header(scope)
        if raw is None:
            if endpoint.audience == "account":
                raise errors.ValidationFailed(
                    "An operator key acts for an account named in the Keystile-Account header.",
                    [errors.FieldProblem("Keystile-Account", "is required with an operator key")],
                )
            return Caller(account_id=None, permissions=catalog, operator=operator)
        if endpoint.audience == "operator":
            return Caller(account_id=None, permissions=catalog, operator=operator)
        account_id = raw.decode("latin-1")
        async with self.services.storage.reader() as uow:
            account = await existing_account(uow, account_id)
        return Caller(account_id=account.id, permissions=catalog, operator=operator)

    async def _refuse(self, ctx: RequestContext) -> Caller:
        # Failed authentications are limited per client address; they never
        # count against any key's quota.
        decision = await self.ratelimiter.failed_authentication(ctx.client or "unknown")
        if not decision.allowed:
            raise errors.RateLimited(decision.retry_after, TOO_MANY_FAILURES)
        raise errors.InvalidKey()

    def _observe(self, scope: Scope, ctx: RequestContext) -> None:
        elapsed = time.perf_counter() - ctx.started
        status = ctx.status or 500
        self.metrics.observe(scope["method"], ctx.route, status, elapsed)
        if self._access_log_enabled and access_log.isEnabledFor(logging.INFO):
            path = redact(scope["path"])
            self._access.write(
                {
                    "request_id": ctx.request_id,
                    "method": scope["method"],
                    "path": path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "key_id": _caller_key_id(ctx),
                    "account_id": ctx.caller.account_id if ctx.caller else None,
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
