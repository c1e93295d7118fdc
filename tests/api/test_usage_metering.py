"""What usage metering counts (contract §11): each request of an account key
that passed authentication, by outcome, on keystile's own endpoints, gateway
routes and verify with ``consume``; nothing for unauthenticated requests,
disabled keys, suspended accounts, operator keys or an address's block.

Counts are read over HTTP with an operator key, which is never metered, so
reading them changes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from keystile.api.app import create_app
from keystile.api.pipeline import Pipeline
from keystile.settings import Settings
from tests.conftest import settings_for
from tests.support import (
    LEDGER,
    FakeClock,
    Operator,
    Tenant,
    assert_error,
    free_port,
    make_operator,
    make_tenant,
)

pytestmark = pytest.mark.anyio

NONE = {"allowed": 0, "rate_limited": 0, "quota_exceeded": 0, "forbidden": 0}


@pytest.fixture
def settings(database_url: str, data_dir: Path, tmp_path: Path) -> Settings:
    routes = tmp_path / "routes.toml"
    nowhere = f"http://127.0.0.1:{free_port()}"  # requests that get through: 502
    routes.write_text(
        f'[[routes]]\nprefix = "/v1/contacts"\nmethods = ["GET"]\nscope = "read:contacts"\n'
        f'upstream = "{nowhere}"\n'
    )
    return settings_for(
        database_url, data_dir, routes=routes, tier_standard="5/hour", auth_failure_limit="3/hour"
    )


@pytest.fixture
async def operator(app: Pipeline) -> Operator:
    return await make_operator(app)


def client_from(app: Pipeline, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    return httpx.AsyncClient(
        transport=transport,
        base_url="http://keystile.test",
        event_hooks={"response": [LEDGER.capture]},
    )


async def counted(
    app: Pipeline, client: httpx.AsyncClient, operator: Operator, tenant: Tenant, key_id: str
) -> dict[str, int]:
    """The key's counts over the last 24 hours, once everything is written."""
    await app.services.usage_meter.flush()
    response = await client.get(
        f"/v1/api-keys/{key_id}/usage", headers=operator.headers(tenant.account.id)
    )
    assert response.status_code == 200, response.text
    totals = dict(NONE)
    for entry in response.json()["data"]:
        for outcome in totals:
            totals[outcome] += entry[outcome]
    return totals


