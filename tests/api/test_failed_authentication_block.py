"""The failed-authentication limit stops guessing (issue #11, contract §5).

Once an address has failed ``KEYSTILE_AUTH_FAILURE_LIMIT`` times in a
window, every request from it is refused with ``429`` before any key lookup,
whatever it presents, until the window ends. On the in-process counters and
on Redis (where a block made by one instance holds on every other), on both
databases.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from keystile.api.app import create_app
from keystile.api.pipeline import Pipeline
from keystile.keys import tokens
from keystile.keys.models import Plan
from keystile.settings import Settings
from keystile.webhooks.dispatcher import Dispatcher
from tests.conftest import settings_for
from tests.support import FakeClock, Tenant, assert_error, make_tenant

pytestmark = pytest.mark.anyio

FAILURES, LIMIT = 3, 5  # per hour
GUESSER, BYSTANDER = "198.51.100.7", "198.51.100.8"
MESSAGE = "Too many failed authentications from this address."
MID_HOUR = 1_800_001_800.0  # half an hour before a window ends


@pytest.fixture(params=["memory", "redis"])
def counters(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings of the counter backend: in-process, or a Redis of this test's own prefix."""
    if request.param == "memory":
        return {}
    return {
        "redis_url": request.getfixturevalue("redis_url"),
        "redis_prefix": request.getfixturevalue("redis_prefix"),
    }


@pytest.fixture
def settings(database_url: str, data_dir: Path, counters: dict[str, str]) -> Settings:
    return settings_for(
        database_url,
        data_dir,
        auth_failure_limit=f"{FAILURES}/hour",
        tier_standard=f"{LIMIT}/hour",
        trusted_proxies="127.0.0.1",
        **counters,
    )


def redis_seconds(url: str) -> float:
    """Redis's clock: the one its windows follow."""
    client = redis.Redis.from_url(url)
    seconds, micros = client.time()
    client.close()
    return float(seconds) + micros / 1e6


def wait_for_a_window_start(url: str, window: int, margin: float) -> None:
    """Sleeps until at least ``margin`` seconds remain in Redis's current window."""
    left = window - redis_seconds(url) % window
    if left < margin:
        time.sleep(left + 0.01)


@pytest.fixture
def clock(counters: dict[str, str]) -> FakeClock:
    """Mid-window: with Redis (whose clock decides) the hour is far from its end."""
    if "redis_url" not in counters:
        return FakeClock(MID_HOUR)
    wait_for_a_window_start(counters["redis_url"], 3600, margin=120)
    return FakeClock()


def client_for(app: Pipeline) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://keystile.test")


@pytest.fixture
async def client(app: Pipeline) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http


def sent_from(address: str, secret: str | None = None, **headers: str) -> dict[str, str]:
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    return {**headers, "X-Forwarded-For": address}


def unknown_key() -> str:
    """Well-formed, checksum and all: only storage can tell that it is not a key."""
    return tokens.generate("wbk")


