"""Forwarding an authenticated request to its upstream (contract §7).

Bodies stream both ways in chunks, so a 100 MB upload or download never sits
in keystile's memory. The request reaches the upstream with its method, full
original path and query string, and its headers, except:

- hop-by-hop headers (RFC 9110 §7.6.1) and ``Authorization`` are removed;
- client-sent ``X-Keystile-*`` headers are dropped, and keystile sets
  ``X-Keystile-Key-Id``, ``X-Keystile-Account-Id`` and ``X-Keystile-Scopes``
  (space-separated): the upstream can trust them because nobody else can set them;
- ``X-Request-ID`` is keystile's request id;
- ``X-Forwarded-For`` gets the client's address appended (a chain a client
  wrote itself is replaced unless it came through a trusted proxy), and
  ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` say how the client called.

The response comes back with its status, body and headers (caching headers
included), minus hop-by-hop headers and any ``X-Request-ID`` or
``X-RateLimit-*`` of the upstream's, which keystile's own replace.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from keystile.errors import BadGateway, GatewayTimeout
from keystile.gateway.client import (
    Upstream,
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)
from keystile.gateway.routes import GatewayRoute
from keystile.http.clients import Network, is_trusted
from keystile.http.context import context_of
from keystile.http.headers import HOP_BY_HOP, canonical_name, connection_tokens, is_untrusted

log = logging.getLogger("keystile.gateway")

# The request is framed anew (its Content-Length kept); Expect was answered
# by keystile's own server when it read the body.
_FRAMING = frozenset({b"content-length", b"expect"})
_NOT_RETURNED = HOP_BY_HOP | {b"x-request-id"}


class ClientDisconnected(Exception):
    """The client went away while sending its body."""


class Proxy:
    def __init__(self, client: UpstreamClient, trusted_proxies: Sequence[Network]) -> None:
        self.client = client
        self._trusted = trusted_proxies
        self._upstreams: dict[str, Upstream] = {}

    def endpoint(self, route: GatewayRoute) -> ASGIApp:
        """The ASGI app forwarding to ``route``'s upstream (a route with one)."""
        if route.upstream is None:
            raise ValueError(f"route {route.prefix} has no upstream: it is for forward auth only")
        upstream = self._upstreams.setdefault(route.upstream, Upstream.parse(route.upstream))

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await self.forward(route, upstream, scope, receive, send)

        return app

    def _request_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        ctx = context_of(scope)
        key = ctx.key
        assert key is not None, "gateway routes are authenticated"
        incoming: list[tuple[bytes, bytes]] = scope["headers"]
        hop_by_hop = connection_tokens(incoming)
        headers: list[tuple[bytes, bytes]] = []
        forwarded_for: list[bytes] = []
        forwarded_proto: bytes | None = None
        host: bytes | None = None
        for name, value in incoming:
            # ASGI names are lower case; a trusted proxy writes the dashed spelling.
            if name == b"x-forwarded-for":
                forwarded_for.append(value)
                continue
            if name == b"x-forwarded-proto":
                forwarded_proto = value
                continue
            canonical = canonical_name(name)
            if canonical == b"host":
                host = value
            elif canonical not in _FRAMING and not is_untrusted(canonical, hop_by_hop):
                headers.append((name, value))
        peer = scope.get("client")
        peer_address = peer[0] if peer else None
        trusted_peer = (
            bool(self._trusted)
            and peer_address is not None
            and is_trusted(peer_address, self._trusted)
        )
        chain = [
            *(forwarded_for if trusted_peer else []),
            *([peer_address.encode()] if peer_address else []),
        ]
        if chain:
            headers.append((b"x-forwarded-for", b", ".join(chain)))
        proto = (
            forwarded_proto
            if trusted_peer and forwarded_proto
            else scope.get("scheme", "http").encode()
        )
        headers.append((b"x-forwarded-proto", proto))
        if host is not None:
            headers.append((b"x-forwarded-host", host))
        headers += [
            (b"x-request-id", ctx.request_id.encode()),
            (b"x-keystile-key-id", key.id.encode()),
            (b"x-keystile-account-id", key.account_id.encode()),
            (b"x-keystile-scopes", " ".join(key.permissions).encode()),
        ]
        return headers

    async def forward(
        self, route: GatewayRoute, upstream: Upstream, scope: Scope, receive: Receive, send: Send
    ) -> None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        target = raw_path + b"?" + query if query else raw_path
        content_length, has_body = _framing(scope["headers"])
        method: str = scope["method"]
        try:
            response = await self.client.send(
                upstream,
                method,
                target,
                self._request_headers(scope),
                _body(receive) if has_body else None,
                content_length,
                route.timeout_seconds,
            )
        except UpstreamTimeout:
            raise GatewayTimeout() from None
        except (UpstreamError, ClientDisconnected) as exc:
            log.warning("upstream %s failed: %s", route.upstream, exc)
            raise BadGateway() from None
        try:
            await self._relay(response, method, send)
        finally:
            response.release()

    async def _relay(self, response: UpstreamResponse, method: str, send: Send) -> None:
        dropped = _NOT_RETURNED | connection_tokens(response.headers)
        headers = [
            (name, value)
            for name, value in response.headers
            if (lowered := name.lower()) not in dropped and not lowered.startswith(b"x-ratelimit-")
        ]
        if method == "HEAD" or response.status in (204, 304):
            # No body follows, whatever the headers say (RFC 9112 §6.3); the
            # server would hold a 204/304 to its Content-Length.
            if method != "HEAD":
                headers = [
                    (name, value) for name, value in headers if name.lower() != b"content-length"
                ]
            await send(
                {"type": "http.response.start", "status": response.status, "headers": headers}
            )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        chunks = response.body()
        try:
            first = await anext(chunks, b"")
        except UpstreamTimeout:
            raise GatewayTimeout() from None
        except UpstreamError:
            raise BadGateway() from None
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        if first:
            await send({"type": "http.response.body", "body": first, "more_body": True})
        # From here the status line is out: a failing upstream can only be
        # reported by cutting the connection (the error propagates).
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _framing(headers: Sequence[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """The request body's declared length (None when chunked), and whether there is a body."""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value), True
            except ValueError:
                return None, True
        if name == b"transfer-encoding":
            return None, True
    return None, False


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
