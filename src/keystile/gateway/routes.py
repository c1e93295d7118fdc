"""The routes file (``KEYSTILE_ROUTES``): which upstream serves which path
and method, and the scope a key needs for it.

Matching is by method and longest path prefix on segment boundaries:
``/v1/contacts`` matches ``/v1/contacts`` and ``/v1/contacts/42``, never
``/v1/contactsX``. Among the routes that allow the request's method, the one
with the longest matching prefix wins; when prefixes match but none allows
the method the answer is 405, when none matches 404. Prefixes and request
paths are compared in the canonical form of :mod:`keystile.http.paths`
(decoded, case-folded), so every spelling of a path an upstream could take
for the same resource falls under the same route. A route that allows
``GET`` also serves ``HEAD`` (RFC 9110 §9.3.2) unless another route of the
same prefix names ``HEAD`` itself.

A route without ``upstream`` is for forward authentication only (contract
§15): ``/v1/auth`` answers for it, the gateway does not serve it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from keystile.errors import ConfigurationError
from keystile.http.paths import PathRefused, canonical_path

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_FIELDS = frozenset({"prefix", "methods", "scope", "upstream", "timeout_seconds"})
_PREFIX = re.compile(r"/|(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+")
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class GatewayRoute:
    prefix: str
    methods: frozenset[str]
    scope: str
    upstream: str | None  # scheme://host[:port], no path; None: forward auth only
    timeout_seconds: float = DEFAULT_TIMEOUT
    line: int = 0

    @property
    def name(self) -> str:
        return f"gateway:{self.prefix}"


class RouteTable:
    def __init__(self, routes: list[GatewayRoute]) -> None:
        self.routes = routes
        self._by_prefix: dict[str, dict[str, GatewayRoute]] = {}
        for route in routes:
            by_method = self._by_prefix.setdefault(_route_key(route.prefix), {})
            for method in route.methods:
                by_method[method] = route
        for by_method in self._by_prefix.values():
            if "GET" in by_method and "HEAD" not in by_method:
                by_method["HEAD"] = by_method["GET"]

    def __bool__(self) -> bool:
        return bool(self.routes)

    def proxied(self) -> RouteTable:
        """The routes the gateway serves: those with an ``upstream``."""
        return RouteTable([route for route in self.routes if route.upstream is not None])

    def match(self, method: str, path: str) -> GatewayRoute | list[str] | None:
        """The route for ``method`` and ``path`` (canonical, see
        :func:`keystile.http.paths.canonical_path`); else the methods allowed
        at the matching prefixes (→ 405); else None (→ 404).

        Terminates for any string: it looks at each prefix of the path's
        segments once, longest first.
        """
        if not path.startswith("/"):
            return None
        segments = path.strip("/").split("/")
        allowed: set[str] = set()
        for count in range(len(segments), -1, -1):
            by_method = self._by_prefix.get("/" + "/".join(segments[:count]))
            if by_method is None:
                continue
            route = by_method.get(method)
            if route is not None:
                return route
            allowed.update(by_method)
        return sorted(allowed) if allowed else None


def _route_key(prefix: str) -> str:
    """A prefix as match() compares it: canonical, without a trailing '/'."""
    return "/" + canonical_path(prefix).strip("/")


class _Problem(Exception):
    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _route_lines(text: str) -> list[int]:
    return [n for n, line in enumerate(text.splitlines(), 1) if line.strip() == "[[routes]]"]


def _field_line(text: str, start: int, field: str | None) -> int:
    if field is None:
        return start
    for number, line in enumerate(text.splitlines()[start:], start + 1):
        if line.strip().startswith("[["):
            break
        if re.match(rf"\s*{re.escape(field)}\s*=", line):
            return number
    return start


def _route(raw: Any, catalog: frozenset[str]) -> GatewayRoute:
    if not isinstance(raw, dict):
        raise _Problem(None, "each [[routes]] entry must be a table")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise _Problem(
            unknown[0], f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(_FIELDS))})"
        )
    for field in ("prefix", "methods", "scope"):
        if field not in raw:
            raise _Problem(None, f"missing field {field!r}")

    prefix = raw["prefix"]
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix.rstrip("/") or "/"):
        raise _Problem("prefix", "prefix must be a path like '/v1/contacts'")
    prefix = prefix.rstrip("/") or "/"
    try:
        canonical_path(prefix)
    except PathRefused as refused:
        reason = refused.details[0].message
        raise _Problem("prefix", f"prefix must be an unambiguous path: {reason}") from None

    methods = raw["methods"]
    if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
        raise _Problem("methods", "methods must be a non-empty list of HTTP methods")
    bad = [m for m in methods if m.upper() not in METHODS]
    if bad:
        raise _Problem(
            "methods", f"unknown method {bad[0]!r} (allowed: {', '.join(sorted(METHODS))})"
        )

    scope = raw["scope"]
    if not isinstance(scope, str) or scope not in catalog:
        raise _Problem("scope", f"scope {scope!r} is not in the scope catalog (KEYSTILE_SCOPES)")

    upstream = _upstream(raw.get("upstream"))
    timeout = raw.get("timeout_seconds", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
        raise _Problem(
            "timeout_seconds", "timeout_seconds must be a number of seconds in (0, 3600]"
        )

    return GatewayRoute(
        prefix=prefix,
        methods=frozenset(m.upper() for m in methods),
        scope=scope,
        upstream=upstream,
        timeout_seconds=float(timeout),
    )


def _upstream(upstream: Any) -> str | None:
    """``scheme://host[:port]`` of a route's upstream; None when absent."""
    if upstream is None:
        return None
    parts = urlsplit(upstream) if isinstance(upstream, str) else None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
    ):
        raise _Problem(
            "upstream",
            "upstream must be an http:// or https:// URL with no path, e.g. 'http://127.0.0.1:9001'",
        )
    try:
        parts.port  # noqa: B018 (validates the port)
    except ValueError:
        raise _Problem("upstream", "upstream has an invalid port") from None
    return f"{parts.scheme}://{parts.netloc}"


