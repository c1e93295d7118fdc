"""DELETE /v1/api-keys/{id}, and expiry (contract §4)."""

from __future__ import annotations

import httpx
import pytest

from keystile.api.pipeline import Pipeline
from tests.support import FakeClock, Tenant, assert_error, assert_own_headers, make_tenant

pytestmark = pytest.mark.anyio


async def new_key(client: httpx.AsyncClient, tenant: Tenant, **extra: object) -> dict[str, str]:
    body = {"name": "victim", "permissions": ["admin:api_keys", "read:contacts"], **extra}
    response = await client.post("/v1/api-keys", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    data: dict[str, str] = response.json()["data"]
    return data


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


class TestRevoke:
    async def test_200_then_the_very_next_request_is_refused(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        victim = await new_key(client, tenant)
        # Warm the verifier's cache so that revocation has to evict it.
        assert (await client.get("/v1/api-keys", headers=bearer(victim["key"]))).status_code == 200
        response = await client.delete(f"/v1/api-keys/{victim['id']}", headers=tenant.headers)
        assert response.status_code == 200
        assert_own_headers(response)
        data = response.json()["data"]
        assert data["status"] == "revoked" and data["revoked_at"] is not None
        assert "key" not in data
        after = await client.get("/v1/api-keys", headers=bearer(victim["key"]))
        assert_error(after, 401, "invalid_key")

    async def test_revoking_twice_is_idempotent(
        self, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        victim = await new_key(client, tenant)
        first = await client.delete(f"/v1/api-keys/{victim['id']}", headers=tenant.headers)
        clock.advance(5)
        second = await client.delete(f"/v1/api-keys/{victim['id']}", headers=tenant.headers)
        assert second.status_code == 200
        assert second.json() == first.json()

    async def test_a_key_may_revoke_itself(self, client: httpx.AsyncClient, tenant: Tenant) -> None:
        victim = await new_key(client, tenant)
        response = await client.delete(
            f"/v1/api-keys/{victim['id']}", headers=bearer(victim["key"])
        )
        assert response.status_code == 200
        assert_error(
            await client.get("/v1/api-keys", headers=bearer(victim["key"])), 401, "invalid_key"
        )

    async def test_another_accounts_key_is_a_404_and_stays_active(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        other = await make_tenant(app)
        response = await client.delete(f"/v1/api-keys/{other.key_id}", headers=tenant.headers)
        assert_error(response, 404, "not_found")
        assert (await client.get("/v1/api-keys", headers=other.headers)).status_code == 200

    async def test_404_401_403(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        missing = await client.delete(
            "/v1/api-keys/key_01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=tenant.headers
        )
        assert_error(missing, 404, "not_found")
        assert_error(await client.delete(f"/v1/api-keys/{tenant.key_id}"), 401, "invalid_key")
        reader = await make_tenant(app, permissions=("read:contacts",))
        response = await client.delete(f"/v1/api-keys/{reader.key_id}", headers=reader.headers)
        assert_error(response, 403, "insufficient_permissions")


class TestExpiry:
    async def test_an_expired_key_gets_401_and_reads_as_expired(
        self, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        victim = await new_key(client, tenant, expires_at="2099-01-01T00:00:00Z")
        assert (await client.get("/v1/api-keys", headers=bearer(victim["key"]))).status_code == 200
        clock.now = 4070908799.999
        assert (await client.get("/v1/api-keys", headers=bearer(victim["key"]))).status_code == 200
        clock.now = 4070908800  # exactly expires_at: expired
        assert_error(
            await client.get("/v1/api-keys", headers=bearer(victim["key"])), 401, "invalid_key"
        )
        data = (await client.get(f"/v1/api-keys/{victim['id']}", headers=tenant.headers)).json()
        assert data["data"]["status"] == "expired"

    async def test_revocation_wins_over_expiry(
        self, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        victim = await new_key(client, tenant, expires_at="2099-01-01T00:00:00Z")
        await client.delete(f"/v1/api-keys/{victim['id']}", headers=tenant.headers)
        clock.now = 4070908801
        data = (await client.get(f"/v1/api-keys/{victim['id']}", headers=tenant.headers)).json()
        assert data["data"]["status"] == "revoked"
