"""The asynchronous client's resources, mirroring :mod:`keystile_client.resources`
(a test checks that their signatures match): each method forwards its arguments to
:mod:`keystile_client.endpoints` (where the paths and bodies live) and runs
the call. Errors: the :mod:`keystile_client.errors` class of the §3 code."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
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
from keystile_client.resources import after as _after

T = TypeVar("T")
Item = TypeVar("Item", bound=HasId)


class Runner(Protocol):
    def __call__(self, call: ep.Call[T], /) -> Awaitable[T]: ...


async def paginate(
    run: Runner, build: Callable[[str | None], ep.Call[Page[Item]]]
) -> AsyncIterator[Item]:
    """Every item of a cursor-paginated list, fetching pages as they are needed."""
    cursor: str | None = None
    while True:
        page = await run(build(cursor))
        for item in page.data:
            yield item
        if not page.has_more or not page.data:
            return
        cursor = page.data[-1].id


class ApiKeys:
    """``/v1/api-keys`` (contract §4, §10, §11) and ``/v1/keys/verify`` (§7)."""

    def __init__(self, run: Runner) -> None:
        self._run = run

    async def create(
        self, name: str, permissions: Sequence[str], **options: Unpack[ep.KeyOptions]
    ) -> CreatedApiKey:
        """A new key; its secret is ``.key``, shown only now. Needs ``admin:api_keys``."""
        return await self._run(ep.create_key(name, permissions, options))

    async def list(self, **filters: Unpack[ep.KeyFilters]) -> Page[ApiKey]:
        """One page, newest first (``limit`` 1-100, default 20)."""
        return await self._run(ep.list_keys(filters))

    def list_all(self, **filters: Unpack[ep.KeyFilters]) -> AsyncIterator[ApiKey]:
        """Every key matching ``filters``, newest first, page after page."""
        return paginate(self._run, lambda cursor: ep.list_keys(_after(filters, cursor)))

    async def get(self, key_id: str) -> ApiKey:
        return await self._run(ep.get_key(key_id))

    async def update(self, key_id: str, **changes: Unpack[ep.KeyChanges]) -> ApiKey:
        """Change the given fields only; ``None`` clears a nullable one."""
        return await self._run(ep.update_key(key_id, changes))

    async def rotate(
        self, key_id: str, grace_period_seconds: int = 0, **options: Unpack[ep.IdempotencyOption]
    ) -> CreatedApiKey:
        """A new key replacing ``key_id``, which keeps working for the grace period."""
        return await self._run(ep.rotate_key(key_id, grace_period_seconds, options))

    async def revoke(self, key_id: str) -> ApiKey:
        """Revoke (idempotent): the key gets 401 from the answer on."""
        return await self._run(ep.revoke_key(key_id))

    async def usage(self, key_id: str, **span: Unpack[ep.UsageRange]) -> builtins.list[UsageBucket]:
        """The key's metered requests per hour or day, oldest first."""
        return await self._run(ep.key_usage(key_id, span))

    async def verify(
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
        return await self._run(ep.verify_key(key, permission, consume, idempotency_key, idempotent))


class Accounts:
    """``/v1/accounts`` (contract §9): operator keys only."""

    def __init__(self, run: Runner) -> None:
        self._run = run

    async def create(self, name: str, **options: Unpack[ep.AccountOptions]) -> Account:
        return await self._run(ep.create_account(name, options))

    async def list(self, **filters: Unpack[ep.AccountFilters]) -> Page[Account]:
        return await self._run(ep.list_accounts(filters))

    def list_all(self, **filters: Unpack[ep.AccountFilters]) -> AsyncIterator[Account]:
        return paginate(self._run, lambda cursor: ep.list_accounts(_after(filters, cursor)))

    async def get(self, account_id: str) -> Account:
        return await self._run(ep.get_account(account_id))

    async def update(self, account_id: str, **changes: Unpack[ep.AccountChanges]) -> Account:
        """Change the given fields; ``status="suspended"`` stops every key of the account."""
        return await self._run(ep.update_account(account_id, changes))


class AuditEvents:
    """``/v1/audit-events`` (contract §12)."""

    def __init__(self, run: Runner) -> None:
        self._run = run

    async def list(self, **filters: Unpack[ep.AuditFilters]) -> Page[AuditEvent]:
        return await self._run(ep.list_audit_events(filters))

    def list_all(self, **filters: Unpack[ep.AuditFilters]) -> AsyncIterator[AuditEvent]:
        return paginate(self._run, lambda cursor: ep.list_audit_events(_after(filters, cursor)))


class Usage:
    """``/v1/usage`` (contract §11): the account's totals."""

    def __init__(self, run: Runner) -> None:
        self._run = run

    async def get(
        self, group_by: Literal["key"] | None = None, **span: Unpack[ep.UsageRange]
    ) -> builtins.list[UsageBucket]:
        """Every bucket of the range, oldest first; ``group_by="key"``: one
        entry per key with usage, per bucket (``key_id`` set)."""
        return await self._run(ep.usage(span, group_by == "key"))


class WebhookEndpoints:
    """``/v1/webhook-endpoints`` (contract §13); needs ``admin:webhooks``."""

    def __init__(self, run: Runner) -> None:
        self._run = run

    async def create(
        self, url: str, events: Sequence[str], **options: Unpack[ep.EndpointOptions]
    ) -> CreatedWebhookEndpoint:
        """A new endpoint; its signing secret is ``.secret``, shown only now."""
        return await self._run(ep.create_endpoint(url, events, options))

    async def list(self, **filters: Unpack[ep.PageParams]) -> Page[WebhookEndpoint]:
        return await self._run(ep.list_endpoints(filters))

    def list_all(self, **filters: Unpack[ep.PageParams]) -> AsyncIterator[WebhookEndpoint]:
        return paginate(self._run, lambda cursor: ep.list_endpoints(_after(filters, cursor)))

    async def get(self, endpoint_id: str) -> WebhookEndpoint:
        return await self._run(ep.get_endpoint(endpoint_id))

    async def update(
        self, endpoint_id: str, **changes: Unpack[ep.EndpointChanges]
    ) -> WebhookEndpoint:
        return await self._run(ep.update_endpoint(endpoint_id, changes))

    async def delete(self, endpoint_id: str) -> WebhookEndpoint:
        return await self._run(ep.delete_endpoint(endpoint_id))

    async def deliveries(
        self, endpoint_id: str, **filters: Unpack[ep.PageParams]
    ) -> Page[Delivery]:
        return await self._run(ep.list_deliveries(endpoint_id, filters))

    def deliveries_all(
        self, endpoint_id: str, **filters: Unpack[ep.PageParams]
    ) -> AsyncIterator[Delivery]:
        build = ep.list_deliveries
        return paginate(self._run, lambda cursor: build(endpoint_id, _after(filters, cursor)))
