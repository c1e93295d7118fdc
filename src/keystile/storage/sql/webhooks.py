"""Webhook endpoints, the event outbox and deliveries in SQL (contract §13)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from keystile.keys.ids import new_delivery_id
from keystile.keys.models import ApiKey
from keystile.storage.sql.common import Connection, insert_for, newest_first
from keystile.storage.sql.key_rows import KEY_COLUMNS, key_from_row
from keystile.storage.sql.tables import (
    accounts,
    api_keys,
    webhook_deliveries,
    webhook_endpoints,
    webhook_events,
)
from keystile.webhooks.models import (
    ALL_EVENTS,
    Delivery,
    DeliveryPage,
    DeliveryState,
    DueDelivery,
    EndpointPage,
    Outcome,
    WebhookEndpoint,
    WebhookEvent,
)

_ENDPOINT_COLUMNS = tuple(c for c in webhook_endpoints.c if c.name != "secret")


def _endpoint(row: sa.Row[Any]) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row.id,
        account_id=row.account_id,
        url=row.url,
        events=tuple(row.events.split()),
        description=row.description,
        disabled=bool(row.disabled),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _delivery(row: sa.Row[Any]) -> Delivery:
    return Delivery(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        type=row.type,
        state=DeliveryState(row.state),
        attempt_count=row.attempt_count,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        next_attempt_at=row.next_attempt_at if row.state == DeliveryState.PENDING else None,
        created_at=row.created_at,
    )


# ``(id, events)`` of the enabled endpoints of the account bound as
# ``account_id``, by id: whom a new event of that account goes to.
ENABLED_ENDPOINTS = (
    sa.select(webhook_endpoints.c.id, webhook_endpoints.c.events)
    .where(
        webhook_endpoints.c.account_id == sa.bindparam("account_id"),
        webhook_endpoints.c.disabled.is_(False),
    )
    .order_by(webhook_endpoints.c.id)
)


class SqlWebhooks:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        # account id -> its enabled endpoints (id, events), as read by a
        # statement of this transaction (a key's insert reads them with it);
        # any endpoint change in the transaction forgets them.
        self._endpoints: dict[str, list[tuple[str, str]]] = {}

    def remember_endpoints(self, account_id: str, endpoints: list[tuple[str, str]]) -> None:
        """``account_id``'s enabled endpoints, just read in this transaction."""
        self._endpoints[account_id] = endpoints

    # Endpoints ------------------------------------------------------------

    async def insert_endpoint(self, endpoint: WebhookEndpoint, secret: bytes) -> None:
        self._endpoints.clear()
        await self._conn.execute(
            webhook_endpoints.insert().values(
                id=endpoint.id,
                account_id=endpoint.account_id,
                url=endpoint.url,
                events=" ".join(endpoint.events),
                description=endpoint.description,
                disabled=endpoint.disabled,
                secret=secret,
                created_at=endpoint.created_at,
                updated_at=endpoint.updated_at,
            )
        )

    async def get_endpoint(
        self, account_id: str | None, endpoint_id: str
    ) -> WebhookEndpoint | None:
        query = sa.select(*_ENDPOINT_COLUMNS).where(webhook_endpoints.c.id == endpoint_id)
        if account_id is not None:
            query = query.where(webhook_endpoints.c.account_id == account_id)
        row = (await self._conn.execute(query)).first()
        return None if row is None else _endpoint(row)

    async def update_endpoint(self, endpoint: WebhookEndpoint) -> None:
        self._endpoints.clear()
        await self._conn.execute(
            webhook_endpoints.update()
            .where(webhook_endpoints.c.id == endpoint.id)
            .values(
                url=endpoint.url,
                events=" ".join(endpoint.events),
                description=endpoint.description,
                disabled=endpoint.disabled,
                updated_at=endpoint.updated_at,
            )
        )

    async def delete_endpoint(self, endpoint_id: str) -> None:
        self._endpoints.clear()
        await self._conn.execute(
            webhook_deliveries.delete().where(webhook_deliveries.c.endpoint_id == endpoint_id)
        )
        await self._conn.execute(
            webhook_endpoints.delete().where(webhook_endpoints.c.id == endpoint_id)
        )

    async def list_endpoints(
        self, account_id: str, *, limit: int, starting_after: WebhookEndpoint | None = None
    ) -> EndpointPage:
        c = webhook_endpoints.c
        query = sa.select(*_ENDPOINT_COLUMNS).where(c.account_id == account_id)
        rows = (await self._conn.execute(newest_first(query, c, starting_after, limit))).all()
        return EndpointPage([_endpoint(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def count_endpoints(self, account_id: str) -> int:
        query = sa.select(sa.func.count()).where(webhook_endpoints.c.account_id == account_id)
        return int((await self._conn.execute(query)).scalar_one())

    async def endpoint_secrets(self, after_id: str, limit: int) -> list[tuple[str, bytes]]:
        c = webhook_endpoints.c
        query = sa.select(c.id, c.secret).where(c.id > after_id).order_by(c.id).limit(limit)
        return [(row.id, bytes(row.secret)) for row in await self._conn.execute(query)]

    async def replace_secret(self, endpoint_id: str, old: bytes, new: bytes) -> None:
        c = webhook_endpoints.c
        await self._conn.execute(
            webhook_endpoints.update()
            .where(c.id == endpoint_id, c.secret == old)
            .values(secret=new)
        )

    async def subscribers(self, account_id: str, event_type: str) -> list[str]:
        endpoints = self._endpoints.get(account_id)
        if endpoints is None:
            rows = await self._conn.execute(ENABLED_ENDPOINTS, {"account_id": account_id})
            endpoints = [(row.id, row.events) for row in rows]
        return [endpoint_id for endpoint_id, events in endpoints if _wants(events, event_type)]

    async def subscribed_accounts(self, event_type: str) -> list[str]:
        c = webhook_endpoints.c
        query = sa.select(c.account_id, c.events).where(c.disabled.is_(False))
        rows = (await self._conn.execute(query)).all()
        return sorted({row.account_id for row in rows if _wants(row.events, event_type)})

    # The outbox ------------------------------------------------------------

    async def insert_event(self, event: WebhookEvent) -> bool:
        statement = (
            insert_for(self._conn, webhook_events)
            .values(
                id=event.id,
                account_id=event.account_id,
                type=event.type,
                created_at=event.created_at,
                body=event.body,
                dedupe_key=event.dedupe_key,
            )
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
        )
        result = await self._conn.execute(statement)
        return int(result.rowcount) == 1

    async def insert_deliveries(
        self, event: WebhookEvent, endpoint_ids: Sequence[str], now: int
    ) -> None:
        if not endpoint_ids:
            return
        await self._conn.execute(
            webhook_deliveries.insert(),
            [
                {
                    "id": new_delivery_id(),
                    "event_id": event.id,
                    "endpoint_id": endpoint_id,
                    "type": event.type,
                    "state": DeliveryState.PENDING.value,
                    "attempt_count": 0,
                    "last_status_code": None,
                    "last_error": None,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for endpoint_id in endpoint_ids
            ],
        )

    # Deliveries -------------------------------------------------------------

    async def get_delivery(self, endpoint_id: str, delivery_id: str) -> Delivery | None:
        d = webhook_deliveries.c
        query = sa.select(webhook_deliveries).where(
            d.id == delivery_id, d.endpoint_id == endpoint_id
        )
        row = (await self._conn.execute(query)).first()
        return None if row is None else _delivery(row)

    async def list_deliveries(
        self, endpoint_id: str, *, limit: int, starting_after: Delivery | None = None
    ) -> DeliveryPage:
        d = webhook_deliveries.c
        query = sa.select(webhook_deliveries).where(d.endpoint_id == endpoint_id)
        rows = (await self._conn.execute(newest_first(query, d, starting_after, limit))).all()
        return DeliveryPage([_delivery(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def has_due(self, now: int) -> bool:
        d = webhook_deliveries.c
        query = (
            sa.select(d.id)
            .where(d.state == DeliveryState.PENDING.value, d.next_attempt_at <= now)
            .limit(1)
        )
        return (await self._conn.execute(query)).first() is not None

    async def claim(
        self, now: int, lease_until: int, *, limit: int, per_endpoint: int
    ) -> list[DueDelivery]:
        """Up to ``limit`` due deliveries of enabled endpoints (at most
        ``per_endpoint`` each), leased until ``lease_until``: no one else
        claims them before then. PostgreSQL skips rows another transaction
        holds (``FOR UPDATE SKIP LOCKED``); SQLite's write lock makes the
        whole claim exclusive."""
        d, e = webhook_deliveries.c, webhook_endpoints.c
        candidates = (
            sa.select(d.id, d.endpoint_id)
            .where(d.state == DeliveryState.PENDING.value, d.next_attempt_at <= now)
            .order_by(d.next_attempt_at)
            .limit(limit * 4)
            .with_for_update(skip_locked=True)
        )
        rows = (await self._conn.execute(candidates)).all()
        if not rows:
            return []
        enabled = {
            row.id
            for row in (
                await self._conn.execute(
                    sa.select(e.id).where(
                        e.id.in_({r.endpoint_id for r in rows}), e.disabled.is_(False)
                    )
                )
            ).all()
        }
        chosen: list[str] = []
        taken: dict[str, int] = {}
        for row in rows:
            if row.endpoint_id not in enabled or taken.get(row.endpoint_id, 0) >= per_endpoint:
                continue
            taken[row.endpoint_id] = taken.get(row.endpoint_id, 0) + 1
            chosen.append(row.id)
            if len(chosen) == limit:
                break
        if not chosen:
            return []
        await self._conn.execute(
            webhook_deliveries.update().where(d.id.in_(chosen)).values(next_attempt_at=lease_until)
        )
        ev = webhook_events.c
        query = (
            sa.select(
                d.id,
                d.event_id,
                d.attempt_count,
                d.created_at,
                d.endpoint_id,
                e.url,
                e.secret,
                ev.body,
            )
            .join(webhook_endpoints, e.id == d.endpoint_id)
            .join(webhook_events, ev.id == d.event_id)
            .where(d.id.in_(chosen))
        )
        return [
            DueDelivery(
                id=row.id,
                event_id=row.event_id,
                attempt_count=row.attempt_count,
                created_at=row.created_at,
                url=row.url,
                secret_ciphertext=bytes(row.secret),
                endpoint_id=row.endpoint_id,
                body=bytes(row.body),
            )
            for row in (await self._conn.execute(query)).all()
        ]

    async def record(
        self,
        delivery_id: str,
        outcome: Outcome,
        *,
        state: DeliveryState,
        next_attempt_at: int | None,
    ) -> None:
        """Write one attempt's outcome (the attempt count goes up by one)."""
        d = webhook_deliveries.c
        await self._conn.execute(
            webhook_deliveries.update()
            .where(d.id == delivery_id, d.state == DeliveryState.PENDING.value)
            .values(
                attempt_count=d.attempt_count + 1,
                last_status_code=outcome.status_code,
                last_error=outcome.error,
                state=state.value,
                next_attempt_at=next_attempt_at,
            )
        )

    async def give_up(self, created_before: int, reason: str) -> int:
        """Mark pending deliveries created before ``created_before`` failed
        (their retry window closed while their endpoint was disabled or no
        instance was running); returns how many."""
        d = webhook_deliveries.c
        result = await self._conn.execute(
            webhook_deliveries.update()
            .where(d.state == DeliveryState.PENDING.value, d.created_at < created_before)
            .values(state=DeliveryState.FAILED.value, last_error=reason, next_attempt_at=None)
        )
        return int(result.rowcount)

    async def purge(self, before: int) -> int:
        """Delete settled deliveries created before ``before``, then the
        events no delivery refers to any more; returns deliveries deleted."""
        d, ev = webhook_deliveries.c, webhook_events.c
        result = await self._conn.execute(
            webhook_deliveries.delete().where(
                d.created_at < before, d.state != DeliveryState.PENDING.value
            )
        )
        referenced = sa.select(d.event_id).where(d.event_id == ev.id).exists()
        await self._conn.execute(webhook_events.delete().where(ev.created_at < before, ~referenced))
        return int(result.rowcount)

    # The expiry scan ----------------------------------------------------------

    async def keys_expiring(
        self,
        account_ids: Sequence[str],
        after: int,
        until: int,
        *,
        notice: int,
        limit: int,
        cursor: tuple[int, str] | None = None,
    ) -> list[ApiKey]:
        """Unrevoked keys of ``account_ids`` whose ``expires_at - notice`` is
        in ``(after, until]`` and came after the key was made, ordered by
        ``(expires_at, id)`` and after ``cursor`` (the last of a previous batch)."""
        k = api_keys.c
        query = (
            sa.select(*KEY_COLUMNS, accounts.c.status.label("account_status"))
            .join(accounts, accounts.c.id == k.account_id)
            .where(
                k.account_id.in_(list(account_ids)),
                k.revoked_at.is_(None),
                k.expires_at > after + notice,
                k.expires_at <= until + notice,
                k.expires_at - notice > k.created_at,
            )
            .order_by(k.expires_at, k.id)
            .limit(limit)
        )
        if cursor is not None:
            query = query.where(
                sa.or_(
                    k.expires_at > cursor[0],
                    sa.and_(k.expires_at == cursor[0], k.id > cursor[1]),
                )
            )
        rows = (await self._conn.execute(query)).all()
        return [key_from_row(row, row.account_status == "suspended") for row in rows]


def _wants(events: str, event_type: str) -> bool:
    names = events.split()
    return ALL_EVENTS in names or event_type in names
