"""POST /v1/keys/verify (contract §7)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from keystile.api.pipeline import Pipeline
from keystile.keys.models import Plan
from tests.support import LEDGER, FakeClock, Tenant, assert_error, assert_own_headers, make_tenant

pytestmark = pytest.mark.anyio


@pytest.fixture
async def service(app: Pipeline) -> Tenant:
    """The calling service: it holds verify:keys only."""
    return await make_tenant(app, permissions=("verify:keys",), name="service", tier="high")


async def issue(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    body = {"name": "customer", "permissions": ["read:contacts"], **body}
    response = await client.post("/v1/api-keys", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    LEDGER.remember(data["key"])
    return data


async def verify(client: httpx.AsyncClient, caller: Tenant, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/keys/verify", json=body, headers=caller.headers)
    assert response.status_code == 200, response.text
    assert_own_headers(response)
    data: dict[str, Any] = response.json()["data"]
    return data


@pytest.fixture
async def admin_of_service_account(app: Pipeline, service: Tenant) -> Tenant:
    # A second key in the service's own account, able to issue customer keys.
    from keystile.keys.validation import check_new_key

    services = app.services
    new = check_new_key(
        name="issuer", permissions=("admin:api_keys", "read:contacts", "write:contacts"),
        description=None, rate_limit_tier=None, expires_at=None,
        catalog=services.settings.catalog, now=services.keys.now(),
    )  # fmt: skip
    async with services.storage.transaction() as uow:
        issued = await services.keys.issue(uow, service.account.id, new, caller=None)
    LEDGER.remember(issued.secret)
    return Tenant(service.account, issued.secret, issued.key.id)


class TestOutcomes:
    async def test_valid_consumes_the_verified_keys_quota(
        self, client: httpx.AsyncClient, service: Tenant, admin_of_service_account: Tenant
    ) -> None:
        customer = await issue(client, admin_of_service_account, metadata={"plan": "pro"})
        first = await verify(client, service, key=customer["key"])
        assert first == {
            "valid": True,
            "code": "VALID",
            "key_id": customer["id"],
            "account_id": service.account.id,
            "permissions": ["read:contacts"],
            "metadata": {"plan": "pro"},
            "rate_limit": {"limit": 100, "remaining": 99, "reset": first["rate_limit"]["reset"]},
            "quota": None,
        }
        second = await verify(client, service, key=customer["key"], permission="read:contacts")
        assert second["rate_limit"]["remaining"] == 98
        peeked = await verify(client, service, key=customer["key"], consume=False)
        assert peeked["valid"] is True and peeked["rate_limit"]["remaining"] == 98
        assert (await verify(client, service, key=customer["key"], consume=False))["rate_limit"][
            "remaining"
        ] == 98

    async def test_insufficient_permissions(
        self, client: httpx.AsyncClient, service: Tenant, admin_of_service_account: Tenant
    ) -> None:
        customer = await issue(client, admin_of_service_account)
        result = await verify(client, service, key=customer["key"], permission="write:contacts")
        assert (result["valid"], result["code"], result["key_id"]) == (
            False,
            "INSUFFICIENT_PERMISSIONS",
            customer["id"],
        )
        # The gateway's order: the check counted, as the request would have.
        assert result["rate_limit"]["remaining"] == 99
        assert (await verify(client, service, key=customer["key"], consume=False))["rate_limit"][
            "remaining"
        ] == 99

    async def test_rate_limited(
        self,
        app: Pipeline,
        client: httpx.AsyncClient,
        service: Tenant,
        admin_of_service_account: Tenant,
    ) -> None:
        customer = await issue(client, admin_of_service_account)
        for _ in range(100):
            assert (await verify(client, service, key=customer["key"]))["code"] == "VALID"
        limited = await verify(client, service, key=customer["key"])
        assert (limited["valid"], limited["code"]) == (False, "RATE_LIMITED")
        assert limited["rate_limit"]["remaining"] == 0
        peek = await verify(client, service, key=customer["key"], consume=False)
        assert (peek["code"], peek["rate_limit"]["remaining"]) == ("RATE_LIMITED", 0)

    async def test_revoked_and_expired(
        self,
        client: httpx.AsyncClient,
        service: Tenant,
        admin_of_service_account: Tenant,
        clock: FakeClock,
    ) -> None:
        revoked = await issue(client, admin_of_service_account, name="gone")
        await client.delete(
            f"/v1/api-keys/{revoked['id']}", headers=admin_of_service_account.headers
        )
        result = await verify(client, service, key=revoked["key"])
        assert (result["valid"], result["code"], result["key_id"], result["rate_limit"]) == (
            False,
            "REVOKED",
            revoked["id"],
            None,
        )
        expiring = await issue(
            client, admin_of_service_account, name="soon", expires_at="2099-01-01T00:00:00Z"
        )
        clock.now = 4070908800
        result = await verify(client, service, key=expiring["key"])
        assert (result["code"], result["key_id"]) == ("EXPIRED", expiring["id"])

    @pytest.mark.parametrize(
        "key",
        ["", "nonsense", "wbk_live_" + "A" * 32, "wbk_live_" + "é" * 32, "wbk_live_" + "\x7f" * 32],
    )
    async def test_invalid_keys(self, client: httpx.AsyncClient, service: Tenant, key: str) -> None:
        assert await verify(client, service, key=key) == {
            "valid": False, "code": "INVALID", "key_id": None, "account_id": None,
            "permissions": None, "metadata": None, "rate_limit": None, "quota": None,
        }  # fmt: skip

    async def test_another_accounts_key_is_invalid_like_an_unknown_one(
        self, app: Pipeline, client: httpx.AsyncClient, service: Tenant
    ) -> None:
        other = await make_tenant(app)
        foreign = await issue(client, other, name="foreign")
        revoked = await issue(client, other, name="foreign-revoked")
        await client.delete(f"/v1/api-keys/{revoked['id']}", headers=other.headers)
        unknown = await verify(client, service, key="wbk_live_" + "A" * 32)
        assert await verify(client, service, key=foreign["key"]) == unknown
        assert await verify(client, service, key=revoked["key"]) == unknown
        assert await verify(client, service, key=other.secret, consume=False) == unknown

    async def test_unmetered_keys_have_no_rate_limit(
        self, app: Pipeline, client: httpx.AsyncClient
    ) -> None:
        enterprise = await make_tenant(app, plan=Plan.ENTERPRISE)
        customer = await issue(client, enterprise, rate_limit_tier="unmetered")
        result = await verify(client, enterprise, key=customer["key"])
        assert (result["code"], result["rate_limit"]) == ("VALID", None)


class TestErrors:
    async def test_the_caller_needs_verify_keys_before_the_body_is_read(
        self, app: Pipeline, client: httpx.AsyncClient
    ) -> None:
        admin = await make_tenant(app, permissions=("admin:api_keys", "read:contacts"))
        response = await client.post("/v1/keys/verify", content=b"{", headers=admin.headers)
        error = assert_error(response, 403, "insufficient_permissions")
        assert "verify:keys" in error["message"]

    async def test_401_and_405(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.post("/v1/keys/verify", json={"key": "x"}), 401, "invalid_key")
        response = await client.get("/v1/keys/verify")
        assert_error(response, 405, "method_not_allowed")
        assert response.headers["allow"] == "POST"

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "key"),
            ({"key": 5}, "key"),
            ({"key": "x", "permission": "fly:rockets"}, "permission"),
            ({"key": "x", "consume": "yes"}, "consume"),
            ({"key": "x", "extra": 1}, "extra"),
            ({"key": "x" * 513}, "key"),
        ],
    )
    async def test_400(
        self, client: httpx.AsyncClient, service: Tenant, body: Any, field: str
    ) -> None:
        response = await client.post("/v1/keys/verify", json=body, headers=service.headers)
        error = assert_error(response, 400, "validation_error")
        assert field in [d["field"] for d in error["details"]]

    async def test_415_and_413(self, client: httpx.AsyncClient, service: Tenant) -> None:
        wrong = await client.post(
            "/v1/keys/verify", content=b'{"key": "x"}', headers=service.headers
        )
        assert_error(wrong, 415, "unsupported_media_type")
        huge = await client.post(
            "/v1/keys/verify",
            content=b'{"key": "' + b"x" * 70000 + b'"}',
            headers={**service.headers, "Content-Type": "application/json"},
        )
        assert_error(huge, 413, "payload_too_large")

    async def test_the_caller_is_rate_limited_too(
        self, client: httpx.AsyncClient, service: Tenant
    ) -> None:
        response = await client.post("/v1/keys/verify", json={"key": "x"}, headers=service.headers)
        assert int(response.headers["x-ratelimit-remaining"]) == 999  # its own (high) tier


async def test_openapi_documents_verify(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/v1/keys/verify"]["post"]
    assert operation["security"] == [{"bearerAuth": []}]
    assert {"200", "400", "401", "403", "429"} <= set(operation["responses"])
    assert {"VerifyRequest", "VerifyEnvelope", "VerifyResult"} <= set(spec["components"]["schemas"])
