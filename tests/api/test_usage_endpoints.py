"""GET /v1/api-keys/{id}/usage and GET /v1/usage (contract §11): zero-filled
buckets oldest first, the range rules, group_by=key, tenant isolation, the
retention's rollups, and every error status."""

from __future__ import annotations

import calendar
from pathlib import Path
from typing import Any

import httpx
import pytest

from keystile.api.app import purge_expired
from keystile.api.pipeline import Pipeline
from keystile.settings import Settings
from keystile.usage.models import DAY, HOUR, Counts, Granularity, KeyHour, Outcome
from tests.conftest import settings_for
from tests.support import (
    FakeClock,
    Operator,
    Tenant,
    assert_error,
    assert_own_headers,
    make_operator,
    make_tenant,
)

pytestmark = pytest.mark.anyio

NOW = calendar.timegm((2028, 3, 1, 10, 20, 34))  # 2028-03-01T10:20:34Z, after a leap day
FIELDS = {"start", "allowed", "rate_limited", "quota_exceeded", "forbidden"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def settings(database_url: str, data_dir: Path) -> Settings:
    # No periodic flush during a test: what is written is what the test wrote.
    return settings_for(database_url, data_dir, usage_flush_seconds=3600, tier_standard="3/hour")


async def record(app: Pipeline, tenant: Tenant, at: float, **counts: int) -> None:
    """Usage of ``tenant``'s key at ``at`` (Unix seconds), written at once."""
    async with app.services.storage.reader() as uow:
        key = await uow.keys.get(None, tenant.key_id)
    assert key is not None
    meter, clock = app.services.usage_meter, app.services.clock
    assert isinstance(clock, FakeClock)
    now, clock.now = clock.now, at
    for outcome, n in counts.items():
        for _ in range(n):
            meter.record(key, Outcome(outcome))
    await meter.flush()
    clock.now = now


async def get(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], status: int = 200
) -> Any:
    response = await client.get(path, headers=headers)
    assert response.status_code == status, response.text
    assert_own_headers(response)
    return response.json()


@pytest.fixture
async def admin(app: Pipeline) -> Tenant:
    return await make_tenant(app, tier="high")


@pytest.fixture
async def operator(app: Pipeline) -> Operator:
    return await make_operator(app)


