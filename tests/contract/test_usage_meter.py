"""The usage meter over every backend (contract §11, issue #14): counts are
batched in memory and written as one row per key and hour per flush, a
failed flush is retried without losing or doubling anything, and what is
not yet written is still seen by ``pending_used``."""

from __future__ import annotations

import asyncio
import calendar
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest

from keystile.keys.models import ApiKey, Tier
from keystile.storage.base import Storage, StorageUnavailable, UnitOfWork
from keystile.usage.meter import UsageMeter
from keystile.usage.models import DAY, HOUR, Counts, Granularity, KeyHour, Outcome
from tests.support import FakeClock

pytestmark = pytest.mark.anyio

T0 = calendar.timegm((2028, 2, 29, 10, 0, 0))  # a leap day, 10:00 UTC


def a_key(n: int, account: str = "acc_a", rotated_from: str = "") -> ApiKey:
    return ApiKey(
        id=f"key_{n:06d}",
        account_id=account,
        name=f"k{n}",
        description=None,
        permissions=("read:contacts",),
        rate_limit_tier=Tier.STANDARD,
        expires_at=None,
        created_at=0,
        limit_key=rotated_from,
    )


class _Usage:
    def __init__(self, inner: Any, owner: Watched) -> None:
        self._inner, self._owner = inner, owner

    async def add(self, writer: str, sequence: int, hours: Sequence[KeyHour], now: int) -> bool:
        if self._owner.fail_before:
            self._owner.fail_before -= 1
            raise StorageUnavailable("the database went away before the write")
        self._owner.batches.append(list(hours))
        added: bool = await self._inner.add(writer, sequence, hours, now)
        self._owner.added.append(added)
        self._owner.written.set()
        return added


