"""Metered usage in SQL (contract §11): hourly rows, daily rollups, and the
record of each meter's last batch.

Counts only ever grow by additive upserts (``SET allowed = allowed +
excluded.allowed``), so the batches of any number of processes and
instances add up exactly, in any order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from keystile.storage.sql.common import Connection, insert_for
from keystile.storage.sql.tables import usage_daily, usage_hourly, usage_writers
from keystile.usage.models import OUTCOMES, Bucket, Counts, Granularity, KeyHour

_COUNTS = tuple(outcome.value for outcome in OUTCOMES)
_DAY: Any = sa.literal_column(str(Granularity.DAY.seconds))


def _add_counts(conn: Connection, table: sa.Table, start: str) -> Any:
    """``INSERT … ON CONFLICT (key_id, start) DO UPDATE SET n = n + excluded.n``."""
    statement = insert_for(conn, table)
    return statement.on_conflict_do_update(
        index_elements=[table.c.key_id, table.c[start]],
        set_={name: table.c[name] + statement.excluded[name] for name in _COUNTS},
    )


def _counts_of(columns: Any) -> list[Any]:
    return [columns[name] for name in _COUNTS]


class SqlUsage:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def add(self, writer: str, sequence: int, hours: Sequence[KeyHour], now: int) -> bool:
        """Add ``hours`` (at most one entry per key and hour) once per
        ``(writer, sequence)``: the writer's record moves forward in the same
        transaction as the counts, or neither happens."""
        marker = insert_for(self._conn, usage_writers).values(
            id=writer, sequence=sequence, updated_at=now
        )
        marker = marker.on_conflict_do_update(
            index_elements=[usage_writers.c.id],
            set_={"sequence": marker.excluded.sequence, "updated_at": marker.excluded.updated_at},
            where=usage_writers.c.sequence < marker.excluded.sequence,
        )
        if (await self._conn.execute(marker)).rowcount != 1:
            return False  # this batch was added before
        if hours:
            await self._conn.execute(
                _add_counts(self._conn, usage_hourly, "hour_start"),
                [
                    {
                        "key_id": hour.key_id,
                        "hour_start": hour.hour,
                        "account_id": hour.account_id,
                        "counter_id": hour.counter_id,
                        **dict(zip(_COUNTS, hour.counts.values(), strict=True)),
                    }
                    for hour in hours
                ],
            )
        return True

    async def used(self, counter_id: str, start: int, end: int) -> int:
        h, d = usage_hourly.c, usage_daily.c
        both = sa.union_all(
            sa.select((h.allowed + h.forbidden).label("n")).where(
                h.counter_id == counter_id, h.hour_start >= start, h.hour_start < end
            ),
            sa.select((d.allowed + d.forbidden).label("n")).where(
                d.counter_id == counter_id, d.day_start >= start, d.day_start < end
            ),
        ).subquery()
        total = await self._conn.execute(sa.select(sa.func.coalesce(sa.func.sum(both.c.n), 0)))
        return int(total.scalar_one())

    def _rows(
        self,
        granularity: Granularity,
        account_id: str,
        start: int,
        end: int,
        key_id: str | None,
    ) -> Any:
        """A subquery of ``start, key_id`` and the counts of the rows in range:
        hourly rows, or for days, hourly rows (floored to their day) and
        daily rows together."""
        h, d = usage_hourly.c, usage_daily.c
        if granularity is Granularity.HOUR:
            hourly = sa.select(h.hour_start.label("start"), h.key_id, *_counts_of(h))
        else:
            day = (h.hour_start - h.hour_start % _DAY).label("start")
            hourly = sa.select(day, h.key_id, *_counts_of(h))
        hourly = hourly.where(h.account_id == account_id, h.hour_start >= start, h.hour_start < end)
        if key_id is not None:
            hourly = hourly.where(h.key_id == key_id)
        if granularity is Granularity.HOUR:
            return hourly.subquery()
        daily = sa.select(d.day_start.label("start"), d.key_id, *_counts_of(d)).where(
            d.account_id == account_id, d.day_start >= start, d.day_start < end
        )
        if key_id is not None:
            daily = daily.where(d.key_id == key_id)
        return sa.union_all(hourly, daily).subquery()

    async def buckets(
        self,
        account_id: str,
        granularity: Granularity,
        start: int,
        end: int,
        *,
        key_id: str | None = None,
        by_key: bool = False,
    ) -> list[Bucket]:
        rows = self._rows(granularity, account_id, start, end, key_id)
        groups = [rows.c.start, rows.c.key_id] if by_key else [rows.c.start]
        sums = [sa.func.sum(rows.c[name]).label(name) for name in _COUNTS]
        query = sa.select(*groups, *sums).group_by(*groups)
        return [
            Bucket(
                start=int(row.start),
                counts=Counts.of(tuple(int(row._mapping[name]) for name in _COUNTS)),
                key_id=row.key_id if by_key else key_id,
            )
            for row in await self._conn.execute(query)
        ]

    async def keys_with_usage(
        self, account_id: str, granularity: Granularity, start: int, end: int
    ) -> list[str]:
        rows = self._rows(granularity, account_id, start, end, None)
        query = sa.select(rows.c.key_id).distinct().order_by(rows.c.key_id)
        return [row.key_id for row in await self._conn.execute(query)]

    async def roll_up(self, before: int, limit: int) -> int:
        h = usage_hourly.c
        batch = sa.select(h.key_id, h.hour_start).where(h.hour_start < before).limit(limit)
        # DELETE … RETURNING: exactly the rows removed are added to the days,
        # even if a meter's upsert lands on one of them meanwhile (it waits
        # for this transaction, then makes a new hourly row).
        moved = await self._conn.execute(
            usage_hourly.delete()
            .where(h.hour_start < before, sa.tuple_(h.key_id, h.hour_start).in_(batch))
            .returning(h.key_id, h.account_id, h.counter_id, h.hour_start, *_counts_of(h))
        )
        days: dict[tuple[str, int], dict[str, Any]] = {}
        count = 0
        for row in moved:
            count += 1
            day = row.hour_start - row.hour_start % Granularity.DAY.seconds
            totals = days.get((row.key_id, day))
            if totals is None:
                totals = days[(row.key_id, day)] = {
                    "key_id": row.key_id,
                    "day_start": day,
                    "account_id": row.account_id,
                    "counter_id": row.counter_id,
                    **dict.fromkeys(_COUNTS, 0),
                }
            for name in _COUNTS:
                totals[name] += row._mapping[name]
        if days:
            await self._conn.execute(
                _add_counts(self._conn, usage_daily, "day_start"), list(days.values())
            )
        return count

    async def forget_writers(self, before: int) -> int:
        result = await self._conn.execute(
            usage_writers.delete().where(usage_writers.c.updated_at < before)
        )
        return int(result.rowcount)