class TestKeyUsage:
    async def test_the_last_24_hours_by_default_oldest_first_zero_filled(
        self, app: Pipeline, client: httpx.AsyncClient, admin: Tenant
    ) -> None:
        await record(app, admin, NOW - 3600, allowed=2, forbidden=1)  # 09:xx
        await record(app, admin, NOW - 11 * HOUR, rate_limited=4)  # 2028-02-29T23:xx
        body = await get(client, f"/v1/api-keys/{admin.key_id}/usage", admin.headers)
        data = body["data"]
        assert set(body) == {"data"} and len(data) == 24
        assert [set(entry) for entry in data] == [FIELDS] * 24
        assert data[0]["start"] == "2028-02-29T11:00:00Z"
        assert data[-1]["start"] == "2028-03-01T10:00:00Z"  # the current hour
        by_start = {entry["start"]: entry for entry in data}
        assert by_start["2028-03-01T09:00:00Z"] == {
            "start": "2028-03-01T09:00:00Z", "allowed": 2, "rate_limited": 0,
            "quota_exceeded": 0, "forbidden": 1,
        }  # fmt: skip
        assert by_start["2028-02-29T23:00:00Z"]["rate_limited"] == 4
        # This very request is counted, but not written before the next flush.
        assert sum(e["allowed"] for e in data) == 2

    async def test_days_cover_30_days_ending_today(
        self, app: Pipeline, client: httpx.AsyncClient, admin: Tenant
    ) -> None:
        await record(app, admin, NOW - DAY, quota_exceeded=3)  # the leap day
        await record(app, admin, NOW - DAY - 9 * HOUR, quota_exceeded=1)  # the leap day, 01:xx
        body = await get(client, f"/v1/api-keys/{admin.key_id}/usage?granularity=day",
                         admin.headers)  # fmt: skip
        data = body["data"]
        assert len(data) == 30
        assert (data[0]["start"], data[-1]["start"]) == (
            "2028-02-01T00:00:00Z",
            "2028-03-01T00:00:00Z",
        )
        assert data[-2] == {
            "start": "2028-02-29T00:00:00Z", "allowed": 0, "rate_limited": 0,
            "quota_exceeded": 4, "forbidden": 0,
        }  # fmt: skip

    async def test_start_is_floored_and_end_raised_to_whole_buckets(
        self, app: Pipeline, client: httpx.AsyncClient, admin: Tenant
    ) -> None:
        await record(app, admin, calendar.timegm((2028, 2, 29, 23, 59, 59)), allowed=1)
        query = "start=2028-02-29T22:30:00%2B00:00&end=2028-03-01T00:00:01Z"
        data = (await get(client, f"/v1/api-keys/{admin.key_id}/usage?{query}",
                          admin.headers))["data"]  # fmt: skip
        assert [e["start"] for e in data] == [
            "2028-02-29T22:00:00Z", "2028-02-29T23:00:00Z", "2028-03-01T00:00:00Z",
        ]  # fmt: skip
        assert [e["allowed"] for e in data] == [0, 1, 0]
        offset = "start=2028-03-01T01:00:00%2B02:00&end=2028-03-01T02:00:00%2B02:00"
        data = (await get(client, f"/v1/api-keys/{admin.key_id}/usage?{offset}",
                          admin.headers))["data"]  # fmt: skip
        assert [e["start"] for e in data] == ["2028-02-29T23:00:00Z"]  # offsets respected

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("granularity=week", "granularity"),
            ("start=yesterday", "start"),
            ("end=2028-03-01", "end"),  # a date is not a timestamp
            ("start=2028-03-01T00:00:00Z&end=2028-03-01T00:00:00Z", "end"),
            ("start=2028-01-01T00:00:00Z&end=2028-02-02T00:00:00Z", "start"),  # 32 days of hours
            ("granularity=day&start=2027-01-01T00:00:00Z&end=2028-02-06T00:00:00Z", "start"),
            ("start=2027-11-01T00:00:00Z&end=2027-11-02T00:00:00Z", "start"),  # past retention
            ("start=1969-12-31T00:00:00Z&end=1970-01-01T00:00:00Z", "start"),
            ("start=2028-03-05T00:00:00Z", "start"),  # after the default end
            ("limit=3", "limit"),
            ("granularity=day&granularity=hour", "granularity"),
            ("group_by=key", "group_by"),  # the account endpoint's
        ],
    )
    async def test_400_names_the_field(
        self, client: httpx.AsyncClient, admin: Tenant, query: str, field: str
    ) -> None:
        response = await client.get(f"/v1/api-keys/{admin.key_id}/usage?{query}",
                                    headers=admin.headers)  # fmt: skip
        error = assert_error(response, 400, "validation_error")
        assert [d["field"] for d in error["details"]] == [field], error

    async def test_an_hourly_range_past_the_retention_says_to_ask_for_days(
        self, client: httpx.AsyncClient, admin: Tenant
    ) -> None:
        old = "start=2027-11-01T00:00:00Z&end=2027-11-02T00:00:00Z"
        error = assert_error(
            await client.get(f"/v1/api-keys/{admin.key_id}/usage?{old}", headers=admin.headers),
            400, "validation_error",
        )  # fmt: skip
        assert "granularity=day" in error["details"][0]["message"]
        days = await client.get(f"/v1/api-keys/{admin.key_id}/usage?granularity=day&{old}",
                                headers=admin.headers)  # fmt: skip
        assert days.status_code == 200 and len(days.json()["data"]) == 1

    async def test_another_accounts_key_is_404_like_a_missing_one(
        self, app: Pipeline, client: httpx.AsyncClient, admin: Tenant
    ) -> None:
        other = await make_tenant(app, name="other")
        for key_id in (other.key_id, "key_01ARZ3NDEKTSV4RRFFQ69G5FAV", "nope"):
            response = await client.get(f"/v1/api-keys/{key_id}/usage", headers=admin.headers)
            assert_error(response, 404, "not_found")

    async def test_401_403_405(
        self, app: Pipeline, client: httpx.AsyncClient, admin: Tenant
    ) -> None:
        path = f"/v1/api-keys/{admin.key_id}/usage"
        assert_error(await client.get(path), 401, "invalid_key")
        reader = await make_tenant(app, permissions=("read:contacts",), name="r",
                                   account=admin.account)  # fmt: skip
        assert_error(await client.get(path, headers=reader.headers), 403,
                     "insufficient_permissions")  # fmt: skip
        assert_error(await client.post(path, headers=admin.headers), 405, "method_not_allowed")