def parse_routes(text: str, catalog: frozenset[str], source: str = "routes file") -> RouteTable:
    """The table in ``text``; any problem raises :class:`ConfigurationError`
    naming ``source``, the line and what is wrong."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{source}: invalid TOML: {exc}") from None
    extra = sorted(set(document) - {"routes"})
    if extra:
        raise ConfigurationError(
            f"{source}: unknown top-level key {extra[0]!r} (only [[routes]] tables)"
        )
    raw_routes = document.get("routes", [])
    if not isinstance(raw_routes, list):
        raise ConfigurationError(f"{source}: 'routes' must be an array of [[routes]] tables")
    lines = _route_lines(text)
    routes: list[GatewayRoute] = []
    seen: dict[tuple[str, str], int] = {}
    for index, raw in enumerate(raw_routes):
        start = lines[index] if index < len(lines) else 1
        try:
            route = _route(raw, catalog)
        except _Problem as problem:
            line = _field_line(text, start, problem.field)
            raise ConfigurationError(
                f"{source}:{line}: route {index + 1}: {problem.message}"
            ) from None
        for method in sorted(route.methods):
            # Prefixes that differ only in case or encoding are the same path.
            identity = (_route_key(route.prefix), method)
            if identity in seen:
                raise ConfigurationError(
                    f"{source}:{start}: route {index + 1}: {method} {route.prefix} is already "
                    f"routed at line {seen[identity]}"
                )
            seen[identity] = start
        routes.append(
            GatewayRoute(
                prefix=route.prefix,
                methods=route.methods,
                scope=route.scope,
                upstream=route.upstream,
                timeout_seconds=route.timeout_seconds,
                line=start,
            )
        )
    return RouteTable(routes)


def load_routes(path: Path, catalog: frozenset[str]) -> RouteTable:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"KEYSTILE_ROUTES: cannot read {path}: {exc}") from None
    return parse_routes(text, catalog, source=str(path))
