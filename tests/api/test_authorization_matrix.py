"""Every endpoint × every combination of scopes × own and other account
(issue #8): the exact status each caller gets.

The expectation is derived from the contract's rules, stated once here:
the endpoint's scope (403 insufficient_permissions), the subset rule for
creates (403), and tenant isolation (another account's key is a 404; for
verify, INVALID inside a 200).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keystile.api.app import create_app
from keystile.api.pipeline import Pipeline
from keystile.audit.models import CLI_ORIGIN
from tests.conftest import settings_for
from tests.support import LEDGER, FakeClock, Tenant, free_port, make_tenant

pytestmark = pytest.mark.anyio

SCOPES = ("admin:api_keys", "verify:keys", "read:contacts", "write:contacts")
COMBINATIONS = [c for n in range(1, len(SCOPES) + 1) for c in itertools.combinations(SCOPES, n)]
CREATE_BODY = {"name": "child", "permissions": ["read:contacts"]}


@pytest.fixture
def settings(database_url: str, data_dir: Path, tmp_path: Path) -> Any:
    routes = tmp_path / "routes.toml"
    nowhere = f"http://127.0.0.1:{free_port()}"  # authorized requests reach it: 502
    routes.write_text(
        f'[[routes]]\nprefix = "/v1/contacts"\nmethods = ["GET"]\nscope = "read:contacts"\nupstream = "{nowhere}"\n'
    )
    return settings_for(
        database_url,
        data_dir,
        routes=routes,
        tier_standard="100000/10 seconds",
        webhook_allow_http=True,
        webhook_allow_private=True,
    )


@pytest.fixture
async def app(settings: Any, clock: FakeClock) -> Iterator[Pipeline]:  # type: ignore[misc]
    application = create_app(settings, clock=clock)
    async with application.lifespan():
        yield application


ACCOUNT_ENDPOINTS = ("accounts.create", "accounts.list", "accounts.get", "accounts.update")
WEBHOOK_ENDPOINTS = (
    "webhooks.create", "webhooks.list", "webhooks.get", "webhooks.update", "webhooks.delete",
    "webhooks.deliveries",
)  # fmt: skip
ENDPOINTS = (
    "create", "list", "get", "update", "rotate", "revoke", "verify", "gateway", "forward_auth",
    "audit",
    "key_usage", "usage", *ACCOUNT_ENDPOINTS, *WEBHOOK_ENDPOINTS,
)  # fmt: skip
# Webhook endpoints need admin:webhooks alone (admin:api_keys is not enough).
WEBHOOK_SCOPES = ("admin:webhooks", "admin:api_keys", "read:contacts")
WEBHOOK_COMBINATIONS = [
    c for n in range(1, len(WEBHOOK_SCOPES) + 1) for c in itertools.combinations(WEBHOOK_SCOPES, n)
]
NOWHERE = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: deliveries fail at once


def expected(endpoint: str, scopes: tuple[str, ...], target: str) -> tuple[int, str | None]:
    """The contract's answer for an account key holding ``scopes``."""
    if endpoint in ACCOUNT_ENDPOINTS:
        return 403, "insufficient_permissions"  # operator keys only (contract §9)
    if endpoint in WEBHOOK_ENDPOINTS:
        if "admin:webhooks" not in scopes:
            return 403, "insufficient_permissions"
        if endpoint == "webhooks.create":
            return 201, None
        if endpoint in ("webhooks.get", "webhooks.update", "webhooks.delete",
                        "webhooks.deliveries") and target != "own":  # fmt: skip
            return 404, "not_found"
        return 200, None
    required = {
        "create": "admin:api_keys",
        "list": "admin:api_keys",
        "get": "admin:api_keys",
        "update": "admin:api_keys",
        "rotate": "admin:api_keys",
        "revoke": "admin:api_keys",
        "audit": "admin:api_keys",
        "key_usage": "admin:api_keys",
        "usage": "admin:api_keys",
        "verify": "verify:keys",
        "gateway": "read:contacts",
        "forward_auth": "read:contacts",  # the route's scope, as the gateway (contract §15)
    }[endpoint]
    if required not in scopes:
        return 403, "insufficient_permissions"
    if endpoint == "create":
        return (201, None) if "read:contacts" in scopes else (403, "insufficient_permissions")
    if endpoint in ("get", "revoke", "update", "rotate", "key_usage") and target != "own":
        return 404, "not_found"
    if endpoint == "rotate":  # the copy needs the permissions being copied
        return (201, None) if "read:contacts" in scopes else (403, "insufficient_permissions")
    if endpoint == "gateway":
        return 502, "bad_gateway"
    if endpoint == "forward_auth":
        return 200, None
    return 200, None


