"""The audit log (contract §12): an account's events for an account key with
``admin:api_keys`` (or an operator key with ``Keystile-Account``); every
account's for an operator key without it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from keystile.api.audit_schemas import AuditEventList, event_list_out
from keystile.api.deps import ServicesDep, check_query, errors_doc, json_response
from keystile.api.pipeline import AUDIENCE_EXTENSION, PERMISSION_EXTENSION
from keystile.audit.models import Action, AuditFilter
from keystile.clock import to_micros
from keystile.errors import FieldProblem, ValidationFailed
from keystile.http.context import caller_of
from keystile.keys.validation import parse_timestamp
from keystile.settings import ADMIN_SCOPE

router = APIRouter(tags=["audit"])

_PARAMS = frozenset(
    {"limit", "starting_after", "action", "target_id", "actor_id", "since", "until"}
)
_ACTIONS = sorted(action.value for action in Action)


def _instant(field: str, raw: str | None) -> int | None:
    if raw is None:
        return None
    moment = parse_timestamp(raw)
    if moment is None:
        raise ValidationFailed(
            "The query string is invalid.",
            [FieldProblem(field, "must be an RFC 3339 timestamp with a Z or an offset")],
        )
    return to_micros(moment)


@router.get(
    "/v1/audit-events",
    operation_id="list_audit_events",
    summary="List audit events",
    description="Newest first, cursor-paginated. Filters: `action`, `target_id`, `actor_id`, "
    "`since` (inclusive) and `until` (exclusive), RFC 3339.",
    response_model=AuditEventList,
    responses=errors_doc(400, 401, 403, 404, 429, 503),
    openapi_extra={PERMISSION_EXTENSION: ADMIN_SCOPE, AUDIENCE_EXTENSION: "any"},
)
async def list_audit_events(
    request: Request,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size, 1-100.")] = 20,
    starting_after: Annotated[
        str | None, Query(max_length=64, description="An event id from the previous page.")
    ] = None,
    action: Annotated[str | None, Query(max_length=64, description="e.g. api_key.revoked")] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    actor_id: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[
        str | None, Query(max_length=64, json_schema_extra={"format": "date-time"})
    ] = None,
    until: Annotated[
        str | None, Query(max_length=64, json_schema_extra={"format": "date-time"})
    ] = None,
) -> Response:
    check_query(request, _PARAMS)
    if action is not None and action not in _ACTIONS:
        raise ValidationFailed(
            "The query string is invalid.",
            [FieldProblem("action", f"must be one of: {', '.join(_ACTIONS)}")],
        )
    where = AuditFilter(
        account_id=caller_of(request.scope).account_id,
        action=action,
        target_id=target_id,
        actor_id=actor_id,
        since=_instant("since", since),
        until=_instant("until", until),
    )
    page = await services.audit.list(
        services.storage, where, limit=limit, starting_after=starting_after
    )
    return json_response(200, event_list_out(page))