@contextmanager
def storage_calls(app: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every call the app makes to its storage while the block runs (the
    webhook dispatcher's own polling, every second in its task, aside)."""
    calls: list[str] = []
    storage = app.services.storage
    with monkeypatch.context() as patch:
        for name in ("reader", "transaction", "changed_elsewhere", "ping"):
            original = getattr(storage, name)

            def counting(*args: object, _name: str = name, _original: Any = original) -> Any:
                task = asyncio.current_task()
                if task is None or task.get_name() != Dispatcher.NAME:
                    calls.append(_name)
                return _original(*args)

            patch.setattr(storage, name, counting)
        yield calls


async def block(client: httpx.AsyncClient, address: str = GUESSER) -> None:
    """``address`` fails exactly the limit: each failure is a 401, and the budget is spent."""
    for _ in range(FAILURES):
        response = await client.get("/v1/api-keys", headers=sent_from(address, unknown_key()))
        assert_error(response, 401, "invalid_key")


def assert_blocked(response: httpx.Response, clock: FakeClock | None = None) -> None:
    error = assert_error(response, 429, "rate_limited")
    assert error["message"] == MESSAGE
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 3600
    if clock is not None:  # the in-process clock: exactly the time to the window's end
        assert retry_after == math.ceil((math.floor(clock.now / 3600) + 1) * 3600 - clock.now)
    assert not any(name.startswith("x-ratelimit") for name in response.headers)


# What a blocked address may present; each makes its credential from the tenant.
Presented = Callable[[Pipeline, httpx.AsyncClient, Tenant], Awaitable[dict[str, str]]]


async def correct_key_cached(
    app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
) -> dict[str, str]:
    used = await client.get("/v1/api-keys", headers=sent_from(BYSTANDER, tenant.secret))
    assert used.status_code == 200  # now in the verifier's cache
    return sent_from(GUESSER, tenant.secret)


async def correct_key_uncached(
    app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
) -> dict[str, str]:
    return sent_from(GUESSER, tenant.secret)


async def unmetered_key(app: Pipeline, client: httpx.AsyncClient, tenant: Tenant) -> dict[str, str]:
    enterprise = await make_tenant(app, plan=Plan.ENTERPRISE, tier="unmetered")
    assert (
        await client.get("/v1/api-keys", headers=sent_from(BYSTANDER, enterprise.secret))
    ).status_code == 200
    return sent_from(GUESSER, enterprise.secret)


async def wrong_key(app: Pipeline, client: httpx.AsyncClient, tenant: Tenant) -> dict[str, str]:
    return sent_from(GUESSER, unknown_key())


async def bad_checksum(app: Pipeline, client: httpx.AsyncClient, tenant: Tenant) -> dict[str, str]:
    return sent_from(GUESSER, tenant.secret[:-1] + ("A" if tenant.secret[-1] != "A" else "B"))


async def no_key(app: Pipeline, client: httpx.AsyncClient, tenant: Tenant) -> dict[str, str]:
    return sent_from(GUESSER)


async def basic_auth(app: Pipeline, client: httpx.AsyncClient, tenant: Tenant) -> dict[str, str]:
    return sent_from(GUESSER, Authorization=f"Basic {tenant.secret}")


async def revoked_key(app: Pipeline, client: httpx.AsyncClient, tenant: Tenant) -> dict[str, str]:
    victim = await make_tenant(app, account=tenant.account, name="victim")
    async with app.services.storage.transaction() as uow:
        await app.services.keys.revoke(uow, tenant.account.id, victim.key_id)
    return sent_from(GUESSER, victim.secret)


PRESENTED: dict[str, Presented] = {
    "a correct key, cached": correct_key_cached,
    "a correct key, not cached": correct_key_uncached,
    "a correct unmetered key, cached": unmetered_key,
    "a wrong key": wrong_key,
    "a key with a bad checksum": bad_checksum,
    "no key": no_key,
    "the key as Basic credentials": basic_auth,
    "a revoked key": revoked_key,
}
TARGETS = {
    "management": ("GET", "/v1/api-keys", None),
    "verify": ("POST", "/v1/keys/verify", {"key": "wbk_live_x"}),
}


@pytest.mark.parametrize("target", TARGETS.values(), ids=TARGETS.keys())
@pytest.mark.parametrize("presented", PRESENTED.values(), ids=PRESENTED.keys())
async def test_a_blocked_address_is_refused_before_any_lookup(
    app: Pipeline,
    client: httpx.AsyncClient,
    tenant: Tenant,
    clock: FakeClock,
    counters: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    presented: Presented,
    target: tuple[str, str, dict[str, str] | None],
) -> None:
    headers = await presented(app, client, tenant)
    await block(client)
    method, path, body = target
    with storage_calls(app, monkeypatch) as calls:
        response = await client.request(method, path, headers=headers, json=body)
    assert_blocked(response, None if counters else clock)
    assert calls == []
    # Nothing was counted against the tenant's key: its next request (from
    # elsewhere) is its second or first of the window.
    own = await client.get("/v1/api-keys", headers=sent_from(BYSTANDER, tenant.secret))
    assert own.status_code == 200
    used = 2 if presented is correct_key_cached else 1
    assert int(own.headers["x-ratelimit-remaining"]) == LIMIT - used


async def test_the_budget_is_the_limit_and_other_addresses_are_served(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await block(client)
    assert_blocked(await client.get("/v1/api-keys", headers=sent_from(GUESSER, tenant.secret)))
    served = await client.get("/v1/api-keys", headers=sent_from(BYSTANDER, tenant.secret))
    assert served.status_code == 200
    other = await client.get("/v1/api-keys", headers=sent_from(BYSTANDER, unknown_key()))
    assert_error(other, 401, "invalid_key")


async def test_below_the_limit_a_correct_key_is_served_and_failures_cost_it_nothing(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for _ in range(FAILURES - 1):
        response = await client.get("/v1/api-keys", headers=sent_from(GUESSER, unknown_key()))
        assert_error(response, 401, "invalid_key")
    served = await client.get("/v1/api-keys", headers=sent_from(GUESSER, tenant.secret))
    assert served.status_code == 200
    assert int(served.headers["x-ratelimit-remaining"]) == LIMIT - 1


async def test_keys_sent_to_verify_in_the_body_are_not_the_callers_failures(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """Verify checks other people's keys for a service: its INVALID answers
    are not failed authentications of the caller."""
    for _ in range(FAILURES + 2):
        response = await client.post(
            "/v1/keys/verify",
            json={"key": unknown_key(), "consume": False},
            headers=sent_from(GUESSER, tenant.secret),
        )
        assert response.json()["data"]["code"] == "INVALID"
    assert_error(
        await client.get("/v1/api-keys", headers=sent_from(GUESSER, unknown_key())),
        401,
        "invalid_key",
    )


async def test_in_memory_the_block_ends_with_the_window(
    data_dir: Path, tenant_clock: FakeClock
) -> None:
    app = create_app(
        Settings(
            data_dir=data_dir, auth_failure_limit=f"{FAILURES}/hour", trusted_proxies="127.0.0.1"
        ),
        clock=tenant_clock,
    )
    async with app.lifespan(), client_for(app) as client:
        tenant = await make_tenant(app)
        await block(client)
        assert_blocked(await client.get("/v1/api-keys", headers=sent_from(GUESSER, tenant.secret)))
        tenant_clock.now = (math.floor(tenant_clock.now / 3600) + 1) * 3600  # the window's end
        served = await client.get("/v1/api-keys", headers=sent_from(GUESSER, tenant.secret))
        assert served.status_code == 200


@pytest.fixture
def tenant_clock() -> FakeClock:
    return FakeClock(MID_HOUR)


async def test_with_redis_the_block_ends_with_the_window(
    data_dir: Path, redis_url: str, redis_prefix: str
) -> None:
    window = 5
    settings = Settings(
        data_dir=data_dir,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        auth_failure_limit=f"{FAILURES}/{window} seconds",
        trusted_proxies="127.0.0.1",
    )
    app = create_app(settings)  # the real clock: Redis's windows end in real time
    async with app.lifespan(), client_for(app) as client:
        tenant = await make_tenant(app)
        wait_for_a_window_start(redis_url, window, margin=window - 0.2)
        await block(client)
        refused = await client.get("/v1/api-keys", headers=sent_from(GUESSER, tenant.secret))
        assert_blocked(refused)
        # Retry-After is rounded up, and Redis's clock is this host's: the window is over.
        await asyncio.sleep(int(refused.headers["retry-after"]))
        served = await client.get("/v1/api-keys", headers=sent_from(GUESSER, tenant.secret))
        assert served.status_code == 200


@asynccontextmanager
async def instance(
    settings: Settings, clock: FakeClock
) -> AsyncIterator[tuple[Pipeline, httpx.AsyncClient]]:
    app = create_app(settings, clock=clock)
    async with app.lifespan(), client_for(app) as client:
        yield app, client


async def test_a_block_made_by_another_instance_holds_on_the_first_request(
    database_url: str,
    data_dir: Path,
    redis_url: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_for(
        database_url,
        data_dir,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        auth_failure_limit=f"{FAILURES}/hour",
        tier_standard=f"{LIMIT}/hour",
        trusted_proxies="127.0.0.1",
    )
    wait_for_a_window_start(redis_url, 3600, margin=120)
    clock = FakeClock()
    async with instance(settings, clock) as (a, on_a), instance(settings, clock) as (b, on_b):
        tenant = await make_tenant(a)
        enterprise = await make_tenant(a, plan=Plan.ENTERPRISE, tier="unmetered", name="e")
        await block(on_a)
        # B has never seen the key nor the address: refused before its storage.
        with storage_calls(b, monkeypatch) as calls:
            assert_blocked(
                await on_b.get("/v1/api-keys", headers=sent_from(GUESSER, tenant.secret))
            )
        assert calls == []
        # B holds both keys in its cache (used from elsewhere): refused all the same.
        for key in (tenant, enterprise):
            assert (
                await on_b.get("/v1/api-keys", headers=sent_from(BYSTANDER, key.secret))
            ).status_code == 200
        other = await make_tenant(a, account=tenant.account, name="other")
        assert (
            await on_b.get("/v1/api-keys", headers=sent_from(BYSTANDER, other.secret))
        ).status_code == 200
        for key in (tenant, enterprise, other):
            assert_blocked(await on_b.get("/v1/api-keys", headers=sent_from(GUESSER, key.secret)))
        own = await on_b.get("/v1/api-keys", headers=sent_from(BYSTANDER, tenant.secret))
        assert int(own.headers["x-ratelimit-remaining"]) == LIMIT - 2  # the refusal cost nothing
