"""GET /v1/api-keys and GET /v1/api-keys/{id} (contract §4)."""

from __future__ import annotations

import asyncio
import itertools

import httpx
import pytest

from keystile.api.pipeline import Pipeline
from tests.support import FakeClock, Tenant, assert_error, assert_own_headers, make_tenant

pytestmark = pytest.mark.anyio
_names = itertools.count()

FIELDS = {
    "id", "prefix", "name", "description", "permissions", "rate_limit_tier",
    "expires_at", "created_at", "status", "revoked_at", "last_used_at",
    "metadata", "disabled", "replaced_by", "rate_limit", "quota",  # contract §10
}  # fmt: skip


async def make_keys(client: httpx.AsyncClient, tenant: Tenant, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        response = await client.post(
            "/v1/api-keys",
            json={"name": f"key {next(_names)}", "permissions": ["read:contacts"]},
            headers=tenant.headers,
        )
        ids.append(response.json()["data"]["id"])
    return ids


class TestList200:
    async def test_newest_first_without_secrets(
        self, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        ids = []
        for _ in range(3):
            ids += await make_keys(client, tenant, 1)
            clock.advance(1)
        response = await client.get("/v1/api-keys", headers=tenant.headers)
        assert response.status_code == 200
        assert_own_headers(response)
        body = response.json()
        assert set(body) == {"data", "has_more"}
        assert [k["id"] for k in body["data"]] == [*reversed(ids), tenant.key_id]
        assert body["has_more"] is False
        for item in body["data"]:
            assert set(item) == FIELDS
        assert tenant.secret not in response.text and "wbk_live_" not in response.text

    async def test_cursor_pagination_visits_every_key_once(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        ids = set(await make_keys(client, tenant, 7)) | {tenant.key_id}
        seen: list[str] = []
        cursor = None
        while True:
            url = "/v1/api-keys?limit=3" + (f"&starting_after={cursor}" if cursor else "")
            page = (await client.get(url, headers=tenant.headers)).json()
            assert len(page["data"]) <= 3
            seen += [k["id"] for k in page["data"]]
            if not page["has_more"]:
                break
            cursor = page["data"][-1]["id"]
        assert len(seen) == len(set(seen)) == 8
        assert set(seen) == ids

    async def test_limit_bounds_are_inclusive(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        await make_keys(client, tenant, 2)
        one = (await client.get("/v1/api-keys?limit=1", headers=tenant.headers)).json()
        assert len(one["data"]) == 1 and one["has_more"] is True
        hundred = await client.get("/v1/api-keys?limit=100", headers=tenant.headers)
        assert hundred.status_code == 200 and len(hundred.json()["data"]) == 3

    async def test_status_filter(
        self, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        revoked, active = await make_keys(client, tenant, 2)
        await client.delete(f"/v1/api-keys/{revoked}", headers=tenant.headers)
        expiring = await client.post(
            "/v1/api-keys",
            json={
                "name": "short",
                "permissions": ["read:contacts"],
                "expires_at": "2099-01-01T00:00:00Z",
            },
            headers=tenant.headers,
        )
        clock.now = 4070908800 + 1  # past 2099-01-01T00:00:00Z
        # The tenant's own admin key has no expiry, so it still works.

        async def ids(status: str) -> set[str]:
            page = await client.get(f"/v1/api-keys?status={status}", headers=tenant.headers)
            assert all(k["status"] == status for k in page.json()["data"])
            return {k["id"] for k in page.json()["data"]}

        assert await ids("revoked") == {revoked}
        assert await ids("expired") == {expiring.json()["data"]["id"]}
        assert await ids("active") == {active, tenant.key_id}

    async def test_another_accounts_keys_never_appear(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        other = await make_tenant(app)
        theirs = set(await make_keys(client, other, 3)) | {other.key_id}
        page = (await client.get("/v1/api-keys?limit=100", headers=tenant.headers)).json()
        assert theirs.isdisjoint(k["id"] for k in page["data"])


class TestList400:
    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("limit=-1", "limit"),
            ("limit=abc", "limit"),
            ("limit=", "limit"),
            ("status=deleted", "status"),
            ("starting_after=key_nope", "starting_after"),
            ("limt=5", "limt"),
            ("limit=5&limit=6", "limit"),
        ],
    )
    async def test_bad_query_parameters(
        self, client: httpx.AsyncClient, tenant: Tenant, query: str, field: str
    ) -> None:
        response = await client.get(f"/v1/api-keys?{query}", headers=tenant.headers)
        error = assert_error(response, 400, "validation_error")
        assert field in [d["field"] for d in error["details"]], error

    async def test_a_cursor_from_another_account_is_a_400(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        other = await make_tenant(app)
        response = await client.get(
            f"/v1/api-keys?starting_after={other.key_id}", headers=tenant.headers
        )
        assert_error(response, 400, "validation_error")


class TestListAuth:
    async def test_401_and_403(self, app: Pipeline, client: httpx.AsyncClient) -> None:
        assert_error(await client.get("/v1/api-keys"), 401, "invalid_key")
        reader = await make_tenant(app, permissions=("read:contacts",))
        assert_error(
            await client.get("/v1/api-keys", headers=reader.headers),
            403,
            "insufficient_permissions",
        )


class TestGet:
    async def test_200_has_status_and_timestamps_but_no_secret(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        response = await client.get(f"/v1/api-keys/{tenant.key_id}", headers=tenant.headers)
        assert response.status_code == 200
        assert_own_headers(response)
        data = response.json()["data"]
        assert set(data) == FIELDS
        assert (data["id"], data["status"], data["revoked_at"]) == (tenant.key_id, "active", None)
        assert "wbk_live_" not in response.text

    async def test_last_used_at_follows_use(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        await client.get("/v1/api-keys", headers=tenant.headers)
        for _ in range(100):
            data = (
                await client.get(f"/v1/api-keys/{tenant.key_id}", headers=tenant.headers)
            ).json()
            if data["data"]["last_used_at"] is not None:
                break
            await asyncio.sleep(0.02)
        assert data["data"]["last_used_at"] is not None

    @pytest.mark.parametrize(
        "key_id", ["key_01ARZ3NDEKTSV4RRFFQ69G5FAV", "nope", "key_" + "x" * 500]
    )
    async def test_404_for_unknown_or_malformed_ids(
        self, client: httpx.AsyncClient, tenant: Tenant, key_id: str
    ) -> None:
        response = await client.get(f"/v1/api-keys/{key_id}", headers=tenant.headers)
        assert_error(response, 404, "not_found")

    async def test_another_accounts_key_is_a_404_like_a_missing_one(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        other = await make_tenant(app)
        theirs = await client.get(f"/v1/api-keys/{other.key_id}", headers=tenant.headers)
        missing = await client.get(
            "/v1/api-keys/key_01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=tenant.headers
        )
        assert_error(theirs, 404, "not_found")
        assert theirs.json()["error"]["message"].replace(other.key_id, "X") == missing.json()[
            "error"
        ]["message"].replace("key_01ARZ3NDEKTSV4RRFFQ69G5FAV", "X")

    async def test_401_and_403(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        assert_error(await client.get(f"/v1/api-keys/{tenant.key_id}"), 401, "invalid_key")
        reader = await make_tenant(app, permissions=("read:contacts",))
        response = await client.get(f"/v1/api-keys/{reader.key_id}", headers=reader.headers)
        assert_error(response, 403, "insufficient_permissions")
