"""The operator API (contract §9): operator keys, accounts, acting for an
account with Keystile-Account, suspension and the plan rule."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from keystile.api.pipeline import Pipeline
from keystile.keys.operators import OperatorKeys
from tests.support import (
    ALL_SCOPES,
    LEDGER,
    Operator,
    Tenant,
    assert_error,
    assert_own_headers,
    make_operator,
    make_tenant,
)

pytestmark = pytest.mark.anyio

ACCOUNT_FIELDS = {"id", "name", "plan", "status", "metadata", "created_at"}


@pytest.fixture
async def operator(app: Pipeline) -> Operator:
    return await make_operator(app)


async def new_account(client: httpx.AsyncClient, operator: Operator, **body: Any) -> dict[str, Any]:
    response = await client.post(
        "/v1/accounts", json={"name": "Customer", **body}, headers=operator.headers()
    )
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


class TestOperatorKeys:
    async def test_format_and_digest_at_rest(self, app: Pipeline, operator: Operator) -> None:
        prefix, kind, body = operator.secret.split("_")
        assert (prefix, kind, len(body)) == ("wbk", "root", 32)
        assert operator.key_id.startswith("opk_")

    async def test_never_rate_limited(self, client: httpx.AsyncClient, operator: Operator) -> None:
        response = await client.get("/v1/accounts", headers=operator.headers())
        assert response.status_code == 200
        assert "x-ratelimit-limit" not in response.headers

    async def test_a_revoked_operator_key_is_refused_at_once(
        self, app: Pipeline, client: httpx.AsyncClient, operator: Operator
    ) -> None:
        assert (await client.get("/v1/accounts", headers=operator.headers())).status_code == 200
        services = app.services
        await OperatorKeys(services.storage, prefix="wbk").revoke(operator.key_id)
        response = await client.get("/v1/accounts", headers=operator.headers())
        assert_error(response, 401, "invalid_key")

    @pytest.mark.parametrize("mangle", ["checksum", "kind", "unknown"])
    async def test_bad_operator_tokens_are_401(
        self, app: Pipeline, client: httpx.AsyncClient, operator: Operator, mangle: str
    ) -> None:
        from keystile.keys import tokens

        token = {
            "checksum": operator.secret[:-1] + ("A" if operator.secret[-1] != "A" else "B"),
            "kind": operator.secret.replace("_root_", "_live_"),
            "unknown": tokens.generate("wbk", tokens.ROOT),
        }[mangle]
        response = await client.get("/v1/accounts", headers={"Authorization": f"Bearer {token}"})
        assert_error(response, 401, "invalid_key")


class TestAccounts:
    async def test_create_get_list_update(
        self, client: httpx.AsyncClient, operator: Operator
    ) -> None:
        created = await new_account(client, operator, plan="enterprise", metadata={"crm_id": "42"})
        assert set(created) == ACCOUNT_FIELDS
        assert (created["plan"], created["status"], created["metadata"]) == (
            "enterprise", "active", {"crm_id": "42"},
        )  # fmt: skip
        got = await client.get(f"/v1/accounts/{created['id']}", headers=operator.headers())
        assert got.json()["data"] == created
        assert_own_headers(got)
        patched = await client.patch(
            f"/v1/accounts/{created['id']}",
            json={"name": "Renamed", "metadata": None},
            headers=operator.headers(),
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["data"]["name"] == "Renamed"
        assert patched.json()["data"]["metadata"] == {}

    async def test_list_is_newest_first_paginated_and_filtered(
        self, client: httpx.AsyncClient, operator: Operator
    ) -> None:
        ids = [(await new_account(client, operator, name=f"A{n}"))["id"] for n in range(5)]
        await client.patch(
            f"/v1/accounts/{ids[1]}", json={"status": "suspended"}, headers=operator.headers()
        )
        seen: list[str] = []
        cursor = None
        while True:
            query = "limit=2" + (f"&starting_after={cursor}" if cursor else "")
            body = (await client.get(f"/v1/accounts?{query}", headers=operator.headers())).json()
            seen += [a["id"] for a in body["data"]]
            if not body["has_more"]:
                break
            cursor = body["data"][-1]["id"]
        assert [i for i in seen if i in ids] == list(reversed(ids))
        suspended = await client.get("/v1/accounts?status=suspended", headers=operator.headers())
        assert [a["id"] for a in suspended.json()["data"]] == [ids[1]]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "name"),
            ({"name": ""}, "name"),
            ({"name": "x", "plan": "gold"}, "plan"),
            ({"name": "x", "metadata": {"k": 1}}, "metadata.k"),
            ({"name": "x", "metadata": {"": "v"}}, "metadata."),
            ({"name": "x", "metadata": {"k" * 41: "v"}}, f"metadata.{'k' * 41}"),
            ({"name": "x", "metadata": {"a[b]": "v"}}, "metadata.a[b]"),
            ({"name": "x", "metadata": {"k": "v" * 501}}, "metadata.k"),
            ({"name": "x", "metadata": {f"k{n}": "v" for n in range(51)}}, "metadata"),
            ({"name": "x", "status": "active"}, "status"),
        ],
    )
    async def test_create_validation_names_the_field(
        self, client: httpx.AsyncClient, operator: Operator, body: dict[str, Any], field: str
    ) -> None:
        response = await client.post("/v1/accounts", json=body, headers=operator.headers())
        error = assert_error(response, 400, "validation_error")
        assert field in {d["field"] for d in error["details"]}, error

    async def test_an_unknown_account_is_404(
        self, client: httpx.AsyncClient, operator: Operator
    ) -> None:
        for path in ("/v1/accounts/acc_01ARZ3NDEKTSV4RRFFQ69G5FAV", "/v1/accounts/nope"):
            assert_error(await client.get(path, headers=operator.headers()), 404, "not_found")

    async def test_an_empty_patch_is_a_400(
        self, client: httpx.AsyncClient, operator: Operator
    ) -> None:
        account = await new_account(client, operator)
        response = await client.patch(
            f"/v1/accounts/{account['id']}", json={}, headers=operator.headers()
        )
        assert_error(response, 400, "validation_error")

    async def test_account_keys_are_refused(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        for method, path in (("GET", "/v1/accounts"), ("POST", "/v1/accounts")):
            response = await client.request(
                method, path, json={"name": "x"}, headers=tenant.headers
            )
            assert_error(response, 403, "insufficient_permissions")


class TestActingForAnAccount:
    async def test_every_account_endpoint_with_every_scope(
        self, app: Pipeline, client: httpx.AsyncClient, operator: Operator
    ) -> None:
        account = await new_account(client, operator)
        headers = operator.headers(account["id"])
        created = await client.post(
            "/v1/api-keys",
            json={"name": "first", "permissions": list(ALL_SCOPES)},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        key = created.json()["data"]
        LEDGER.remember(key["key"])
        assert "x-ratelimit-limit" not in created.headers
        listed = await client.get("/v1/api-keys", headers=headers)
        assert [k["id"] for k in listed.json()["data"]] == [key["id"]]
        assert (await client.get(f"/v1/api-keys/{key['id']}", headers=headers)).status_code == 200
        patched = await client.patch(
            f"/v1/api-keys/{key['id']}", json={"description": "by ops"}, headers=headers
        )
        assert patched.json()["data"]["description"] == "by ops"
        verified = await client.post(
            "/v1/keys/verify", json={"key": key["key"], "consume": False}, headers=headers
        )
        assert verified.json()["data"]["code"] == "VALID"
        events = await client.get("/v1/audit-events", headers=headers)
        assert {e["account_id"] for e in events.json()["data"]} == {account["id"]}
        rotated = await client.post(f"/v1/api-keys/{key['id']}/rotate", headers=headers)
        assert rotated.status_code == 201
        LEDGER.remember(rotated.json()["data"]["key"])
        revoked = await client.delete(
            f"/v1/api-keys/{rotated.json()['data']['id']}", headers=headers
        )
        assert revoked.status_code == 200

    async def test_without_the_header_an_account_endpoint_is_a_400(
        self, client: httpx.AsyncClient, operator: Operator
    ) -> None:
        for method, path in (("GET", "/v1/api-keys"), ("POST", "/v1/keys/verify")):
            response = await client.request(
                method, path, json={"key": "x"}, headers=operator.headers()
            )
            error = assert_error(response, 400, "validation_error")
            assert error["details"][0]["field"] == "Keystile-Account"

    @pytest.mark.parametrize("account_id", ["acc_01ARZ3NDEKTSV4RRFFQ69G5FAV", "nope", ""])
    async def test_an_unknown_account_in_the_header_is_a_404(
        self, client: httpx.AsyncClient, operator: Operator, account_id: str
    ) -> None:
        response = await client.get("/v1/api-keys", headers=operator.headers(account_id))
        assert_error(response, 404, "not_found")

    async def test_an_account_key_with_the_header_is_a_400(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        for path in ("/v1/api-keys", "/v1/accounts", "/v1/audit-events"):
            response = await client.get(
                path, headers={**tenant.headers, "Keystile-Account": tenant.account.id}
            )
            error = assert_error(response, 400, "validation_error")
            assert error["details"][0]["field"] == "Keystile-Account"

    async def test_operator_keys_do_not_reach_gateway_routes(
        self, client: httpx.AsyncClient, operator: Operator, tenant: Tenant
    ) -> None:
        # No gateway is configured here: an unknown path is a 404 first.
        response = await client.get("/v1/contacts", headers=operator.headers(tenant.account.id))
        assert_error(response, 404, "not_found")

    async def test_audit_events_of_every_account_without_the_header(
        self, client: httpx.AsyncClient, operator: Operator
    ) -> None:
        first = await new_account(client, operator, name="One")
        second = await new_account(client, operator, name="Two")
        events = (await client.get("/v1/audit-events?limit=100", headers=operator.headers())).json()
        assert {first["id"], second["id"]} <= {e["account_id"] for e in events["data"]}


class TestSuspension:
    async def test_suspended_keys_get_403_and_verify_says_disabled(
        self, app: Pipeline, client: httpx.AsyncClient, operator: Operator
    ) -> None:
        customer = await make_tenant(app)
        service = await make_tenant(app, permissions=("verify:keys",), name="service")
        assert (await client.get("/v1/api-keys", headers=customer.headers)).status_code == 200
        suspend = await client.patch(
            f"/v1/accounts/{customer.account.id}",
            json={"status": "suspended"},
            headers=operator.headers(),
        )
        assert suspend.json()["data"]["status"] == "suspended"
        response = await client.get("/v1/api-keys", headers=customer.headers)
        assert_error(response, 403, "account_suspended")
        assert "x-ratelimit-limit" not in response.headers  # checked before the rate limit
        verified = await client.post(
            "/v1/keys/verify",
            json={"key": customer.secret},
            headers=operator.headers(customer.account.id),
        )
        assert verified.json()["data"]["code"] == "DISABLED"
        assert verified.json()["data"]["valid"] is False
        other = await client.post(
            "/v1/keys/verify", json={"key": customer.secret}, headers=service.headers
        )
        assert other.json()["data"]["code"] == "INVALID"
        await client.patch(
            f"/v1/accounts/{customer.account.id}",
            json={"status": "active"},
            headers=operator.headers(),
        )
        assert (await client.get("/v1/api-keys", headers=customer.headers)).status_code == 200

    async def test_enterprise_to_standard_with_unmetered_keys_is_a_409(
        self, app: Pipeline, client: httpx.AsyncClient, operator: Operator
    ) -> None:
        from keystile.keys.models import Plan

        enterprise = await make_tenant(app, plan=Plan.ENTERPRISE, tier="unmetered")
        await make_tenant(app, tier="unmetered", name="second", account=enterprise.account)
        response = await client.patch(
            f"/v1/accounts/{enterprise.account.id}",
            json={"plan": "standard"},
            headers=operator.headers(),
        )
        error = assert_error(response, 409, "plan_conflict")
        assert "2 active unmetered keys" in error["message"]
