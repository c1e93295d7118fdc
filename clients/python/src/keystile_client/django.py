"""Django integration: ``KeystileMiddleware`` protects every view, and the
``require_key(permission)`` decorator protects one view (alone or on top of
the middleware, for a stricter permission). Needs the ``django`` extra.

Settings (``settings.KEYSTILE``, a dict)::

    KEYSTILE = {
        "BASE_URL": "http://127.0.0.1:8080",
        "SERVICE_KEY": "wbk_live_…",      # holds verify:keys, same account as the callers' keys
        "ACCOUNT": None,                  # with an operator key: the account to act for
        "PERMISSION": None,               # the middleware's; None: any valid key
        "EXEMPT_PATHS": ["/healthz"],     # the middleware lets these through unchecked
        "CACHE_SIZE": 10000,
        "CACHE_TTL": 5.0,                 # seconds: also the revocation delay
        "TIMEOUT": 2.0,
    }

An allowed request gets ``request.keystile`` (a
:class:`~keystile_client.models.Verification`) and its response the key's
rate-limit headers; a refusal is keystile's §3 body with 401, 403, 429, or
503 when keystile cannot be reached (fail closed). One
:class:`~keystile_client.verifier.SyncVerifier` per process, built on first use.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from keystile_client.cache import DEFAULT_SIZE, DEFAULT_TTL
from keystile_client.decision import Decision, bearer
from keystile_client.verifier import DEFAULT_TIMEOUT, SyncVerifier

View = Callable[..., Any]
_lock = threading.Lock()
_verifier: SyncVerifier | None = None


def _options() -> dict[str, Any]:
    return dict(getattr(settings, "KEYSTILE", {}))


def verifier() -> SyncVerifier:
    """The process's verifier, made from ``settings.KEYSTILE`` on first use."""
    global _verifier
    with _lock:
        if _verifier is None:
            options = _options()
            _verifier = SyncVerifier(
                options.get("SERVICE_KEY"),
                base_url=options.get("BASE_URL", "http://127.0.0.1:8080"),
                account=options.get("ACCOUNT"),
                cache_size=int(options.get("CACHE_SIZE", DEFAULT_SIZE)),
                cache_ttl=float(options.get("CACHE_TTL", DEFAULT_TTL)),
                timeout=float(options.get("TIMEOUT", DEFAULT_TIMEOUT)),
            )
        return _verifier


def reset() -> None:
    """Forget the verifier (after ``settings.KEYSTILE`` changed, in tests)."""
    global _verifier
    with _lock:
        if _verifier is not None:
            _verifier.close()
        _verifier = None


def _refusal(request: HttpRequest, decision: Decision) -> HttpResponse:
    response = HttpResponse(
        decision.body(request.headers.get("X-Request-ID")),
        status=decision.status,
        content_type="application/json",
    )
    response["Cache-Control"] = "no-store"
    for name, value in decision.headers:
        response[name] = value
    return response


def _guarded(request: HttpRequest, permission: str | None, view: View, *args: Any,
             **kwargs: Any) -> HttpResponse:  # fmt: skip
    token = bearer(request.headers.get("Authorization"))
    decision = verifier().check(token, permission)
    if decision.identity is None:
        return _refusal(request, decision)
    request.keystile = decision.identity
    response: HttpResponse = view(request, *args, **kwargs)
    for name, value in decision.headers:
        response[name] = value
    return response


class KeystileMiddleware:
    """Every request needs a key holding ``KEYSTILE["PERMISSION"]``, except
    the paths in ``KEYSTILE["EXEMPT_PATHS"]``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        options = _options()
        self.permission: str | None = options.get("PERMISSION")
        self.exempt = frozenset(options.get("EXEMPT_PATHS", ()))

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path in self.exempt:
            return self.get_response(request)
        return _guarded(request, self.permission, self.get_response)


def require_key(permission: str | None = None) -> Callable[[View], View]:
    """A view decorator: the caller's key must hold ``permission``."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            return _guarded(request, permission, view, *args, **kwargs)

        return guarded

    return decorate
