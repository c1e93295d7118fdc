"""Per-request state shared by the pipeline and the handlers (``scope["keystile"]``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.types import Scope

from keystile.audit.models import Actor, ActorType, Origin
from keystile.keys.models import ApiKey, Caller

SCOPE_KEY = "keystile"


@dataclass(slots=True)
class RequestContext:
    request_id: str
    started: float
    route: str = "unmatched"
    own_response: bool = True  # False for proxied responses (keep upstream caching headers)
    key: ApiKey | None = None  # the calling account key, once authenticated
    caller: Caller | None = None  # who calls, for which account (account or operator key)
    client: str | None = None
    status: int | None = None
    response_started: bool = False
    response_complete: bool = False
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    proxy_mode: str | None = None  # /v1/auth?proxy=nginx (contract §15)
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


def caller_of(scope: Scope) -> Caller:
    """Who calls; handlers behind the pipeline's authentication always have one."""
    caller = context_of(scope).caller
    if caller is None:
        raise RuntimeError("handler reached without an authenticated caller")
    return caller


def account_of(scope: Scope) -> str:
    """The account a request acts for; account endpoints always have one
    (the pipeline refuses an operator key without ``Keystile-Account``)."""
    account_id = caller_of(scope).account_id
    if account_id is None:
        raise RuntimeError("account endpoint reached without an account")
    return account_id


def origin_of(scope: Scope) -> Origin:
    """Who asks for a change, and from where: for the audit log (§12)."""
    ctx = context_of(scope)
    caller = ctx.caller
    actor = Actor(ActorType.SYSTEM)
    if caller is not None and caller.operator is not None:
        actor = Actor(ActorType.OPERATOR_KEY, caller.operator.id)
    elif caller is not None and caller.key is not None:
        actor = Actor(ActorType.API_KEY, caller.key.id)
    return Origin(actor, request_id=ctx.request_id, ip=ctx.client)
