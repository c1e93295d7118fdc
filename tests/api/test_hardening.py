"""Issue #11, by kind, over HTTP in-process on both databases: request
targets, HEAD, ambiguous gateway paths, echoed secrets, anonymous metrics,
expanding text, one parse of a body, key lifetimes, verify's side effects.

(Kinds that need a real server or a real upstream are in tests/e2e.)"""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from keystile.api.app import create_app
from keystile.api.pipeline import Pipeline
from keystile.keys import tokens
from keystile.settings import Settings
from tests.conftest import settings_for
from tests.support import (
    LEDGER,
    FakeClock,
    Tenant,
    asgi_call,
    assert_error,
    make_tenant,
    stored_bytes,
)
from tests.unit.test_paths import DOT_SEGMENTS, SEPARATORS

pytestmark = pytest.mark.anyio

ROUTES = """
[[routes]]
prefix = "/v1/contacts"
methods = ["GET"]
scope = "read:contacts"
upstream = "http://127.0.0.1:9"

[[routes]]
prefix = "/v1/webhooks"
methods = ["GET"]
scope = "admin:webhooks"
upstream = "http://127.0.0.1:9"

[[routes]]
prefix = "/"
methods = ["GET", "POST"]
scope = "read:contacts"
upstream = "http://127.0.0.1:9"
"""


def later(clock: FakeClock, **delta: float) -> str:
    moment = datetime.fromtimestamp(clock.now, UTC) + timedelta(**delta)
    return moment.isoformat().replace("+00:00", "Z")


async def create(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> httpx.Response:
    payload = {"name": f"k-{uuid.uuid4().hex[:8]}", "permissions": ["read:contacts"], **body}
    response = await client.post("/v1/api-keys", json=payload, headers=tenant.headers)
    if response.status_code == 201:
        LEDGER.remember(response.json()["data"]["key"])
    return response


class TestRequestTargets:
    """Item 1: every request-target form of RFC 9112 §3.2 has a defined
    answer (origin- and absolute-form arrive as a path; authority-form is
    refused by the HTTP server itself, see tests/e2e)."""

    async def test_options_asterisk_is_answered_by_the_server(self, app: Pipeline) -> None:
        status, headers, body = await asgi_call(app, "OPTIONS", b"*")
        assert (status, body) == (200, b"")
        assert headers["x-request-id"] and headers["cache-control"] == "no-store"

    @pytest.mark.parametrize(
        ("method", "target"),
        [("GET", b"*"), ("POST", b"*"), ("DELETE", b"*"), ("OPTIONS", b"**"),
         ("GET", b"example.com:443"), ("GET", b""), ("OPTIONS", b"*/x")],
    )  # fmt: skip
    async def test_anything_else_that_is_not_a_path_is_a_400(
        self, app: Pipeline, method: str, target: bytes
    ) -> None:
        status, headers, body = await asgi_call(app, method, target)
        assert status == 400
        error = json.loads(body)["error"]
        assert error["code"] == "validation_error"
        assert error["details"][0]["field"] == "path"
        assert error["request_id"] == headers["x-request-id"]

    @pytest.mark.parametrize(
        "hosts", [[], [b"a.test", b"b.test"], [b"a.test", b"a.test"]], ids=["none", "two", "twice"]
    )
    async def test_a_request_without_exactly_one_host_is_a_400(
        self, app: Pipeline, hosts: list[bytes]
    ) -> None:
        status, _, body = await asgi_call(
            app, "GET", b"/healthz", headers=[(b"host", host) for host in hosts]
        )
        assert status == 400
        assert json.loads(body)["error"]["details"][0]["field"] == "Host"


class TestHead:
    """RFC 9110 §9.3.2: HEAD works wherever GET does, with GET's headers and no body."""

    @pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
    async def test_operations(self, client: httpx.AsyncClient, path: str) -> None:
        get = await client.get(path)
        head = await client.head(path)
        assert head.status_code == get.status_code == 200
        assert head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]

    async def test_resources_behind_a_key(self, client: httpx.AsyncClient, tenant: Tenant) -> None:
        for path in ("/v1/api-keys", f"/v1/api-keys/{tenant.key_id}", "/v1/api-keys/key_x"):
            get = await client.get(path, headers=tenant.headers)
            head = await client.head(path, headers=tenant.headers)
            assert head.status_code == get.status_code, path
            assert head.content == b""
            # The GET's length (last_used_at may change between the two).
            assert int(head.headers["content-length"]) > 0
            assert "x-ratelimit-remaining" in head.headers
        assert (await client.head("/v1/api-keys")).status_code == 401


