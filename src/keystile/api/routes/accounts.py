"""The operator's accounts (contract §9): only operator keys reach these
(the pipeline answers 403 to an account key)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from keystile.accounts.service import check_account_patch
from keystile.api.account_schemas import (
    AccountEnvelope,
    AccountList,
    CreateAccountRequest,
    UpdateAccountRequest,
    account_list_out,
    account_out,
)
from keystile.api.body import read_json, validate_model
from keystile.api.deps import (
    ServicesDep,
    body_doc,
    check_query,
    errors_doc,
    json_response,
    request_transaction,
)
from keystile.api.pipeline import AUDIENCE_EXTENSION
from keystile.http.context import origin_of
from keystile.keys.models import AccountStatus, Plan

router = APIRouter(tags=["accounts"])

_OPERATOR = {AUDIENCE_EXTENSION: "operator"}
_LIST_PARAMS = frozenset({"limit", "starting_after", "status"})


@router.post(
    "/v1/accounts",
    operation_id="create_account",
    status_code=201,
    summary="Create an account (operator keys only)",
    response_model=AccountEnvelope,
    responses=errors_doc(400, 401, 403, 413, 415, 422, 503),
    openapi_extra={**_OPERATOR, **body_doc("CreateAccountRequest")},
)
async def create_account(request: Request, services: ServicesDep) -> Response:
    check_query(request)
    body = validate_model(CreateAccountRequest, await read_json(request.scope, request.receive))
    async with request_transaction(request, services) as uow:
        account = await services.accounts.create(
            body.name, Plan(body.plan), body.metadata, origin_of(request.scope), uow=uow
        )
    return json_response(201, account_out(account))


@router.get(
    "/v1/accounts",
    operation_id="list_accounts",
    summary="List accounts (operator keys only)",
    description="Newest first, cursor-paginated like keys; filter by `status`.",
    response_model=AccountList,
    responses=errors_doc(400, 401, 403, 503),
    openapi_extra=_OPERATOR,
)
async def list_accounts(
    request: Request,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size, 1-100.")] = 20,
    starting_after: Annotated[
        str | None, Query(max_length=64, description="An account id from the previous page.")
    ] = None,
    status: Annotated[
        Literal["active", "suspended"] | None, Query(description="Only accounts in this state.")
    ] = None,
) -> Response:
    check_query(request, _LIST_PARAMS)
    page = await services.accounts.list(
        limit=limit,
        status=AccountStatus(status) if status else None,
        starting_after=starting_after,
    )
    return json_response(200, account_list_out(page))


@router.get(
    "/v1/accounts/{account_id}",
    operation_id="get_account",
    summary="Retrieve an account (operator keys only)",
    response_model=AccountEnvelope,
    responses=errors_doc(400, 401, 403, 404, 503),
    openapi_extra=_OPERATOR,
)
async def get_account(account_id: str, request: Request, services: ServicesDep) -> Response:
    check_query(request)
    return json_response(200, account_out(await services.accounts.get(account_id)))


@router.patch(
    "/v1/accounts/{account_id}",
    operation_id="update_account",
    summary="Update an account (operator keys only)",
    description="Any of name, plan, metadata, status. `suspended` refuses every key of the "
    "account (403 account_suspended) from its next request on, in every worker and instance; "
    "`active` restores them. enterprise → standard with active unmetered keys is 409 "
    "plan_conflict.",
    response_model=AccountEnvelope,
    responses=errors_doc(400, 401, 403, 404, 409, 413, 415, 422, 503),
    openapi_extra={**_OPERATOR, **body_doc("UpdateAccountRequest")},
)
async def update_account(account_id: str, request: Request, services: ServicesDep) -> Response:
    check_query(request)
    body = validate_model(UpdateAccountRequest, await read_json(request.scope, request.receive))
    changes = check_account_patch(body.given())
    async with request_transaction(request, services) as uow:
        account = await services.accounts.update(uow, account_id, changes, origin_of(request.scope))
    return json_response(200, account_out(account))
