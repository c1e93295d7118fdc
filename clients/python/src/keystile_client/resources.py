"""The blocking client's resources: each method forwards its arguments to
:mod:`keystile_client.endpoints` (where the paths and bodies live) and runs
the call. Errors: the :mod:`keystile_client.errors` class of the §3 code."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, Protocol, TypeVar, Unpack

from keystile_client import endpoints as ep
from keystile_client.models import (
    Account,
    ApiKey,
    AuditEvent,
    CreatedApiKey,
    CreatedWebhookEndpoint,
    Delivery,
    HasId,
    Page,
    UsageBucket,
    Verification,
    WebhookEndpoint,
)

T = TypeVar("T")
Item = TypeVar("Item", bound=HasId)


class Runner(Protocol):
    def __call__(self, call: ep.Call[T], /) -> T: ...


def paginate(run: Runner, build: Callable[[str | None], ep.Call[Page[Item]]]) -> Iterator[Item]:
    """Every item of a cursor-paginated list, fetching pages as they are needed."""
    cursor: str | None = None
    while True:
        page = run(build(cursor))
        yield from page.data
        if not page.has_more or not page.data:
            return
        cursor = page.data[-1].id


Filters = TypeVar("Filters", bound=ep.PageParams)


def after(filters: Filters, cursor: str | None) -> Filters:
    """``filters`` for the page after ``cursor``."""
    if cursor is None:
        return filters
    following = filters.copy()
    following["starting_after"] = cursor
    return following


class ApiKeys:
    """``/v1/api-keys`` (contract §4, §10, §11) and ``/v1/keys/verify`` (§7)."""

    def __init__(self, run: Runner) -> None:
        self._run = run

    def create(
        self, name: str, permissions: Sequence[str], **options: Unpack[ep.KeyOptions]
    ) -> CreatedApiKey:
        """A new key; its secret is ``.key``, shown only now. Needs ``admin:api_keys``."""
        return self._run(ep.create_key(name, permissions, options))

    def list(self, **filters: Unpack[ep.KeyFilters]) -> Page[ApiKey]:
        """One page, newest first (``limit`` 1-100, default 20)."""
        return self._run(ep.list_keys(filters))

    def list_all(self, **filters: Unpack[ep.KeyFilters]) -> Iterator[ApiKey]:
        """Every key matching ``filters``, newest first, page after page."""
        return paginate(self._run, lambda cursor: ep.list_keys(after(filters, cursor)))

    def get(self, key_id: str) -> ApiKey:
        return self._run(ep.get_key(key_id))

    def update(self, key_id: str, **changes: Unpack[ep.KeyChanges]) -> ApiKey:
        """Change the given fields only; ``None`` clears a nullable one."""
        return self._run(ep.update_key(key_id, changes))

    def rotate(
        self, key_id: str, grace_period_seconds: int = 0, **options: Unpack[ep.IdempotencyOption]
    ) -> CreatedApiKey:
        """A new key replacing ``key_id``, which keeps working for the grace period."""
        return self._run(ep.rotate_key(key_id, grace_period_seconds, options))

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke (idempotent): the key gets 401 from the answer on."""
        return self._run(ep.revoke_key(key_id))

    def usage(self, key_id: str, **span: Unpack[ep.UsageRange]) -> builtins.list[UsageBucket]:
        """The key's metered requests per hour or day, oldest first."""
        return self._run(ep.key_usage(key_id, span))

    def verify(
        self,
        key: str,
        permission: str | None = None,
        *,
        consume: bool = True,
        idempotency_key: str | None = None,
        idempotent: bool = True,
    ) -> Verification:
        """Check ``key`` (of the caller's account) and, with ``consume``, use
        one unit of its rate limit and quota. Needs ``verify:keys``. Sent with
        an ``Idempotency-Key`` (``idempotency_key``, or a generated one) unless
        ``idempotent=False``: then keystile records nothing, and a retry after
        a lost answer may use the key's limits twice."""
        return self._run(ep.verify_key(key, permission, consume, idempotency_key, idempotent))


class Accounts:
    """``/v1/accounts`` (contract §9): operator keys only."""

    def __init__(self, run: Runner) -> None:
        self._run = run

    def create(self, name: str, **options: Unpack[ep.AccountOptions]) -> Account:
        return self._run(ep.create_account(name, options))

    def list(self, **filters: Unpack[ep.AccountFilters]) -> Page[Account]:
        return self._run(ep.list_accounts(filters))

    def list_all(self, **filters: Unpack[ep.AccountFilters]) -> Iterator[Account]:
        return paginate(self._run, lambda cursor: ep.list_accounts(after(filters, cursor)))

    def get(self, account_id: str) -> Account:
        return self._run(ep.get_account(account_id))

    def update(self, account_id: str, **changes: Unpack[ep.AccountChanges]) -> Account:
        """Change the given fields; ``status="suspended"`` stops every key of the account."""
        return self._run(ep.update_account(account_id, changes))


class AuditEvents:
    """``/v1/audit-events`` (contract §12)."""

    def __init__(self, run: Runner) -> None:
        self._run = run

    def list(self, **filters: Unpack[ep.AuditFilters]) -> Page[AuditEvent]:
        return self._run(ep.list_audit_events(filters))

    def list_all(self, **filters: Unpack[ep.AuditFilters]) -> Iterator[AuditEvent]:
        return paginate(self._run, lambda cursor: ep.list_audit_events(after(filters, cursor)))


class Usage:
    """``/v1/usage`` (contract §11): the account's totals."""

    def __init__(self, run: Runner) -> None:
        self._run = run

    def get(
        self, group_by: Literal["key"] | None = None, **span: Unpack[ep.UsageRange]
    ) -> builtins.list[UsageBucket]:
        """Every bucket of the range, oldest first; ``group_by="key"``: one
        entry per key with usage, per bucket (``key_id`` set)."""
        return self._run(ep.usage(span, group_by == "key"))


class WebhookEndpoints:
    """``/v1/webhook-endpoints`` (contract §13); needs ``admin:webhooks``."""

    def __init__(self, run: Runner) -> None:
        self._run = run

    def create(
        self, url: str, events: Sequence[str], **options: Unpack[ep.EndpointOptions]
    ) -> CreatedWebhookEndpoint:
        """A new endpoint; its signing secret is ``.secret``, shown only now."""
        return self._run(ep.create_endpoint(url, events, options))

    def list(self, **filters: Unpack[ep.PageParams]) -> Page[WebhookEndpoint]:
        return self._run(ep.list_endpoints(filters))

    def list_all(self, **filters: Unpack[ep.PageParams]) -> Iterator[WebhookEndpoint]:
        return paginate(self._run, lambda cursor: ep.list_endpoints(after(filters, cursor)))

    def get(self, endpoint_id: str) -> WebhookEndpoint:
        return self._run(ep.get_endpoint(endpoint_id))

    def update(self, endpoint_id: str, **changes: Unpack[ep.EndpointChanges]) -> WebhookEndpoint:
        return self._run(ep.update_endpoint(endpoint_id, changes))

    def delete(self, endpoint_id: str) -> WebhookEndpoint:
        return self._run(ep.delete_endpoint(endpoint_id))

    def deliveries(self, endpoint_id: str, **filters: Unpack[ep.PageParams]) -> Page[Delivery]:
        return self._run(ep.list_deliveries(endpoint_id, filters))

    def deliveries_all(
        self, endpoint_id: str, **filters: Unpack[ep.PageParams]
    ) -> Iterator[Delivery]:
        build = ep.list_deliveries
        return paginate(self._run, lambda cursor: build(endpoint_id, after(filters, cursor)))
