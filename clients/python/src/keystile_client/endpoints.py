"""Every endpoint of keystile's API as a :class:`Call`: method, path, query,
body and how to parse the answer. :class:`~keystile_client.Client` and
:class:`~keystile_client.AsyncClient` run the same calls, so the two cannot
drift apart; their resources only forward their arguments here.

Options are ``TypedDict``\\ s so that a ``PATCH`` can tell a field left out
(unchanged) from a field given as ``None`` (cleared), as the API does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, is_dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypedDict, TypeVar
from urllib.parse import quote

from keystile_client.models import (
    Account,
    ApiKey,
    AuditEvent,
    CreatedApiKey,
    CreatedWebhookEndpoint,
    Delivery,
    Page,
    Quota,
    RateLimitRule,
    UsageBucket,
    Verification,
    WebhookEndpoint,
)

T = TypeVar("T")
Params = dict[str, str | int]


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request. ``idempotent``: send an ``Idempotency-Key`` (generated
    unless ``idempotency_key`` is given) and reuse it on every retry."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: Params | None = None
    body: dict[str, Any] | None = None
    idempotent: bool = False
    idempotency_key: str | None = None


Tier = Literal["standard", "high", "unmetered"]


class IdempotencyOption(TypedDict, total=False):
    idempotency_key: str  # your own value, to retry across processes (contract §6)


class KeyOptions(IdempotencyOption, total=False):
    """Optional fields of a new key (docs/api.md, ``POST /v1/api-keys``)."""

    description: str | None
    rate_limit_tier: Tier | None
    expires_at: datetime | str | None
    metadata: Mapping[str, str] | None
    rate_limit: RateLimitRule | None
    quota: Quota | None


class KeyChanges(KeyOptions, total=False):
    """``PATCH /v1/api-keys/{id}``: a field left out is unchanged, ``None`` clears it."""

    name: str
    permissions: Sequence[str]
    disabled: bool


class PageParams(TypedDict, total=False):
    limit: int  # 1-100, default 20
    starting_after: str


class KeyFilters(PageParams, total=False):
    status: Literal["active", "disabled", "revoked", "expired"]
    name: str
    metadata: Mapping[str, str]  # metadata[KEY]=VALUE, every pair must match


class AccountFilters(PageParams, total=False):
    status: Literal["active", "suspended"]


class AccountOptions(IdempotencyOption, total=False):
    plan: Literal["standard", "enterprise"]
    metadata: Mapping[str, str] | None


class AccountChanges(AccountOptions, total=False):
    """``PATCH /v1/accounts/{id}``: a field left out is unchanged."""

    name: str
    status: Literal["active", "suspended"]


class AuditFilters(PageParams, total=False):
    action: str
    target_id: str
    actor_id: str
    since: datetime | str
    until: datetime | str


class UsageRange(TypedDict, total=False):
    granularity: Literal["hour", "day"]
    start: datetime | str
    end: datetime | str


class EndpointOptions(IdempotencyOption, total=False):
    description: str | None


class EndpointChanges(EndpointOptions, total=False):
    """``PATCH /v1/webhook-endpoints/{id}``: a field left out is unchanged."""

    url: str
    events: Sequence[str]
    disabled: bool


def wire(value: Any) -> Any:
    """A Python value as JSON: datetimes as RFC 3339 in UTC, rules as objects."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if is_dataclass(value) and not isinstance(value, type):
        return {name: getattr(value, name) for name in value.__dataclass_fields__}
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _split(options: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The body fields of ``options`` and its ``idempotency_key``."""
    body = {name: wire(value) for name, value in options.items() if name != "idempotency_key"}
    return body, options.get("idempotency_key")


def _query(filters: Mapping[str, Any]) -> Params:
    params: Params = {}
    for name, value in filters.items():
        if name == "metadata":
            params.update({f"metadata[{k}]": v for k, v in value.items()})
        else:
            params[name] = wire(value)
    return params


def _id(value: str) -> str:
    return quote(value, safe="")


def _one(parse: Callable[[Any], T]) -> Callable[[Any], T]:
    return lambda body: parse(body["data"])


def _page(parse: Callable[[Any], T]) -> Callable[[Any], Page[Any]]:
    return lambda body: Page(tuple(parse(item) for item in body["data"]), bool(body["has_more"]))


def _buckets(body: Any) -> list[UsageBucket]:
    return [UsageBucket.parse(item) for item in body["data"]]


def _write(method: str, path: str, parse: Callable[[Any], T], options: Mapping[str, Any],
           extra: dict[str, Any] | None = None) -> Call[T]:  # fmt: skip
    body, key = _split(options)
    return Call(method, path, _one(parse), body={**(extra or {}), **body},
                idempotent=True, idempotency_key=key)  # fmt: skip


# §4, §10, §11: api keys
def create_key(name: str, permissions: Sequence[str], options: KeyOptions
               ) -> Call[CreatedApiKey]:  # fmt: skip
    extra = {"name": name, "permissions": list(permissions)}
    return _write("POST", "/v1/api-keys", CreatedApiKey.parse, options, extra)


def list_keys(filters: KeyFilters) -> Call[Page[ApiKey]]:
    return Call("GET", "/v1/api-keys", _page(ApiKey.parse), params=_query(filters))


def get_key(key_id: str) -> Call[ApiKey]:
    return Call("GET", f"/v1/api-keys/{_id(key_id)}", _one(ApiKey.parse))


def update_key(key_id: str, changes: KeyChanges) -> Call[ApiKey]:
    return _write("PATCH", f"/v1/api-keys/{_id(key_id)}", ApiKey.parse, changes)


def rotate_key(key_id: str, grace_period_seconds: int, options: IdempotencyOption
               ) -> Call[CreatedApiKey]:  # fmt: skip
    extra = {"grace_period_seconds": grace_period_seconds}
    return _write("POST", f"/v1/api-keys/{_id(key_id)}/rotate", CreatedApiKey.parse, options, extra)


def revoke_key(key_id: str) -> Call[ApiKey]:
    return Call("DELETE", f"/v1/api-keys/{_id(key_id)}", _one(ApiKey.parse))


def key_usage(key_id: str, span: UsageRange) -> Call[list[UsageBucket]]:
    return Call("GET", f"/v1/api-keys/{_id(key_id)}/usage", _buckets, params=_query(span))


# §7: verification
def verify_key(key: str, permission: str | None, consume: bool, idempotency_key: str | None,
               idempotent: bool) -> Call[Verification]:  # fmt: skip
    body: dict[str, Any] = {"key": key, "consume": consume}
    if permission is not None:
        body["permission"] = permission
    # Like every POST, an Idempotency-Key (contract §16): a retried consuming
    # verification then uses the key's limits once. ``idempotent=False``
    # leaves it out (the integrations: keystile would record each one).
    idempotent = idempotent or idempotency_key is not None
    parse = _one(Verification.parse)
    return Call("POST", "/v1/keys/verify", parse, body=body, idempotent=idempotent,
                idempotency_key=idempotency_key)  # fmt: skip


# §9: accounts (operator keys)
def create_account(name: str, options: AccountOptions) -> Call[Account]:
    return _write("POST", "/v1/accounts", Account.parse, options, {"name": name})


def list_accounts(filters: AccountFilters) -> Call[Page[Account]]:
    return Call("GET", "/v1/accounts", _page(Account.parse), params=_query(filters))


def get_account(account_id: str) -> Call[Account]:
    return Call("GET", f"/v1/accounts/{_id(account_id)}", _one(Account.parse))


def update_account(account_id: str, changes: AccountChanges) -> Call[Account]:
    return _write("PATCH", f"/v1/accounts/{_id(account_id)}", Account.parse, changes)


# §11: usage, §12: audit
def usage(span: UsageRange, group_by_key: bool) -> Call[list[UsageBucket]]:
    params = _query(span)
    if group_by_key:
        params["group_by"] = "key"
    return Call("GET", "/v1/usage", _buckets, params=params)


def list_audit_events(filters: AuditFilters) -> Call[Page[AuditEvent]]:
    return Call("GET", "/v1/audit-events", _page(AuditEvent.parse), params=_query(filters))


# §13: webhooks
def create_endpoint(url: str, events: Sequence[str], options: EndpointOptions
                    ) -> Call[CreatedWebhookEndpoint]:  # fmt: skip
    extra = {"url": url, "events": list(events)}
    return _write("POST", "/v1/webhook-endpoints", CreatedWebhookEndpoint.parse, options, extra)


def list_endpoints(filters: PageParams) -> Call[Page[WebhookEndpoint]]:
    return Call(
        "GET", "/v1/webhook-endpoints", _page(WebhookEndpoint.parse), params=_query(filters)
    )


def get_endpoint(endpoint_id: str) -> Call[WebhookEndpoint]:
    return Call("GET", f"/v1/webhook-endpoints/{_id(endpoint_id)}", _one(WebhookEndpoint.parse))


def update_endpoint(endpoint_id: str, changes: EndpointChanges) -> Call[WebhookEndpoint]:
    path = f"/v1/webhook-endpoints/{_id(endpoint_id)}"
    return _write("PATCH", path, WebhookEndpoint.parse, changes)


def delete_endpoint(endpoint_id: str) -> Call[WebhookEndpoint]:
    path = f"/v1/webhook-endpoints/{_id(endpoint_id)}"
    return Call("DELETE", path, _one(WebhookEndpoint.parse))


def list_deliveries(endpoint_id: str, filters: PageParams) -> Call[Page[Delivery]]:
    path = f"/v1/webhook-endpoints/{_id(endpoint_id)}/deliveries"
    return Call("GET", path, _page(Delivery.parse), params=_query(filters))


# §8: operations (no key needed)
def health(path: Literal["/healthz", "/readyz"]) -> Call[str]:
    return Call("GET", path, lambda body: str(body["status"]))
