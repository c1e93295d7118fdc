"""The storage contract of usage metering (contract §11), on every backend:
additive upserts, batches added once, exact sums across hourly and daily
rows, and rollups that keep every day total."""

from __future__ import annotations

import asyncio
import calendar
import itertools

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from keystile.storage.base import Storage
from keystile.storage.sql.database import async_url, open_storage
from keystile.storage.sql.tables import metadata
from keystile.usage.models import DAY, HOUR, Counts, Granularity, KeyHour

pytestmark = pytest.mark.anyio

LEAP_DAY = calendar.timegm((2028, 2, 29, 0, 0, 0))
HOURLY, DAILY = Granularity.HOUR, Granularity.DAY


def hour(key: str, at: int, *counts: int, account: str = "acc_a", counter: str = "") -> KeyHour:
    return KeyHour(key, account, counter or key, at, Counts.of(counts))


_sequences = itertools.count(1)


async def add(
    storage: Storage, rows: list[KeyHour], writer: str = "w", sequence: int | None = None
) -> bool:
    """One meter batch (by default the next of writer ``w``)."""
    async with storage.transaction() as uow:
        return await uow.usage.add(
            writer, next(_sequences) if sequence is None else sequence, rows, 0
        )


async def account_buckets(
    storage: Storage, granularity: Granularity, start: int, end: int, **options: object
) -> dict[tuple[int, str | None], Counts]:
    async with storage.reader() as uow:
        found = await uow.usage.buckets(
            "acc_a",
            granularity,
            start,
            end,
            **options,  # type: ignore[arg-type]
        )
    return {(b.start, b.key_id): b.counts for b in found}


async def used(storage: Storage, counter: str, start: int, end: int) -> int:
    async with storage.reader() as uow:
        return await uow.usage.used(counter, start, end)


async def test_upserts_add_up_to_one_row_per_key_and_hour(storage: Storage) -> None:
    t = LEAP_DAY + 5 * HOUR
    await add(storage, [hour("key_1", t, 1, 2, 3, 4), hour("key_2", t, 1, 0, 0, 0)])
    await add(storage, [hour("key_1", t, 10, 20, 30, 40)], writer="other")
    await add(storage, [hour("key_1", t + HOUR, 7, 0, 0, 0)])
    got = await account_buckets(storage, HOURLY, LEAP_DAY, LEAP_DAY + DAY, by_key=True)
    assert got == {
        (t, "key_1"): Counts(11, 22, 33, 44),
        (t, "key_2"): Counts(1, 0, 0, 0),
        (t + HOUR, "key_1"): Counts(7, 0, 0, 0),
    }
    totals = await account_buckets(storage, HOURLY, LEAP_DAY, LEAP_DAY + DAY)
    assert totals == {(t, None): Counts(12, 22, 33, 44), (t + HOUR, None): Counts(7, 0, 0, 0)}


async def test_a_batch_is_added_once_per_writer_and_sequence(storage: Storage) -> None:
    """A retry after a commit in doubt must not count twice."""
    t = LEAP_DAY
    assert await add(storage, [hour("key_1", t, 5, 0, 0, 0)], writer="w1", sequence=1)
    assert not await add(storage, [hour("key_1", t, 5, 0, 0, 0)], writer="w1", sequence=1)
    assert not await add(storage, [hour("key_1", t, 9, 0, 0, 0)], writer="w1", sequence=0)
    assert await add(storage, [hour("key_1", t, 1, 0, 0, 0)], writer="w2", sequence=1)
    assert await add(storage, [hour("key_1", t, 2, 0, 0, 0)], writer="w1", sequence=2)
    assert await used(storage, "key_1", t, t + DAY) == 8


async def test_a_failed_transaction_adds_nothing_and_keeps_the_sequence_free(
    storage: Storage,
) -> None:
    with pytest.raises(RuntimeError):
        async with storage.transaction() as uow:
            await uow.usage.add("w", 1, [hour("key_1", LEAP_DAY, 5, 0, 0, 0)], 0)
            raise RuntimeError("rolled back")
    assert await used(storage, "key_1", LEAP_DAY, LEAP_DAY + DAY) == 0
    assert await add(storage, [hour("key_1", LEAP_DAY, 5, 0, 0, 0)], writer="w", sequence=1)
    assert await used(storage, "key_1", LEAP_DAY, LEAP_DAY + DAY) == 5


async def test_used_counts_allowed_and_forbidden_of_every_key_of_the_counter(
    storage: Storage,
) -> None:
    day_before, day, day_after = LEAP_DAY - DAY, LEAP_DAY, LEAP_DAY + DAY
    await add(
        storage,
        [
            hour("key_old", day, 1, 100, 100, 2),  # rate_limited and quota_exceeded use nothing
            hour("key_new", day + 23 * HOUR, 4, 0, 0, 8, counter="key_old"),  # rotated from it
            hour("key_other", day, 1000, 0, 0, 0),
            hour("key_old", day_before + 23 * HOUR, 1000, 0, 0, 0),  # before the range
            hour("key_old", day_after, 1000, 0, 0, 0),  # the end is excluded
        ],
    )
    assert await used(storage, "key_old", day, day_after) == 1 + 2 + 4 + 8
    assert await used(storage, "key_new", day, day_after) == 0  # counted under key_old
    assert await used(storage, "nobody", day, day_after) == 0


