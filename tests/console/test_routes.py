"""The console's routes over httpx (contract §16): sign-in, the session
cookie, CSRF, the security headers, and each action reaching the API's
services (same rules, audit events, idempotency)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from keystile.api.pipeline import Pipeline
from tests.support import LEDGER, Tenant, make_operator, make_tenant

pytestmark = pytest.mark.anyio

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
IDEMPOTENCY = re.compile(r'name="idempotency_token" value="([^"]+)"')
SECRET = re.compile(r'id="secret" type="text" readonly value="([^"]+)"')


@pytest.fixture
def database_url(data_dir: object) -> str:  # SQLite only: the pages, not the storage
    from pathlib import Path

    assert isinstance(data_dir, Path)
    return f"sqlite:///{data_dir / 'keystile.db'}"


@pytest.fixture
async def browser(app: Pipeline) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://keystile.test") as http:
        yield http


def token(page: httpx.Response, pattern: re.Pattern[str] = CSRF) -> str:
    found = pattern.search(page.text)
    assert found, page.text
    return found.group(1)


async def sign_in(browser: httpx.AsyncClient, secret: str) -> httpx.Response:
    form = await browser.get("/console/sign-in")
    return await browser.post("/console/sign-in", data={"key": secret, "csrf_token": token(form)})


async def test_pages_carry_the_security_headers(browser: httpx.AsyncClient) -> None:
    page = await browser.get("/console/sign-in")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text and " style=" not in page.text


async def test_signed_out_pages_redirect_to_sign_in(browser: httpx.AsyncClient) -> None:
    for path in ("/console/keys", "/console/audit", "/console/webhooks", "/console/keys/new"):
        page = await browser.get(path)
        assert page.status_code == 303
        assert page.headers["location"] == "/console/sign-in"


async def test_sign_in_sets_a_strict_http_only_cookie(
    browser: httpx.AsyncClient, tenant: Tenant
) -> None:
    signed = await sign_in(browser, tenant.secret)
    assert signed.status_code == 303, signed.text
    assert signed.headers["location"] == "/console/keys"
    cookie = next(
        c for c in signed.headers.get_list("set-cookie") if c.startswith("keystile_console=")
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here; https sets it
    assert tenant.secret not in cookie
    keys = await browser.get("/console/keys")
    assert keys.status_code == 200
    assert "admin" in keys.text and tenant.account.id in keys.text
    assert tenant.secret not in keys.text


async def test_cookie_is_secure_behind_https(app: Pipeline, tenant: Tenant) -> None:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="https://keystile.test") as http:
        signed = await sign_in(http, tenant.secret)
    assert "Secure" in signed.headers["set-cookie"]


async def test_sign_in_refuses_a_bad_key_and_a_missing_token(
    browser: httpx.AsyncClient, tenant: Tenant
) -> None:
    refused = await sign_in(browser, tenant.secret[:-2] + "xx")
    assert refused.status_code == 401
    assert "That key is not valid." in refused.text
    no_token = await browser.post("/console/sign-in", data={"key": tenant.secret})
    assert no_token.status_code == 403
    assert "keystile_console=" not in no_token.headers.get("set-cookie", "")


async def test_sign_in_is_limited_per_address(app: Pipeline, browser: httpx.AsyncClient) -> None:
    limit = app.services.settings.limit("auth_failure_limit").amount
    statuses = []
    for _ in range(limit + 1):
        statuses.append((await sign_in(browser, "wbk_live_nope")).status_code)
    assert statuses[-1] == 429


async def test_sign_in_needs_admin(app: Pipeline, browser: httpx.AsyncClient) -> None:
    reader = await make_tenant(app, permissions=("read:contacts",))
    refused = await sign_in(browser, reader.secret)
    assert refused.status_code == 403
    assert "admin:api_keys" in refused.text


async def test_post_without_the_csrf_token_is_refused(
    browser: httpx.AsyncClient, tenant: Tenant
) -> None:
    await sign_in(browser, tenant.secret)
    form = await browser.get("/console/keys/new")
    refused = await browser.post(
        "/console/keys/new", data={"name": "x", "permissions": "read:contacts"}
    )
    assert refused.status_code == 403
    forged = await browser.post(
        "/console/keys/new",
        data={"name": "x", "permissions": "read:contacts", "csrf_token": "forged"},
    )
    assert forged.status_code == 403
    cross = await browser.post(
        "/console/keys/new",
        data={"name": "x", "permissions": "read:contacts", "csrf_token": token(form)},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403
    listed = await browser.get("/console/keys")
    assert ">x</a>" not in listed.text


async def test_create_shows_the_secret_once(
    app: Pipeline, browser: httpx.AsyncClient, tenant: Tenant
) -> None:
    await sign_in(browser, tenant.secret)
    form = await browser.get("/console/keys/new")
    data = {
        "csrf_token": token(form),
        "idempotency_token": token(form, IDEMPOTENCY),
        "name": "deploy bot",
        "permissions": ["read:contacts", "write:contacts"],
        "rate_limit_tier": "standard",
        "metadata": "team=infra",
    }
    created = await browser.post("/console/keys/new", data=data)
    assert created.status_code == 303
    secret_page = await browser.get(created.headers["location"])
    assert secret_page.status_code == 200
    assert secret_page.headers["cache-control"] == "no-store"
    secret = token(secret_page, SECRET)
    LEDGER.remember(secret)
    assert "shown only this once" in secret_page.text
    again = await browser.get(created.headers["location"])
    assert again.status_code == 303 and secret not in again.text
    # The same form sent twice: the API's idempotency replays, nothing new.
    double = await browser.post("/console/keys/new", data=data)
    assert double.headers["location"] == created.headers["location"]
    replayed = await browser.get(double.headers["location"])
    assert secret not in replayed.text
    page = await app.services.keys.list(tenant.account.id, limit=100, status=None)
    assert [k.name for k in page.keys].count("deploy bot") == 1
    # The new key works, and the audit log names the browser's request.
    verify = await browser.post(
        "/v1/keys/verify",
        json={"key": secret},
        headers={"Authorization": f"Bearer {tenant.secret}"},
    )
    assert verify.json()["data"]["valid"] is True, verify.text
    audit = await browser.get("/console/audit?action=api_key.created")
    assert "api_key.created" in audit.text


async def test_create_shows_the_api_message_next_to_the_field(
    browser: httpx.AsyncClient, tenant: Tenant
) -> None:
    await sign_in(browser, tenant.secret)
    form = await browser.get("/console/keys/new")
    refused = await browser.post(
        "/console/keys/new",
        data={
            "csrf_token": token(form),
            "idempotency_token": "a",
            "name": "admin",
            "permissions": ["read:contacts"],
        },
    )
    assert refused.status_code == 409
    assert 'id="name-error"' in refused.text
    bad = await browser.post(
        "/console/keys/new",
        data={
            "csrf_token": token(form),
            "idempotency_token": "b",
            "name": "n",
            "permissions": ["read:contacts"],
            "expires_at": "tomorrow",
        },
    )
    assert bad.status_code == 400
    assert 'id="expires_at-error"' in bad.text


async def test_edit_disable_rotate_revoke(
    app: Pipeline, browser: httpx.AsyncClient, tenant: Tenant
) -> None:
    await sign_in(browser, tenant.secret)
    target = await make_tenant(app, account=tenant.account, name="worker")
    page = await browser.get(f"/console/keys/{target.key_id}")
    assert page.status_code == 200 and "<svg" in page.text
    csrf = token(page)
    edit = await browser.get(f"/console/keys/{target.key_id}/edit")
    saved = await browser.post(
        f"/console/keys/{target.key_id}/edit",
        data={
            "csrf_token": csrf,
            "idempotency_token": token(edit, IDEMPOTENCY),
            "name": "worker-2",
            "permissions": list(target_permissions(app)),
            "rate_limit_tier": "standard",
            "description": "renamed",
        },
    )
    assert saved.status_code == 303, saved.text
    key = await app.services.keys.get(tenant.account.id, target.key_id)
    assert key.name == "worker-2" and key.description == "renamed"
    disabled = await browser.post(
        f"/console/keys/{target.key_id}/disable", data={"csrf_token": csrf}
    )
    assert disabled.status_code == 303
    assert (await app.services.keys.get(tenant.account.id, target.key_id)).disabled
    await browser.post(f"/console/keys/{target.key_id}/enable", data={"csrf_token": csrf})
    assert not (await app.services.keys.get(tenant.account.id, target.key_id)).disabled
    rotated = await browser.post(
        f"/console/keys/{target.key_id}/rotate",
        data={"csrf_token": csrf, "idempotency_token": "r1", "grace_period_seconds": "3600"},
    )
    assert rotated.status_code == 303
    shown = await browser.get(rotated.headers["location"])
    LEDGER.remember(token(shown, SECRET))
    old = await app.services.keys.get(tenant.account.id, target.key_id)
    assert old.replaced_by is not None
    wrong = await browser.post(
        f"/console/keys/{old.replaced_by}/revoke", data={"csrf_token": csrf, "confirm": "nope"}
    )
    assert wrong.status_code == 400
    revoked = await browser.post(
        f"/console/keys/{old.replaced_by}/revoke", data={"csrf_token": csrf, "confirm": "worker-2"}
    )
    assert revoked.status_code == 303
    assert (await app.services.keys.get(tenant.account.id, old.replaced_by)).revoked_at
    events = await browser.get(f"/console/audit?target_id={target.key_id}")
    assert "api_key.rotated" in events.text and "api_key.updated" in events.text


def target_permissions(app: Pipeline) -> tuple[str, ...]:
    return app.services.settings.scope_list


async def test_sign_out_ends_the_session(browser: httpx.AsyncClient, tenant: Tenant) -> None:
    await sign_in(browser, tenant.secret)
    page = await browser.get("/console/keys")
    out = await browser.post("/console/sign-out", data={"csrf_token": token(page)})
    assert out.status_code == 303
    assert (await browser.get("/console/keys")).status_code == 303


async def test_revoking_the_signed_in_key_ends_the_session(
    app: Pipeline, browser: httpx.AsyncClient, tenant: Tenant
) -> None:
    await sign_in(browser, tenant.secret)
    async with app.services.storage.transaction() as uow:
        await app.services.keys.revoke(uow, tenant.account.id, tenant.key_id)
    page = await browser.get("/console/keys")
    assert page.status_code == 303
    assert page.headers["location"] == "/console/sign-in?ended=1"


async def test_sessions_expire_when_idle(
    browser: httpx.AsyncClient, tenant: Tenant, clock: object
) -> None:
    await sign_in(browser, tenant.secret)
    clock.advance(31 * 60)  # type: ignore[attr-defined]
    assert (await browser.get("/console/keys")).status_code == 303


async def test_the_session_row_holds_no_secret(
    app: Pipeline, tenant: Tenant, browser: httpx.AsyncClient
) -> None:
    signed = await sign_in(browser, tenant.secret)
    cookie = signed.cookies["keystile_console"]
    import sqlite3

    url = app.services.settings.database.removeprefix("sqlite:///")
    with sqlite3.connect(url) as db:
        rows = db.execute("SELECT * FROM console_sessions").fetchall()
    blob = repr(rows).encode()
    assert tenant.secret.encode() not in blob and cookie.encode() not in blob


async def test_static_assets_are_served_from_the_package(browser: httpx.AsyncClient) -> None:
    script = await browser.get("/console/static/console.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    style = await browser.get("/console/static/console.css")
    assert style.headers["content-type"].startswith("text/css")
    assert (await browser.get("/console/static/../app.py")).status_code == 404
    assert (await browser.get("/console/static/nothing.js")).status_code == 404


async def test_an_operator_picks_the_account(
    app: Pipeline, browser: httpx.AsyncClient, tenant: Tenant
) -> None:
    operator = await make_operator(app)
    signed = await sign_in(browser, operator.secret)
    assert signed.headers["location"] == "/console/accounts"
    assert (await browser.get("/console/keys")).headers["location"] == "/console/accounts"
    picker = await browser.get("/console/accounts")
    assert tenant.account.id in picker.text
    chosen = await browser.post(
        "/console/accounts", data={"csrf_token": token(picker), "account_id": tenant.account.id}
    )
    assert chosen.headers["location"] == "/console/keys"
    keys = await browser.get("/console/keys")
    assert keys.status_code == 200 and ">admin</a>" in keys.text
