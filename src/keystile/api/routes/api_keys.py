"""The api-keys resource (contract §4, §10). Handlers parse, call one service
method and shape the response; the pipeline has already authenticated the
caller (an account key, or an operator key acting for an account) and
checked ``admin:api_keys``."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from keystile.api.body import read_json, read_optional_json, validate_model
from keystile.api.deps import (
    ServicesDep,
    body_doc,
    check_query,
    errors_doc,
    json_response,
    request_transaction,
)
from keystile.api.pipeline import PERMISSION_EXTENSION
from keystile.api.schemas import (
    ApiKeyEnvelope,
    ApiKeyList,
    CreateApiKeyRequest,
    CreatedApiKeyEnvelope,
    RotateApiKeyRequest,
    UpdateApiKeyRequest,
    created_key_out,
    key_list_out,
    key_out,
)
from keystile.errors import ValidationFailed
from keystile.http.context import account_of, caller_of, origin_of
from keystile.keys.models import ApiKey, KeyStatus
from keystile.keys.validation import check_key_patch, check_metadata, check_new_key, name_key
from keystile.settings import ADMIN_SCOPE
from keystile.storage.base import KeyFilter

router = APIRouter(tags=["api-keys"])

_ADMIN = {PERMISSION_EXTENSION: ADMIN_SCOPE}


def _body(model: str, required: bool = True) -> dict[str, object]:
    schema = {"$ref": f"#/components/schemas/{model}"}
    return {
        "requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}
    }


_LIST_PARAMS = frozenset({"limit", "starting_after", "status", "name"})
_METADATA_PARAM = re.compile(r"metadata\[(.{1,40})\]")


def _key_response(services: ServicesDep, key: ApiKey, status: int = 200) -> Response:
    prefix = services.settings.key_prefix
    return json_response(status, ApiKeyEnvelope(data=key_out(key, prefix, services.keys.now())))


@router.post(
    "/v1/api-keys",
    operation_id="create_api_key",
    status_code=201,
    summary="Create an API key",
    description="Returns the plaintext secret exactly once, in this response "
    "(and in an idempotent replay of this request within 24 hours).",
    response_model=CreatedApiKeyEnvelope,
    responses=errors_doc(400, 401, 403, 404, 409, 413, 415, 422, 429, 503),
    openapi_extra={**_ADMIN, **body_doc("CreateApiKeyRequest")},
)
async def create_api_key(request: Request, services: ServicesDep) -> Response:
    check_query(request)
    body = validate_model(CreateApiKeyRequest, await read_json(request.scope, request.receive))
    new = check_new_key(
        name=body.name,
        permissions=body.permissions,
        description=body.description,
        rate_limit_tier=body.rate_limit_tier,
        expires_at=body.expires_at,
        catalog=services.settings.catalog,
        now=services.keys.now(),
        metadata=body.metadata,
        rate_limit=body.rate_limit.model_dump() if body.rate_limit else None,
        quota=body.quota.model_dump() if body.quota else None,
    )
    caller = caller_of(request.scope)
    async with request_transaction(request, services) as uow:
        issued = await services.keys.issue(
            uow, account_of(request.scope), new, caller.bounding_key, origin_of(request.scope)
        )
    prefix = services.settings.key_prefix
    return json_response(
        201, created_key_out(issued.key, issued.secret, prefix, services.keys.now())
    )


def _list_filter(request: Request, name: str | None) -> KeyFilter:
    """``name`` and every ``metadata[KEY]=VALUE`` of the query string."""
    pairs: dict[str, str] = {}
    for param, value in request.query_params.multi_items():
        match = _METADATA_PARAM.fullmatch(param)
        if match is not None:
            pairs[match.group(1)] = value
    _, problems = check_metadata(pairs, field="metadata")
    if problems:
        raise ValidationFailed("The query string is invalid.", problems)
    return KeyFilter(name_key=name_key(name.strip()) if name is not None else None, metadata=pairs)


@router.get(
    "/v1/api-keys",
    operation_id="list_api_keys",
    summary="List the account's API keys",
    description="Newest first. Paginate with `starting_after` set to the last id of a page. "
    "Filter by `status`, `name` (exact, compared like uniqueness: NFC and case-folded) and "
    "`metadata[KEY]=VALUE` (each pair must match; repeat for several keys).",
    response_model=ApiKeyList,
    responses=errors_doc(400, 401, 403, 404, 429, 503),
    openapi_extra=_ADMIN,
)
async def list_api_keys(
    request: Request,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size, 1-100.")] = 20,
    starting_after: Annotated[
        str | None, Query(max_length=64, description="A key id from the previous page.")
    ] = None,
    status: Annotated[
        Literal["active", "revoked", "expired", "disabled"] | None,
        Query(description="Only keys in this state."),
    ] = None,
    name: Annotated[
        str | None, Query(max_length=1000, description="Only keys of this name.")
    ] = None,
) -> Response:
    metadata_params = {
        param for param, _ in request.query_params.multi_items()
        if _METADATA_PARAM.fullmatch(param)
    }  # fmt: skip
    check_query(request, _LIST_PARAMS | metadata_params)
    page = await services.keys.list(
        account_of(request.scope),
        limit=limit,
        status=KeyStatus(status) if status else None,
        starting_after=starting_after,
        where=_list_filter(request, name),
    )
    return json_response(200, key_list_out(page, services.settings.key_prefix, services.keys.now()))


@router.get(
    "/v1/api-keys/{key_id}",
    operation_id="get_api_key",
    summary="Retrieve an API key",
    response_model=ApiKeyEnvelope,
    responses=errors_doc(400, 401, 403, 404, 429, 503),
    openapi_extra=_ADMIN,
)
async def get_api_key(key_id: str, request: Request, services: ServicesDep) -> Response:
    check_query(request)
    return _key_response(services, await services.keys.get(account_of(request.scope), key_id))


@router.patch(
    "/v1/api-keys/{key_id}",
    operation_id="update_api_key",
    summary="Update an API key",
    description="Any of the body's fields, at least one. A change to permissions, tier, "
    "limits, expiry or `disabled` takes effect from the key's very next request, in every "
    "worker and instance. A revoked or expired key is 409 key_inactive.",
    response_model=ApiKeyEnvelope,
    responses=errors_doc(400, 401, 403, 404, 409, 413, 415, 422, 429, 503),
    openapi_extra={**_ADMIN, **body_doc("UpdateApiKeyRequest")},
)
async def update_api_key(key_id: str, request: Request, services: ServicesDep) -> Response:
    check_query(request)
    body = validate_model(UpdateApiKeyRequest, await read_json(request.scope, request.receive))
    changes = check_key_patch(
        body.given(), catalog=services.settings.catalog, now=services.keys.now()
    )
    caller = caller_of(request.scope)
    async with request_transaction(request, services) as uow:
        key = await services.keys.update(
            uow, account_of(request.scope), key_id, changes, caller.bounding_key,
            origin_of(request.scope),
        )  # fmt: skip
    return _key_response(services, key)


@router.post(
    "/v1/api-keys/{key_id}/rotate",
    operation_id="rotate_api_key",
    status_code=201,
    summary="Rotate an API key",
    description="A new key with a new secret (shown once) copies the old one's fields; the "
    "old key keeps working for `grace_period_seconds` (0: revoked at once), with one rate "
    "limit and quota shared by both. The body is optional.",
    response_model=CreatedApiKeyEnvelope,
    responses=errors_doc(400, 401, 403, 404, 409, 413, 415, 422, 429, 503),
    openapi_extra={**_ADMIN, **body_doc("RotateApiKeyRequest", required=False)},
)
async def rotate_api_key(key_id: str, request: Request, services: ServicesDep) -> Response:
    check_query(request)
    document = await read_optional_json(request.scope, request.receive)
    body = validate_model(RotateApiKeyRequest, document if document is not None else {})
    caller = caller_of(request.scope)
    async with request_transaction(request, services) as uow:
        issued = await services.keys.rotate(
            uow, account_of(request.scope), key_id, body.grace_period_seconds,
            caller.bounding_key, origin_of(request.scope),
        )  # fmt: skip
    prefix = services.settings.key_prefix
    return json_response(
        201, created_key_out(issued.key, issued.secret, prefix, services.keys.now())
    )


@router.delete(
    "/v1/api-keys/{key_id}",
    operation_id="revoke_api_key",
    summary="Revoke an API key",
    description="Idempotent: revoking a revoked key returns it unchanged. "
    "The key is refused (401) from its very next request on.",
    response_model=ApiKeyEnvelope,
    responses=errors_doc(400, 401, 403, 404, 429, 503),
    openapi_extra=_ADMIN,
)
async def revoke_api_key(key_id: str, request: Request, services: ServicesDep) -> Response:
    check_query(request)
    async with request_transaction(request, services) as uow:
        key = await services.keys.revoke(
            uow, account_of(request.scope), key_id, origin_of(request.scope)
        )
    return _key_response(services, key)
