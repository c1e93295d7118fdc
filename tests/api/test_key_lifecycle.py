"""The key lifecycle (contract §10): PATCH, disable, rotate, metadata and the
new list filters, on both databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from keystile.api.pipeline import Pipeline
from keystile.keys.models import Plan
from tests.support import LEDGER, FakeClock, Tenant, assert_error, make_tenant

pytestmark = pytest.mark.anyio


def at(clock: FakeClock, **delta: float) -> str:
    moment = datetime.fromtimestamp(clock.now, UTC) + timedelta(**delta)
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def create(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    payload = {"name": f"k-{uuid.uuid4().hex[:8]}", "permissions": ["read:contacts"], **body}
    response = await client.post("/v1/api-keys", json=payload, headers=tenant.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    LEDGER.remember(data["key"])
    return data


async def patch(
    client: httpx.AsyncClient, tenant: Tenant, key_id: str, **body: Any
) -> httpx.Response:
    return await client.patch(f"/v1/api-keys/{key_id}", json=body, headers=tenant.headers)


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


class TestPatch:
    @pytest.mark.parametrize(
        ("change", "expect"),
        [
            ({"name": "Renamed"}, {"name": "Renamed"}),
            ({"description": "now described"}, {"description": "now described"}),
            ({"description": None}, {"description": None}),
            ({"metadata": {"team": "data"}}, {"metadata": {"team": "data"}}),
            ({"metadata": {}}, {"metadata": {}}),
            ({"metadata": None}, {"metadata": {}}),
            ({"permissions": ["read:contacts", "write:contacts"]},
             {"permissions": ["read:contacts", "write:contacts"]}),
            ({"rate_limit_tier": "high"}, {"rate_limit_tier": "high"}),
            ({"rate_limit": {"limit": 5, "window_seconds": 60}},
             {"rate_limit": {"limit": 5, "window_seconds": 60}}),
            ({"rate_limit": None}, {"rate_limit": None}),
            ({"quota": {"limit": 1000, "period": "month"}},
             {"quota": {"limit": 1000, "period": "month"}}),
            ({"quota": None}, {"quota": None}),
            ({"disabled": True}, {"disabled": True, "status": "disabled"}),
            ({"expires_at": None}, {"expires_at": None}),
        ],
    )  # fmt: skip
    async def test_every_field(
        self,
        client: httpx.AsyncClient,
        tenant: Tenant,
        change: dict[str, Any],
        expect: dict[str, Any],
    ) -> None:
        key = await create(client, tenant, description="old", metadata={"a": "b"})
        response = await patch(client, tenant, key["id"], **change)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert {name: data[name] for name in expect} == expect
        got = await client.get(f"/v1/api-keys/{key['id']}", headers=tenant.headers)
        assert got.json()["data"] == data
        assert "key" not in data

    async def test_expiry_in_the_future(
        self, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        key = await create(client, tenant)
        later = at(clock, days=3)
        assert (await patch(client, tenant, key["id"], expires_at=later)).json()["data"][
            "expires_at"
        ] == later
        past = await patch(client, tenant, key["id"], expires_at=at(clock, days=-1))
        assert_error(past, 400, "validation_error")

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "body"),
            ({"colour": "red"}, "colour"),
            ({"name": None}, "name"),
            ({"name": "  "}, "name"),
            ({"permissions": []}, "permissions"),
            ({"permissions": ["fly:rockets"]}, "permissions[0]"),
            ({"rate_limit_tier": "gold"}, "rate_limit_tier"),
            ({"rate_limit": {"limit": 0, "window_seconds": 60}}, "rate_limit.limit"),
            ({"rate_limit": {"limit": 5, "window_seconds": 86401}}, "rate_limit.window_seconds"),
            ({"rate_limit": {"limit": 5}}, "rate_limit.window_seconds"),
            ({"quota": {"limit": 10**12 + 1, "period": "month"}}, "quota.limit"),
            ({"quota": {"limit": 5, "period": "week"}}, "quota.period"),
            ({"disabled": "yes"}, "disabled"),
            ({"metadata": {"k": 1}}, "metadata.k"),
        ],
    )
    async def test_400_names_the_field(
        self, client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any], field: str
    ) -> None:
        key = await create(client, tenant)
        error = assert_error(
            await patch(client, tenant, key["id"], **body), 400, "validation_error"
        )
        assert field in {d["field"] for d in error["details"]}, error

    async def test_permissions_the_caller_lacks_are_403(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        limited = await make_tenant(
            app, permissions=("admin:api_keys", "read:contacts"), name="limited",
            account=tenant.account,
        )  # fmt: skip
        key = await create(client, limited)
        response = await patch(
            client, limited, key["id"], permissions=["read:contacts", "write:deals"]
        )
        assert_error(response, 403, "insufficient_permissions")

    async def test_unmetered_needs_the_enterprise_plan(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        key = await create(client, tenant)
        response = await patch(client, tenant, key["id"], rate_limit_tier="unmetered")
        assert_error(response, 403, "plan_restricted")
        enterprise = await make_tenant(app, plan=Plan.ENTERPRISE, name="ent")
        other = await create(client, enterprise)
        ok = await patch(client, enterprise, other["id"], rate_limit_tier="unmetered")
        assert ok.json()["data"]["rate_limit_tier"] == "unmetered"

    async def test_a_name_held_by_an_active_key_is_a_409(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        first = await create(client, tenant, name="taken")
        second = await create(client, tenant)
        assert_error(await patch(client, tenant, second["id"], name="TAKEN"), 409, "duplicate_name")
        await client.delete(f"/v1/api-keys/{first['id']}", headers=tenant.headers)
        assert (await patch(client, tenant, second["id"], name="taken")).status_code == 200

    async def test_a_revoked_or_expired_key_is_409_key_inactive(
        self, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        revoked = await create(client, tenant)
        await client.delete(f"/v1/api-keys/{revoked['id']}", headers=tenant.headers)
        assert_error(await patch(client, tenant, revoked["id"], name="x"), 409, "key_inactive")
        expiring = await create(client, tenant, expires_at=at(clock, seconds=30))
        clock.advance(31)
        assert_error(await patch(client, tenant, expiring["id"], name="y"), 409, "key_inactive")

    async def test_another_accounts_key_is_a_404(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        other = await make_tenant(app, name="other")
        assert_error(await patch(client, tenant, other.key_id, name="x"), 404, "not_found")

    async def test_changes_bite_on_the_next_request(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        key = await create(client, tenant, permissions=["admin:api_keys", "read:contacts"])
        assert (await client.get("/v1/api-keys", headers=auth(key["key"]))).status_code == 200
        await patch(client, tenant, key["id"], permissions=["read:contacts"])
        response = await client.get("/v1/api-keys", headers=auth(key["key"]))
        assert_error(response, 403, "insufficient_permissions")
        await patch(client, tenant, key["id"], rate_limit={"limit": 3, "window_seconds": 3600})
        limited = await client.get("/v1/api-keys", headers=auth(key["key"]))
        assert limited.headers["x-ratelimit-limit"] == "3"


class TestDisabled:
    async def test_a_disabled_key_is_401_and_verify_says_disabled(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        key = await create(client, tenant, permissions=["read:contacts", "admin:api_keys"])
        assert (await client.get("/v1/api-keys", headers=auth(key["key"]))).status_code == 200
        await patch(client, tenant, key["id"], disabled=True)
        response = await client.get("/v1/api-keys", headers=auth(key["key"]))
        assert_error(response, 401, "invalid_key")
        verified = await client.post(
            "/v1/keys/verify", json={"key": key["key"]}, headers=tenant.headers
        )
        assert verified.json()["data"]["code"] == "DISABLED"
        listed = await client.get("/v1/api-keys?status=disabled", headers=tenant.headers)
        assert [k["id"] for k in listed.json()["data"]] == [key["id"]]
        active = await client.get("/v1/api-keys?status=active", headers=tenant.headers)
        assert key["id"] not in {k["id"] for k in active.json()["data"]}
        await patch(client, tenant, key["id"], disabled=False)
        assert (await client.get("/v1/api-keys", headers=auth(key["key"]))).status_code == 200

    async def test_revoked_and_expired_win_over_disabled(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        key = await create(client, tenant)
        await patch(client, tenant, key["id"], disabled=True)
        revoked = await client.delete(f"/v1/api-keys/{key['id']}", headers=tenant.headers)
        assert revoked.json()["data"]["status"] == "revoked"


class TestRotate:
    async def test_the_copy_and_the_old_keys_grace(
        self, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        old = await create(
            client, tenant, name="worker", description="d", metadata={"m": "1"},
            rate_limit_tier="high", expires_at=at(clock, days=30),
            rate_limit={"limit": 50, "window_seconds": 60},
            quota={"limit": 1000, "period": "day"},
        )  # fmt: skip
        rotated = await client.post(
            f"/v1/api-keys/{old['id']}/rotate",
            json={"grace_period_seconds": 3600},
            headers=tenant.headers,
        )
        assert rotated.status_code == 201, rotated.text
        new = rotated.json()["data"]
        LEDGER.remember(new["key"])
        copied = ("name", "description", "metadata", "permissions", "rate_limit_tier",
                  "rate_limit", "quota", "expires_at", "prefix")  # fmt: skip
        assert {f: new[f] for f in copied} == {f: old[f] for f in copied}
        assert new["id"] != old["id"] and new["key"] != old["key"]
        previous = (await client.get(f"/v1/api-keys/{old['id']}", headers=tenant.headers)).json()
        assert previous["data"]["replaced_by"] == new["id"]
        assert previous["data"]["expires_at"] == at(clock, seconds=3600)
        assert previous["data"]["status"] == "active"
        for secret in (old["key"], new["key"]):
            verified = await client.post(
                "/v1/keys/verify", json={"key": secret, "consume": False}, headers=tenant.headers
            )
            assert verified.json()["data"]["code"] == "VALID"
        clock.advance(3601)
        expired = await client.post(
            "/v1/keys/verify", json={"key": old["key"]}, headers=tenant.headers
        )
        assert expired.json()["data"]["code"] == "EXPIRED"
        # The new key holds the name: another key cannot take it.
        dup = await client.post(
            "/v1/api-keys",
            json={"name": "worker", "permissions": ["read:contacts"]},
            headers=tenant.headers,
        )
        assert_error(dup, 409, "duplicate_name")

    async def test_grace_never_extends_an_expiry(
        self, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        old = await create(client, tenant, expires_at=at(clock, seconds=60))
        await client.post(
            f"/v1/api-keys/{old['id']}/rotate",
            json={"grace_period_seconds": 86400},
            headers=tenant.headers,
        )
        previous = (await client.get(f"/v1/api-keys/{old['id']}", headers=tenant.headers)).json()
        assert previous["data"]["expires_at"] == old["expires_at"]

    async def test_grace_zero_revokes_at_once(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        old = await create(client, tenant)
        rotated = await client.post(f"/v1/api-keys/{old['id']}/rotate", headers=tenant.headers)
        LEDGER.remember(rotated.json()["data"]["key"])
        previous = (await client.get(f"/v1/api-keys/{old['id']}", headers=tenant.headers)).json()
        assert previous["data"]["status"] == "revoked"
        assert previous["data"]["replaced_by"] == rotated.json()["data"]["id"]
        response = await client.get("/v1/api-keys", headers=auth(old["key"]))
        assert_error(response, 401, "invalid_key")

    async def test_revoked_expired_or_replaced_keys_are_409(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        old = await create(client, tenant)
        first = await client.post(
            f"/v1/api-keys/{old['id']}/rotate",
            json={"grace_period_seconds": 60},
            headers=tenant.headers,
        )
        LEDGER.remember(first.json()["data"]["key"])
        again = await client.post(f"/v1/api-keys/{old['id']}/rotate", headers=tenant.headers)
        assert_error(again, 409, "key_inactive")
        revoked = await create(client, tenant)
        await client.delete(f"/v1/api-keys/{revoked['id']}", headers=tenant.headers)
        response = await client.post(f"/v1/api-keys/{revoked['id']}/rotate", headers=tenant.headers)
        assert_error(response, 409, "key_inactive")

    @pytest.mark.parametrize("grace", [-1, 604801, "60", 1.5])
    async def test_bad_grace_periods_are_400(
        self, client: httpx.AsyncClient, tenant: Tenant, grace: object
    ) -> None:
        old = await create(client, tenant)
        response = await client.post(
            f"/v1/api-keys/{old['id']}/rotate",
            json={"grace_period_seconds": grace},
            headers=tenant.headers,
        )
        error = assert_error(response, 400, "validation_error")
        assert error["details"][0]["field"] == "grace_period_seconds"

    async def test_both_keys_share_one_rate_limit_window(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        old = await create(
            client, tenant, permissions=["read:contacts", "admin:api_keys"],
            rate_limit={"limit": 4, "window_seconds": 3600},
        )  # fmt: skip
        for _ in range(2):
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

    async def test_an_idempotent_retry_returns_the_same_new_secret(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        old = await create(client, tenant)
        headers = {**tenant.headers, "Idempotency-Key": f"rot-{uuid.uuid4().hex}"}
        first = await client.post(f"/v1/api-keys/{old['id']}/rotate", headers=headers)
        second = await client.post(f"/v1/api-keys/{old['id']}/rotate", headers=headers)
        assert first.status_code == second.status_code == 201
        assert first.content == second.content
        assert second.headers["idempotent-replayed"] == "true"
        LEDGER.remember(first.json()["data"]["key"])

    async def test_the_copied_permissions_must_be_the_callers(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        wide = await create(client, tenant, permissions=["read:contacts", "write:deals"])
        narrow = await make_tenant(
            app, permissions=("admin:api_keys", "read:contacts"), name="narrow",
            account=tenant.account,
        )  # fmt: skip
        response = await client.post(f"/v1/api-keys/{wide['id']}/rotate", headers=narrow.headers)
        assert_error(response, 403, "insufficient_permissions")


class TestListFilters:
    async def test_name_metadata_and_status(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        blue = await create(client, tenant, name="Blue Worker", metadata={"team": "a", "env": "p"})
        green = await create(client, tenant, name="green", metadata={"team": "a", "env": "s"})
        await create(client, tenant, name="red", metadata={"team": "b"})

        async def ids(query: str) -> list[str]:
            response = await client.get(f"/v1/api-keys?{query}", headers=tenant.headers)
            assert response.status_code == 200, response.text
            return [k["id"] for k in response.json()["data"]]

        assert await ids("name=blue%20WORKER") == [blue["id"]]
        assert await ids("metadata[team]=a") == [green["id"], blue["id"]]
        assert await ids("metadata[team]=a&metadata[env]=s") == [green["id"]]
        assert await ids("metadata[nope]=x") == []
        assert await ids("name=green&metadata[team]=b") == []

    @pytest.mark.parametrize(
        ("query", "field"),
        [("status=gone", "status"), ("metadata[]=x", "metadata[]"), ("colour=red", "colour")],
    )
    async def test_bad_filters_are_400(
        self, client: httpx.AsyncClient, tenant: Tenant, query: str, field: str
    ) -> None:
        response = await client.get(f"/v1/api-keys?{query}", headers=tenant.headers)
        error = assert_error(response, 400, "validation_error")
        assert error["details"][0]["field"] == field
