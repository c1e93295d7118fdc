"""Rate limits by tier (contract §5), on the in-process counters."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from keystile.api.app import create_app
from keystile.api.pipeline import Pipeline
from keystile.keys.models import Plan
from keystile.settings import Settings
from tests.conftest import settings_for
from tests.support import LEDGER, FakeClock, Tenant, assert_error, make_tenant

pytestmark = pytest.mark.anyio

LIMIT, HIGH, WINDOW = 5, 8, 10


@pytest.fixture
def settings(database_url: str, data_dir: Path) -> Settings:
    return settings_for(
        database_url,
        data_dir,
        tier_standard=f"{LIMIT}/{WINDOW} seconds",
        tier_high=f"{HIGH}/{WINDOW} seconds",
        auth_failure_limit="3/minute",
        trusted_proxies="127.0.0.1",
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_800_000_003.25)  # 3.25 s into a 10-second window


def limit_headers(response: httpx.Response) -> tuple[int, int, int]:
    h = response.headers
    return int(h["x-ratelimit-limit"]), int(h["x-ratelimit-remaining"]), int(h["x-ratelimit-reset"])


async def new_key(client: httpx.AsyncClient, tenant: Tenant, name: str, tier: str) -> Tenant:
    body = {
        "name": name,
        "permissions": ["admin:api_keys", "read:contacts"],
        "rate_limit_tier": tier,
    }
    data = (await client.post("/v1/api-keys", json=body, headers=tenant.headers)).json()["data"]
    LEDGER.remember(data["key"])
    return Tenant(tenant.account, data["key"], data["id"])


class TestHeaders:
    async def test_every_authenticated_response_counts_down(
        self, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        responses = [
            await client.get("/v1/api-keys", headers=tenant.headers),  # 200
            await client.get("/v1/api-keys/key_01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=tenant.headers),  # 404
            await client.get("/v1/api-keys?limit=0", headers=tenant.headers),  # 400
            await client.post("/v1/api-keys", json={"name": "x", "permissions": ["read:contacts"]}, headers=tenant.headers),  # 201
            await client.post("/v1/api-keys", json={"name": "x", "permissions": ["read:contacts"]}, headers=tenant.headers),  # 409
        ]  # fmt: skip
        assert [r.status_code for r in responses] == [200, 404, 400, 201, 409]
        window_end = (math.floor(clock.now / WINDOW) + 1) * WINDOW
        assert [limit_headers(r) for r in responses] == [
            (LIMIT, LIMIT - n, window_end) for n in range(1, LIMIT + 1)
        ]

    async def test_403_responses_carry_them_and_401_do_not(
        self, app: Pipeline, client: httpx.AsyncClient
    ) -> None:
        reader = await make_tenant(app, permissions=("read:contacts",))
        forbidden = await client.get("/v1/api-keys", headers=reader.headers)
        assert forbidden.status_code == 403
        assert limit_headers(forbidden)[1] == LIMIT - 1
        unauthenticated = await client.get("/v1/api-keys")
        assert "x-ratelimit-limit" not in unauthenticated.headers

    async def test_unmetered_keys_get_no_headers_and_no_limit(
        self, app: Pipeline, client: httpx.AsyncClient
    ) -> None:
        enterprise = await make_tenant(app, plan=Plan.ENTERPRISE, tier="unmetered")
        for _ in range(LIMIT * 4):
            response = await client.get("/v1/api-keys", headers=enterprise.headers)
            assert response.status_code == 200
            assert not any(name.startswith("x-ratelimit") for name in response.headers)


class TestTiers:
    async def test_each_tier_gets_its_configured_limit_per_key(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        high = await new_key(client, tenant, "high", "high")
        standard = await new_key(client, tenant, "standard", "standard")
        for key, limit in ((high, HIGH), (standard, LIMIT)):
            statuses = [
                (await client.get("/v1/api-keys", headers=key.headers)).status_code
                for _ in range(limit + 3)
            ]
            assert statuses == [200] * limit + [429] * 3

    async def test_defaults_are_the_vendors(self) -> None:
        settings = Settings()
        assert (
            settings.limit("tier_standard").amount,
            settings.limit("tier_standard").window_seconds,
        ) == (100, 10)
        assert (settings.limit("tier_high").amount, settings.limit("tier_high").window_seconds) == (
            1000,
            10,
        )
        assert str(settings.limit("auth_failure_limit")) == "30/60s"


class Test429:
    async def test_over_the_limit(
        self, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        for _ in range(LIMIT):
            assert (await client.get("/v1/api-keys", headers=tenant.headers)).status_code == 200
        denied = await client.get("/v1/api-keys", headers=tenant.headers)
        error = assert_error(denied, 429, "rate_limited")
        assert error["message"] == "Rate limit exceeded."
        limit, remaining, reset = limit_headers(denied)
        assert (limit, remaining) == (LIMIT, 0)
        retry_after = int(denied.headers["retry-after"])
        assert retry_after >= 1
        assert retry_after == math.ceil(reset - clock.now)  # consistent with the reset

    async def test_the_limit_comes_before_authorization_and_validation(
        self, app: Pipeline, client: httpx.AsyncClient
    ) -> None:
        reader = await make_tenant(app, permissions=("read:contacts",))
        for _ in range(LIMIT):
            assert (
                await client.post("/v1/api-keys", content=b"{", headers=reader.headers)
            ).status_code == 403
        assert_error(
            await client.post("/v1/api-keys", content=b"{", headers=reader.headers),
            429,
            "rate_limited",
        )

    async def test_a_new_window_admits_again(
        self, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        for _ in range(LIMIT + 1):
            last = await client.get("/v1/api-keys", headers=tenant.headers)
        assert last.status_code == 429
        clock.now = limit_headers(last)[2]  # exactly the advertised reset
        fresh = await client.get("/v1/api-keys", headers=tenant.headers)
        assert fresh.status_code == 200
        assert limit_headers(fresh)[1] == LIMIT - 1

    async def test_keys_have_separate_quotas(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        other = await new_key(client, tenant, "other", "standard")  # the tenant's 1st request
        for _ in range(LIMIT - 1):
            await client.get("/v1/api-keys", headers=tenant.headers)
        assert (await client.get("/v1/api-keys", headers=tenant.headers)).status_code == 429
        assert (await client.get("/v1/api-keys", headers=other.headers)).status_code == 200


class TestExactness:
    @pytest.fixture
    def settings(self, database_url: str, data_dir: Path) -> Settings:
        return settings_for(
            database_url, data_dir, tier_standard="50/10 seconds", auth_failure_limit="1000/minute"
        )

    async def test_never_more_than_the_limit_admitted_under_concurrent_load(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        responses = await asyncio.gather(
            *(client.get("/v1/api-keys", headers=tenant.headers) for _ in range(200))
        )
        statuses = Counter(r.status_code for r in responses)
        assert statuses == {200: 50, 429: 150}
        admitted = sorted(limit_headers(r)[1] for r in responses if r.status_code == 200)
        assert admitted == list(range(50))  # remaining dropped by exactly one per admission
        assert all(limit_headers(r)[1] == 0 for r in responses if r.status_code == 429)


class TestFailedAuthentication:
    async def test_tripped_after_the_limit_with_retry_after(
        self, client: httpx.AsyncClient, clock: FakeClock
    ) -> None:
        bad = {"Authorization": "Bearer wbk_live_nope"}
        for _ in range(3):
            assert_error(await client.get("/v1/api-keys", headers=bad), 401, "invalid_key")
        tripped = await client.get("/v1/api-keys", headers=bad)
        assert_error(tripped, 429, "rate_limited")
        assert 1 <= int(tripped.headers["retry-after"]) <= 60
        assert "x-ratelimit-limit" not in tripped.headers
        clock.advance(60)
        assert_error(await client.get("/v1/api-keys", headers=bad), 401, "invalid_key")

    async def test_failures_never_consume_a_keys_quota(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        wrong_secret = tenant.secret[:-8] + "AAAAAAAA"
        for _ in range(2):  # below the limit: past it, the address is blocked (see
            # test_failed_authentication_block.py)
            await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {wrong_secret}"})
        ok = await client.get("/v1/api-keys", headers=tenant.headers)
        assert ok.status_code == 200
        assert limit_headers(ok)[1] == LIMIT - 1  # the failures did not count

    async def test_counted_per_client_address_behind_a_trusted_proxy(
        self, client: httpx.AsyncClient
    ) -> None:
        bad = {"Authorization": "Bearer x"}
        for _ in range(4):
            await client.get("/v1/api-keys", headers={**bad, "X-Forwarded-For": "198.51.100.1"})
        first = await client.get("/v1/api-keys", headers={**bad, "X-Forwarded-For": "198.51.100.1"})
        other = await client.get("/v1/api-keys", headers={**bad, "X-Forwarded-For": "198.51.100.2"})
        assert (first.status_code, other.status_code) == (429, 401)


async def test_without_a_trusted_proxy_forwarded_headers_are_ignored(data_dir: Path) -> None:
    app = create_app(Settings(data_dir=data_dir, auth_failure_limit="2/minute"))
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            statuses = [
                (
                    await client.get(
                        "/v1/api-keys",
                        headers={"Authorization": "Bearer x", "X-Forwarded-For": f"198.51.100.{n}"},
                    )
                ).status_code
                for n in range(4)
            ]
    assert statuses == [401, 401, 429, 429]


@pytest.fixture
async def redis_app(
    data_dir: Path, redis_url: str, redis_prefix: str, clock: FakeClock
) -> AsyncIterator[Pipeline]:
    settings = Settings(
        data_dir=data_dir,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        tier_standard="50/30 seconds",
    )
    application = create_app(settings, clock=clock)
    async with application.lifespan():
        yield application


async def test_with_redis_exactly_the_limit_is_admitted_in_few_round_trips(
    redis_app: Pipeline,
) -> None:
    counter = redis_app.services.ratelimiter.counter
    calls = 0
    script = counter._batch._script  # type: ignore[attr-defined]

    async def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await script(*args, **kwargs)

    counter._batch._script = counting  # type: ignore[attr-defined]
    tenant = await make_tenant(redis_app)
    transport = httpx.ASGITransport(app=redis_app, client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        responses = await asyncio.gather(
            *(client.get("/v1/api-keys", headers=tenant.headers) for _ in range(200))
        )
    by_window: dict[int, Counter[int]] = {}
    for response in responses:
        by_window.setdefault(limit_headers(response)[2], Counter())[response.status_code] += 1
    for statuses in by_window.values():  # the burst may straddle a window boundary
        assert statuses[200] <= 50
        if statuses[429]:
            assert statuses[200] == 50
    assert sum(s[200] for s in by_window.values()) >= 50
    assert calls < 50, f"{calls} script calls for 200 requests: not coalesced"