async def call(
    client: httpx.AsyncClient, endpoint: str, caller: Tenant, target: Tenant, hook: str = ""
) -> httpx.Response:
    headers = caller.headers
    if endpoint == "webhooks.create":
        body = {"url": NOWHERE, "events": ["api_key.revoked"]}
        return await client.post("/v1/webhook-endpoints", json=body, headers=headers)
    if endpoint == "webhooks.list":
        return await client.get("/v1/webhook-endpoints", headers=headers)
    if endpoint == "webhooks.get":
        return await client.get(f"/v1/webhook-endpoints/{hook}", headers=headers)
    if endpoint == "webhooks.update":
        return await client.patch(
            f"/v1/webhook-endpoints/{hook}", json={"description": "x"}, headers=headers
        )
    if endpoint == "webhooks.delete":
        return await client.delete(f"/v1/webhook-endpoints/{hook}", headers=headers)
    if endpoint == "webhooks.deliveries":
        return await client.get(f"/v1/webhook-endpoints/{hook}/deliveries", headers=headers)
    if endpoint == "create":
        return await client.post("/v1/api-keys", json=CREATE_BODY, headers=headers)
    if endpoint == "list":
        return await client.get("/v1/api-keys", headers=headers)
    if endpoint == "get":
        return await client.get(f"/v1/api-keys/{target.key_id}", headers=headers)
    if endpoint == "revoke":
        return await client.delete(f"/v1/api-keys/{target.key_id}", headers=headers)
    if endpoint == "update":
        return await client.patch(
            f"/v1/api-keys/{target.key_id}", json={"description": "x"}, headers=headers
        )
    if endpoint == "rotate":
        return await client.post(f"/v1/api-keys/{target.key_id}/rotate", headers=headers)
    if endpoint == "verify":
        return await client.post(
            "/v1/keys/verify", json={"key": target.secret, "consume": False}, headers=headers
        )
    if endpoint == "audit":
        return await client.get("/v1/audit-events?limit=100", headers=headers)
    if endpoint == "key_usage":
        return await client.get(f"/v1/api-keys/{target.key_id}/usage", headers=headers)
    if endpoint == "usage":
        return await client.get("/v1/usage?group_by=key", headers=headers)
    if endpoint == "accounts.create":
        return await client.post("/v1/accounts", json={"name": "x"}, headers=headers)
    if endpoint == "accounts.list":
        return await client.get("/v1/accounts", headers=headers)
    if endpoint == "accounts.get":
        return await client.get(f"/v1/accounts/{target.account.id}", headers=headers)
    if endpoint == "accounts.update":
        return await client.patch(
            f"/v1/accounts/{target.account.id}", json={"name": "x"}, headers=headers
        )
    if endpoint == "forward_auth":
        forwarded = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/v1/contacts/1"}
        return await client.get("/v1/auth", headers={**headers, **forwarded})
    return await client.get("/v1/contacts/1", headers=headers)


