"""Quota counters in SQL (``uow.quotas``): used when several workers share a
host without Redis (see ``keystile.ratelimit.quota.DatabaseQuotas``)."""

from __future__ import annotations

import sqlalchemy as sa

from keystile.ratelimit.quota import Period, QuotaCount
from keystile.storage.sql.common import Connection, insert_for
from keystile.storage.sql.tables import quota_counters

_c = quota_counters.c


class SqlQuotaCounters:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def consume(self, name: str, period: Period, limit: int, cost: int) -> QuotaCount | None:
        where = (_c.name == name, _c.period_start == period.start)
        if cost:
            added = await self._conn.execute(
                quota_counters.update()
                .where(*where, _c.used + cost <= limit)
                .values(used=_c.used + cost)
                .returning(_c.used)
            )
            row = added.first()
            if row is not None:
                return QuotaCount(int(row.used), admitted=True)
        current = (await self._conn.execute(sa.select(_c.used).where(*where))).first()
        if current is None:
            return None
        return QuotaCount(int(current.used), admitted=cost == 0)

    async def seed(self, name: str, period: Period, used: int) -> None:
        await self._conn.execute(
            insert_for(self._conn, quota_counters)
            .values(name=name, period_start=period.start, used=used)
            .on_conflict_do_nothing()
        )

    async def purge(self, before: int) -> int:
        """Delete the counters of periods that started before ``before``."""
        result = await self._conn.execute(quota_counters.delete().where(_c.period_start < before))
        return int(result.rowcount)