@pytest.fixture
async def gateway_app(
    database_url: str, data_dir: Path, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Pipeline]:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    application = create_app(settings_for(database_url, data_dir, routes=routes), clock=clock)
    async with application.lifespan():
        yield application


@pytest.fixture
async def gateway(gateway_app: Pipeline) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=gateway_app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://keystile.test") as http:
        yield http


class TestAmbiguousPaths:
    """Item 4: a path that could mean another path to some upstream is a 400
    before anything else (routing comes first), never forwarded. The routes'
    upstream is dead: a forwarded request would be a 502."""

    @pytest.mark.parametrize(
        "trick",
        [f"/v1/contacts/{s}/webhooks" for s in DOT_SEGMENTS]
        + [f"/v1/contacts{s}webhooks" for s in SEPARATORS],
    )
    async def test_is_refused_with_or_without_a_key(
        self, gateway_app: Pipeline, trick: str
    ) -> None:
        reader = await make_tenant(gateway_app, permissions=("read:contacts",))
        for auth in ([], [(b"authorization", f"Bearer {reader.secret}".encode())]):
            status, _, body = await asgi_call(
                gateway_app, "GET", trick.encode(), [(b"host", b"k.test"), *auth]
            )
            assert status == 400, (trick, body)
            assert json.loads(body)["error"]["details"][0]["field"] == "path"

    @pytest.mark.parametrize(
        "spelling", ["/V1/WEBHOOKS", "/v1/Webhooks/x", "/v1/%77ebhooks", "/v1/%ef%bd%97ebhooks"]
    )
    async def test_every_spelling_falls_under_the_routes_scope(
        self, gateway: httpx.AsyncClient, gateway_app: Pipeline, spelling: str
    ) -> None:
        reader = await make_tenant(gateway_app, permissions=("read:contacts",))
        request = gateway.build_request("GET", "http://keystile.test/", headers=reader.headers)
        request.url = request.url.copy_with(raw_path=spelling.encode())
        error = assert_error(await gateway.send(request), 403, "insufficient_permissions")
        assert "admin:webhooks" in error["message"]


