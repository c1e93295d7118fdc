"""Webhook endpoints and their delivery logs (contract §13), under the
vendor's ``admin:webhooks`` scope. Handlers parse, call one service method
and shape the response."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from keystile.api.body import read_json, validate_model
from keystile.api.deps import (
    ServicesDep,
    body_doc,
    check_query,
    errors_doc,
    json_response,
    request_transaction,
)
from keystile.api.pipeline import PERMISSION_EXTENSION
from keystile.api.webhook_schemas import (
    CreatedWebhookEndpointEnvelope,
    CreateWebhookEndpointRequest,
    DeletedWebhookEndpointEnvelope,
    DeliveryList,
    UpdateWebhookEndpointRequest,
    WebhookEndpointEnvelope,
    WebhookEndpointList,
    created_endpoint_out,
    deleted_endpoint_out,
    delivery_list_out,
    endpoint_list_out,
    endpoint_out,
)
from keystile.errors import FieldProblem, ValidationFailed
from keystile.http.context import account_of, origin_of
from keystile.keys.validation import check_description
from keystile.settings import WEBHOOKS_SCOPE
from keystile.webhooks.service import check_events

router = APIRouter(tags=["webhooks"])

_SCOPE = {PERMISSION_EXTENSION: WEBHOOKS_SCOPE}
_PAGE = frozenset({"limit", "starting_after"})

Limit = Annotated[int, Query(ge=1, le=100, description="Page size, 1-100.")]


def _check_description(description: str | None) -> None:
    problems = check_description(description)
    if problems:
        raise ValidationFailed("The request body is invalid.", problems)


@router.post(
    "/v1/webhook-endpoints",
    operation_id="create_webhook_endpoint",
    status_code=201,
    summary="Create a webhook endpoint",
    description="Returns the signing secret (whsec_…) exactly once, in this response.",
    response_model=CreatedWebhookEndpointEnvelope,
    responses=errors_doc(400, 401, 403, 404, 409, 413, 415, 422, 429, 503),
    openapi_extra={**_SCOPE, **body_doc("CreateWebhookEndpointRequest")},
)
async def create_webhook_endpoint(request: Request, services: ServicesDep) -> Response:
    check_query(request)
    body = validate_model(
        CreateWebhookEndpointRequest, await read_json(request.scope, request.receive)
    )
    events = check_events(body.events)
    _check_description(body.description)
    url = await services.webhooks.check_url(body.url)
    async with request_transaction(request, services) as uow:
        made = await services.webhooks.create(
            uow,
            account_of(request.scope),
            url=url,
            events=events,
            description=body.description,
            origin=origin_of(request.scope),
        )
    return json_response(201, created_endpoint_out(made.endpoint, made.secret))


@router.get(
    "/v1/webhook-endpoints",
    operation_id="list_webhook_endpoints",
    summary="List webhook endpoints",
    description="Newest first. Paginate with `starting_after` set to the last id of a page.",
    response_model=WebhookEndpointList,
    responses=errors_doc(400, 401, 403, 404, 429, 503),
    openapi_extra=_SCOPE,
)
async def list_webhook_endpoints(
    request: Request,
    services: ServicesDep,
    limit: Limit = 20,
    starting_after: Annotated[
        str | None, Query(max_length=64, description="An endpoint id from the previous page.")
    ] = None,
) -> Response:
    check_query(request, _PAGE)
    page = await services.webhooks.list(
        account_of(request.scope), limit=limit, starting_after=starting_after
    )
    return json_response(200, endpoint_list_out(page))


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}",
    operation_id="get_webhook_endpoint",
    summary="Retrieve a webhook endpoint",
    response_model=WebhookEndpointEnvelope,
    responses=errors_doc(400, 401, 403, 404, 429, 503),
    openapi_extra=_SCOPE,
)
async def get_webhook_endpoint(
    endpoint_id: str, request: Request, services: ServicesDep
) -> Response:
    check_query(request)
    endpoint = await services.webhooks.get(account_of(request.scope), endpoint_id)
    return json_response(200, endpoint_out(endpoint))


@router.patch(
    "/v1/webhook-endpoints/{endpoint_id}",
    operation_id="update_webhook_endpoint",
    summary="Update a webhook endpoint",
    description="Any of `url`, `events`, `description`, `disabled`; at least one.",
    response_model=WebhookEndpointEnvelope,
    responses=errors_doc(400, 401, 403, 404, 413, 415, 422, 429, 503),
    openapi_extra={**_SCOPE, **body_doc("UpdateWebhookEndpointRequest")},
)
async def update_webhook_endpoint(
    endpoint_id: str, request: Request, services: ServicesDep
) -> Response:
    check_query(request)
    body = validate_model(
        UpdateWebhookEndpointRequest, await read_json(request.scope, request.receive)
    )
    given = body.given()
    if not given:
        raise ValidationFailed(
            "The request body is invalid.",
            [
                FieldProblem(
                    "body", "must change at least one of url, events, description, disabled"
                )
            ],
        )
    changes: dict[str, Any] = {}
    for field in ("url", "events", "disabled"):
        if field in given and given[field] is None:
            raise ValidationFailed(
                "The request body is invalid.", [FieldProblem(field, "must not be null")]
            )
    if body.events is not None:
        changes["events"] = check_events(body.events)
    if "description" in given:
        _check_description(body.description)
        changes["description"] = body.description
    if body.disabled is not None:
        changes["disabled"] = body.disabled
    if body.url is not None:
        changes["url"] = await services.webhooks.check_url(body.url)
    async with request_transaction(request, services) as uow:
        endpoint = await services.webhooks.update(
            uow, account_of(request.scope), endpoint_id, changes, origin_of(request.scope)
        )
    return json_response(200, endpoint_out(endpoint))


@router.delete(
    "/v1/webhook-endpoints/{endpoint_id}",
    operation_id="delete_webhook_endpoint",
    summary="Delete a webhook endpoint",
    description="Deletes the endpoint, its pending deliveries and its delivery log.",
    response_model=DeletedWebhookEndpointEnvelope,
    responses=errors_doc(400, 401, 403, 404, 429, 503),
    openapi_extra=_SCOPE,
)
async def delete_webhook_endpoint(
    endpoint_id: str, request: Request, services: ServicesDep
) -> Response:
    check_query(request)
    async with request_transaction(request, services) as uow:
        endpoint = await services.webhooks.delete(
            uow, account_of(request.scope), endpoint_id, origin_of(request.scope)
        )
    return json_response(200, deleted_endpoint_out(endpoint))


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}/deliveries",
    operation_id="list_webhook_deliveries",
    summary="List an endpoint's deliveries",
    description="Newest first, cursor-paginated: each event sent (or being sent) to the "
    "endpoint, with its attempts, last status code, next attempt and state.",
    response_model=DeliveryList,
    responses=errors_doc(400, 401, 403, 404, 429, 503),
    openapi_extra=_SCOPE,
)
async def list_webhook_deliveries(
    endpoint_id: str,
    request: Request,
    services: ServicesDep,
    limit: Limit = 20,
    starting_after: Annotated[
        str | None, Query(max_length=64, description="A delivery id from the previous page.")
    ] = None,
) -> Response:
    check_query(request, _PAGE)
    page = await services.webhooks.deliveries(
        account_of(request.scope), endpoint_id, limit=limit, starting_after=starting_after
    )
    return json_response(200, delivery_list_out(page))
