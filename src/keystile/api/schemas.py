"""Wire schemas: the JSON shapes of requests and responses (and of the CLI's
``--json`` output, which is byte-identical). Converted explicitly from the
domain models, so nothing reaches the wire by accident."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from keystile.clock import rfc3339
from keystile.keys import tokens
from keystile.keys.models import Account, ApiKey, KeyPage


class CreateApiKeyRequest(BaseModel):
    """Body of ``POST /v1/api-keys``. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # Lengths of name and permissions are the domain's rules (keys.validation),
    # worded there once for the API and the CLI alike.
    name: str = Field(
        description="Human-readable key name, 1-120 characters after trimming; "
        "unique among the account's active keys (compared case-insensitively).",
    )
    permissions: list[str] = Field(
        description="Scopes from the catalog; at least one, none the caller lacks.",
        max_length=100,
    )
    description: str | None = Field(
        None, description="What the key is for, at most 1,000 characters.", max_length=1000
    )
    rate_limit_tier: Literal["standard", "high", "unmetered"] | None = Field(
        None, description="standard (default), high, or unmetered (enterprise plan only)."
    )
    expires_at: str | None = Field(
        None,
        description="RFC 3339 timestamp with Z or an offset, in the future.",
        json_schema_extra={"format": "date-time"},
    )


class _KeyId(BaseModel):
    id: str = Field(examples=["key_01JD3ZK4Q8Y6W2N5T7V9X1B3C5"])


class _KeySecret(BaseModel):
    key: str = Field(description="The plaintext secret. Returned only in this response.")


class _KeyFields(BaseModel):
    prefix: str = Field(description="The key's type prefix: its first 8 characters.")
    name: str
    description: str | None
    permissions: list[str]
    rate_limit_tier: Literal["standard", "high", "unmetered"]
    expires_at: str | None = Field(json_schema_extra={"format": "date-time"})
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    status: Literal["active", "revoked", "expired"]
    revoked_at: str | None = Field(json_schema_extra={"format": "date-time"})
    last_used_at: str | None = Field(
        json_schema_extra={"format": "date-time"},
        description="Last successful authentication; written at most every few seconds.",
    )


# Fields are ordered by the bases in reverse: id, (key,) prefix, name, … as
# the vendor page shows them.
class ApiKeyOut(_KeyFields, _KeyId):
    """A key as every response but its creation shows it: never the secret."""


class CreatedApiKeyOut(_KeyFields, _KeySecret, _KeyId):
    """A key in the 201 of its creation (and its replay): with the secret."""


class ApiKeyEnvelope(BaseModel):
    data: ApiKeyOut


class CreatedApiKeyEnvelope(BaseModel):
    data: CreatedApiKeyOut


class ApiKeyList(BaseModel):
    data: list[ApiKeyOut]
    has_more: bool


class AccountOut(BaseModel):
    id: str
    name: str
    plan: Literal["standard", "enterprise"]
    created_at: str = Field(json_schema_extra={"format": "date-time"})


class AccountEnvelope(BaseModel):
    data: AccountOut


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorInfo(BaseModel):
    code: str = Field(examples=["validation_error"])
    message: str
    request_id: str
    details: list[ErrorDetail] | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorInfo


class Health(BaseModel):
    status: Literal["ok", "ready"]


def key_out(key: ApiKey, prefix: str, now: int) -> ApiKeyOut:
    return ApiKeyOut(
        id=key.id,
        prefix=tokens.type_prefix(prefix),
        name=key.name,
        description=key.description,
        permissions=list(key.permissions),
        rate_limit_tier=key.rate_limit_tier.value,
        expires_at=rfc3339(key.expires_at),
        created_at=rfc3339(key.created_at) or "",
        status=key.status(now).value,
        revoked_at=rfc3339(key.revoked_at),
        last_used_at=rfc3339(key.last_used_at),
    )


def created_key_out(key: ApiKey, secret: str, prefix: str, now: int) -> CreatedApiKeyEnvelope:
    fields = key_out(key, prefix, now).model_dump()
    return CreatedApiKeyEnvelope(data=CreatedApiKeyOut(key=secret, **fields))


def key_list_out(page: KeyPage, prefix: str, now: int) -> ApiKeyList:
    return ApiKeyList(data=[key_out(k, prefix, now) for k in page.keys], has_more=page.has_more)


def account_out(account: Account) -> AccountEnvelope:
    return AccountEnvelope(
        data=AccountOut(
            id=account.id,
            name=account.name,
            plan=account.plan.value,
            created_at=rfc3339(account.created_at) or "",
        )
    )


def dump(model: BaseModel) -> bytes:
    """The compact JSON the API sends (and the CLI prints with ``--json``)."""
    return model.model_dump_json().encode()
