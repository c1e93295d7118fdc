"""POST /v1/api-keys, status by status (contract §3, §4; the vendor page)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from keystile.api.pipeline import Pipeline
from keystile.keys import tokens
from keystile.keys.models import Plan
from tests.support import FakeClock, Tenant, assert_error, assert_own_headers, make_tenant

pytestmark = pytest.mark.anyio

VENDOR_BODY = {
    "name": "Ingestion worker",
    "permissions": ["read:contacts", "write:contacts"],
    "description": "Used by the nightly ingestion job",
}


async def create(client: httpx.AsyncClient, tenant: Tenant, body: object) -> httpx.Response:
    return await client.post("/v1/api-keys", json=body, headers=tenant.headers)


def future(clock: FakeClock, **delta: float) -> str:
    moment = datetime.fromtimestamp(clock.now, UTC) + timedelta(**delta)
    return moment.isoformat().replace("+00:00", "Z")


class Test201:
    async def test_the_vendor_example_works_as_documented(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        response = await create(client, tenant, VENDOR_BODY)
        assert response.status_code == 201
        assert_own_headers(response)
        data = response.json()["data"]
        assert list(data)[:9] == [
            "id", "key", "prefix", "name", "description", "permissions",
            "rate_limit_tier", "expires_at", "created_at",
        ]  # fmt: skip
        assert re.fullmatch(r"key_[0-9A-Z]{26}", data["id"])
        assert tokens.is_well_formed(data["key"], "wbk")
        assert data["prefix"] == data["key"][:8] == "wbk_live"
        assert data["name"] == "Ingestion worker"
        assert data["description"] == "Used by the nightly ingestion job"
        assert data["permissions"] == ["read:contacts", "write:contacts"]
        assert data["rate_limit_tier"] == "standard"
        assert data["expires_at"] is None
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["created_at"])
        assert data["status"] == "active"

    async def test_the_new_key_authenticates_and_holds_exactly_its_scopes(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        body = {"name": "lister", "permissions": ["admin:api_keys", "read:deals"]}
        secret = (await create(client, tenant, body)).json()["data"]["key"]
        listed = await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {secret}"})
        assert listed.status_code == 200
        weaker = (await create(client, tenant, {"name": "w", "permissions": ["read:deals"]})).json()
        denied = await client.get(
            "/v1/api-keys", headers={"Authorization": f"Bearer {weaker['data']['key']}"}
        )
        assert_error(denied, 403, "insufficient_permissions")

    async def test_all_optional_fields(
        self, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        expires = future(clock, days=30)
        response = await create(
            client,
            tenant,
            {**VENDOR_BODY, "rate_limit_tier": "high", "expires_at": expires},
        )
        assert response.status_code == 201
        data = response.json()["data"]
        assert data["rate_limit_tier"] == "high"
        assert data["expires_at"] == expires.replace(".000000", "")

    async def test_expiry_with_an_offset_is_normalised_to_utc(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        body = {**VENDOR_BODY, "expires_at": "2099-06-01T12:00:00+02:00"}
        data = (await create(client, tenant, body)).json()["data"]
        assert data["expires_at"] == "2099-06-01T10:00:00Z"

    async def test_unmetered_on_the_enterprise_plan(
        self, app: Pipeline, client: httpx.AsyncClient
    ) -> None:
        enterprise = await make_tenant(app, plan=Plan.ENTERPRISE)
        response = await create(client, enterprise, {**VENDOR_BODY, "rate_limit_tier": "unmetered"})
        assert response.status_code == 201
        assert response.json()["data"]["rate_limit_tier"] == "unmetered"

    async def test_explicit_nulls_mean_defaults(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        body = {**VENDOR_BODY, "description": None, "rate_limit_tier": None, "expires_at": None}
        data = (await create(client, tenant, body)).json()["data"]
        assert (data["description"], data["rate_limit_tier"], data["expires_at"]) == (
            None,
            "standard",
            None,
        )

    async def test_a_charset_parameter_is_accepted(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        response = await client.post(
            "/v1/api-keys",
            content=b'{"name": "x", "permissions": ["read:contacts"]}',
            headers={**tenant.headers, "Content-Type": "application/json; charset=utf-8"},
        )
        assert response.status_code == 201


class Test400:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"permissions": ["read:contacts"]}, "name"),
            ({"name": "x"}, "permissions"),
            ({"name": "x", "permissions": []}, "permissions"),
            ({"name": "x", "permissions": ["read:contacts", "launch:rockets"]}, "permissions[1]"),
            ({"name": "x", "permissions": ["read:contacts"], "color": "red"}, "color"),
            ({"name": 7, "permissions": ["read:contacts"]}, "name"),
            ({"name": "x", "permissions": "read:contacts"}, "permissions"),
            ({"name": "x", "permissions": [1]}, "permissions[0]"),
            ({"name": "", "permissions": ["read:contacts"]}, "name"),
            ({"name": "   ", "permissions": ["read:contacts"]}, "name"),
            ({"name": "x" * 121, "permissions": ["read:contacts"]}, "name"),
            ({"name": "a\x00b", "permissions": ["read:contacts"]}, "name"),
            ({"name": "a\x1bb", "permissions": ["read:contacts"]}, "name"),
            ({"name": "a\u202eb", "permissions": ["read:contacts"]}, "name"),
            ({"name": "x", "permissions": ["read:contacts"], "description": "d" * 1001}, "description"),
            ({"name": "x", "permissions": ["read:contacts"], "rate_limit_tier": "gold"}, "rate_limit_tier"),
            ({"name": "x", "permissions": ["read:contacts"], "expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
            ({"name": "x", "permissions": ["read:contacts"], "expires_at": "2099-01-01"}, "expires_at"),
            ({"name": "x", "permissions": ["read:contacts"], "expires_at": 4102444800}, "expires_at"),
        ],
    )  # fmt: skip
    async def test_invalid_fields_are_named_in_details(
        self, client: httpx.AsyncClient, tenant: Tenant, body: object, field: str
    ) -> None:
        error = assert_error(await create(client, tenant, body), 400, "validation_error")
        assert field in [d["field"] for d in error["details"]], error

    @pytest.mark.parametrize(
        "raw",
        [
            b"",
            b"{",
            b"[]",
            b'"a string"',
            b"null",
            b"\xff\xfe{}",
            b'{"name": "x", "name": "y", "permissions": ["read:contacts"]}',
            b'{"name": "x", "permissions": ["read:contacts"], "n": NaN}',
            b'{"name": "x", "permissions": ["read:contacts"], "n": Infinity}',
            b'{"name": "x", "permissions": ["read:contacts"], "n": 1e999}',
            b'{"name": "x", "permissions": ["read:contacts"], "n": ' + b"9" * 5000 + b"}",
            b"[" * 10_000 + b"]" * 10_000,
            b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
            b'{"name": "\\ud800", "permissions": ["read:contacts"]}',
            b'{"name": "ok", "permissions": ["read:contacts"], "description": "\\udfff"}',
            b'{"name": "a\\u0000b", "permissions": ["read:contacts"]}',
            b'{"name": "x", "permissions": ["read:contacts"]} trailing',
        ],
    )
    async def test_hostile_bodies_get_400(
        self, client: httpx.AsyncClient, tenant: Tenant, raw: bytes
    ) -> None:
        response = await client.post(
            "/v1/api-keys",
            content=raw,
            headers={**tenant.headers, "Content-Type": "application/json"},
        )
        assert_error(response, 400, "validation_error")

    async def test_query_parameters_are_refused(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        response = await client.post(
            "/v1/api-keys?name=x", json=VENDOR_BODY, headers=tenant.headers
        )
        assert_error(response, 400, "validation_error")


class Test401:
    @pytest.mark.parametrize(
        "authorization",
        [
            None,
            "",
            "Bearer",
            "Bearer ",
            "Basic dXNlcjpwYXNz",
            "Token wbk_live_xxx",
            "Bearer not-a-key",
            # Random values get fixed ids: every xdist worker must collect the same names.
            pytest.param("Bearer " + tokens.generate("wbk")[:-1] + "0", id="bad-checksum"),
            pytest.param("Bearer " + tokens.generate("wbk"), id="never-issued"),
            pytest.param("Bearer " + tokens.generate("abc"), id="another-prefix"),
        ],
    )
    async def test_bad_credentials_get_the_same_401(
        self, client: httpx.AsyncClient, authorization: str | None
    ) -> None:
        headers = {} if authorization is None else {"Authorization": authorization}
        response = await client.post("/v1/api-keys", json=VENDOR_BODY, headers=headers)
        error = assert_error(response, 401, "invalid_key")
        assert error["message"] == "The API key is missing, invalid, expired or revoked."

    async def test_a_corrupted_checksum_is_rejected_without_touching_storage(
        self,
        app: Pipeline,
        client: httpx.AsyncClient,
        tenant: Tenant,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        calls: list[str] = []
        storage = app.services.storage
        for name in ("reader", "transaction", "changed_elsewhere", "ping"):
            original = getattr(storage, name)

            def counting(*args: object, _name: str = name, _original: object = original) -> object:
                calls.append(_name)
                return _original(*args)  # type: ignore[operator]

            monkeypatch.setattr(storage, name, counting)
        await client.get("/v1/api-keys", headers=tenant.headers)  # the real key, cached
        calls.clear()
        bad = tenant.secret[:-1] + ("A" if tenant.secret[-1] != "A" else "B")
        response = await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {bad}"})
        assert_error(response, 401, "invalid_key")
        assert calls == []

    async def test_a_non_ascii_key_of_the_right_length_is_a_401(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        for char in ("é", "\u00ff", "\x7f"):
            bad = tenant.secret[:-3] + char + tenant.secret[-2:]
            header = b"Bearer " + bad.encode("latin-1")
            response = await client.get("/v1/api-keys", headers=[(b"authorization", header)])
            assert_error(response, 401, "invalid_key")

    async def test_the_scheme_is_case_insensitive(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        response = await client.get(
            "/v1/api-keys", headers={"Authorization": f"bearer {tenant.secret}"}
        )
        assert response.status_code == 200

    async def test_two_authorization_headers_are_refused(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        headers = [("Authorization", f"Bearer {tenant.secret}")] * 2
        response = await client.get("/v1/api-keys", headers=headers)
        assert_error(response, 401, "invalid_key")

    async def test_keys_are_never_read_from_the_query_string(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        for param in ("key", "api_key", "access_token", "authorization"):
            response = await client.get(f"/v1/api-keys?{param}={tenant.secret}")
            assert_error(response, 401, "invalid_key")

    async def test_authentication_comes_before_body_validation(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.post(
            "/v1/api-keys", content=b"{", headers={"Content-Type": "text/plain"}
        )
        assert_error(response, 401, "invalid_key")


class Test403:
    async def test_without_admin_api_keys(self, app: Pipeline, client: httpx.AsyncClient) -> None:
        reader = await make_tenant(app, permissions=("read:contacts",))
        error = assert_error(
            await create(client, reader, VENDOR_BODY), 403, "insufficient_permissions"
        )
        assert "admin:api_keys" in error["message"]

    async def test_authorization_comes_before_body_validation(
        self, app: Pipeline, client: httpx.AsyncClient
    ) -> None:
        reader = await make_tenant(app, permissions=("read:contacts",))
        response = await client.post("/v1/api-keys", content=b"{", headers=reader.headers)
        assert_error(response, 403, "insufficient_permissions")

    async def test_no_key_can_mint_scopes_it_lacks(
        self, app: Pipeline, client: httpx.AsyncClient
    ) -> None:
        admin = await make_tenant(app, permissions=("admin:api_keys", "read:contacts"))
        body = {"name": "escalate", "permissions": ["read:contacts", "write:contacts"]}
        error = assert_error(await create(client, admin, body), 403, "insufficient_permissions")
        assert "write:contacts" in error["message"]
        ok = await create(client, admin, {"name": "fine", "permissions": ["read:contacts"]})
        assert ok.status_code == 201

    async def test_unmetered_needs_the_enterprise_plan(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        body = {**VENDOR_BODY, "rate_limit_tier": "unmetered"}
        assert_error(await create(client, tenant, body), 403, "plan_restricted")


class Test409:
    async def test_a_name_is_unique_among_active_keys(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        assert (await create(client, tenant, VENDOR_BODY)).status_code == 201
        for variant in ("Ingestion worker", "INGESTION WORKER", "  ingestion worker "):
            response = await create(client, tenant, {**VENDOR_BODY, "name": variant})
            assert_error(response, 409, "duplicate_name")

    async def test_names_compare_after_nfc_normalisation(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        assert (
            await create(client, tenant, {**VENDOR_BODY, "name": "caf\u00e9"})
        ).status_code == 201
        response = await create(client, tenant, {**VENDOR_BODY, "name": "CAFE\u0301"})
        assert_error(response, 409, "duplicate_name")

    async def test_another_account_may_use_the_same_name(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        other = await make_tenant(app)
        assert (await create(client, tenant, VENDOR_BODY)).status_code == 201
        assert (await create(client, other, VENDOR_BODY)).status_code == 201

    async def test_a_revoked_keys_name_may_be_reused(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        first = (await create(client, tenant, VENDOR_BODY)).json()["data"]
        await client.delete(f"/v1/api-keys/{first['id']}", headers=tenant.headers)
        assert (await create(client, tenant, VENDOR_BODY)).status_code == 201

    async def test_an_expired_keys_name_may_be_reused(
        self, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        body = {**VENDOR_BODY, "expires_at": future(clock, seconds=60)}
        assert (await create(client, tenant, body)).status_code == 201
        assert_error(await create(client, tenant, VENDOR_BODY), 409, "duplicate_name")
        clock.advance(61)
        second = await create(client, tenant, VENDOR_BODY)
        assert second.status_code == 201
        # The expired key stays expired (not revoked) after giving its name up.
        listed = (await client.get("/v1/api-keys?status=expired", headers=tenant.headers)).json()
        assert [k["name"] for k in listed["data"]] == ["Ingestion worker"]


class Test413:
    async def test_a_body_over_64_kib_is_refused_before_parsing(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        raw = (
            b'{"name": "x", "permissions": ["read:contacts"], "description": "'
            + b"a" * 70_000
            + b'"}'
        )
        response = await client.post(
            "/v1/api-keys",
            content=raw,
            headers={**tenant.headers, "Content-Type": "application/json"},
        )
        assert_error(response, 413, "payload_too_large")

    async def test_a_chunked_body_is_counted_while_streaming(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(100):
                yield b"x" * 1024

        response = await client.post(
            "/v1/api-keys",
            content=chunks(),
            headers={**tenant.headers, "Content-Type": "application/json"},
        )
        assert_error(response, 413, "payload_too_large")

    async def test_exactly_64_kib_is_still_read(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        head = b'{"name": "x", "permissions": ["read:contacts"]}'
        raw = head + b" " * (64 * 1024 - len(head))
        response = await client.post(
            "/v1/api-keys",
            content=raw,
            headers={**tenant.headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 201


class Test415:
    @pytest.mark.parametrize(
        "content_type",
        [
            None,
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/json; charset=latin-1",
            "application/jsonx",
        ],
    )
    async def test_bodies_must_be_json(
        self, client: httpx.AsyncClient, tenant: Tenant, content_type: str | None
    ) -> None:
        headers = dict(tenant.headers)
        if content_type is not None:
            headers["Content-Type"] = content_type
        response = await client.post(
            "/v1/api-keys",
            content=b'{"name": "x", "permissions": ["read:contacts"]}',
            headers=headers,
        )
        assert_error(response, 415, "unsupported_media_type")