async def test_own_endpoints_count_allowed_whatever_the_handler_answers(
    app: Pipeline, client: httpx.AsyncClient, operator: Operator
) -> None:
    admin = await make_tenant(app, tier="high")
    assert (await client.get("/v1/api-keys", headers=admin.headers)).status_code == 200
    missing = await client.get("/v1/api-keys/key_01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=admin.headers)
    assert_error(missing, 404, "not_found")
    invalid = await client.post("/v1/api-keys", json={"name": ""}, headers=admin.headers)
    assert_error(invalid, 400, "validation_error")
    head = await client.head("/v1/api-keys", headers=admin.headers)
    assert head.status_code == 200
    assert await counted(app, client, operator, admin, admin.key_id) == {**NONE, "allowed": 4}


async def test_a_missing_scope_counts_forbidden(
    app: Pipeline, client: httpx.AsyncClient, operator: Operator
) -> None:
    reader = await make_tenant(app, permissions=("read:contacts",), tier="high")
    for _ in range(2):
        assert_error(await client.get("/v1/api-keys", headers=reader.headers), 403,
                     "insufficient_permissions")  # fmt: skip
    accounts = await client.get("/v1/accounts", headers=reader.headers)  # operator keys only
    assert_error(accounts, 403, "insufficient_permissions")
    assert await counted(app, client, operator, reader, reader.key_id) == {**NONE, "forbidden": 3}


async def test_the_rate_limit_counts_rate_limited_and_nothing_else(
    app: Pipeline, client: httpx.AsyncClient, operator: Operator
) -> None:
    reader = await make_tenant(app, permissions=("read:contacts",))  # standard: 5 per hour
    statuses = [(await client.get("/v1/api-keys", headers=reader.headers)).status_code
                for _ in range(8)]  # fmt: skip
    assert statuses == [403] * 5 + [429] * 3  # the limit is checked before the scope
    assert await counted(app, client, operator, reader, reader.key_id) == {
        **NONE, "forbidden": 5, "rate_limited": 3,
    }  # fmt: skip


async def test_gateway_routes_count_like_own_endpoints(
    app: Pipeline, client: httpx.AsyncClient, operator: Operator
) -> None:
    reader = await make_tenant(app, permissions=("read:contacts",), tier="high")
    writer = await make_tenant(app, permissions=("write:contacts",), tier="high", name="w")
    assert_error(await client.get("/v1/contacts/1", headers=reader.headers), 502, "bad_gateway")
    assert_error(await client.get("/v1/contacts/1", headers=writer.headers), 403,
                 "insufficient_permissions")  # fmt: skip
    assert await counted(app, client, operator, reader, reader.key_id) == {**NONE, "allowed": 1}
    assert await counted(app, client, operator, writer, writer.key_id) == {**NONE, "forbidden": 1}


async def test_refused_before_the_limits_is_not_metered(
    app: Pipeline, client: httpx.AsyncClient, operator: Operator
) -> None:
    disabled = await make_tenant(app, tier="high", name="disabled")
    suspended = await make_tenant(app, tier="high", name="suspended")
    patched = await client.patch(
        f"/v1/api-keys/{disabled.key_id}", json={"disabled": True},
        headers=operator.headers(disabled.account.id),
    )  # fmt: skip
    assert patched.status_code == 200, patched.text
    assert_error(await client.get("/v1/api-keys", headers=disabled.headers), 401, "invalid_key")
    suspend = await client.patch(
        f"/v1/accounts/{suspended.account.id}", json={"status": "suspended"},
        headers=operator.headers(),
    )  # fmt: skip
    assert suspend.status_code == 200, suspend.text
    assert_error(await client.get("/v1/api-keys", headers=suspended.headers), 403,
                 "account_suspended")  # fmt: skip
    # An account key sending Keystile-Account is refused right after authentication.
    other = await make_tenant(app, tier="high", name="other")
    wrong = await client.get(
        "/v1/api-keys", headers={**other.headers, "Keystile-Account": other.account.id}
    )
    assert_error(wrong, 400, "validation_error")
    for tenant in (disabled, suspended, other):
        assert await counted(app, client, operator, tenant, tenant.key_id) == NONE


async def test_operator_keys_are_not_metered(
    app: Pipeline, client: httpx.AsyncClient, operator: Operator
) -> None:
    tenant = await make_tenant(app, tier="high")
    for _ in range(3):
        listed = await client.get("/v1/api-keys", headers=operator.headers(tenant.account.id))
        assert listed.status_code == 200
    await app.services.usage_meter.flush()
    usage = await client.get("/v1/usage?group_by=key", headers=operator.headers(tenant.account.id))
    assert usage.json()["data"] == []  # no key of the account has any usage


async def test_an_addresss_block_is_not_metered(
    app: Pipeline, client: httpx.AsyncClient, operator: Operator
) -> None:
    tenant = await make_tenant(app, tier="high")
    async with client_from(app, "10.0.0.9") as guesser:
        for _ in range(3):  # KEYSTILE_AUTH_FAILURE_LIMIT: 3 per hour
            bad = await guesser.get("/v1/api-keys", headers={"Authorization": "Bearer wbk_nope"})
            assert_error(bad, 401, "invalid_key")
        blocked = await guesser.get("/v1/api-keys", headers=tenant.headers)  # a good key
        assert_error(blocked, 429, "rate_limited")
    assert await counted(app, client, operator, tenant, tenant.key_id) == NONE


class TestVerify:
    async def verify(
        self, client: httpx.AsyncClient, caller: Tenant, key: Tenant, **body: Any
    ) -> str:
        response = await client.post(
            "/v1/keys/verify", json={"key": key.secret, **body}, headers=caller.headers
        )
        assert response.status_code == 200, response.text
        code: str = response.json()["data"]["code"]
        return code

    async def test_consumed_verifications_are_metered_on_the_verified_key(
        self, app: Pipeline, client: httpx.AsyncClient, operator: Operator
    ) -> None:
        service = await make_tenant(app, permissions=("verify:keys",), tier="high", name="svc")
        customer = await make_tenant(
            app, permissions=("read:contacts",), name="customer", account=service.account
        )  # standard tier: 5 per hour
        codes = [await self.verify(client, service, customer) for _ in range(2)]
        codes.append(await self.verify(client, service, customer, permission="write:contacts"))
        codes += [await self.verify(client, service, customer, consume=False) for _ in range(3)]
        codes += [await self.verify(client, service, customer) for _ in range(4)]
        # Verify checks in the gateway's order: the rate limit (5 per hour),
        # then the permission, so the refused permission used a unit too.
        assert codes == ["VALID"] * 2 + ["INSUFFICIENT_PERMISSIONS"] + ["VALID"] * 3 + [
            "VALID", "VALID", "RATE_LIMITED", "RATE_LIMITED",
        ]  # fmt: skip
        assert await counted(app, client, operator, customer, customer.key_id) == {
            **NONE, "allowed": 4, "rate_limited": 2, "forbidden": 1,
        }  # fmt: skip
        # The calling service's own requests are metered on its key.
        assert await counted(app, client, operator, service, service.key_id) == {
            **NONE, "allowed": 10,
        }  # fmt: skip

    async def test_keys_that_fail_verification_are_not_metered(
        self, app: Pipeline, client: httpx.AsyncClient, operator: Operator
    ) -> None:
        service = await make_tenant(app, permissions=("verify:keys",), tier="high", name="svc")
        revoked = await make_tenant(app, name="revoked", account=service.account)
        disabled = await make_tenant(app, name="disabled", account=service.account)
        elsewhere = await make_tenant(app, name="elsewhere")  # another account
        on_behalf = operator.headers(service.account.id)
        await client.delete(f"/v1/api-keys/{revoked.key_id}", headers=on_behalf)
        await client.patch(
            f"/v1/api-keys/{disabled.key_id}", json={"disabled": True}, headers=on_behalf
        )
        assert await self.verify(client, service, revoked) == "REVOKED"
        assert await self.verify(client, service, disabled) == "DISABLED"
        assert await self.verify(client, service, elsewhere) == "INVALID"
        for key in (revoked, disabled):
            assert await counted(app, client, operator, service, key.key_id) == NONE
        assert await counted(app, client, operator, elsewhere, elsewhere.key_id) == NONE


async def test_two_apps_on_one_database_add_up_exactly(
    app: Pipeline, client: httpx.AsyncClient, operator: Operator, settings: Settings,
    clock: FakeClock,
) -> None:  # fmt: skip
    second = create_app(settings, clock=clock)
    async with second.lifespan(), client_from(second, "127.0.0.2") as other:
        tenant = await make_tenant(app, tier="high")

        async def burst(http: httpx.AsyncClient, n: int) -> None:
            for _ in range(n):
                assert (await http.get("/v1/api-keys", headers=tenant.headers)).status_code == 200

        await asyncio.gather(burst(client, 40), burst(other, 35), burst(client, 5))
        await second.services.usage_meter.flush()
        assert await counted(app, client, operator, tenant, tenant.key_id) == {
            **NONE, "allowed": 80,
        }  # fmt: skip


async def test_quota_refusals_are_metered_and_a_restart_seeds_the_quota_from_the_usage(
    app: Pipeline, client: httpx.AsyncClient, operator: Operator, settings: Settings,
    clock: FakeClock,
) -> None:  # fmt: skip
    """A quota counted in this process starts again, after a graceful restart,
    from what the usage records hold: allowed and forbidden used units."""
    admin = await make_tenant(app, tier="high")
    made = await client.post(
        "/v1/api-keys",
        json={"name": "metered", "permissions": ["read:contacts"],
              "quota": {"limit": 5, "period": "month"}, "rate_limit_tier": "high"},
        headers=admin.headers,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    LEDGER.remember(made.json()["data"]["key"])
    metered = Tenant(admin.account, made.json()["data"]["key"], made.json()["data"]["id"])
    for _ in range(2):
        assert_error(await client.get("/v1/contacts/1", headers=metered.headers), 502,
                     "bad_gateway")  # allowed  # fmt: skip
    assert_error(await client.get("/v1/api-keys", headers=metered.headers), 403,
                 "insufficient_permissions")  # forbidden: it used a unit too  # fmt: skip
    await app.services.usage_meter.stop()  # what the shutdown does first
    restarted = create_app(settings, clock=clock)
    async with restarted.lifespan(), client_from(restarted, "127.0.0.3") as again:
        first = await again.get("/v1/contacts/1", headers=metered.headers)
        assert first.headers["x-quota-remaining"] == "1"  # 5 - 3 before - this one
        await again.get("/v1/contacts/1", headers=metered.headers)
        refused = await again.get("/v1/contacts/1", headers=metered.headers)
        assert_error(refused, 429, "quota_exceeded")
        await restarted.services.usage_meter.flush()
        assert await counted(restarted, again, operator, metered, metered.key_id) == {
            **NONE, "allowed": 4, "forbidden": 1, "quota_exceeded": 1,
        }  # fmt: skip
