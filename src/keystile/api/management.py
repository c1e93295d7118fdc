"""The FastAPI application of the management API and its OpenAPI document."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from keystile import __version__, errors
from keystile.api import verify
from keystile.api.account_schemas import CreateAccountRequest, UpdateAccountRequest
from keystile.api.deps import Services, error_response, errors_doc
from keystile.api.leak_schemas import ReportedTokenIn
from keystile.api.pipeline import AUDIENCE_EXTENSION, PERMISSION_EXTENSION
from keystile.api.routes import accounts, api_keys, audit, ops, secret_scanning, usage, webhooks
from keystile.api.schemas import (
    CreateApiKeyRequest,
    ErrorEnvelope,
    RotateApiKeyRequest,
    UpdateApiKeyRequest,
)
from keystile.api.webhook_schemas import (
    CreateWebhookEndpointRequest,
    UpdateWebhookEndpointRequest,
)
from keystile.api.wording import problems
from keystile.errors import ValidationFailed
from keystile.gateway import forward_auth
from keystile.storage.base import StorageUnavailable

_REQUEST_ID_HEADER = {
    "X-Request-ID": {
        "description": "The request id: the client's own when it is 1-128 characters "
        "of [A-Za-z0-9._:-], else a generated req_….",
        "schema": {"type": "string"},
    }
}
_RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": {
        "description": "Requests allowed per window for the key's tier.",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Remaining": {
        "description": "Requests left in the current window.",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Reset": {
        "description": "Unix time (seconds) when the window resets.",
        "schema": {"type": "integer"},
    },
}


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = problems(exc.errors(), skip=("query", "path", "body", "header"))
    return error_response(request, ValidationFailed("The request is invalid.", details))


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        return error_response(request, errors.MethodNotAllowed([]))
    return error_response(request, errors.NotFound())


async def _on_known(request: Request, exc: Exception) -> Response:
    return error_response(request, exc)


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title="keystile",
        version=__version__,
        description="Issue, verify, meter and revoke API keys. Every error has the "
        'body `{"error": {"code", "message", "request_id"}}`.',
        routes=app.routes,
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    verify_item, verify_models = verify.openapi_path()
    schema["paths"][verify.PATH] = verify_item
    schema["paths"][forward_auth.AUTH_PATH] = _forward_auth_item()
    models: list[type[BaseModel]] = [
        CreateApiKeyRequest,
        UpdateApiKeyRequest,
        RotateApiKeyRequest,
        CreateAccountRequest,
        UpdateAccountRequest,
        ErrorEnvelope,
        ReportedTokenIn,
        CreateWebhookEndpointRequest,
        UpdateWebhookEndpointRequest,
        *verify_models,
    ]
    for model in models:
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(model_schema.pop("$defs", {}))
        schemas[model.__name__] = model_schema
    # This deployment's scope catalog, so clients (and fuzzers) know the values.
    catalog = list(app.state.services.settings.scope_list)
    schemas["CreateApiKeyRequest"]["properties"]["permissions"]["items"] = {
        "type": "string",
        "enum": catalog,
    }
    schemas["VerifyRequest"]["properties"]["permission"]["anyOf"][0]["enum"] = catalog
    # Where key ids come from: the 201 of a create.
    created = schema["paths"]["/v1/api-keys"]["post"]["responses"]["201"]
    created["links"] = {
        name: {"operationId": operation, "parameters": {"key_id": "$response.body#/data/id"}}
        for name, operation in (("GetApiKey", "get_api_key"), ("RevokeApiKey", "revoke_api_key"))
    }
    components["securitySchemes"] = {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": "An account's API key (wbk_live_…), or an operator key (wbk_root_…) "
            "with a Keystile-Account header on account endpoints.",
        }
    }
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)  # FastAPI's 422 shape: keystile answers 400 validation_error
    for path_item in schema["paths"].values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            fastapi_422 = responses.get("422", {}).get("content", {}).get("application/json", {})
            if "HTTPValidationError" in str(fastapi_422.get("schema", "")):
                del responses["422"]
            for response in responses.values():
                response.setdefault("headers", {}).update(_REQUEST_ID_HEADER)
            guarded = PERMISSION_EXTENSION in operation or AUDIENCE_EXTENSION in operation
            # /v1/auth declares no security: a refusal is its answer, not an
            # error of the caller (the proxy), whose headers decide the outcome.
            if guarded or operation.get("operationId") == "verify_key":
                operation["security"] = [{"bearerAuth": []}]
                if operation.get(AUDIENCE_EXTENSION) == "operator":
                    continue  # operator keys are never rate limited
                for status, response in operation["responses"].items():
                    if status not in ("401",):
                        response["headers"].update(_RATE_LIMIT_HEADERS)
    app.openapi_schema = schema
    return schema


def create_management_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="keystile",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.services = services
    # Routes are added to the app itself, not through include_router, so that
    # app.router.routes lists every APIRoute: the pipeline routes (and checks
    # permissions) from that list before FastAPI sees the request.
    routers = (api_keys, accounts, audit, usage, webhooks, secret_scanning, ops)
    for router in (module.router for module in routers):
        app.router.routes.extend(router.routes)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(errors.KeystileError, _on_known)
    app.add_exception_handler(StorageUnavailable, _on_known)
    # Unexpected failures: answer with the envelope; the pipeline logs the
    # traceback once (Starlette re-raises after sending this response).
    app.add_exception_handler(Exception, _on_known)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _forward_auth_item() -> dict[str, Any]:
    """The OpenAPI path item of ``/v1/auth`` (contract §15): every method,
    answered alike (a proxy may ask with the original request's method)."""

    def header(name: str, description: str) -> dict[str, Any]:
        return {"name": name, "in": "header", "required": False, "description": description,
                "schema": {"type": "string", "maxLength": 4096}}  # fmt: skip

    envelope = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    responses: dict[str, Any] = {
        "200": {
            "description": "Allowed: an empty body, the caller's identity in X-Keystile-Key-Id, "
            "X-Keystile-Account-Id and X-Keystile-Scopes, and the rate-limit and quota headers."
        }
    }
    for status, doc in errors_doc(400, 401, 403, 404, 405, 429, 503).items():
        responses[str(status)] = {"description": doc["description"], "content": envelope}
    operation = {
        "tags": ["forward-auth"],
        "summary": "Forward authentication for a proxy",
        "description": "For nginx auth_request, Traefik ForwardAuth, Caddy forward_auth and "
        "Envoy ext_authz: any method. The original request's method and URI come in "
        "X-Forwarded-Method and X-Forwarded-Uri (or X-Original-Method and X-Original-URI); "
        "it is checked against the routes file as the gateway checks it. With "
        "?proxy=nginx every refusal but 401 is a 403 naming its code in X-Keystile-Error.",
        "operationId": "forward_auth",  # GET; the other methods get a suffix
        "parameters": [
            header("X-Forwarded-Method", "The original request's method."),
            header("X-Forwarded-Uri", "The original request's URI (path and query)."),
            header("X-Original-Method", "The same, as nginx configurations often name it."),
            header("X-Original-URI", "The same, as nginx configurations often name it."),
            {
                "name": "proxy",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": sorted(forward_auth.PROXY_MODES)},
            },
        ],
        "responses": responses,
    }
    return {
        method: {
            **operation,
            "operationId": "forward_auth" + ("" if method == "get" else f"_{method}"),
        }
        for method in (m.lower() for m in forward_auth.ALLOWED_METHODS)
    }