class _Uow:
    def __init__(self, inner: UnitOfWork, owner: Watched) -> None:
        self._inner = inner
        self.usage = _Usage(inner.usage, owner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class Watched:
    """A real storage that records each batch the meter writes, and can fail
    a write before it happens or after its commit (a commit in doubt)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.batches: list[list[KeyHour]] = []
        self.added: list[bool] = []
        self.fail_before = 0
        self.fail_after_commit = 0
        self.written = asyncio.Event()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        async with self.inner.transaction() as uow:
            yield _Uow(uow, self)
        if self.fail_after_commit:
            self.fail_after_commit -= 1
            raise StorageUnavailable("the connection was lost at COMMIT")

    def reader(self) -> Any:
        return self.inner.reader()


@pytest.fixture
def watched(storage: Storage) -> Watched:
    return Watched(storage)


def meter_on(watched: Watched, clock: FakeClock, flush_seconds: float = 3600) -> UsageMeter:
    return UsageMeter(cast(Storage, watched), flush_seconds=flush_seconds, clock=clock)


async def stored(storage: Storage, **options: Any) -> dict[tuple[int, str | None], Counts]:
    async with storage.reader() as uow:
        found = await uow.usage.buckets("acc_a", Granularity.HOUR, T0 - DAY, T0 + DAY, **options)
    return {(b.start, b.key_id): b.counts for b in found}


async def test_ten_thousand_keys_make_one_row_per_key_and_hour_per_flush(
    storage: Storage, watched: Watched
) -> None:
    clock = FakeClock(T0 + 0.5)
    meter = meter_on(watched, clock)
    keys = [a_key(n) for n in range(10_000)]
    for round_ in (1, 2):
        for hour in (0, 1):
            clock.now = T0 + hour * HOUR + 10
            for n, key in enumerate(keys):
                for _ in range(3):
                    meter.record(key, Outcome.ALLOWED)
                if n % 10 == 0:
                    meter.record(key, Outcome.RATE_LIMITED)
        await meter.flush()
        batch = watched.batches[-1]
        assert len(watched.batches) == round_  # one write per flush
        assert len(batch) == 20_000  # one row per key and hour
        assert len({(row.key_id, row.hour) for row in batch}) == 20_000
    async with storage.reader() as uow:
        total = await uow.usage.buckets("acc_a", Granularity.HOUR, T0, T0 + 2 * HOUR)
        keyed = await uow.usage.buckets("acc_a", Granularity.HOUR, T0, T0 + 2 * HOUR, by_key=True)
    assert {b.start: b.counts for b in total} == {
        T0: Counts(allowed=60_000, rate_limited=2_000),
        T0 + HOUR: Counts(allowed=60_000, rate_limited=2_000),
    }
    assert len(keyed) == 20_000  # upserted in place by the second flush


async def test_an_empty_flush_writes_nothing(watched: Watched) -> None:
    meter = meter_on(watched, FakeClock(T0))
    await meter.flush()
    assert watched.batches == []


async def test_counts_go_to_the_hour_of_the_clock_with_their_key_account_and_counter(
    storage: Storage, watched: Watched
) -> None:
    clock = FakeClock(T0 - 0.001)  # 09:59:59.999
    meter = meter_on(watched, clock)
    old, rotated = a_key(1), a_key(2, rotated_from="key_000001")
    meter.record(old, Outcome.ALLOWED)
    clock.now = T0  # 10:00:00 exactly
    meter.record(old, Outcome.FORBIDDEN)
    meter.record(rotated, Outcome.QUOTA_EXCEEDED)
    await meter.flush()
    assert sorted((r.key_id, r.account_id, r.counter_id, r.hour, r.counts) for r in
                  watched.batches[0]) == [
        ("key_000001", "acc_a", "key_000001", T0 - HOUR, Counts(allowed=1)),
        ("key_000001", "acc_a", "key_000001", T0, Counts(forbidden=1)),
        ("key_000002", "acc_a", "key_000001", T0, Counts(quota_exceeded=1)),
    ]  # fmt: skip


async def test_pending_used_counts_what_is_not_written_yet(
    storage: Storage, watched: Watched
) -> None:
    clock = FakeClock(T0 + 5)
    meter = meter_on(watched, clock)
    old, rotated, other = a_key(1), a_key(2, rotated_from="key_000001"), a_key(3)
    for outcome in Outcome:  # rate_limited and quota_exceeded use no quota
        meter.record(old, outcome)
        meter.record(rotated, outcome)
    meter.record(other, Outcome.ALLOWED)
    clock.now = T0 + DAY  # tomorrow
    meter.record(old, Outcome.ALLOWED)
    today = (T0 - 10 * HOUR, T0 + 14 * HOUR)
    assert meter.pending_used("key_000001", *today) == 4
    assert meter.pending_used("key_000001", today[0], today[1] + DAY) == 5
    assert meter.pending_used("key_000002", *today) == 0  # counted under its counter
    assert meter.pending_used("key_000003", *today) == 1
    async with meter.settled(), storage.reader() as uow:
        assert await uow.usage.used("key_000001", *today) == 0
    await meter.flush()
    assert meter.pending_used("key_000001", *today) == 0
    async with storage.reader() as uow:
        assert await uow.usage.used("key_000001", *today) == 4


async def test_a_write_that_fails_is_retried_and_counted_once(
    storage: Storage, watched: Watched
) -> None:
    clock = FakeClock(T0 + 5)
    meter = meter_on(watched, clock)
    key = a_key(1)
    meter.record(key, Outcome.ALLOWED)
    watched.fail_before = 1
    with pytest.raises(StorageUnavailable):
        await meter.flush()
    assert meter.pending_used(key.id, T0, T0 + HOUR) == 1  # kept
    meter.record(key, Outcome.ALLOWED)  # recorded meanwhile
    await meter.flush()
    assert await stored(storage) == {(T0, None): Counts(allowed=2)}
    assert meter.pending_used(key.id, T0, T0 + HOUR) == 0


async def test_a_commit_in_doubt_is_retried_and_not_counted_twice(
    storage: Storage, watched: Watched
) -> None:
    clock = FakeClock(T0 + 5)
    meter = meter_on(watched, clock)
    key = a_key(1)
    for _ in range(3):
        meter.record(key, Outcome.ALLOWED)
    watched.fail_after_commit = 1  # committed, but the meter hears a failure
    with pytest.raises(StorageUnavailable):
        await meter.flush()
    assert meter.pending_used(key.id, T0, T0 + HOUR) == 3  # not known to be written
    meter.record(key, Outcome.FORBIDDEN)
    await meter.flush()
    assert watched.added == [True, False, True]  # the retry was recognised
    assert await stored(storage) == {(T0, None): Counts(allowed=3, forbidden=1)}


@pytest.fixture
async def cut_connections_allowed() -> AsyncIterator[None]:
    """asyncpg reports a connection cut by a cancellation from a loop
    callback; where cancelling is the point of a test, that is no failure."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "connection_lost" in str(context.get("exception", "")):
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    yield
    loop.set_exception_handler(previous)


@pytest.mark.parametrize("steps", [0, 1, 2, 3, 5, 8])
@pytest.mark.usefixtures("cut_connections_allowed")
async def test_a_flush_cancelled_anywhere_is_retried_and_counted_once(
    storage: Storage, watched: Watched, steps: int
) -> None:
    """Shutdown cancels the periodic flush wherever it is (on PostgreSQL,
    possibly between the COMMIT and its answer)."""
    clock = FakeClock(T0 + 5)
    meter = meter_on(watched, clock)
    meter.record(a_key(1), Outcome.ALLOWED)
    flushing = asyncio.ensure_future(meter.flush())
    for _ in range(steps):
        await asyncio.sleep(0)
    flushing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flushing
    await meter.flush()
    assert await stored(storage) == {(T0, None): Counts(allowed=1)}


async def test_stop_writes_what_is_left_and_the_periodic_flush_runs(
    storage: Storage, watched: Watched
) -> None:
    clock = FakeClock(T0 + 5)
    meter = meter_on(watched, clock, flush_seconds=0.05)
    meter.start()
    meter.record(a_key(1), Outcome.ALLOWED)
    await asyncio.wait_for(watched.written.wait(), timeout=30)  # the periodic flush ran
    meter.record(a_key(1), Outcome.RATE_LIMITED)
    await meter.stop()
    assert await stored(storage) == {(T0, None): Counts(allowed=1, rate_limited=1)}
