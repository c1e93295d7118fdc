"""Which request headers may cross the trust boundary to an upstream.

A header name is compared in its canonical form: lower case, with ``_``
read as ``-``. CGI, WSGI, PHP and Rack turn both ``X-Keystile-Scopes`` and
``X_Keystile_Scopes`` into ``HTTP_X_KEYSTILE_SCOPES``, so a filter that only
knows the dashed spelling lets a client forge what an upstream trusts.

:data:`UNTRUSTED` lists the headers a client must never be able to set on a
forwarded request, by what an upstream (or a framework in front of it) uses
them for; docs/gateway.md shows the same list with the reasons.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# RFC 9110 §7.6.1: meaningful for one connection only.
HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
        b"transfer-encoding", b"upgrade", b"proxy-authenticate", b"proxy-authorization",
    }
)  # fmt: skip

# Identity and client-address authority: who is calling, from where.
CLIENT_AUTHORITY = frozenset(
    {
        b"forwarded", b"x-forwarded-for", b"x-forwarded", b"forwarded-for",
        b"x-real-ip", b"x-client-ip", b"client-ip", b"true-client-ip",
        b"cf-connecting-ip", b"fastly-client-ip", b"x-cluster-client-ip",
        b"x-originating-ip", b"x-remote-ip", b"x-remote-addr", b"x-appengine-user-ip",
    }
)  # fmt: skip

# Routing authority: which host, scheme, port or path the request "really" had.
ROUTING_AUTHORITY = frozenset(
    {
        b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-port",
        b"x-forwarded-prefix", b"x-forwarded-scheme", b"x-forwarded-ssl",
        b"x-forwarded-server", b"x-forwarded-path", b"x-forwarded-uri",
        b"x-url-scheme", b"front-end-https", b"x-original-host", b"x-host",
        b"x-original-url", b"x-original-uri", b"x-rewrite-url", b"x-envoy-original-path",
    }
)  # fmt: skip

# Method authority: frameworks that honour these run another method than the one routed.
METHOD_AUTHORITY = frozenset(
    {
        b"x-http-method-override", b"x-http-method", b"x-method-override",
        b"x-original-method", b"x-forwarded-method",
    }
)  # fmt: skip

# Set by keystile itself on every forwarded request.
SET_BY_KEYSTILE = frozenset({b"authorization", b"x-request-id", b"host"})
KEYSTILE_PREFIX = b"x-keystile-"

UNTRUSTED = HOP_BY_HOP | CLIENT_AUTHORITY | ROUTING_AUTHORITY | METHOD_AUTHORITY | SET_BY_KEYSTILE


def canonical_name(name: bytes) -> bytes:
    """``X_Keystile_Scopes`` → ``x-keystile-scopes``: how upstreams may read it."""
    return name.lower().replace(b"_", b"-")


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """Header names listed in ``Connection`` (hop-by-hop too), canonical."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if canonical_name(name) == b"connection":
            tokens |= {canonical_name(token.strip()) for token in value.split(b",")}
    return tokens


def is_untrusted(canonical: bytes, also: frozenset[bytes] | set[bytes] = frozenset()) -> bool:
    """True when a client-sent header (by its canonical name) must not be forwarded."""
    return canonical in UNTRUSTED or canonical in also or canonical.startswith(KEYSTILE_PREFIX)


def values(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Every value of header ``name`` (lower case, exact spelling)."""
    return [value for key, value in headers if key == name]
