"""Forward authentication: ``/v1/auth`` answers "may this request pass?" for
a proxy that keeps serving the request itself (contract §15).

nginx's ``auth_request``, Traefik's ForwardAuth, Caddy's ``forward_auth`` and
Envoy's HTTP ``ext_authz`` send keystile a request carrying the client's
headers and the original method and URI, in ``X-Forwarded-Method`` and
``X-Forwarded-Uri`` (Traefik, Caddy, and the shipped nginx example) or
``X-Original-Method`` and ``X-Original-URI`` (a common nginx idiom). The
pipeline resolves that original request against the routes file, with the
gateway's own path normalisation (:mod:`keystile.http.paths`), and runs the
gateway's checks in the gateway's order; this module reads the original
request, writes the ``200`` and shapes a denial for the proxy.

Which header a proxy sets decides the path keystile checks, so the rules
are strict: each header at most once, and when both spellings are present
they must agree (a client could otherwise add ``X-Forwarded-Uri`` to a
request whose proxy sets only ``X-Original-URI``). And a request carrying
any ``X-Keystile-*`` header (in any spelling, ``_`` for ``-``) is refused:
those names are keystile's, the upstream trusts them, and one that reaches
keystile is one the proxy did not remove from the client's request (nginx
cannot remove headers by pattern). Anything else is a ``400
validation_error`` naming the header.

nginx's ``auth_request`` passes on only ``401`` and ``403`` (any other
status becomes a ``500``), so with ``?proxy=nginx`` every other denial is
sent as ``403`` carrying the real code in ``X-Keystile-Error`` (and
``Retry-After`` where it applies), for the nginx configuration to turn back
into the right status (examples/nginx/).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from keystile import errors
from keystile.gateway.routes import METHODS
from keystile.http.context import context_of
from keystile.http.headers import canonical_name
from keystile.http.paths import PathRefused, canonical_path

AUTH_PATH = "/v1/auth"
_AUTH_PREFIX = AUTH_PATH + "/"  # Envoy's ext_authz appends the original path to its prefix


def is_auth_path(path: str) -> bool:
    """``/v1/auth``, or ``/v1/auth/…`` (what Envoy's ``path_prefix`` sends);
    the original request is read from the forwarded headers either way."""
    return path == AUTH_PATH or path.startswith(_AUTH_PREFIX)


ERROR_HEADER = b"x-keystile-error"
# A proxy may ask with any method a route can have (the original request's);
# TRACE, CONNECT and methods no route can name are a 405 of /v1/auth itself.
ALLOWED_METHODS = tuple(sorted(METHODS))
NGINX = "nginx"
PROXY_MODES = frozenset({NGINX})

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")  # RFC 9110 §5.6.2
_ABSOLUTE = re.compile(r"https?://[^/?#]*", re.IGNORECASE)
# (the spelling the contract gives first, the other) for the method and the URI
_METHOD = (
    (b"x-forwarded-method", "X-Forwarded-Method"),
    (b"x-original-method", "X-Original-Method"),
)
_URI = ((b"x-forwarded-uri", "X-Forwarded-Uri"), (b"x-original-uri", "X-Original-URI"))


@dataclass(frozen=True, slots=True)
class OriginalRequest:
    """The request the proxy asks about: its method as sent and its path in
    canonical form (what gateway routes match)."""

    method: str
    path: str


def _problem(header: str, message: str) -> errors.ValidationFailed:
    return errors.ValidationFailed(
        "The forwarded request is invalid.", [errors.FieldProblem(header, message)]
    )


def _forwarded(
    headers: list[tuple[bytes, bytes]], spellings: tuple[tuple[bytes, str], ...]
) -> tuple[str, str]:
    """``(value, header name)`` of the one header among ``spellings``."""
    found: dict[str, str] = {}
    for raw_name, name in spellings:
        values = [value for key, value in headers if key == raw_name]
        if len(values) > 1:
            raise _problem(name, "must be given once")
        if values:
            found[name] = values[0].decode("latin-1")
    if not found:
        first, other = (name for _, name in spellings)
        raise _problem(first, f"is required (or {other}): the proxy must send it")
    if len(set(found.values())) > 1:
        first, other = found
        raise _problem(first, f"disagrees with {other}; send one, or the same value in both")
    name, value = next(iter(found.items()))
    return value, name


def original_request(headers: list[tuple[bytes, bytes]]) -> OriginalRequest:
    """The original method and canonical path from the forwarded headers of
    an ASGI request (lower-case names). Raises ``ValidationFailed`` (400)
    naming the header: a client's ``X-Keystile-*``; missing, repeated,
    conflicting, a method that is not
    an RFC 9110 token, or a URI whose path :func:`canonical_path` refuses
    (dot segments in any spelling, encoded separators, ...). An absolute URI
    (``https://host/path``) is read for its path; the query is ignored."""
    for name, _ in headers:
        if canonical_name(name).startswith(b"x-keystile-"):
            raise _problem(
                name.decode("latin-1")[:64],
                "is keystile's own header: the proxy must remove X-Keystile-* headers "
                "the client sent (docs/forward-auth.md)",
            )
    method, method_header = _forwarded(headers, _METHOD)
    if not _TOKEN.fullmatch(method):
        raise _problem(method_header, "must be an HTTP method such as GET")
    uri, uri_header = _forwarded(headers, _URI)
    absolute = _ABSOLUTE.match(uri)
    path = (uri[absolute.end() :] or "/") if absolute else uri
    path = path.partition("?")[0].partition("#")[0]
    try:
        return OriginalRequest(method, canonical_path(path))
    except PathRefused as exc:
        reason = exc.details[0].message if exc.details else exc.message
        raise _problem(uri_header, reason) from None


def proxy_mode(scope: Scope) -> str | None:
    """The ``proxy`` query parameter of a ``/v1/auth`` request: ``"nginx"``
    or None; anything else is a 400 naming ``proxy``."""
    query: bytes = scope.get("query_string", b"")
    if not query:
        return None
    modes = [value for name, value in parse_qsl(query.decode("latin-1")) if name == "proxy"]
    if not modes:
        return None
    if len(modes) > 1 or modes[0] not in PROXY_MODES:
        raise _problem("proxy", "must be nginx (or absent)")
    return modes[0]


def denial(
    exc: errors.KeystileError, status: int, mode: str | None
) -> tuple[int, list[tuple[bytes, bytes]]]:
    """The status and extra headers of a refused ``/v1/auth`` request:
    ``X-Keystile-Error`` always names the error code; with ``?proxy=nginx``
    a status other than 401 and 403 becomes 403 (nginx passes on no other)."""
    headers = [(ERROR_HEADER, exc.code.encode())]
    if mode == NGINX and status not in (401, 403):
        status = 403
    return status, headers


async def allow(scope: Scope, receive: Receive, send: Send) -> None:
    """The ``200`` of an allowed request: an empty body, the caller's
    identity in ``X-Keystile-Key-Id``, ``X-Keystile-Account-Id`` and
    ``X-Keystile-Scopes`` (space-separated), for the proxy to copy to the
    upstream. (The pipeline adds the rate-limit and quota headers.)"""
    key = context_of(scope).key
    assert key is not None, "forward auth is for account keys, checked before"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-length", b"0"),
                (b"x-keystile-key-id", key.id.encode()),
                (b"x-keystile-account-id", key.account_id.encode()),
                (b"x-keystile-scopes", " ".join(key.permissions).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})