class TestEchoedSecrets:
    """Item 7: text a client sent is echoed masked when it could hold a secret."""

    async def test_a_secret_where_an_id_goes(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        for path in (
            f"/v1/api-keys/{tenant.secret}",
            f"/v1/api-keys/{tenant.secret.upper()}",
            f"/v1/api-keys/{tenant.secret.replace('_', '%5F')}",
            f"/v2/{tenant.secret[:20]}/{tenant.secret[20:]}",
        ):
            response = await client.get(path, headers=tenant.headers)
            assert response.status_code in (400, 404), path
            assert not LEDGER.leaks_in(response.content), (path, response.text)
            assert tenant.secret[9:25] not in response.text

    async def test_a_secret_as_a_field_name_or_value(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        bodies = [
            {"name": "x", "permissions": ["read:contacts"], tenant.secret: 1},
            {"name": "x", "permissions": [tenant.secret]},
            {"name": "x", "permissions": ["read:contacts"], "rate_limit_tier": tenant.secret},
        ]
        for body in bodies:
            response = await client.post("/v1/api-keys", json=body, headers=tenant.headers)
            assert_error(response, 400, "validation_error")
            assert not LEDGER.leaks_in(response.content), response.text

    @pytest.mark.parametrize("field", ["name", "description", "metadata value", "metadata key"])
    async def test_a_secret_pasted_into_free_text_is_refused(
        self, client: httpx.AsyncClient, tenant: Tenant, field: str
    ) -> None:
        secret = tenant.secret
        body: dict[str, Any] = {"name": "x", "permissions": ["read:contacts"]}
        if field == "name":
            body["name"] = f"copy of {secret}"
        elif field == "description":
            body["description"] = f"uses {secret.upper()} for now"
        elif field == "metadata value":
            body["metadata"] = {"k": secret.replace("_", "-")}
        else:
            body["metadata"] = {secret[:12] + "_x": "v"}
        response = await client.post("/v1/api-keys", json=body, headers=tenant.headers)
        error = assert_error(response, 400, "validation_error")
        assert "must not contain an API key" in error["details"][0]["message"]
        assert not LEDGER.leaks_in(response.content)

    async def test_a_secret_as_an_idempotency_key_is_never_stored(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        headers = {**tenant.headers, "Idempotency-Key": tenant.secret}
        body = {"name": "idem", "permissions": ["read:contacts"]}
        first = await client.post("/v1/api-keys", json=body, headers=headers)
        again = await client.post("/v1/api-keys", json=body, headers=headers)
        assert first.status_code == again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
        LEDGER.remember(first.json()["data"]["key"])
        for where, blob in stored_bytes(app).items():
            assert tenant.secret.encode() not in blob, where

    async def test_a_secret_as_a_request_id_is_neither_echoed_nor_logged(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        before = len(LEDGER.log_lines)
        response = await client.get(
            "/v1/api-keys", headers={**tenant.headers, "X-Request-ID": tenant.secret}
        )
        assert response.headers["x-request-id"].startswith("req_")
        assert not any(LEDGER.leaks_in(line.encode()) for line in LEDGER.log_lines[before:])

    async def test_anonymous_metrics_do_not_tell_revoked_from_unknown(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        revoked = (await create(client, tenant)).json()["data"]
        await client.delete(f"/v1/api-keys/{revoked['id']}", headers=tenant.headers)
        never_issued = tokens.generate(app.services.settings.key_prefix)

        async def counters() -> list[str]:
            text = (await client.get("/metrics")).text
            return [
                line
                for line in text.splitlines()
                if line.startswith(("keystile_requests_total", "keystile_key_"))
                and "/metrics" not in line
                and "_created" not in line
            ]

        def delta(before: list[str], after: list[str]) -> set[str]:
            return set(after) - set(before)

        differences = []
        # The first 401 after a revocation clears the cache (SQLite's shared
        # revocation counter): warm up once, then compare.
        warm_up = (await counters(), await client.get("/v1/api-keys", headers=tenant.headers))
        assert warm_up[1].status_code == 200
        for token in (revoked["key"], never_issued, revoked["key"], never_issued):
            before = await counters()
            response = await client.get(
                "/v1/api-keys", headers={"Authorization": f"Bearer {token}"}
            )
            assert_error(response, 401, "invalid_key")
            differences.append({line.rsplit(" ", 1)[0] for line in delta(before, await counters())})
        assert differences[0] == differences[1] == differences[2] == differences[3]


class TestFilesArePrivate:
    async def test_the_data_directory_is_0700_and_the_database_0600(self, tmp_path: Path) -> None:
        data = tmp_path / "fresh" / "data"
        application = create_app(Settings(data_dir=data))
        async with application.lifespan():
            pass
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for path in data.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


# Characters whose normalised (NFC + case-folded) form is longer than they
# are: the stored comparison key grows up to threefold.
EXPANDING = ["\ufb03", "\U0001d1c0", "\u00df", "\u0130", "\u0149", "\u0390", "\u1e9e", "\ufb2c"]


class TestExpandingText:
    """Item 8: lengths hold on what is stored, on both databases."""

    @pytest.mark.parametrize("char", EXPANDING)
    async def test_a_name_at_the_limit(
        self, client: httpx.AsyncClient, tenant: Tenant, char: str
    ) -> None:
        name = char * 120
        response = await create(client, tenant, name=name, description=char * 1000)
        assert response.status_code == 201, response.text
        assert response.json()["data"]["name"] == name
        assert (await create(client, tenant, name=name)).status_code == 409
        too_long = await create(client, tenant, name=char * 121)
        assert_error(too_long, 400, "validation_error")

    @pytest.mark.parametrize("char", EXPANDING)
    async def test_an_account_name_at_the_limit(self, app: Pipeline, char: str) -> None:
        account = await app.services.accounts.create(char * 120)
        assert account.name == char * 120


VALID_BODY = {"name": "same", "permissions": ["read:contacts"]}
VALID_JSON = json.dumps(VALID_BODY)
# Bodies the endpoint refuses: each must be refused identically with and
# without an Idempotency-Key, and must never replay the valid body's response.
REFUSED_BODIES: dict[str, tuple[bytes, str]] = {
    "duplicate keys": (b'{"name": "other", "name": "same", "permissions": ["read:contacts"]}', ""),
    "a UTF-8 BOM": (b"\xef\xbb\xbf" + VALID_JSON.encode(), ""),
    "UTF-16": (VALID_JSON.encode("utf-16"), ""),
    "UTF-16-LE": (VALID_JSON.encode("utf-16-le"), ""),
    "UTF-32": (VALID_JSON.encode("utf-32"), ""),
    "Latin-1 with a non-ASCII name": (b'{"name": "s\xe4me", "permissions": ["read:contacts"]}', ""),
    "NaN": (b'{"name": "same", "permissions": ["read:contacts"], "n": NaN}', ""),
    "trailing garbage": (VALID_JSON.encode() + b" x", ""),
    "two documents": (VALID_JSON.encode() + VALID_JSON.encode(), ""),
    "charset utf-16": (VALID_JSON.encode(), "application/json; charset=utf-16"),
    "no media type": (VALID_JSON.encode(), "text/plain"),
}


class TestOneParse:
    """Item 9: the fingerprint and the endpoint read the same bytes the same way."""

    @pytest.mark.parametrize("kind", sorted(REFUSED_BODIES))
    async def test_a_refused_body_is_refused_alike_and_never_replays(
        self, client: httpx.AsyncClient, tenant: Tenant, kind: str
    ) -> None:
        idempotency_key = f"idem-{uuid.uuid4().hex}"
        first = await client.post(
            "/v1/api-keys",
            json=VALID_BODY,
            headers={**tenant.headers, "Idempotency-Key": idempotency_key},
        )
        assert first.status_code == 201
        LEDGER.remember(first.json()["data"]["key"])
        raw, media_type = REFUSED_BODIES[kind]
        headers = {**tenant.headers, "Content-Type": media_type or "application/json"}
        plain = await client.post("/v1/api-keys", content=raw, headers=headers)
        keyed = await client.post(
            "/v1/api-keys", content=raw, headers={**headers, "Idempotency-Key": idempotency_key}
        )
        assert plain.status_code in (400, 415), plain.text
        assert keyed.status_code == plain.status_code
        assert keyed.json()["error"]["code"] == plain.json()["error"]["code"]
        assert keyed.json()["error"]["message"] == plain.json()["error"]["message"]
        assert "idempotent-replayed" not in keyed.headers


class TestKeyLifetime:
    """Item 10: a key cannot outlive the key that made it."""

    @pytest.fixture
    async def expiring_admin(
        self, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> Tenant:
        made = await create(
            client,
            tenant,
            permissions=["admin:api_keys", "read:contacts"],
            expires_at=later(clock, minutes=5),
        )
        data = made.json()["data"]
        return Tenant(tenant.account, data["key"], data["id"])

    @pytest.mark.parametrize(
        ("expires", "status"),
        [(None, 403), ({"minutes": 6}, 403), ({"days": 3650}, 403), ({"minutes": 5}, 201),
         ({"minutes": 4}, 201), ({"seconds": 1}, 201)],
    )  # fmt: skip
    async def test_the_new_keys_expiry(
        self,
        client: httpx.AsyncClient,
        expiring_admin: Tenant,
        clock: FakeClock,
        expires: dict[str, float] | None,
        status: int,
    ) -> None:
        body = {} if expires is None else {"expires_at": later(clock, **expires)}
        response = await create(client, expiring_admin, **body)
        if status == 201:
            assert response.status_code == 201, response.text
        else:
            error = assert_error(response, 403, "insufficient_permissions")
            assert "expires_at" in error["message"]
            assert error["details"][0]["field"] == "expires_at"

    async def test_a_key_that_never_expires_is_unbounded(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        assert (await create(client, tenant)).status_code == 201


class TestVerifySideEffects:
    """Item 11: verifying another account's key leaves no trace on it."""

    async def test_another_accounts_key_is_invalid_and_untouched(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        other = await make_tenant(app, name="other")
        verifier = await make_tenant(
            app, permissions=("verify:keys",), name="service", account=tenant.account
        )
        response = await client.post(
            "/v1/keys/verify", json={"key": other.secret}, headers=verifier.headers
        )
        assert response.json()["data"]["code"] == "INVALID"
        await app.services.usage.flush()
        stored = await app.services.keys.get(None, other.key_id)
        assert stored.last_used_at is None
