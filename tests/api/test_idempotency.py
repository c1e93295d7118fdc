"""Idempotency-Key on POST (contract §6; the vendor page's promise)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest

from keystile.api.pipeline import Pipeline
from keystile.keys.service import KeyService
from tests.conftest import settings_for
from tests.support import FakeClock, Tenant, assert_error, count_rows, make_tenant, stored_bytes

pytestmark = pytest.mark.anyio

BODY = {"name": "Ingestion worker", "permissions": ["read:contacts", "write:contacts"]}
DAY = 24 * 60 * 60


async def post(
    client: httpx.AsyncClient, tenant: Tenant, key: str | None, body: Any = BODY, **headers: str
) -> httpx.Response:
    all_headers = {**tenant.headers, **headers}
    if key is not None:
        all_headers["Idempotency-Key"] = key
    return await client.post("/v1/api-keys", json=body, headers=all_headers)


async def records(app: Pipeline) -> int:
    return await count_rows(app, "idempotency_records")


async def key_count(client: httpx.AsyncClient, tenant: Tenant) -> int:
    page = (await client.get("/v1/api-keys?limit=100", headers=tenant.headers)).json()
    return len(page["data"])


class TestReplay:
    async def test_the_same_request_replays_byte_for_byte_with_the_secret(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        first = await post(client, tenant, "k-1")
        again = await post(client, tenant, "k-1")
        assert first.status_code == again.status_code == 201
        assert again.content == first.content
        assert again.json()["data"]["key"] == first.json()["data"]["key"]
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert again.headers["x-request-id"] != first.headers["x-request-id"]
        assert again.headers["cache-control"] == "no-store"
        assert await key_count(client, tenant) == 2  # the tenant's own key and one new one

    async def test_key_order_and_whitespace_do_not_count(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        first = await post(client, tenant, "k-2")
        reordered = await client.post(
            "/v1/api-keys",
            content=b'{ "permissions" : ["read:contacts","write:contacts"],\n "name":"Ingestion worker" }',
            headers={
                **tenant.headers,
                "Idempotency-Key": "k-2",
                "Content-Type": "application/json",
            },
        )
        assert reordered.status_code == 201
        assert reordered.content == first.content

    async def test_a_different_body_is_a_422(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        await post(client, tenant, "k-3")
        other = await post(client, tenant, "k-3", {**BODY, "description": "changed"})
        assert_error(other, 422, "idempotency_key_reused")
        assert_error(
            await post(client, tenant, "k-3", {**BODY, "name": "x"}), 422, "idempotency_key_reused"
        )

    async def test_a_handler_level_409_is_recorded_and_replayed(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        holder = (await post(client, tenant, None)).json()["data"]
        conflict = await post(client, tenant, "k-4")
        assert_error(conflict, 409, "duplicate_name")
        await client.delete(f"/v1/api-keys/{holder['id']}", headers=tenant.headers)
        replay = await post(client, tenant, "k-4")  # the name is free now, but this is a replay
        assert replay.status_code == 409
        assert replay.content == conflict.content
        assert replay.headers["idempotent-replayed"] == "true"

    async def test_without_the_header_every_request_runs(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        assert (await post(client, tenant, None)).status_code == 201
        assert_error(await post(client, tenant, None), 409, "duplicate_name")


class TestScope:
    async def test_another_key_of_the_same_account_runs_fresh(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        first = await post(client, tenant, "shared")
        second_key = await client.post(
            "/v1/api-keys",
            json={
                "name": "second admin",
                "permissions": ["admin:api_keys", "read:contacts", "write:contacts"],
            },
            headers=tenant.headers,
        )
        colleague = Tenant(
            tenant.account, second_key.json()["data"]["key"], second_key.json()["data"]["id"]
        )
        theirs = await post(client, colleague, "shared")
        assert_error(theirs, 409, "duplicate_name")  # ran for real: the name is taken
        assert "idempotent-replayed" not in theirs.headers
        assert first.json()["data"]["key"] not in theirs.text

    async def test_a_revoked_key_cannot_replay(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        made = await client.post(
            "/v1/api-keys",
            json={"name": "temp admin", "permissions": ["admin:api_keys", "read:contacts"]},
            headers=tenant.headers,
        )
        temp = Tenant(tenant.account, made.json()["data"]["key"], made.json()["data"]["id"])
        body = {"name": "child", "permissions": ["read:contacts"]}
        assert (await post(client, temp, "k-5", body)).status_code == 201
        await client.delete(f"/v1/api-keys/{temp.key_id}", headers=tenant.headers)
        assert_error(await post(client, temp, "k-5", body), 401, "invalid_key")


class TestNothingRecordedBeforeTheHandlerRuns:
    @pytest.mark.parametrize(
        ("send", "status"),
        [
            (lambda c, t: post(c, t, "n", {"name": ""}), 400),
            (lambda c, t: post(c, t, "n", Authorization="Bearer nope"), 401),
            (lambda c, t: c.post("/v1/api-keys", content=b"{}", headers={**t.headers, "Idempotency-Key": "n"}), 415),
            (lambda c, t: c.post("/v1/api-keys", content=b"x" * 70000, headers={**t.headers, "Idempotency-Key": "n", "Content-Type": "application/json"}), 413),
            (lambda c, t: post(c, t, "n", {**BODY, "permissions": ["admin:webhooks", "fly:away"]}), 400),
        ],
    )  # fmt: skip
    async def test_a_rejected_request_leaves_the_key_unused(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant, send: Any, status: int
    ) -> None:
        assert (await send(client, tenant)).status_code == status
        assert await records(app) == 0
        retried = await post(client, tenant, "n")
        assert retried.status_code == 201
        assert "idempotent-replayed" not in retried.headers

    async def test_403s_record_nothing(self, app: Pipeline, client: httpx.AsyncClient) -> None:
        limited = await make_tenant(app, permissions=("admin:api_keys", "read:contacts"))
        assert (await post(client, limited, "m")).status_code == 403  # asks for write:contacts
        reader = await make_tenant(app, permissions=("read:contacts",))
        assert (await post(client, reader, "m")).status_code == 403
        assert await records(app) == 0

    async def test_a_5xx_records_nothing_and_rolls_back(
        self,
        app: Pipeline,
        client: httpx.AsyncClient,
        tenant: Tenant,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        issue = KeyService.issue

        async def issue_then_fail(self: KeyService, *args: Any, **kwargs: Any) -> Any:
            await issue(self, *args, **kwargs)  # the key row is written...
            raise RuntimeError("crash after the insert")  # ...then the handler fails

        monkeypatch.setattr(KeyService, "issue", issue_then_fail)
        assert_error(await post(client, tenant, "f"), 500, "internal_error")
        monkeypatch.setattr(KeyService, "issue", issue)
        assert await records(app) == 0
        assert await key_count(client, tenant) == 1  # the insert was rolled back
        assert (await post(client, tenant, "f")).status_code == 201


class TestMalformedKeys:
    @pytest.mark.parametrize(
        "value", [b"", b"x" * 256, "é".encode(), b"tab\there", b"nul\x00", b"del\x7f"]
    )
    async def test_400(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant, value: bytes
    ) -> None:
        response = await client.post(
            "/v1/api-keys",
            json=BODY,
            headers=[
                (b"Authorization", f"Bearer {tenant.secret}".encode()),
                (b"Idempotency-Key", value),
            ],
        )
        error = assert_error(response, 400, "validation_error")
        assert error["details"][0]["field"] == "Idempotency-Key"
        assert await key_count(client, tenant) == 1

    async def test_two_headers_are_a_400(self, client: httpx.AsyncClient, tenant: Tenant) -> None:
        headers = [
            ("Authorization", f"Bearer {tenant.secret}"),
            ("Idempotency-Key", "a"),
            ("Idempotency-Key", "b"),
        ]
        assert_error(
            await client.post("/v1/api-keys", json=BODY, headers=headers), 400, "validation_error"
        )

    @pytest.mark.parametrize(
        "value", ["a", "x" * 255, "~!@#$%^&*() spaces ok", "550e8400-e29b-41d4-a716-446655440000"]
    )
    async def test_accepted_values(
        self, client: httpx.AsyncClient, tenant: Tenant, value: str
    ) -> None:
        assert (await post(client, tenant, value)).status_code == 201


class TestInFlight:
    async def test_a_retry_while_the_first_runs_is_a_409_then_replays(
        self, client: httpx.AsyncClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        entered, release = asyncio.Event(), asyncio.Event()
        issue = KeyService.issue

        async def slow_issue(self: KeyService, *args: Any, **kwargs: Any) -> Any:
            entered.set()
            await release.wait()
            return await issue(self, *args, **kwargs)

        monkeypatch.setattr(KeyService, "issue", slow_issue)
        first = asyncio.create_task(post(client, tenant, "slow"))
        await entered.wait()
        assert_error(await post(client, tenant, "slow"), 409, "idempotency_key_in_use")
        release.set()
        original = await first
        assert original.status_code == 201
        replay = await post(client, tenant, "slow")
        assert replay.content == original.content

    async def test_50_parallel_identical_requests_create_exactly_one_key(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        responses = await asyncio.gather(*(post(client, tenant, "burst") for _ in range(50)))
        statuses = Counter(r.status_code for r in responses)
        assert set(statuses) <= {201, 409}
        created = [r for r in responses if r.status_code == 201]
        assert created
        assert len({r.json()["data"]["key"] for r in created}) == 1
        for response in responses:
            if response.status_code == 409:
                assert response.json()["error"]["code"] == "idempotency_key_in_use"
        assert await key_count(client, tenant) == 2


class TestRetention:
    async def test_replays_for_24_hours_then_runs_fresh(
        self, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        start = clock.now
        first = await post(client, tenant, "day")
        clock.now = start + DAY - 1  # 23:59:59 later
        assert (await post(client, tenant, "day")).content == first.content
        clock.now = start + DAY + 1  # 24:00:01 later
        fresh = await post(client, tenant, "day")
        assert_error(fresh, 409, "duplicate_name")  # ran again: the name is held by the first key
        assert "idempotent-replayed" not in fresh.headers

    async def test_expired_records_are_purged(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        await post(client, tenant, "p1")
        await post(client, tenant, "p2", {**BODY, "name": "other"})
        assert await records(app) == 2
        assert await app.services.idempotency.purge() == 0
        clock.advance(DAY)
        assert await app.services.idempotency.purge() == 2
        assert await records(app) == 0


async def test_the_server_purges_periodically(
    data_dir: Any, database_url: str, clock: FakeClock
) -> None:
    from keystile.api.app import create_app

    settings = settings_for(database_url, data_dir, idempotency_purge_interval_seconds=0.02)
    app = create_app(settings, clock=clock)
    async with app.lifespan():
        tenant = await make_tenant(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await post(client, tenant, "bg")).status_code == 201
        assert await records(app) == 1
        clock.advance(DAY)
        for _ in range(100):
            if await records(app) == 0:
                break
            await asyncio.sleep(0.02)
        assert await records(app) == 0


async def test_stored_responses_hold_no_plaintext_secret(
    app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    secrets = []
    for n in range(5):
        response = await post(client, tenant, f"s{n}", {**BODY, "name": f"n{n}"})
        await post(client, tenant, f"s{n}", {**BODY, "name": f"n{n}"})
        secrets.append(response.json()["data"]["key"])
    for name, blob in stored_bytes(app).items():
        for secret in secrets:
            assert secret.encode() not in blob and secret[9:25].encode() not in blob, name


async def test_rotating_the_application_key_keeps_replays_working(
    data_dir: Any, database_url: str, clock: FakeClock
) -> None:
    from pydantic import SecretStr

    from keystile.api.app import create_app
    from keystile.idempotency.crypto import generate_key

    old, new = generate_key(), generate_key()

    async def attempt(secret_key: str, tenant: Tenant | None) -> tuple[httpx.Response, Tenant]:
        settings = settings_for(database_url, data_dir, secret_key=SecretStr(secret_key))
        app = create_app(settings, clock=clock)
        async with app.lifespan():
            tenant = tenant or await make_tenant(app)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return await post(client, tenant, "rotate"), tenant

    first, tenant = await attempt(old, None)
    rotated, _ = await attempt(f"{new},{old}", tenant)
    assert rotated.content == first.content
    assert rotated.headers["idempotent-replayed"] == "true"
    dropped, _ = await attempt(new, tenant)  # the old key removed inside the 24 hours
    assert_error(dropped, 500, "internal_error")
