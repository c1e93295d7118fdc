"""Per-request state shared by the pipeline and the handlers (``scope["keystile"]``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.types import Scope

from keystile.keys.models import ApiKey

SCOPE_KEY = "keystile"


@dataclass(slots=True)
class RequestContext:
    request_id: str
    started: float
    route: str = "unmatched"
    own_response: bool = True  # False for proxied responses (keep upstream caching headers)
    key: ApiKey | None = None
    client: str | None = None
    status: int | None = None
    response_started: bool = False
    response_complete: bool = False
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    transaction: Any = None  # the idempotency layer's open unit of work, if any
    body_timeout: float = 10.0  # seconds the whole request body may take to arrive
    # The body, read once (keystile.api.body): its bytes, and its JSON
    # document once parsed. Whoever reads it later gets the same value.
    body: bytes | None = None
    document: Any = None
    parsed: bool = False


def context_of(scope: Scope) -> RequestContext:
    ctx = scope.get(SCOPE_KEY)
    if not isinstance(ctx, RequestContext):
        raise RuntimeError("request did not pass through the keystile pipeline")
    return ctx


def caller_of(scope: Scope) -> ApiKey:
    """The authenticated key; handlers behind the pipeline always have one."""
    key = context_of(scope).key
    if key is None:
        raise RuntimeError("handler reached without an authenticated key")
    return key