async def test_days_add_hourly_and_daily_rows_and_keys_are_listed(storage: Storage) -> None:
    await add(
        storage,
        [hour("key_b", LEAP_DAY + 23 * HOUR + 0, 1, 0, 0, 0), hour("key_a", LEAP_DAY, 2, 0, 0, 0)],
    )
    await add(storage, [hour("key_c", LEAP_DAY, 4, 0, 0, 0, account="acc_other")])
    async with storage.transaction() as uow:  # everything before the next day becomes daily
        assert await uow.usage.roll_up(LEAP_DAY + DAY, 100) == 3
    await add(storage, [hour("key_a", LEAP_DAY + HOUR, 0, 0, 0, 3)])  # a late flush, hourly again
    got = await account_buckets(storage, DAILY, LEAP_DAY - DAY, LEAP_DAY + 2 * DAY)
    assert got == {(LEAP_DAY, None): Counts(3, 0, 0, 3)}
    keyed = await account_buckets(storage, DAILY, LEAP_DAY, LEAP_DAY + DAY, by_key=True)
    assert keyed == {(LEAP_DAY, "key_a"): Counts(2, 0, 0, 3), (LEAP_DAY, "key_b"): Counts(1)}
    one = await account_buckets(storage, DAILY, LEAP_DAY, LEAP_DAY + DAY, key_id="key_b")
    assert one == {(LEAP_DAY, "key_b"): Counts(1)}
    async with storage.reader() as uow:
        assert await uow.usage.keys_with_usage("acc_a", DAILY, LEAP_DAY, LEAP_DAY + DAY) == [
            "key_a", "key_b",
        ]  # fmt: skip
        # Hours are only what is still hourly.
        assert await uow.usage.keys_with_usage("acc_a", HOURLY, LEAP_DAY, LEAP_DAY + DAY) == [
            "key_a"
        ]
        assert await uow.usage.keys_with_usage("acc_a", DAILY, 0, LEAP_DAY) == []


async def test_a_rollup_keeps_every_day_total_and_used_exact(storage: Storage) -> None:
    start = LEAP_DAY - 2 * DAY
    rows = [
        hour(f"key_{n % 7}", start + h * HOUR, n, n % 3, n % 5, n % 2)
        for n, h in enumerate(range(0, 4 * 24, 1))
    ]
    for n in range(0, len(rows), 10):
        await add(storage, rows[n : n + 10])
    await add(storage, [hour("key_0", start, 1, 1, 1, 1)])  # onto an existing row
    before = await account_buckets(storage, DAILY, start, start + 4 * DAY, by_key=True)
    used_before = {k: await used(storage, f"key_{k}", start, start + 4 * DAY) for k in range(7)}
    moved = 0
    while True:  # in batches of 5 rows, up to the last day (which stays hourly)
        async with storage.transaction() as uow:
            batch = await uow.usage.roll_up(start + 3 * DAY, 5)
        assert batch <= 5
        moved += batch
        if batch == 0:
            break
    assert moved == 3 * 24
    after = await account_buckets(storage, DAILY, start, start + 4 * DAY, by_key=True)
    assert after == before
    assert {k: await used(storage, f"key_{k}", start, start + 4 * DAY) for k in range(7)} == (
        used_before
    )
    hourly = await account_buckets(storage, HOURLY, start, start + 4 * DAY)
    assert sorted(s for s, _ in hourly) == [start + 3 * DAY + h * HOUR for h in range(24)]


async def test_rolling_up_while_meters_write_loses_and_doubles_nothing(
    storage: Storage, database_url: str
) -> None:
    """Two storages (two processes' worth of connections) on one database: a
    meter keeps adding to the hours a rollup is moving."""
    other = open_storage(database_url)
    try:
        t = LEAP_DAY

        async def meter() -> None:
            for n in range(1, 41):
                row = hour("key_1", t + (n % 3) * HOUR, 1, 0, 0, 1)
                await add(other, [row], writer="m", sequence=n)
                await asyncio.sleep(0)

        async def rollups() -> None:
            for _ in range(40):
                async with storage.transaction() as uow:
                    await uow.usage.roll_up(t + DAY, 1)
                await asyncio.sleep(0)

        await asyncio.gather(meter(), rollups())
        assert await used(storage, "key_1", t, t + DAY) == 80
        got = await account_buckets(storage, DAILY, t, t + DAY)
        assert got == {(t, None): Counts(40, 0, 0, 40)}
    finally:
        await other.close()


async def test_silent_writers_are_forgotten(storage: Storage) -> None:
    async with storage.transaction() as uow:
        await uow.usage.add("old", 1, [], now=10)
        await uow.usage.add("new", 1, [], now=20)
    async with storage.transaction() as uow:
        assert await uow.usage.forget_writers(before=20) == 1
    async with storage.transaction() as uow:  # forgotten: its sequence 1 is new again
        assert await uow.usage.add("old", 1, [], now=30)
        assert not await uow.usage.add("new", 1, [], now=30)


def _drift(conn: sa.Connection) -> list[object]:
    usage_tables = ("usage_hourly", "usage_daily", "usage_writers")
    changes = compare_metadata(MigrationContext.configure(conn), metadata)
    return [change for change in changes if any(name in repr(change) for name in usage_tables)]


async def test_the_migration_makes_the_tables_the_code_describes(
    storage: Storage, database_url: str
) -> None:
    if database_url.startswith("sqlite"):
        engine = sa.create_engine(database_url)
        with engine.connect() as conn:
            drift = _drift(conn)
        engine.dispose()
    else:
        async_engine = create_async_engine(async_url(database_url))
        async with async_engine.connect() as async_conn:
            drift = await async_conn.run_sync(_drift)
        await async_engine.dispose()
    assert drift == []
