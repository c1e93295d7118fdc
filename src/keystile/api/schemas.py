"""Wire schemas: the JSON shapes of requests and responses (and of the CLI's
``--json`` output, which is byte-identical). Converted explicitly from the
domain models, so nothing reaches the wire by accident."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from keystile.clock import rfc3339
from keystile.keys import tokens
from keystile.keys.models import ApiKey, KeyPage, Quota, RateLimitRule

Status = Literal["active", "revoked", "expired", "disabled"]
TierName = Literal["standard", "high", "unmetered"]


class RateLimitIn(BaseModel):
    """A key's own rate limit (contract §11); bounds are checked (and worded)
    by keystile.keys.validation, shared with the CLI."""

    model_config = ConfigDict(extra="forbid", strict=True)

    limit: int = Field(
        description="Requests per window, 1 to 10^9.",
        json_schema_extra={"minimum": 1, "maximum": 10**9},
    )
    window_seconds: int = Field(
        description="The window, 1 to 86,400 seconds.",
        json_schema_extra={"minimum": 1, "maximum": 86_400},
    )


class QuotaIn(BaseModel):
    """Requests per calendar period in UTC (contract §11)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    limit: int = Field(
        description="Requests per period, 1 to 10^12.",
        json_schema_extra={"minimum": 1, "maximum": 10**12},
    )
    period: Literal["day", "month"]


METADATA_DOC = (
    "Up to 50 string values, keys 1-40 characters (no '[' or ']'), values up to 500 "
    "characters (Stripe's rules); replaced whole by a PATCH, cleared with {} or null."
)


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
    rate_limit_tier: TierName | None = Field(
        None, description="standard (default), high, or unmetered (enterprise plan only)."
    )
    expires_at: str | None = Field(
        None,
        description="RFC 3339 timestamp with Z or an offset, in the future.",
        json_schema_extra={"format": "date-time"},
    )
    metadata: dict[str, str] | None = Field(None, description=METADATA_DOC)
    rate_limit: RateLimitIn | None = Field(
        None, description="The key's own rate limit, instead of its tier's."
    )
    quota: QuotaIn | None = Field(None, description="Requests allowed per UTC day or month.")


class UpdateApiKeyRequest(BaseModel):
    """Body of ``PATCH /v1/api-keys/{id}``: any of the fields, at least one.
    ``null`` clears a nullable field."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = None
    description: str | None = None
    metadata: dict[str, str] | None = Field(None, description=METADATA_DOC)
    expires_at: str | None = Field(
        None,
        description="RFC 3339 in the future, or null for never.",
        json_schema_extra={"format": "date-time"},
    )
    permissions: list[str] | None = Field(None, max_length=100)
    rate_limit_tier: TierName | None = None
    rate_limit: RateLimitIn | None = None
    quota: QuotaIn | None = None
    disabled: bool | None = Field(None, description="true suspends the key; false restores it.")

    def given(self) -> dict[str, object]:
        """The fields the client sent, as plain JSON values (null included)."""
        return {name: _plain(getattr(self, name)) for name in self.model_fields_set}


class RotateApiKeyRequest(BaseModel):
    """Body of ``POST /v1/api-keys/{id}/rotate`` (optional)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    grace_period_seconds: int = Field(
        0,
        ge=0,
        le=604_800,
        description="How long the old key keeps working, 0 (revoked at once) to 604,800.",
    )


def _plain(value: object) -> object:
    return value.model_dump() if isinstance(value, BaseModel) else value


class RateLimitOut(BaseModel):
    limit: int
    window_seconds: int


class QuotaOut(BaseModel):
    limit: int
    period: Literal["day", "month"]


class _KeyId(BaseModel):
    id: str = Field(examples=["key_01JD3ZK4Q8Y6W2N5T7V9X1B3C5"])


class _KeySecret(BaseModel):
    key: str = Field(description="The plaintext secret. Returned only in this response.")


class _KeyFields(BaseModel):
    prefix: str = Field(description="The key's type prefix: its first 8 characters.")
    name: str
    description: str | None
    permissions: list[str]
    rate_limit_tier: TierName
    expires_at: str | None = Field(json_schema_extra={"format": "date-time"})
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    status: Status
    revoked_at: str | None = Field(json_schema_extra={"format": "date-time"})
    last_used_at: str | None = Field(
        json_schema_extra={"format": "date-time"},
        description="Last successful authentication; written at most every few seconds.",
    )
    metadata: dict[str, str]
    disabled: bool
    replaced_by: str | None = Field(description="The key a rotation replaced this one with.")
    rate_limit: RateLimitOut | None = Field(description="The key's own rate limit, if set.")
    quota: QuotaOut | None


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
        metadata=dict(key.metadata),
        disabled=key.disabled,
        replaced_by=key.replaced_by,
        rate_limit=rate_limit_out(key.rate_limit),
        quota=quota_out(key.quota),
    )


def rate_limit_out(rule: RateLimitRule | None) -> RateLimitOut | None:
    return (
        None if rule is None else RateLimitOut(limit=rule.limit, window_seconds=rule.window_seconds)
    )


def quota_out(quota: Quota | None) -> QuotaOut | None:
    return None if quota is None else QuotaOut(limit=quota.limit, period=quota.period.value)


def created_key_out(key: ApiKey, secret: str, prefix: str, now: int) -> CreatedApiKeyEnvelope:
    fields = key_out(key, prefix, now).model_dump()
    return CreatedApiKeyEnvelope(data=CreatedApiKeyOut(key=secret, **fields))


def key_list_out(page: KeyPage, prefix: str, now: int) -> ApiKeyList:
    return ApiKeyList(data=[key_out(k, prefix, now) for k in page.keys], has_more=page.has_more)


def dump(model: BaseModel) -> bytes:
    """The compact JSON the API sends (and the CLI prints with ``--json``)."""
    return model.model_dump_json().encode()
