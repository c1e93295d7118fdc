"""The window counters (``WindowCounter``): the in-process one and Redis run
the same suite; then what Redis does when it is slow, busy or gone.

The rule under test for Redis (issue #11): a slow but live Redis never makes
a request count twice. Only an unreachable Redis (or one that answers with an
error) brings the failure policy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from keystile.ratelimit.models import Guard, Limit, RateLimiterUnavailable, WindowCounter
from keystile.storage.memory import MemoryWindows
from keystile.storage.redis import RedisWindows, connect
from tests.conftest import require_service
from tests.redis_support import redis_server, sleep_redis
from tests.support import FakeClock, free_port

pytestmark = pytest.mark.anyio

HOUR = 3600


@pytest.fixture(params=["memory", "redis"])
async def counter(request: pytest.FixtureRequest) -> AsyncIterator[WindowCounter]:
    if request.param == "memory":
        yield MemoryWindows(FakeClock(1_800_001_800.0))
        return
    url = request.getfixturevalue("redis_url")
    client = connect(url, 5000)
    windows = RedisWindows(client, prefix=request.getfixturevalue("redis_prefix"))
    yield windows
    await windows.close()
    await client.aclose()


async def test_concurrent_hits_each_get_their_own_position(counter: WindowCounter) -> None:
    counts = await asyncio.gather(*(counter.hit("key:a", HOUR) for _ in range(30)))
    assert sorted(c.count for c in counts) == list(range(1, 31))
    assert len({c.reset for c in counts}) <= 2  # one window (two if it turned meanwhile)
    assert not any(c.guarded for c in counts)


async def test_a_zero_cost_hit_reads_without_counting(counter: WindowCounter) -> None:
    await counter.hit("key:a", HOUR, cost=3)
    assert (await counter.hit("key:a", HOUR, cost=0)).count == 3
    assert (await counter.hit("key:a", HOUR)).count == 4
    assert (await counter.hit("key:never", HOUR, cost=0)).count == 0


async def test_a_guard_below_its_limit_lets_the_hit_count(counter: WindowCounter) -> None:
    guard = Guard("auth:198.51.100.1", Limit(3, HOUR))
    await counter.hit(guard.key, HOUR, cost=2)
    counted = await counter.hit("key:a", 60, guard=guard)
    assert (counted.count, counted.guarded) == (1, False)
    assert counted.reset % 60 == 0  # the key's own window


async def test_a_guard_at_its_limit_vetoes_the_hit_and_counts_nothing(
    counter: WindowCounter,
) -> None:
    guard = Guard("auth:198.51.100.1", Limit(3, HOUR))
    failures = await counter.hit(guard.key, HOUR, cost=3)
    vetoed = await asyncio.gather(*(counter.hit("key:a", 60, guard=guard) for _ in range(5)))
    assert {(c.count, c.reset, c.guarded) for c in vetoed} == {(3, failures.reset, True)}
    assert (await counter.hit("key:a", 60, cost=0)).count == 0
    # Unguarded hits, and hits guarded by another address, still count.
    other = Guard("auth:198.51.100.2", Limit(3, HOUR))
    assert (await counter.hit("key:a", 60, guard=other)).count == 1


# Redis only: slow is not down.


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server of this test's own (it will be slowed or stopped): its port."""
    require_service("Redis", "127.0.0.1", 6379)  # the redis-server binary comes with the service
    port = free_port()
    with redis_server(port, tmp_path):
        yield port


def windows_on(port: int, **options: object) -> RedisWindows:
    url = f"redis://127.0.0.1:{port}/0"
    reply_timeout_ms = int(options.pop("reply_timeout_ms", 5000))  # type: ignore[call-overload]
    return RedisWindows(
        connect(url, reply_timeout_ms),
        reply_timeout_ms=reply_timeout_ms,
        fallback=MemoryWindows(),
        **options,  # type: ignore[arg-type]
    )


def seed(port: int, count: int) -> None:
    """Puts ``count`` in the current hour's counter of ``key:a``, by Redis's clock."""
    client = redis.Redis(port=port)
    seconds, _ = client.time()
    client.set(f"keystile:rl:key:a:{seconds // HOUR}", count)
    client.close()


async def test_a_busy_event_loop_does_not_make_a_live_redis_look_down(private_redis: int) -> None:
    """The reply arrives while this event loop is blocked for longer than
    KEYSTILE_REDIS_TIMEOUT_MS: it still counts (it used to time out, open the
    circuit and be counted again by this process alone)."""
    seed(private_redis, 10)
    windows = windows_on(private_redis, timeout_ms=250, failure_mode="open")
    assert (await windows.hit("key:warm", HOUR)).count == 1  # a connection is open
    sleeper = await asyncio.to_thread(sleep_redis, private_redis, 0.5)  # no reply before...
    hit = asyncio.ensure_future(windows.hit("key:a", HOUR))
    await asyncio.sleep(0.05)  # ...the call is sent...
    time.sleep(1.0)  # noqa: ASYNC251 (...and the loop is busy when the reply comes)
    assert (await hit).count == 11  # Redis's count: this process's own would be 1
    assert (await windows.hit("key:a", HOUR)).count == 12
    await asyncio.to_thread(sleeper.join)
    await windows.close()


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_a_reply_past_the_deadline_is_refused_and_never_counted_here(
    private_redis: int, mode: str
) -> None:
    seed(private_redis, 10)
    windows = windows_on(private_redis, timeout_ms=200, reply_timeout_ms=300, failure_mode=mode)
    sleeper = await asyncio.to_thread(sleep_redis, private_redis, 1.5)
    with pytest.raises(RateLimiterUnavailable):
        await windows.hit("key:a", HOUR)
    await asyncio.to_thread(sleeper.join)
    # Not treated as down: no circuit, the next request is counted by Redis,
    # which may or may not have counted the refused one.
    assert (await windows.hit("key:a", HOUR)).count in (11, 12)
    await windows.close()


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_an_unreachable_redis_brings_the_policy(mode: str) -> None:
    windows = windows_on(free_port(), timeout_ms=200, failure_mode=mode)  # nothing listens
    if mode == "closed":
        with pytest.raises(RateLimiterUnavailable):
            await windows.hit("key:a", HOUR)
        return
    counts = [await windows.hit("key:a", HOUR) for _ in range(3)]
    assert [c.count for c in counts] == [1, 2, 3]  # this process's own counter
    await windows.close()


async def test_a_redis_that_answers_with_an_error_brings_the_policy(private_redis: int) -> None:
    """Redis up but refusing to count (here: out of memory): the request was
    not counted there, so the policy decides, as for an unreachable Redis."""
    seed(private_redis, 10)
    admin = aioredis.Redis(port=private_redis)
    await admin.config_set("maxmemory", "1")
    await admin.config_set("maxmemory-policy", "noeviction")
    windows = windows_on(private_redis, failure_mode="open")
    assert (await windows.hit("key:a", HOUR)).count == 1  # this process's count (Redis: 11)
    await admin.config_set("maxmemory", "0")
    await admin.aclose()
    await windows.close()
