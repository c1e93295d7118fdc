"""Typed results: frozen, slotted dataclasses parsed from keystile's JSON.

Dataclasses rather than pydantic models keep the distribution's only
dependency httpx (users install it beside any pydantic version, or none).
Parsing is by hand and lenient in one direction only: fields keystile adds
later are ignored, fields documented today are required, so a response that
lost one fails loudly (``KeyError``) instead of yielding a half-filled
object. Timestamps are timezone-aware ``datetime`` in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar


def timestamp(value: Any) -> datetime:
    """An RFC 3339 timestamp as keystile writes it (``…Z``)."""
    return datetime.fromisoformat(str(value))


def optional_timestamp(value: Any) -> datetime | None:
    return None if value is None else timestamp(value)


@dataclass(frozen=True, slots=True)
class RateLimitRule:
    """A key's own rate limit (contract §11): ``limit`` requests per
    ``window_seconds``."""

    limit: int
    window_seconds: int

    @classmethod
    def parse(cls, raw: Any) -> RateLimitRule | None:
        return None if raw is None else cls(int(raw["limit"]), int(raw["window_seconds"]))


@dataclass(frozen=True, slots=True)
class Quota:
    """Requests allowed per calendar ``period`` (``"day"`` or ``"month"``, UTC)."""

    limit: int
    period: str

    @classmethod
    def parse(cls, raw: Any) -> Quota | None:
        return None if raw is None else cls(int(raw["limit"]), str(raw["period"]))


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as keystile shows it (docs/api.md, "The key object"); never the secret."""

    id: str
    prefix: str
    name: str
    description: str | None
    permissions: tuple[str, ...]
    rate_limit_tier: str
    expires_at: datetime | None
    created_at: datetime
    status: str  # active | disabled | revoked | expired
    revoked_at: datetime | None
    last_used_at: datetime | None
    metadata: dict[str, str]
    disabled: bool
    replaced_by: str | None
    rate_limit: RateLimitRule | None
    quota: Quota | None

    @classmethod
    def parse(cls, raw: Any) -> ApiKey:
        return cls(**_key_fields(raw))


@dataclass(frozen=True, slots=True)
class CreatedApiKey(ApiKey):
    """The answer of a creation or a rotation: the key with its plaintext
    secret ``key``, shown this once (left out of ``repr``)."""

    key: str = field(repr=False)

    @classmethod
    def parse(cls, raw: Any) -> CreatedApiKey:
        return cls(**_key_fields(raw), key=str(raw["key"]))


def _key_fields(raw: Any) -> dict[str, Any]:
    return {
        "id": str(raw["id"]),
        "prefix": str(raw["prefix"]),
        "name": str(raw["name"]),
        "description": raw["description"],
        "permissions": tuple(raw["permissions"]),
        "rate_limit_tier": str(raw["rate_limit_tier"]),
        "expires_at": optional_timestamp(raw["expires_at"]),
        "created_at": timestamp(raw["created_at"]),
        "status": str(raw["status"]),
        "revoked_at": optional_timestamp(raw["revoked_at"]),
        "last_used_at": optional_timestamp(raw["last_used_at"]),
        "metadata": dict(raw["metadata"]),
        "disabled": bool(raw["disabled"]),
        "replaced_by": raw["replaced_by"],
        "rate_limit": RateLimitRule.parse(raw["rate_limit"]),
        "quota": Quota.parse(raw["quota"]),
    }


@dataclass(frozen=True, slots=True)
class Account:
    """An operator's customer (contract §9)."""

    id: str
    name: str
    plan: str  # standard | enterprise
    status: str  # active | suspended
    metadata: dict[str, str]
    created_at: datetime

    @classmethod
    def parse(cls, raw: Any) -> Account:
        return cls(
            id=str(raw["id"]),
            name=str(raw["name"]),
            plan=str(raw["plan"]),
            status=str(raw["status"]),
            metadata=dict(raw["metadata"]),
            created_at=timestamp(raw["created_at"]),
        )


