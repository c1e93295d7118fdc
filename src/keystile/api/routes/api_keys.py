"""The api-keys resource (contract §4). Handlers parse, call one service
method and shape the response; the pipeline has already authenticated the
caller and checked ``admin:api_keys``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from keystile.api.body import read_json, validate_model
from keystile.api.deps import (
    ServicesDep,
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
    created_key_out,
    key_list_out,
    key_out,
)
from keystile.http.context import caller_of
from keystile.keys.models import KeyStatus
from keystile.keys.validation import check_new_key
from keystile.settings import ADMIN_SCOPE

router = APIRouter(tags=["api-keys"])

_ADMIN = {PERMISSION_EXTENSION: ADMIN_SCOPE}
_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/CreateApiKeyRequest"}}
        },
    }
}
_LIST_PARAMS = frozenset({"limit", "starting_after", "status"})


@router.post(
    "/v1/api-keys",
    operation_id="create_api_key",
    status_code=201,
    summary="Create an API key",
    description="Returns the plaintext secret exactly once, in this response "
    "(and in an idempotent replay of this request within 24 hours).",
    response_model=CreatedApiKeyEnvelope,
    responses=errors_doc(400, 401, 403, 409, 413, 415, 422, 429, 503),
    openapi_extra={**_ADMIN, **_CREATE_BODY},
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
    )
    caller = caller_of(request.scope)
    async with request_transaction(request, services) as uow:
        issued = await services.keys.issue(uow, caller.account_id, new, caller)
    prefix = services.settings.key_prefix
    return json_response(
        201, created_key_out(issued.key, issued.secret, prefix, services.keys.now())
    )


@router.get(
    "/v1/api-keys",
    operation_id="list_api_keys",
    summary="List the account's API keys",
    description="Newest first. Paginate with `starting_after` set to the last id of a page.",
    response_model=ApiKeyList,
    responses=errors_doc(400, 401, 403, 429, 503),
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
        Literal["active", "revoked", "expired"] | None,
        Query(description="Only keys in this state."),
    ] = None,
) -> Response:
    check_query(request, _LIST_PARAMS)
    caller = caller_of(request.scope)
    page = await services.keys.list(
        caller.account_id,
        limit=limit,
        status=KeyStatus(status) if status else None,
        starting_after=starting_after,
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
    key = await services.keys.get(caller_of(request.scope).account_id, key_id)
    return json_response(
        200, ApiKeyEnvelope(data=key_out(key, services.settings.key_prefix, services.keys.now()))
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
    key = await services.keys.revoke(caller_of(request.scope).account_id, key_id)
    return json_response(
        200, ApiKeyEnvelope(data=key_out(key, services.settings.key_prefix, services.keys.now()))
    )
