"""``POST /v1/keys/verify`` (contract §7): for services that check keys
themselves. A plain ASGI endpoint on the hot path (no FastAPI machinery).

Every verification outcome is a ``200``; only a malformed request is an
error. A key of another account is ``INVALID`` exactly like an unknown one,
so the answer never tells whether a key exists elsewhere.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Receive, Scope, Send

from keystile.api.body import read_json, validate_model
from keystile.api.deps import Services, errors_doc
from keystile.errors import FieldProblem, ValidationFailed
from keystile.http.context import account_of
from keystile.keys.models import ApiKey
from keystile.keys.validation import unknown_scope
from keystile.keys.verifier import Outcome, Verification
from keystile.ratelimit.models import Admission
from keystile.usage.models import Outcome as Usage

PATH = "/v1/keys/verify"

# How a consumed verification is metered on the verified key (contract §11).
_METERED = {
    Outcome.VALID: Usage.ALLOWED,
    Outcome.RATE_LIMITED: Usage.RATE_LIMITED,
    Outcome.QUOTA_EXCEEDED: Usage.QUOTA_EXCEEDED,
    Outcome.INSUFFICIENT_PERMISSIONS: Usage.FORBIDDEN,
}


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    key: str = Field(max_length=512, description="The key to check (wbk_live_…).")
    permission: str | None = Field(
        None, max_length=128, description="A scope the key must hold (from the catalog)."
    )
    consume: bool = Field(
        True, description="Count this check against the key's rate limit and quota."
    )


class VerifyRateLimit(BaseModel):
    limit: int
    remaining: int
    reset: int = Field(description="Unix time (seconds) when the window resets.")


class VerifyQuota(BaseModel):
    limit: int
    remaining: int
    reset: int = Field(description="Unix time (seconds) when the period ends.")


class VerifyResult(BaseModel):
    valid: bool
    code: Literal[
        "VALID", "INVALID", "EXPIRED", "REVOKED", "DISABLED", "INSUFFICIENT_PERMISSIONS",
        "RATE_LIMITED", "QUOTA_EXCEEDED",
    ]  # fmt: skip
    key_id: str | None
    account_id: str | None
    permissions: list[str] | None
    metadata: dict[str, str] | None = Field(description="The key's metadata (contract §9).")
    rate_limit: VerifyRateLimit | None = Field(
        description="The key's rate limit after this check; null without one (unmetered) "
        "and for INVALID, EXPIRED, REVOKED and DISABLED."
    )
    quota: VerifyQuota | None = Field(
        description="The key's quota after this check; null without one, and for INVALID, "
        "EXPIRED, REVOKED and DISABLED."
    )


class VerifyEnvelope(BaseModel):
    data: VerifyResult


_INVALID = orjson.dumps(
    {
        "data": {
            "valid": False,
            "code": "INVALID",
            "key_id": None,
            "account_id": None,
            "permissions": None,
            "metadata": None,
            "rate_limit": None,
            "quota": None,
        }
    }
)


def _result(outcome: Outcome, key: ApiKey, admission: Admission | None = None) -> bytes:
    """The response body, rendered directly (it is the hot path); its shape
    is :class:`VerifyEnvelope`, which the tests check against the OpenAPI."""
    rate_limit = quota = None
    if admission is not None and admission.rate is not None:
        rate = admission.rate
        rate_limit = {"limit": rate.limit, "remaining": rate.remaining, "reset": rate.reset}
    if admission is not None and admission.quota is not None:
        used = admission.quota
        quota = {"limit": used.limit, "remaining": used.remaining, "reset": used.reset}
    return orjson.dumps(
        {
            "data": {
                "valid": outcome is Outcome.VALID,
                "code": outcome.value,
                "key_id": key.id,
                "account_id": key.account_id,
                "permissions": key.permissions,
                "metadata": key.metadata,
                "rate_limit": rate_limit,
                "quota": quota,
            }
        }
    )


class VerifyEndpoint:
    def __init__(self, services: Services) -> None:
        self._services = services
        self._catalog = services.settings.catalog

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("query_string"):
            raise ValidationFailed(
                "The query string is invalid.", [FieldProblem("query", "not accepted here")]
            )
        request = validate_model(VerifyRequest, await read_json(scope, receive))
        if request.permission is not None and request.permission not in self._catalog:
            raise ValidationFailed(
                "The request is invalid.",
                [FieldProblem("permission", unknown_scope(request.permission, self._catalog))],
            )
        body = await self._verify(request, account_of(scope))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _verify(self, request: VerifyRequest, account_id: str) -> bytes:
        services = self._services
        verification = await services.verifier.verify(request.key)
        key = verification.key
        if key is None or key.account_id != account_id:
            # Another account's key is not there for this caller: nothing
            # about it is counted, recorded or cached as used.
            services.metrics.verified(Outcome.INVALID.value)
            return _INVALID
        if verification.valid and key.account_suspended:
            verification = Verification(Outcome.DISABLED, key)  # contract §9
        services.metrics.verified(verification.outcome.value)
        if not verification.valid:
            return _result(verification.outcome, key)
        services.verifier.note_use(key)
        # The gateway's order (contract §3, §11): the rate limit, the quota,
        # then the permission, so a check answers what a request would get.
        limiter = services.ratelimiter
        admission = await (limiter.admit(key) if request.consume else limiter.peek(key))
        if admission.rate_limited:
            return self._metered(request, Outcome.RATE_LIMITED, key, admission)
        if admission.quota_exceeded:
            return self._metered(request, Outcome.QUOTA_EXCEEDED, key, admission)
        if request.permission is not None and request.permission not in key.permissions:
            return self._metered(request, Outcome.INSUFFICIENT_PERMISSIONS, key, admission)
        return self._metered(request, Outcome.VALID, key, admission)

    def _metered(
        self, request: VerifyRequest, outcome: Outcome, key: ApiKey, admission: Admission
    ) -> bytes:
        """The answer about a key of the caller's account that passed
        authentication; with ``consume`` it is metered on that key
        (contract §11). INVALID, EXPIRED, REVOKED and DISABLED never get here."""
        if request.consume:
            self._services.usage_meter.record(key, _METERED[outcome])
        return _result(outcome, key, admission)


def openapi_path() -> tuple[dict[str, Any], list[type[BaseModel]]]:
    """The OpenAPI path item of this endpoint, and the models it refers to."""
    responses: dict[str, Any] = {
        "200": {
            "description": "The outcome, whatever it is.",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/VerifyEnvelope"}}
            },
        }
    }
    for status, doc in errors_doc(400, 401, 403, 413, 415, 422, 429, 503).items():
        responses[str(status)] = {
            "description": doc["description"],
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}
            },
        }
    operation = {
        "tags": ["verification"],
        "summary": "Verify an API key",
        "description": "For services that check keys themselves. Needs verify:keys. Only keys "
        "of the caller's account can be verified; any other key is INVALID.",
        "operationId": "verify_key",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/VerifyRequest"}}
            },
        },
        "responses": responses,
    }
    return {"post": operation}, [VerifyRequest, VerifyEnvelope]
