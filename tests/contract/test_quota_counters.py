"""The quota counters (``QuotaCounter``, contract §11): in this process, in
Redis and in the database (SQLite and PostgreSQL) run the same suite."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keystile.ratelimit.quota import DatabaseQuotas, Period, QuotaCount, QuotaCounter
from keystile.storage.memory import MemoryQuotas
from keystile.storage.redis import connect
from keystile.storage.redis_quotas import RedisQuotas
from keystile.storage.sql import migrate
from keystile.storage.sql.database import open_storage

pytestmark = pytest.mark.anyio

NOW = int(time.time())
PERIOD = Period(NOW - 3600, NOW + 3600)
NEXT = Period(PERIOD.end, PERIOD.end + 7200)


@pytest.fixture(params=["memory", "redis", "sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """The backend's name and, for the databases, the URL (resolved outside the loop)."""
    if request.param == "sqlite":
        return "database", f"sqlite:///{tmp_path / 'q.db'}"
    if request.param == "postgresql":
        return "database", str(request.getfixturevalue("postgres_database"))
    if request.param == "redis":
        request.getfixturevalue("redis_url")
    return request.param, ""


@pytest.fixture
async def quotas(
    backend: tuple[str, str], request: pytest.FixtureRequest
) -> AsyncIterator[QuotaCounter]:
    kind, url = backend
    if kind == "memory":
        yield MemoryQuotas()
    elif kind == "redis":
        client = connect(request.getfixturevalue("redis_url"), 5000)
        counters = RedisQuotas(client, prefix=request.getfixturevalue("redis_prefix"))
        yield counters
        await counters.close()
        await client.aclose()
    else:
        await asyncio.to_thread(migrate.upgrade, url)
        storage = open_storage(url)
        yield DatabaseQuotas(storage)
        await storage.close()


async def test_an_unseeded_counter_is_none_until_seeded(quotas: QuotaCounter) -> None:
    assert await quotas.consume("k", PERIOD, 10, 1) is None
    await quotas.seed("k", PERIOD, 4)
    await quotas.seed("k", PERIOD, 0)  # the first seed stays
    assert await quotas.consume("k", PERIOD, 10, 1) == QuotaCount(5, admitted=True)
    assert await quotas.consume("k", PERIOD, 10, 0) == QuotaCount(5, admitted=True)


async def test_it_never_passes_its_limit(quotas: QuotaCounter) -> None:
    await quotas.seed("k", PERIOD, 8)
    results = [await quotas.consume("k", PERIOD, 10, 1) for _ in range(4)]
    assert results == [
        QuotaCount(9, True), QuotaCount(10, True), QuotaCount(10, False), QuotaCount(10, False),
    ]  # fmt: skip
    assert await quotas.consume("k", PERIOD, 12, 1) == QuotaCount(11, True)  # a raised limit


async def test_concurrent_consumes_admit_exactly_the_limit(quotas: QuotaCounter) -> None:
    await quotas.seed("k", PERIOD, 0)
    results = await asyncio.gather(*(quotas.consume("k", PERIOD, 50, 1) for _ in range(120)))
    admitted = [r for r in results if r is not None and r.admitted]
    assert len(admitted) == 50
    assert sorted(r.used for r in admitted) == list(range(1, 51))


async def test_periods_and_names_are_separate(quotas: QuotaCounter) -> None:
    await quotas.seed("k", PERIOD, 10)
    assert await quotas.consume("k", NEXT, 10, 1) is None
    await quotas.seed("k", NEXT, 0)
    assert await quotas.consume("k", NEXT, 10, 1) == QuotaCount(1, True)
    assert await quotas.consume("other", PERIOD, 10, 1) is None
