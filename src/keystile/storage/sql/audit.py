"""Audit events in SQL (contract §12)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from keystile.audit.models import Action, Actor, ActorType, AuditEvent, AuditFilter, AuditPage
from keystile.storage.sql.common import Connection, newest_first
from keystile.storage.sql.tables import audit_events


def _event(row: sa.Row[Any]) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        action=Action(row.action),
        actor=Actor(ActorType(row.actor_type), row.actor_id),
        target_type=row.target_type,
        target_id=row.target_id,
        account_id=row.account_id,
        request_id=row.request_id,
        ip=row.ip,
        created_at=row.created_at,
        changes={name: (pair[0], pair[1]) for name, pair in (row.changes or {}).items()},
    )


def audit_row(event: AuditEvent) -> dict[str, Any]:
    """The event's ``audit_events`` row, column by column (``changes`` as
    ``{field: [before, after]}``, the JSON the column holds)."""
    return {
        "id": event.id,
        "action": event.action.value,
        "actor_type": event.actor.type.value,
        "actor_id": event.actor.id,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "account_id": event.account_id,
        "request_id": event.request_id,
        "ip": event.ip,
        "created_at": event.created_at,
        "changes": {name: list(pair) for name, pair in event.changes.items()},
    }


class SqlAuditEvents:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def insert(self, event: AuditEvent) -> None:
        await self._conn.execute(audit_events.insert().values(**audit_row(event)))

    async def get(self, account_id: str | None, event_id: str) -> AuditEvent | None:
        query = sa.select(audit_events).where(audit_events.c.id == event_id)
        if account_id is not None:
            query = query.where(audit_events.c.account_id == account_id)
        row = (await self._conn.execute(query)).first()
        return None if row is None else _event(row)

    async def list(
        self, where: AuditFilter, *, limit: int, starting_after: AuditEvent | None = None
    ) -> AuditPage:
        c = audit_events.c
        query = sa.select(audit_events)
        if where.account_id is not None:
            query = query.where(c.account_id == where.account_id)
        if where.action is not None:
            query = query.where(c.action == where.action)
        if where.target_id is not None:
            query = query.where(c.target_id == where.target_id)
        if where.actor_id is not None:
            query = query.where(c.actor_id == where.actor_id)
        if where.since is not None:
            query = query.where(c.created_at >= where.since)
        if where.until is not None:
            query = query.where(c.created_at < where.until)
        rows = (await self._conn.execute(newest_first(query, c, starting_after, limit))).all()
        return AuditPage([_event(row) for row in rows[:limit]], has_more=len(rows) > limit)

    async def purge(self, before: int) -> int:
        """Delete every event created before ``before``; return how many."""
        result = await self._conn.execute(
            audit_events.delete().where(audit_events.c.created_at < before)
        )
        return int(result.rowcount)
