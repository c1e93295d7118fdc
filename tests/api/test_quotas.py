"""Quotas and per-key rate limits (contract §11), in-process on both
databases, with the in-process counters and with Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from keystile.api.app import create_app
from keystile.api.pipeline import Pipeline
from keystile.keys.models import Plan
from keystile.settings import Settings
from tests.support import LEDGER, FakeClock, Tenant, assert_error, make_tenant

pytestmark = pytest.mark.anyio

# A fixed, ordinary moment: 2026-11-30 12:00:00 UTC.
NOON = datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp()
DAY_END = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())
MONTH_END = DAY_END


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON)


async def create(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    payload = {
        "name": f"k-{uuid.uuid4().hex[:8]}",
        "permissions": ["read:contacts", "admin:api_keys"],
        **body,
    }
    response = await client.post("/v1/api-keys", json=payload, headers=tenant.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    LEDGER.remember(data["key"])
    return data


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def quota_headers(response: httpx.Response) -> tuple[int, int, int]:
    h = response.headers
    return int(h["x-quota-limit"]), int(h["x-quota-remaining"]), int(h["x-quota-reset"])


class TestQuota:
    async def test_headers_on_every_response_and_a_429_at_the_end(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        key = await create(client, tenant, quota={"limit": 3, "period": "day"})
        seen = []
        for _ in range(3):
            response = await client.get("/v1/api-keys/none", headers=auth(key["key"]))
            assert response.status_code == 404  # admitted: no such key
            seen.append(quota_headers(response))
        assert seen == [(3, 2, DAY_END), (3, 1, DAY_END), (3, 0, DAY_END)]
        refused = await client.get("/v1/api-keys/none", headers=auth(key["key"]))
        error = assert_error(refused, 429, "quota_exceeded")
        assert "quota" in error["message"]
        assert refused.headers["retry-after"] == str(12 * 3600)
        assert quota_headers(refused) == (3, 0, DAY_END)
        assert "x-ratelimit-limit" in refused.headers  # the rate limit's too

    async def test_a_key_without_a_quota_gets_no_quota_headers(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        response = await client.get("/v1/api-keys", headers=tenant.headers)
        assert not [h for h in response.headers if h.startswith("x-quota-")]

    async def test_the_next_period_starts_afresh(
        self, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        key = await create(client, tenant, quota={"limit": 1, "period": "day"})
        assert (await client.get("/v1/api-keys", headers=auth(key["key"]))).status_code == 200
        assert (await client.get("/v1/api-keys", headers=auth(key["key"]))).status_code == 429
        clock.advance(12 * 3600)  # midnight UTC
        again = await client.get("/v1/api-keys", headers=auth(key["key"]))
        assert again.status_code == 200
        assert quota_headers(again) == (1, 0, DAY_END + 86400)

    async def test_a_rate_limited_request_uses_no_quota(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        key = await create(
            client, tenant, quota={"limit": 100, "period": "month"},
            rate_limit={"limit": 2, "window_seconds": 3600},
        )  # fmt: skip
        statuses = [
            (await client.get("/v1/api-keys", headers=auth(key["key"]))).status_code
            for _ in range(5)
        ]
        assert statuses == [200, 200, 429, 429, 429]
        last = await client.get("/v1/api-keys", headers=auth(key["key"]))
        assert assert_error(last, 429, "rate_limited")
        assert quota_headers(last) == (100, 98, MONTH_END)

    async def test_a_disabled_key_uses_none(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        key = await create(client, tenant, quota={"limit": 5, "period": "day"})
        await client.patch(
            f"/v1/api-keys/{key['id']}", json={"disabled": True}, headers=tenant.headers
        )
        for _ in range(3):
            assert (await client.get("/v1/api-keys", headers=auth(key["key"]))).status_code == 401
        await client.patch(
            f"/v1/api-keys/{key['id']}", json={"disabled": False}, headers=tenant.headers
        )
        enabled = await client.get("/v1/api-keys", headers=auth(key["key"]))
        assert quota_headers(enabled)[1] == 4

    async def test_a_forbidden_request_uses_a_unit(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        key = await create(
            client, tenant, permissions=["read:contacts"], quota={"limit": 5, "period": "day"}
        )
        response = await client.get("/v1/api-keys", headers=auth(key["key"]))
        assert_error(response, 403, "insufficient_permissions")
        assert quota_headers(response)[1] == 4

    async def test_unmetered_keys_may_have_a_quota(
        self, app: Pipeline, client: httpx.AsyncClient
    ) -> None:
        enterprise = await make_tenant(app, plan=Plan.ENTERPRISE)
        key = await create(
            client, enterprise, rate_limit_tier="unmetered", quota={"limit": 2, "period": "day"}
        )
        responses = [await client.get("/v1/api-keys", headers=auth(key["key"])) for _ in range(3)]
        assert [r.status_code for r in responses] == [200, 200, 429]
        assert "x-ratelimit-limit" not in responses[0].headers
        assert quota_headers(responses[1]) == (2, 0, DAY_END)

    async def test_200_concurrent_requests_against_50_admit_exactly_50(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        key = await create(client, tenant, quota={"limit": 50, "period": "day"})
        responses = await asyncio.gather(
            *(client.get("/v1/api-keys/none", headers=auth(key["key"])) for _ in range(200))
        )
        assert Counter(r.status_code for r in responses) == {404: 50, 429: 150}
        remaining = sorted(quota_headers(r)[1] for r in responses if r.status_code == 404)
        assert remaining == list(range(50))

    async def test_a_rotated_key_carries_its_quota_over(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        old = await create(client, tenant, quota={"limit": 3, "period": "day"})
        assert (await client.get("/v1/api-keys", headers=auth(old["key"]))).status_code == 200
        rotated = await client.post(
            f"/v1/api-keys/{old['id']}/rotate",
            json={"grace_period_seconds": 600},
            headers=tenant.headers,
        )
        new = rotated.json()["data"]
        LEDGER.remember(new["key"])
        statuses = [
            (await client.get("/v1/api-keys", headers=auth(secret))).status_code
            for secret in (new["key"], old["key"], new["key"])
        ]
        assert statuses == [200, 200, 429]

    async def test_a_new_quota_applies_from_the_next_request(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        key = await create(client, tenant)
        await client.patch(
            f"/v1/api-keys/{key['id']}",
            json={"quota": {"limit": 1, "period": "day"}},
            headers=tenant.headers,
        )
        assert (await client.get("/v1/api-keys", headers=auth(key["key"]))).status_code == 200
        assert (await client.get("/v1/api-keys", headers=auth(key["key"]))).status_code == 429
        await client.patch(
            f"/v1/api-keys/{key['id']}", json={"quota": None}, headers=tenant.headers
        )
        freed = await client.get("/v1/api-keys", headers=auth(key["key"]))
        assert freed.status_code == 200 and "x-quota-limit" not in freed.headers


class TestVerify:
    async def test_quota_exceeded_and_the_quota_object(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        service = await make_tenant(
            app, permissions=("verify:keys",), name="service", account=tenant.account
        )
        key = await create(client, tenant, quota={"limit": 2, "period": "month"})

        async def verify(**body: Any) -> dict[str, Any]:
            response = await client.post(
                "/v1/keys/verify", json={"key": key["key"], **body}, headers=service.headers
            )
            data: dict[str, Any] = response.json()["data"]
            return data

        peek = await verify(consume=False)
        assert peek["quota"] == {"limit": 2, "remaining": 2, "reset": MONTH_END}
        first = await verify()
        assert (first["code"], first["quota"]["remaining"]) == ("VALID", 1)
        assert (await verify())["quota"]["remaining"] == 0
        over = await verify()
        assert (over["code"], over["valid"], over["quota"]["remaining"]) == (
            "QUOTA_EXCEEDED", False, 0,
        )  # fmt: skip
        assert (await verify(consume=False))["code"] == "QUOTA_EXCEEDED"


class TestPerKeyRateLimit:
    async def test_the_override_replaces_the_tier(
        self, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        key = await create(client, tenant, rate_limit={"limit": 2, "window_seconds": 60})
        responses = [await client.get("/v1/api-keys", headers=auth(key["key"])) for _ in range(3)]
        assert [r.status_code for r in responses] == [200, 200, 429]
        assert responses[0].headers["x-ratelimit-limit"] == "2"
        assert int(responses[0].headers["x-ratelimit-reset"]) % 60 == 0
        clock.advance(60)
        assert (await client.get("/v1/api-keys", headers=auth(key["key"]))).status_code == 200


@pytest.fixture
async def redis_app(
    data_dir: Path, redis_url: str, redis_prefix: str, clock: FakeClock
) -> AsyncIterator[Pipeline]:
    settings = Settings(data_dir=data_dir, redis_url=redis_url, redis_prefix=redis_prefix)
    application = create_app(settings, clock=clock)
    async with application.lifespan():
        yield application


async def test_with_redis_200_concurrent_requests_against_50_admit_exactly_50(
    redis_app: Pipeline,
) -> None:
    tenant = await make_tenant(redis_app)
    transport = httpx.ASGITransport(app=redis_app, client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        key = await create(client, tenant, quota={"limit": 50, "period": "day"})
        responses = await asyncio.gather(
            *(client.get("/v1/api-keys/none", headers=auth(key["key"])) for _ in range(200))
        )
    assert Counter(r.status_code for r in responses) == {404: 50, 429: 150}
