"""What handlers share: the services, the caller, the request's transaction,
strict query parsing and JSON responses."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Annotated, Any, cast

from fastapi import Depends, Request, Response
from pydantic import BaseModel

from keystile.accounts.service import AccountService
from keystile.api.errors import as_keystile_error, error_body, error_headers, status_of
from keystile.api.observability import Metrics
from keystile.api.schemas import ErrorEnvelope, dump
from keystile.audit.service import AuditLog
from keystile.clock import Clock
from keystile.errors import FieldProblem, ValidationFailed
from keystile.faults import Faults
from keystile.http.context import context_of
from keystile.idempotency.service import IdempotencyService
from keystile.keys.service import KeyService
from keystile.keys.usage import UsageRecorder
from keystile.keys.verifier import KeyVerifier
from keystile.leaks.public_keys import PublicKeysFile
from keystile.leaks.service import LeakService
from keystile.ratelimit.service import RateLimiter
from keystile.settings import Settings
from keystile.storage.base import Storage, UnitOfWork
from keystile.usage.meter import UsageMeter
from keystile.usage.service import UsageService
from keystile.webhooks.service import WebhookService


@dataclass(slots=True)
class Services:
    """Everything a request may need, built once by ``create_app``."""

    settings: Settings
    storage: Storage
    keys: KeyService
    accounts: AccountService
    audit: AuditLog
    webhooks: WebhookService
    verifier: KeyVerifier
    usage: UsageRecorder  # last_used_at
    usage_meter: UsageMeter  # metered requests per key, hour and outcome (contract §11)
    usage_service: UsageService  # reading metered usage, and its rollups
    idempotency: IdempotencyService
    ratelimiter: RateLimiter
    metrics: Metrics
    clock: Clock
    leaks: LeakService  # leak reports (contract §14)
    leak_keys: PublicKeysFile  # the partner's keys that sign them
    faults: Faults = field(default_factory=Faults)  # test-only fault points (keystile.faults)


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a
    # thread hand-off per request for an attribute read.
    return cast(Services, request.app.state.services)


ServicesDep = Annotated[Services, Depends(get_services)]


def request_transaction(
    request: Request, services: Services
) -> AbstractAsyncContextManager[UnitOfWork]:
    """The transaction a handler writes in: the idempotency layer's, when it
    opened one (so the response record commits together with the work),
    else a fresh one."""
    open_transaction = context_of(request.scope).transaction
    if open_transaction is not None:
        return nullcontext(cast(UnitOfWork, open_transaction))
    return services.storage.transaction()


def check_query(request: Request, allowed: frozenset[str] = frozenset()) -> None:
    """Refuse unknown and repeated query parameters: a typo such as ``limt``
    must not silently fall back to a default."""
    problems: list[FieldProblem] = []
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name not in allowed:
            problems.append(FieldProblem(name, "unknown query parameter"))
        elif name in seen:
            problems.append(FieldProblem(name, "given more than once"))
        seen.add(name)
    if problems:
        raise ValidationFailed("The query string is invalid.", problems)


def json_response(status_code: int, model: BaseModel) -> Response:
    return Response(content=dump(model), status_code=status_code, media_type="application/json")


def error_response(request: Request, exc: BaseException) -> Response:
    error = as_keystile_error(exc)
    return Response(
        content=error_body(error, context_of(request.scope).request_id),
        status_code=status_of(error),
        headers={name.decode(): value.decode() for name, value in error_headers(error)},
    )


def body_doc(model: str, *, required: bool = True) -> dict[str, Any]:
    """OpenAPI ``requestBody`` of a JSON body described by a component ``model``."""
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}
    return {"requestBody": {"required": required, "content": content}}


def errors_doc(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses, all with the envelope."""
    descriptions = {
        400: "validation_error: missing, unknown or ill-typed fields, malformed JSON",
        401: "invalid_key: missing, malformed, unknown, revoked or expired key",
        403: "insufficient_permissions, plan_restricted or account_suspended",
        404: "not_found",
        405: "method_not_allowed",
        409: "duplicate_name, key_inactive, plan_conflict or idempotency_key_in_use",
        413: "payload_too_large: body over 64 KiB",
        415: "unsupported_media_type: body not sent as application/json",
        422: "idempotency_key_reused",
        429: "rate_limited",
        500: "internal_error",
        503: "service_unavailable: the database (or Redis) is unreachable",
    }
    return {s: {"model": ErrorEnvelope, "description": descriptions[s]} for s in statuses}