class TestAccountUsage:
    async def test_totals_of_every_key_of_the_account_only(
        self, app: Pipeline, client: httpx.AsyncClient, admin: Tenant
    ) -> None:
        second = await make_tenant(app, name="second", account=admin.account)
        stranger = await make_tenant(app, name="stranger")  # another account
        await record(app, admin, NOW - HOUR, allowed=1)
        await record(app, second, NOW - HOUR, allowed=2, forbidden=5)
        await record(app, stranger, NOW - HOUR, allowed=100)
        data = (await get(client, "/v1/usage", admin.headers))["data"]
        assert len(data) == 24 and [set(e) for e in data] == [FIELDS] * 24
        assert data[-2] == {
            "start": "2028-03-01T09:00:00Z", "allowed": 3, "rate_limited": 0,
            "quota_exceeded": 0, "forbidden": 5,
        }  # fmt: skip
        theirs = (await get(client, "/v1/usage", stranger.headers))["data"]
        assert theirs[-2]["allowed"] == 100  # and ours are not in it

    async def test_group_by_key_lists_each_key_with_usage_for_every_bucket(
        self, app: Pipeline, client: httpx.AsyncClient, admin: Tenant
    ) -> None:
        second = await make_tenant(app, name="second", account=admin.account)
        await make_tenant(app, name="idle", account=admin.account)  # no usage: not listed
        await record(app, second, NOW - 2 * HOUR, rate_limited=1)
        await record(app, admin, NOW - DAY, allowed=7)
        query = "granularity=hour&start=2028-03-01T07:00:00Z&end=2028-03-01T10:00:00Z"
        data = (await get(client, f"/v1/usage?group_by=key&{query}", admin.headers))["data"]
        # admin's use was 24 hours ago, outside the range: only `second` appears.
        assert [(e["start"], e["key_id"], e["rate_limited"]) for e in data] == [
            ("2028-03-01T07:00:00Z", second.key_id, 0),
            ("2028-03-01T08:00:00Z", second.key_id, 1),
            ("2028-03-01T09:00:00Z", second.key_id, 0),
        ]
        assert set(data[0]) == FIELDS | {"key_id"}
        days = (await get(client, "/v1/usage?group_by=key&granularity=day", admin.headers))["data"]
        assert len(days) == 30 * 2
        ordered = sorted([admin.key_id, second.key_id])
        assert [e["key_id"] for e in days[-2:]] == ordered  # key ids in order within a bucket
        last_two_days = {(e["start"][:10], e["key_id"]): e for e in days[-4:]}
        assert last_two_days[("2028-02-29", admin.key_id)]["allowed"] == 7
        assert last_two_days[("2028-03-01", second.key_id)]["rate_limited"] == 1
        assert last_two_days[("2028-03-01", admin.key_id)]["allowed"] == 0  # not flushed yet

    async def test_group_by_key_refuses_an_answer_too_large(
        self, app: Pipeline, client: httpx.AsyncClient, admin: Tenant
    ) -> None:
        hour = (NOW // HOUR - 1) * HOUR
        rows = [
            KeyHour(f"key_{n:026d}", admin.account.id, f"key_{n:026d}", hour, Counts(allowed=1))
            for n in range(135)  # × 744 hours > 100,000 entries
        ]
        async with app.services.storage.transaction() as uow:
            await uow.usage.add("test", 1, rows, 0)
        month = "start=2028-01-31T11:00:00Z&end=2028-03-02T11:00:00Z"
        error = assert_error(
            await client.get(f"/v1/usage?group_by=key&{month}", headers=admin.headers),
            400, "validation_error",
        )  # fmt: skip
        assert error["details"][0]["field"] == "group_by"
        fewer = await client.get("/v1/usage?group_by=key", headers=admin.headers)  # 24 hours
        assert fewer.status_code == 200 and len(fewer.json()["data"]) == 24 * 135

    async def test_operator_keys_act_for_the_named_account(
        self, app: Pipeline, client: httpx.AsyncClient, admin: Tenant, operator: Operator
    ) -> None:
        await record(app, admin, NOW - HOUR, allowed=4)
        data = (await get(client, "/v1/usage", operator.headers(admin.account.id)))["data"]
        assert data[-2]["allowed"] == 4
        missing = await client.get("/v1/usage", headers=operator.headers())
        error = assert_error(missing, 400, "validation_error")
        assert error["details"][0]["field"] == "Keystile-Account"
        unknown = await client.get(
            "/v1/usage", headers=operator.headers("acc_01ARZ3NDEKTSV4RRFFQ69G5FAV")
        )
        assert_error(unknown, 404, "not_found")

    @pytest.mark.parametrize(
        ("query", "field"),
        [("group_by=account", "group_by"), ("granularity=minute", "granularity"), ("x=1", "x")],
    )
    async def test_400_names_the_field(
        self, client: httpx.AsyncClient, admin: Tenant, query: str, field: str
    ) -> None:
        error = assert_error(await client.get(f"/v1/usage?{query}", headers=admin.headers),
                             400, "validation_error")  # fmt: skip
        assert [d["field"] for d in error["details"]] == [field]

    async def test_429_over_the_rate_limit(self, app: Pipeline, client: httpx.AsyncClient) -> None:
        standard = await make_tenant(app, name="standard")  # 3 requests per hour
        for path in (
            "/v1/usage",
            "/v1/usage?granularity=day",
            f"/v1/api-keys/{standard.key_id}/usage",
        ):
            assert (await client.get(path, headers=standard.headers)).status_code == 200
        for path in ("/v1/usage", f"/v1/api-keys/{standard.key_id}/usage"):
            limited = await client.get(path, headers=standard.headers)
            assert_error(limited, 429, "rate_limited")
            assert int(limited.headers["retry-after"]) >= 1
            assert limited.headers["x-ratelimit-remaining"] == "0"

    async def test_401_and_403(self, app: Pipeline, client: httpx.AsyncClient) -> None:
        assert_error(await client.get("/v1/usage"), 401, "invalid_key")
        reader = await make_tenant(app, permissions=("verify:keys",), name="v")
        assert_error(await client.get("/v1/usage", headers=reader.headers), 403,
                     "insufficient_permissions")  # fmt: skip


async def test_the_background_job_rolls_old_hours_into_exact_day_totals(
    app: Pipeline, client: httpx.AsyncClient, admin: Tenant, operator: Operator, clock: FakeClock
) -> None:
    """Hours older than the retention (90 days) become daily rows: the day
    totals read the same before and after, and hourly reads of them are refused."""
    second = await make_tenant(app, name="second", account=admin.account)
    for hours_ago, tenant in ((1, admin), (5, second), (13, admin), (30, second), (47, admin)):
        await record(app, tenant, NOW - hours_ago * HOUR, allowed=hours_ago, forbidden=1)
    range_ = "granularity=day&start=2028-02-27T00:00:00Z&end=2028-03-02T00:00:00Z"

    async def days() -> list[Any]:  # read with an operator key: not metered
        data: list[Any] = (await get(client, f"/v1/usage?group_by=key&{range_}",
                                     operator.headers(admin.account.id)))["data"]  # fmt: skip
        return data

    async def used() -> int:
        async with app.services.storage.reader() as uow:
            start = calendar.timegm((2028, 2, 1, 0, 0, 0))
            return await uow.usage.used(admin.key_id, start, calendar.timegm((2028, 4, 1, 0, 0, 0)))

    before, used_before = await days(), await used()
    clock.advance(92 * DAY)  # the hours are now past the retention
    services = app.services
    await purge_expired(services.idempotency, services.audit, services.usage_service,
                        services.storage)  # fmt: skip
    assert await days() == before
    assert await used() == used_before == 1 + 13 + 47 + 3
    async with services.storage.reader() as uow:
        hourly = await uow.usage.keys_with_usage(
            admin.account.id, Granularity.HOUR, NOW - 3 * DAY, NOW + DAY
        )
    assert hourly == []  # every hour of those days is now a daily row
    error = assert_error(
        await client.get("/v1/usage?start=2028-02-29T00:00:00Z&end=2028-03-01T00:00:00Z",
                         headers=admin.headers),
        400, "validation_error",
    )  # fmt: skip
    assert "granularity=day" in error["details"][0]["message"]


async def test_openapi_documents_both_endpoints_and_their_errors(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    for path in ("/v1/api-keys/{key_id}/usage", "/v1/usage"):
        operation = spec["paths"][path]["get"]
        assert operation["x-keystile-permission"] == "admin:api_keys"
        assert operation["security"] == [{"bearerAuth": []}]
        assert {"200", "400", "401", "403", "404", "429", "503"} <= set(operation["responses"])
        for status, doc in operation["responses"].items():
            if status.startswith(("4", "5")):
                ref = doc["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/ErrorEnvelope"
        names = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
        assert names >= {"granularity", "start", "end"}
    assert set(schemas["UsageBucketOut"]["properties"]) == FIELDS
    assert set(schemas["KeyUsageBucketOut"]["properties"]) == FIELDS | {"key_id"}
