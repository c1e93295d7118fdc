"""Forward authentication, ``/v1/auth`` (contract §15, issue #16 item 1), in
process on both databases. The proxies themselves (nginx, Caddy) are run
end to end in tests/e2e/test_forward_auth_proxies.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st

from keystile import errors
from keystile.api.app import create_app
from keystile.api.pipeline import Endpoint, Pipeline, Router
from keystile.gateway.client import UpstreamClient
from keystile.gateway.proxy import Proxy
from keystile.gateway.routes import parse_routes
from keystile.settings import Settings
from tests.conftest import settings_for
from tests.support import (
    LEDGER,
    FakeClock,
    Tenant,
    assert_error,
    free_port,
    make_operator,
    make_tenant,
)
from tests.unit.test_paths import DOT_SEGMENTS, SEPARATORS

pytestmark = pytest.mark.anyio

NOWHERE = f"http://127.0.0.1:{free_port()}"  # a proxied request would be a 502
ROUTES = f"""
[[routes]]
prefix = "/v1/contacts"
methods = ["GET", "POST"]
scope = "read:contacts"
upstream = "{NOWHERE}"

[[routes]]
prefix = "/v1/deals"
methods = ["GET"]
scope = "read:deals"
# no upstream: for forward authentication only
"""
IDENTITY = ("x-keystile-key-id", "x-keystile-account-id", "x-keystile-scopes")


@pytest.fixture
async def app(
    database_url: str, data_dir: Path, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Pipeline]:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    settings = settings_for(database_url, data_dir, routes=routes)
    application = create_app(settings, clock=clock)
    async with application.lifespan():
        yield application


@pytest.fixture
async def reader(app: Pipeline) -> Tenant:
    return await make_tenant(app, permissions=("read:contacts",), name="reader")


def ask(
    client: httpx.AsyncClient,
    key: str | None,
    uri: str = "/v1/contacts/42",
    method: str = "GET",
    *,
    via: str = "GET",
    original: bool = False,
    query: str = "",
    **extra: str,
) -> Any:
    """``/v1/auth`` as a proxy asks it (``original``: nginx's X-Original-*)."""
    names = ("X-Original-Method", "X-Original-URI") if original else (
        "X-Forwarded-Method", "X-Forwarded-Uri",
    )  # fmt: skip
    headers = [(names[0].encode(), method.encode()), (names[1].encode(), uri.encode())]
    headers += [(name.encode(), value.encode()) for name, value in extra.items()]
    if key is not None:
        headers.append((b"Authorization", f"Bearer {key}".encode()))
    return client.request(via, f"/v1/auth{query}", headers=headers)


async def key_with(app: Pipeline, client: httpx.AsyncClient, **body: Any) -> str:
    """A new ``read:contacts`` key with ``body``'s limits (made over the API)."""
    admin = await make_tenant(app, name=f"admin-{uuid.uuid4().hex[:6]}")
    made = await client.post(
        "/v1/api-keys",
        json={"name": "limited", "permissions": ["read:contacts"], **body},
        headers=admin.headers,
    )
    assert made.status_code == 201, made.text
    secret: str = made.json()["data"]["key"]
    LEDGER.remember(secret)
    return secret


def assert_denied(response: httpx.Response, status: int, code: str) -> None:
    assert_error(response, status, code)
    assert response.headers["x-keystile-error"] == code
    assert not any(name in response.headers for name in IDENTITY)


class TestAllowed:
    @pytest.mark.parametrize("via", ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"])
    @pytest.mark.parametrize("original", [False, True])
    async def test_any_method_and_either_header_spelling(
        self, client: httpx.AsyncClient, reader: Tenant, via: str, original: bool
    ) -> None:
        response = await ask(client, reader.secret, via=via, original=original)
        assert response.status_code == 200, response.text
        assert response.content == b""
        assert response.headers["x-keystile-key-id"] == reader.key_id
        assert response.headers["x-keystile-account-id"] == reader.account.id
        assert response.headers["x-keystile-scopes"] == "read:contacts"
        assert int(response.headers["x-ratelimit-remaining"]) >= 0

    async def test_envoys_path_prefix_form_is_read_from_the_headers_too(
        self, client: httpx.AsyncClient, reader: Tenant
    ) -> None:
        headers = {**reader.headers, "X-Forwarded-Method": "GET"}
        allowed = await client.get(
            "/v1/auth/v1/contacts/42", headers={**headers, "X-Forwarded-Uri": "/v1/contacts/42"}
        )
        assert allowed.status_code == 200, allowed.text
        refused = await client.get(
            "/v1/auth/v1/contacts/42", headers={**headers, "X-Forwarded-Uri": "/v1/deals"}
        )
        assert_denied(refused, 403, "insufficient_permissions")

    async def test_a_route_without_upstream_is_for_forward_auth_only(
        self, client: httpx.AsyncClient, app: Pipeline
    ) -> None:
        dealer = await make_tenant(app, permissions=("read:deals",), name="dealer")
        assert (await ask(client, dealer.secret, "/v1/deals?page=2")).status_code == 200
        direct = await client.get("/v1/deals", headers=dealer.headers)
        assert_error(direct, 404, "not_found")  # the gateway does not serve it

    async def test_an_absolute_uri_is_read_for_its_path(
        self, client: httpx.AsyncClient, reader: Tenant
    ) -> None:
        allowed = await ask(client, reader.secret, "https://api.example.com/v1/contacts?x=1")
        assert allowed.status_code == 200
        refused = await ask(client, reader.secret, "https://api.example.com/v1/deals")
        assert_denied(refused, 403, "insufficient_permissions")

    async def test_spellings_of_the_route_reach_its_scope_only(
        self, client: httpx.AsyncClient, reader: Tenant
    ) -> None:
        for uri in ("/V1/CONTACTS", "/v1/%63ontacts/7", "/v1/contacts/"):
            assert (await ask(client, reader.secret, uri)).status_code == 200, uri
        for uri in ("/v1/DEALS", "/v1/%64eals"):
            assert_denied(await ask(client, reader.secret, uri), 403, "insufficient_permissions")

    async def test_allowed_requests_are_metered(
        self, app: Pipeline, client: httpx.AsyncClient, reader: Tenant
    ) -> None:
        for _ in range(2):
            assert (await ask(client, reader.secret)).status_code == 200
        await app.services.usage_meter.flush()
        async with app.services.storage.reader() as uow:
            used = await uow.usage.used(reader.key_id, 0, 2**40)
        assert used == 2


class TestDenied:
    async def test_no_key_or_a_bad_one_is_401(
        self, client: httpx.AsyncClient, reader: Tenant
    ) -> None:
        for key in (None, reader.secret[:-1] + ("A" if reader.secret[-1] != "A" else "B")):
            response = await ask(client, key)
            assert_denied(response, 401, "invalid_key")
            assert response.headers["www-authenticate"].startswith("Bearer")

    async def test_a_missing_scope_is_403(self, client: httpx.AsyncClient, reader: Tenant) -> None:
        assert_denied(
            await ask(client, reader.secret, "/v1/deals"), 403, "insufficient_permissions"
        )

    async def test_an_operator_key_is_403(self, app: Pipeline, client: httpx.AsyncClient) -> None:
        operator = await make_operator(app)
        assert_denied(await ask(client, operator.secret), 403, "insufficient_permissions")

    async def test_a_suspended_account_is_403(
        self, app: Pipeline, client: httpx.AsyncClient, reader: Tenant
    ) -> None:
        operator = await make_operator(app)
        suspended = await client.patch(
            f"/v1/accounts/{reader.account.id}", json={"status": "suspended"},
            headers=operator.headers(),
        )  # fmt: skip
        assert suspended.status_code == 200, suspended.text
        response = await ask(client, reader.secret)
        assert_denied(response, 403, "account_suspended")
        assert "x-ratelimit-limit" not in response.headers

    async def test_rate_limited_is_429_or_for_nginx_403(
        self, app: Pipeline, client: httpx.AsyncClient
    ) -> None:
        secret = await key_with(app, client, rate_limit={"limit": 3, "window_seconds": 60})
        statuses = [(await ask(client, secret)).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        limited = await ask(client, secret)
        assert_denied(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        for_nginx = await ask(client, secret, query="?proxy=nginx")
        assert_denied(for_nginx, 403, "rate_limited")
        assert for_nginx.headers["retry-after"] == limited.headers["retry-after"]
        assert for_nginx.headers["x-ratelimit-remaining"] == "0"

    async def test_quota_exceeded_is_429(self, app: Pipeline, client: httpx.AsyncClient) -> None:
        secret = await key_with(app, client, quota={"limit": 1, "period": "day"})
        assert (await ask(client, secret)).status_code == 200
        exceeded = await ask(client, secret)
        assert_denied(exceeded, 429, "quota_exceeded")
        assert "retry-after" in exceeded.headers
        assert_denied(await ask(client, secret, query="?proxy=nginx"), 403, "quota_exceeded")

    async def test_no_route_is_404_and_a_wrong_method_405(
        self, client: httpx.AsyncClient, reader: Tenant
    ) -> None:
        assert_denied(await ask(client, reader.secret, "/v1/other"), 404, "not_found")
        wrong = await ask(client, reader.secret, method="DELETE")
        assert_denied(wrong, 405, "method_not_allowed")
        assert_denied(
            await ask(client, reader.secret, "/v1/other", query="?proxy=nginx"), 403, "not_found"
        )


class TestForwardedHeaders:
    @pytest.mark.parametrize(
        ("headers", "field"),
        [
            ({"X-Forwarded-Uri": "/v1/contacts"}, "X-Forwarded-Method"),
            ({"X-Forwarded-Method": "GET"}, "X-Forwarded-Uri"),
            ({"X-Forwarded-Method": "G ET", "X-Forwarded-Uri": "/v1/contacts"}, "X-Forwarded-Method"),
            ({"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "v1/contacts"}, "X-Forwarded-Uri"),
            # A client-added X-Forwarded-Uri beside the proxy's X-Original-URI:
            ({"X-Original-Method": "GET", "X-Original-URI": "/v1/deals",
              "X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/v1/contacts"}, "X-Forwarded-Uri"),
        ],
    )  # fmt: skip
    async def test_missing_conflicting_or_malformed_is_400(
        self, client: httpx.AsyncClient, reader: Tenant, headers: dict[str, str], field: str
    ) -> None:
        response = await client.get("/v1/auth", headers={**reader.headers, **headers})
        assert_denied(response, 400, "validation_error")
        assert response.json()["error"]["details"][0]["field"] == field

    @pytest.mark.parametrize(
        "name", ["X-Keystile-Key-Id", "x-keystile-scopes", "X_Keystile_Account_Id", "X-Keystile-X"]
    )
    async def test_a_client_sent_keystile_header_is_400(
        self, client: httpx.AsyncClient, reader: Tenant, name: str
    ) -> None:
        """The proxy did not remove it: the upstream could trust it (nginx)."""
        forwarded = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/v1/contacts"}
        response = await client.get(
            "/v1/auth", headers={**reader.headers, **forwarded, name: "forged"}
        )
        assert_denied(response, 400, "validation_error")
        assert response.json()["error"]["details"][0]["field"].lower() == name.lower()

    @pytest.mark.parametrize("method", ["TRACE", "CONNECT", "QUERY", "PROPFIND"])
    async def test_methods_no_route_can_have_are_405(
        self, client: httpx.AsyncClient, reader: Tenant, method: str
    ) -> None:
        for query in ("", "?proxy=nginx"):  # the endpoint's own 405, in either mode
            response = await ask(client, reader.secret, via=method, query=query)
            assert_denied(response, 405, "method_not_allowed")
        assert "TRACE" not in response.headers["allow"] and "GET" in response.headers["allow"]

    async def test_a_repeated_header_is_400(
        self, client: httpx.AsyncClient, reader: Tenant
    ) -> None:
        headers = [
            ("Authorization", f"Bearer {reader.secret}"), ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Uri", "/v1/contacts"), ("X-Forwarded-Uri", "/v1/deals"),
        ]  # fmt: skip
        response = await client.get("/v1/auth", headers=headers)
        assert_denied(response, 400, "validation_error")

    async def test_an_unknown_proxy_mode_is_400(
        self, client: httpx.AsyncClient, reader: Tenant
    ) -> None:
        response = await ask(client, reader.secret, query="?proxy=apache")
        assert response.json()["error"]["details"][0]["field"] == "proxy"

    @pytest.mark.parametrize("segment", DOT_SEGMENTS)
    async def test_dot_segments_never_reach_another_routes_scope(
        self, client: httpx.AsyncClient, app: Pipeline, segment: str
    ) -> None:
        dealer = await make_tenant(
            app, permissions=("read:deals",), name=f"d{uuid.uuid4().hex[:6]}"
        )
        response = await ask(client, dealer.secret, f"/v1/deals/{segment}/contacts")
        assert response.status_code in (400, 200), response.text
        if response.status_code == 200:  # read as a deals path, never as contacts
            assert response.headers["x-keystile-scopes"] == "read:deals"
        assert_denied(
            await ask(client, dealer.secret, f"/v1/contacts/{segment}/deals"),
            400,
            "validation_error",
        )

    @pytest.mark.parametrize("separator", SEPARATORS)
    async def test_encoded_separators_are_400(
        self, client: httpx.AsyncClient, reader: Tenant, separator: str
    ) -> None:
        response = await ask(client, reader.secret, f"/v1/deals{separator}contacts")
        assert_denied(response, 400, "validation_error")
        assert response.json()["error"]["details"][0]["field"] == "X-Forwarded-Uri"


PATHS = st.builds(
    str.__add__,
    st.sampled_from(["/v1/", "/V1/", "/%76%31/", "/v1/./", "/", "/v1//"]),
    st.text(alphabet=st.sampled_from("/.%2eEcCdDontacsl;\\:@A9f~"), max_size=30),
)


@settings(max_examples=500, deadline=None)
@given(path=PATHS)
def test_forward_auth_resolves_every_path_as_the_gateway_does(path: str) -> None:
    """The same function decides: for any path, forward auth and the gateway
    both refuse it (400), or both find the proxied route, or neither does;
    the forward-only route is found by forward auth alone."""
    routes = parse_routes(ROUTES, Settings().catalog)
    router = Router(FastAPI(), {}, routes, Proxy(UpstreamClient(), []))

    def outcome(resolve: Any, scope: dict[str, Any]) -> str | None:
        try:
            endpoint: Endpoint = resolve(scope)
        except errors.ValidationFailed:
            return "400"
        except (errors.NotFound, errors.MethodNotAllowed):
            return None
        return endpoint.permission

    raw = path.encode("latin-1")
    gateway = outcome(router.resolve, {
        "type": "http", "method": "GET", "path": unquote(path), "raw_path": raw, "headers": [],
    })  # fmt: skip
    forwarded = outcome(router.resolve_forwarded, {
        "method": "GET", "path": "/v1/auth",
        "headers": [(b"x-forwarded-method", b"GET"), (b"x-forwarded-uri", raw)],
    })  # fmt: skip
    if forwarded == "read:deals":
        assert gateway is None, path
    else:
        assert forwarded == gateway, (path, forwarded, gateway)
