"""Usage (contract §11): a key's, or its account's, metered requests per
hour or day. The pipeline has authenticated the caller (an account key, or
an operator key acting for an account) and checked ``admin:api_keys``; the
range rules are the domain's (keystile.usage.service)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from keystile.api.deps import ServicesDep, check_query, errors_doc
from keystile.api.pipeline import PERMISSION_EXTENSION
from keystile.api.usage_schemas import KeyUsageList, UsageList, usage_body
from keystile.clock import to_micros
from keystile.errors import FieldProblem, ValidationFailed
from keystile.http.context import account_of
from keystile.keys.validation import parse_timestamp
from keystile.settings import ADMIN_SCOPE
from keystile.usage.models import Granularity
from keystile.usage.service import UsageRange

router = APIRouter(tags=["usage"])

_RANGE_PARAMS = frozenset({"granularity", "start", "end"})
_RANGE_DOC = (
    "Buckets of `[start, end)` in UTC, oldest first, every bucket present (zero-filled). "
    "`start` is floored to its bucket and `end` raised to the next bucket boundary. Defaults: "
    "the last 24 hours (hour) or 30 days (day), ending with the current bucket. At most 31 "
    "days of hours or 400 days of days. Hours older than KEYSTILE_USAGE_HOURLY_RETENTION_DAYS "
    "exist only as daily totals: such an hourly range is a 400 (ask granularity=day)."
)

GranularityParam = Annotated[
    Literal["hour", "day"], Query(description="Bucket size: hour (default) or day.")
]
InstantParam = Annotated[
    str | None,
    Query(
        max_length=64,
        description="RFC 3339 with Z or an offset.",
        json_schema_extra={"format": "date-time"},
    ),
]


def _micros(field: str, raw: str | None) -> int | None:
    if raw is None:
        return None
    moment = parse_timestamp(raw)
    if moment is None:
        raise ValidationFailed(
            "The query string is invalid.",
            [FieldProblem(field, "must be an RFC 3339 timestamp with a Z or an offset")],
        )
    return to_micros(moment)


def _range(
    services: ServicesDep, granularity: str, start: str | None, end: str | None
) -> UsageRange:
    return services.usage_service.range(
        Granularity(granularity), _micros("start", start), _micros("end", end)
    )


def _json(body: bytes) -> Response:
    return Response(content=body, status_code=200, media_type="application/json")


@router.get(
    "/v1/api-keys/{key_id}/usage",
    operation_id="get_api_key_usage",
    summary="A key's usage",
    description="The key's metered requests per bucket, by outcome. " + _RANGE_DOC,
    response_model=UsageList,
    responses=errors_doc(400, 401, 403, 404, 429, 503),
    openapi_extra={PERMISSION_EXTENSION: ADMIN_SCOPE},
)
async def get_api_key_usage(
    key_id: str,
    request: Request,
    services: ServicesDep,
    granularity: GranularityParam = "hour",
    start: InstantParam = None,
    end: InstantParam = None,
) -> Response:
    check_query(request, _RANGE_PARAMS)
    span = _range(services, granularity, start, end)
    found = await services.usage_service.of_key(account_of(request.scope), key_id, span)
    return _json(usage_body(found))


@router.get(
    "/v1/usage",
    operation_id="get_usage",
    summary="The account's usage",
    description="The account's metered requests per bucket, by outcome: the totals of all "
    "its keys, or with `group_by=key` one entry per bucket for each key that has any usage "
    "in the range (keys in id order within a bucket; at most 100,000 entries). " + _RANGE_DOC,
    response_model=UsageList | KeyUsageList,
    responses=errors_doc(400, 401, 403, 404, 429, 503),
    openapi_extra={PERMISSION_EXTENSION: ADMIN_SCOPE},
)
async def get_usage(
    request: Request,
    services: ServicesDep,
    granularity: GranularityParam = "hour",
    start: InstantParam = None,
    end: InstantParam = None,
    group_by: Annotated[
        Literal["key"] | None, Query(description="key: one entry per key and bucket.")
    ] = None,
) -> Response:
    check_query(request, _RANGE_PARAMS | {"group_by"})
    span = _range(services, granularity, start, end)
    by_key = group_by == "key"
    found = await services.usage_service.of_account(account_of(request.scope), span, by_key=by_key)
    return _json(usage_body(found, with_key=by_key))