async def webhook_endpoint(app: Pipeline, owner: Tenant) -> str:
    """A webhook endpoint of ``owner``'s account: its id."""
    async with app.services.storage.transaction() as uow:
        made = await app.services.webhooks.create(
            uow,
            owner.account.id,
            url=NOWHERE,
            events=("api_key.revoked",),
            description=None,
            origin=CLI_ORIGIN,
        )
    LEDGER.remember(made.secret)
    return made.endpoint.id


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_authorization_matrix(
    app: Pipeline, client: httpx.AsyncClient, endpoint: str
) -> None:
    failures: list[tuple[object, ...]] = []
    webhooks = endpoint in WEBHOOK_ENDPOINTS
    for scopes in WEBHOOK_COMBINATIONS if webhooks else COMBINATIONS:
        for target_kind in ("own", "other"):
            caller = await make_tenant(app, permissions=scopes, name="caller")
            # The target key: in the caller's account, or in another one.
            target = await make_tenant(
                app,
                permissions=("read:contacts",),
                name="target",
                account=caller.account if target_kind == "own" else None,
            )
            hook = await webhook_endpoint(app, target) if webhooks else ""
            response = await call(client, endpoint, caller, target, hook)
            status, code = expected(endpoint, scopes, target_kind)
            body = response.json() if response.content else {}
            got_code = body.get("error", {}).get("code") if isinstance(body, dict) else None
            if response.status_code != status or got_code != code:
                failures.append((scopes, target_kind, response.status_code, got_code, status, code))
            if endpoint == "verify" and status == 200:
                valid = body["data"]["valid"]
                if valid != (target_kind == "own"):
                    failures.append((scopes, target_kind, "valid", valid))
                if target_kind == "other" and body["data"]["key_id"] is not None:
                    failures.append((scopes, target_kind, "leaked key_id"))
            if endpoint == "list" and status == 200:
                ids = {k["id"] for k in body["data"]}
                if (target.key_id in ids) != (target_kind == "own"):
                    failures.append((scopes, target_kind, "list isolation"))
            if endpoint == "webhooks.list" and status == 200:
                ids = {e["id"] for e in body["data"]}
                if (hook in ids) != (target_kind == "own"):
                    failures.append((scopes, target_kind, "webhook list isolation"))
            if endpoint == "audit" and status == 200:
                accounts = {event["account_id"] for event in body["data"]}
                if accounts - {caller.account.id}:
                    failures.append((scopes, target_kind, "audit isolation", accounts))
            if response.status_code == 201:
                LEDGER.remember(body["data"]["secret" if webhooks else "key"])
    assert failures == [], failures


async def test_the_matrix_covers_every_protected_operation(client: httpx.AsyncClient) -> None:
    """A new endpoint must join the matrix: compare with the OpenAPI document."""
    document = (await client.get("/openapi.json")).json()
    protected = {
        (path, method)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if operation.get("security")
    }
    covered = {
        ("/v1/api-keys", "post"), ("/v1/api-keys", "get"), ("/v1/api-keys/{key_id}", "get"),
        ("/v1/api-keys/{key_id}", "delete"), ("/v1/api-keys/{key_id}", "patch"),
        ("/v1/api-keys/{key_id}/rotate", "post"), ("/v1/keys/verify", "post"),
        ("/v1/audit-events", "get"), ("/v1/accounts", "post"), ("/v1/accounts", "get"),
        ("/v1/accounts/{account_id}", "get"), ("/v1/accounts/{account_id}", "patch"),
        ("/v1/api-keys/{key_id}/usage", "get"), ("/v1/usage", "get"),
        ("/v1/webhook-endpoints", "post"), ("/v1/webhook-endpoints", "get"),
        ("/v1/webhook-endpoints/{endpoint_id}", "get"),
        ("/v1/webhook-endpoints/{endpoint_id}", "patch"),
        ("/v1/webhook-endpoints/{endpoint_id}", "delete"),
        ("/v1/webhook-endpoints/{endpoint_id}/deliveries", "get"),
    }  # fmt: skip
    assert protected == covered
    # Operations without a bearer key: each is deliberate (the leak-report
    # endpoint is authenticated by its partner's signature, tested below;
    # forward auth answers for the key a proxy forwards: its "forward_auth"
    # row of the matrix).
    public = {
        (path, method)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if not operation.get("security")
    }
    assert public == {
        ("/healthz", "get"), ("/readyz", "get"), ("/metrics", "get"),
        ("/v1/secret-scanning/reports", "post"),
        *(("/v1/auth", m) for m in ("get", "head", "post", "put", "patch", "delete", "options")),
    }  # fmt: skip


@pytest.mark.parametrize("scopes", [(), *COMBINATIONS])
async def test_a_leak_report_takes_no_key_and_any_key_is_no_signature(
    app: Pipeline, client: httpx.AsyncClient, scopes: tuple[str, ...]
) -> None:
    """Whatever key comes with it, an unsigned report is 401 invalid_signature."""
    headers = {"Content-Type": "application/json"}
    if scopes:
        caller = await make_tenant(app, permissions=scopes, name="caller")
        headers.update(caller.headers)
    response = await client.post("/v1/secret-scanning/reports", content=b"[]", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