@dataclass(frozen=True, slots=True)
class Reference:
    """An audit event's actor or target: ``type`` and ``id`` (``None`` for the CLI)."""

    type: str
    id: str | None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One change (contract §12); ``changes`` maps a field to ``(before, after)``."""

    id: str
    action: str
    actor: Reference
    target: Reference
    account_id: str | None
    request_id: str | None
    ip: str | None
    created_at: datetime
    changes: dict[str, tuple[Any, Any]]

    @classmethod
    def parse(cls, raw: Any) -> AuditEvent:
        return cls(
            id=str(raw["id"]),
            action=str(raw["action"]),
            actor=Reference(str(raw["actor"]["type"]), raw["actor"]["id"]),
            target=Reference(str(raw["target"]["type"]), raw["target"]["id"]),
            account_id=raw["account_id"],
            request_id=raw["request_id"],
            ip=raw["ip"],
            created_at=timestamp(raw["created_at"]),
            changes={name: (pair[0], pair[1]) for name, pair in raw["changes"].items()},
        )


@dataclass(frozen=True, slots=True)
class UsageBucket:
    """Requests counted in ``[start, start + 1 hour or day)`` by outcome
    (contract §11); ``key_id`` only with ``group_by="key"``."""

    start: datetime
    allowed: int
    rate_limited: int
    quota_exceeded: int
    forbidden: int
    key_id: str | None = None

    @classmethod
    def parse(cls, raw: Any) -> UsageBucket:
        return cls(
            start=timestamp(raw["start"]),
            allowed=int(raw["allowed"]),
            rate_limited=int(raw["rate_limited"]),
            quota_exceeded=int(raw["quota_exceeded"]),
            forbidden=int(raw["forbidden"]),
            key_id=raw.get("key_id"),
        )


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """Where keystile sends events (contract §13)."""

    id: str
    url: str
    events: tuple[str, ...]
    description: str | None
    disabled: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def parse(cls, raw: Any) -> WebhookEndpoint:
        return cls(**_endpoint_fields(raw))


@dataclass(frozen=True, slots=True)
class CreatedWebhookEndpoint(WebhookEndpoint):
    """The 201 of a creation, with the ``whsec_`` signing ``secret`` (shown once)."""

    secret: str = field(repr=False)

    @classmethod
    def parse(cls, raw: Any) -> CreatedWebhookEndpoint:
        return cls(**_endpoint_fields(raw), secret=str(raw["secret"]))


def _endpoint_fields(raw: Any) -> dict[str, Any]:
    return {
        "id": str(raw["id"]),
        "url": str(raw["url"]),
        "events": tuple(raw["events"]),
        "description": raw["description"],
        "disabled": bool(raw["disabled"]),
        "created_at": timestamp(raw["created_at"]),
        "updated_at": timestamp(raw["updated_at"]),
    }


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event sent (or being sent) to an endpoint; ``state`` is
    ``pending``, ``succeeded`` or ``failed``."""

    id: str
    event_id: str
    type: str
    state: str
    attempt_count: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime

    @classmethod
    def parse(cls, raw: Any) -> Delivery:
        return cls(
            id=str(raw["id"]),
            event_id=str(raw["event_id"]),
            type=str(raw["type"]),
            state=str(raw["state"]),
            attempt_count=int(raw["attempt_count"]),
            last_status_code=raw["last_status_code"],
            last_error=raw["last_error"],
            next_attempt_at=optional_timestamp(raw["next_attempt_at"]),
            created_at=timestamp(raw["created_at"]),
        )


@dataclass(frozen=True, slots=True)
class Window:
    """A rate limit or quota after a check: ``reset`` is Unix seconds."""

    limit: int
    remaining: int
    reset: int

    @classmethod
    def parse(cls, raw: Any) -> Window | None:
        if raw is None:
            return None
        return cls(int(raw["limit"]), int(raw["remaining"]), int(raw["reset"]))


@dataclass(frozen=True, slots=True)
class Verification:
    """The answer of ``POST /v1/keys/verify`` (contract §7, §11).

    ``code`` is one of ``VALID``, ``INVALID``, ``EXPIRED``, ``REVOKED``,
    ``DISABLED``, ``INSUFFICIENT_PERMISSIONS``, ``RATE_LIMITED``,
    ``QUOTA_EXCEEDED``; ``valid`` is true for ``VALID`` only. ``key_id`` and
    the rest are ``None`` for a key keystile does not show the caller."""

    valid: bool
    code: str
    key_id: str | None
    account_id: str | None
    permissions: tuple[str, ...]
    metadata: dict[str, str]
    rate_limit: Window | None
    quota: Window | None

    @classmethod
    def parse(cls, raw: Any) -> Verification:
        return cls(
            valid=bool(raw["valid"]),
            code=str(raw["code"]),
            key_id=raw["key_id"],
            account_id=raw["account_id"],
            permissions=tuple(raw["permissions"] or ()),
            metadata=dict(raw["metadata"] or {}),
            rate_limit=Window.parse(raw["rate_limit"]),
            quota=Window.parse(raw["quota"]),
        )


class HasId(Protocol):
    @property
    def id(self) -> str: ...


Item = TypeVar("Item", bound=HasId)


@dataclass(frozen=True, slots=True)
class Page(Generic[Item]):
    """One page of a cursor-paginated list, newest first; pass the last
    item's ``id`` as ``starting_after`` for the next while ``has_more``."""

    data: tuple[Item, ...]
    has_more: bool
