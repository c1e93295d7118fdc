"""Webhook endpoints and the event outbox (contract §13, issue #15 items 1,
2 and 6), in-process on both databases. Sending is tested end to end in
tests/e2e/test_webhooks.py, with a real receiver."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from keystile.api.app import create_app
from keystile.api.pipeline import Pipeline
from keystile.audit.models import SYSTEM_ORIGIN
from keystile.idempotency.crypto import generate_key
from keystile.keys.service import LEAKED
from keystile.settings import Settings
from keystile.webhooks.expiry import ExpiryScan
from keystile.webhooks.limits import LimitEvents
from keystile.webhooks.outbox import Outbox
from tests.conftest import settings_for
from tests.support import (
    LEDGER,
    FakeClock,
    Tenant,
    assert_error,
    database_name,
    free_port,
    make_operator,
    make_tenant,
    psql,
)

pytestmark = pytest.mark.anyio

NOWHERE = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: deliveries fail at once
DAY = 86_400
ENDPOINT_FIELDS = {"id", "url", "events", "description", "disabled", "created_at", "updated_at"}
DELIVERY_FIELDS = {
    "id", "event_id", "type", "state", "attempt_count", "last_status_code", "last_error",
    "next_attempt_at", "created_at",
}  # fmt: skip


@pytest.fixture
def settings(database_url: str, data_dir: Path) -> Settings:
    # Deliveries are attempted by hand in these tests (a long poll keeps the
    # background dispatcher out of the way; it still wakes on new events).
    return settings_for(
        database_url,
        data_dir,
        webhook_allow_http=True,
        webhook_allow_private=True,
        webhook_poll_seconds=60,
        webhook_scan_seconds=3600,
    )


async def create_endpoint(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    payload = {"url": NOWHERE, "events": ["*"], **body}
    response = await client.post("/v1/webhook-endpoints", json=payload, headers=tenant.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    LEDGER.remember(data["secret"])
    return data


async def create_key(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    payload = {"name": f"k-{uuid.uuid4().hex[:8]}", "permissions": ["read:contacts"], **body}
    response = await client.post("/v1/api-keys", json=payload, headers=tenant.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    LEDGER.remember(data["key"])
    return data


async def deliveries(
    client: httpx.AsyncClient, tenant: Tenant, endpoint_id: str
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/v1/webhook-endpoints/{endpoint_id}/deliveries?limit=100", headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def event_bodies(app: Pipeline) -> dict[str, dict[str, Any]]:
    """Every stored event body by id, read behind the app's back."""
    url = app.services.settings.database
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            rows = db.execute("SELECT body FROM webhook_events").fetchall()
        bodies = [json.loads(row[0]) for row in rows]
    else:
        out = psql(
            "COPY (SELECT encode(body, 'hex') FROM webhook_events) TO STDOUT", database_name(url)
        )
        bodies = [json.loads(bytes.fromhex(line)) for line in out.split()]
    return {body["id"]: body for body in bodies}


class TestEndpoints:
    async def test_create_shows_the_secret_once(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        made = await create_endpoint(client, tenant, events=["api_key.created"], description="CRM")
        assert set(made) == ENDPOINT_FIELDS | {"secret"}
        assert made["id"].startswith("we_") and made["secret"].startswith("whsec_")
        assert (made["url"], made["events"], made["description"], made["disabled"]) == (
            NOWHERE, ["api_key.created"], "CRM", False,
        )  # fmt: skip
        got = await client.get(f"/v1/webhook-endpoints/{made['id']}", headers=tenant.headers)
        assert got.status_code == 200 and set(got.json()["data"]) == ENDPOINT_FIELDS
        listed = await client.get("/v1/webhook-endpoints", headers=tenant.headers)
        assert made["secret"] not in got.text + listed.text

    async def test_list_is_newest_first_and_paginated(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        ids = [(await create_endpoint(client, tenant))["id"] for _ in range(3)]
        page = await client.get("/v1/webhook-endpoints?limit=2", headers=tenant.headers)
        body = page.json()
        assert [e["id"] for e in body["data"]] == ids[::-1][:2] and body["has_more"] is True
        rest = await client.get(
            f"/v1/webhook-endpoints?limit=2&starting_after={ids[1]}", headers=tenant.headers
        )
        assert [e["id"] for e in rest.json()["data"]] == [ids[0]]
        assert rest.json()["has_more"] is False
        bad = await client.get(
            "/v1/webhook-endpoints?starting_after=we_nope", headers=tenant.headers
        )
        assert assert_error(bad, 400, "validation_error")["details"][0]["field"] == (
            "starting_after"
        )

    async def test_update_each_field_and_delete(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        made = await create_endpoint(client, tenant)
        path = f"/v1/webhook-endpoints/{made['id']}"
        other_url = NOWHERE + "/v2"
        for change in (
            {"url": other_url},
            {"events": ["api_key.revoked", "api_key.leaked"]},
            {"description": "billing"},
            {"description": None},
            {"disabled": True},
        ):
            response = await client.patch(path, json=change, headers=tenant.headers)
            assert response.status_code == 200, response.text
            data = response.json()["data"]
            for field, value in change.items():
                assert data[field] == value
        deleted = await client.delete(path, headers=tenant.headers)
        assert deleted.status_code == 200 and deleted.json()["data"]["deleted"] is True
        assert_error(await client.get(path, headers=tenant.headers), 404, "not_found")
        assert_error(await client.delete(path, headers=tenant.headers), 404, "not_found")

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "body"),
            ({"url": None}, "url"),
            ({"events": []}, "events"),
            ({"events": ["*", "api_key.created"]}, "events"),
            ({"events": ["api_key.exploded"]}, "events"),
            ({"disabled": "yes"}, "disabled"),
            ({"secret": "whsec_mine"}, "secret"),
            ({"description": "a\u202etwist"}, "description"),
        ],
    )
    async def test_bad_updates_are_refused_with_the_field(
        self, client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any], field: str
    ) -> None:
        made = await create_endpoint(client, tenant)
        response = await client.patch(
            f"/v1/webhook-endpoints/{made['id']}", json=body, headers=tenant.headers
        )
        error = assert_error(response, 400, "validation_error")
        assert error["details"][0]["field"] == field

    async def test_another_accounts_endpoint_is_not_found(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        made = await create_endpoint(client, tenant)
        other = await make_tenant(app)
        for method, suffix in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/deliveries")):
            response = await client.request(
                method,
                f"/v1/webhook-endpoints/{made['id']}{suffix}",
                json={"disabled": True} if method == "PATCH" else None,
                headers=other.headers,
            )
            assert_error(response, 404, "not_found")
        listed = await client.get("/v1/webhook-endpoints", headers=other.headers)
        assert listed.json()["data"] == []

    async def test_admin_webhooks_is_needed(self, app: Pipeline, client: httpx.AsyncClient) -> None:
        keys_admin = await make_tenant(app, permissions=("admin:api_keys", "read:contacts"))
        response = await client.post(
            "/v1/webhook-endpoints", json={"url": NOWHERE, "events": ["*"]},
            headers=keys_admin.headers,
        )  # fmt: skip
        assert_error(response, 403, "insufficient_permissions")

    async def test_an_operator_key_acts_for_an_account(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        operator = await make_operator(app)
        response = await client.post(
            "/v1/webhook-endpoints", json={"url": NOWHERE, "events": ["*"]},
            headers=operator.headers(tenant.account.id),
        )  # fmt: skip
        assert response.status_code == 201, response.text
        LEDGER.remember(response.json()["data"]["secret"])
        listed = await client.get("/v1/webhook-endpoints", headers=tenant.headers)
        assert [e["id"] for e in listed.json()["data"]] == [response.json()["data"]["id"]]

    async def test_at_most_sixteen_per_account(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        for _ in range(16):
            await create_endpoint(client, tenant)
        response = await client.post(
            "/v1/webhook-endpoints", json={"url": NOWHERE, "events": ["*"]}, headers=tenant.headers
        )
        assert "16" in assert_error(response, 400, "validation_error")["message"]

    async def test_changes_are_audited_without_the_secret(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        made = await create_endpoint(client, tenant)
        path = f"/v1/webhook-endpoints/{made['id']}"
        await client.patch(path, json={"disabled": True}, headers=tenant.headers)
        await client.delete(path, headers=tenant.headers)
        response = await client.get(
            f"/v1/audit-events?target_id={made['id']}", headers=tenant.headers
        )
        events = response.json()["data"]
        assert [e["action"] for e in events] == [
            "webhook_endpoint.deleted", "webhook_endpoint.updated", "webhook_endpoint.created",
        ]  # fmt: skip
        assert events[1]["changes"] == {"disabled": [False, True]}
        assert events[2]["changes"]["url"] == [None, NOWHERE]
        assert made["secret"] not in response.text and "secret" not in events[2]["changes"]

    async def test_a_rotated_application_key_re_encrypts_the_secrets(
        self, database_url: str, data_dir: Path, clock: FakeClock
    ) -> None:
        old, new = generate_key(), generate_key()

        async def run(secret_key: str, made: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
            settings = settings_for(
                database_url, data_dir, secret_key=SecretStr(secret_key),
                webhook_allow_http=True, webhook_allow_private=True, webhook_poll_seconds=60,
            )  # fmt: skip
            app = create_app(settings, clock=clock)
            async with app.lifespan():
                if made is None:
                    transport = httpx.ASGITransport(app=app)
                    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                        made = await create_endpoint(c, await make_tenant(app))
                await app.services.webhooks.reencrypt()
                async with app.services.storage.reader() as uow:
                    ((endpoint_id, blob),) = await uow.webhooks.endpoint_secrets("", 10)
                assert endpoint_id == made["id"]
                return made, app.services.webhooks.decrypt_secret(endpoint_id, blob)

        made, secret = await run(old, None)
        assert secret == made["secret"]
        await run(f"{new},{old}", made)  # the background job re-encrypts under <new>
        _, secret = await run(new, made)  # so <old> can go
        assert secret == made["secret"]


class TestUrlRules:
    """With the default settings: https only, no internal addresses."""

    @pytest.fixture
    def settings(self, database_url: str, data_dir: Path) -> Settings:
        return settings_for(database_url, data_dir)

    @pytest.mark.parametrize(
        ("url", "problem"),
        [
            ("http://93.184.215.14/hook", "https"),
            ("https://127.0.0.1/hook", "loopback"),
            ("https://[::1]:8443/hook", "loopback"),
            ("https://localhost/hook", "loopback"),
            ("https://2130706433/hook", "loopback"),
            ("https://0x7f000001/hook", "loopback"),
            ("https://0.0.0.0/hook", "loopback"),
            ("https://169.254.169.254/latest/meta-data", "link-local"),
            ("https://[::ffff:10.0.0.1]/hook", "private"),
            ("https://user:pw@93.184.215.14/hook", "credentials"),
            ("not-a-url", "https"),
            ("https://exa mple.com/", "without spaces"),
        ],
    )
    async def test_refused_with_the_reason(
        self, client: httpx.AsyncClient, tenant: Tenant, url: str, problem: str
    ) -> None:
        response = await client.post(
            "/v1/webhook-endpoints", json={"url": url, "events": ["*"]}, headers=tenant.headers
        )
        error = assert_error(response, 400, "validation_error")
        assert error["details"][0]["field"] == "url" and problem in error["details"][0]["message"]


class TestOutbox:
    async def test_each_change_writes_its_event_for_subscribed_endpoints(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        everything = await create_endpoint(client, tenant)
        revocations = await create_endpoint(client, tenant, events=["api_key.revoked"])
        paused = await create_endpoint(client, tenant)
        await client.patch(
            f"/v1/webhook-endpoints/{paused['id']}", json={"disabled": True},
            headers=tenant.headers,
        )  # fmt: skip
        key = await create_key(client, tenant)
        await client.patch(
            f"/v1/api-keys/{key['id']}", json={"description": "x"}, headers=tenant.headers
        )
        rotated = await client.post(f"/v1/api-keys/{key['id']}/rotate", headers=tenant.headers)
        LEDGER.remember(rotated.json()["data"]["key"])
        new_id = rotated.json()["data"]["id"]
        await client.delete(f"/v1/api-keys/{new_id}", headers=tenant.headers)
        seen = await deliveries(client, tenant, everything["id"])
        assert [d["type"] for d in seen] == [
            "api_key.revoked", "api_key.rotated", "api_key.updated", "api_key.created",
        ]  # fmt: skip
        assert all(set(d) == DELIVERY_FIELDS and d["state"] == "pending" for d in seen)
        assert [d["type"] for d in await deliveries(client, tenant, revocations["id"])] == [
            "api_key.revoked"
        ]
        assert await deliveries(client, tenant, paused["id"]) == []
        bodies = event_bodies(app)
        revoked = bodies[seen[0]["event_id"]]
        assert set(revoked) == {"id", "type", "created_at", "account_id", "data"}
        assert revoked["type"] == "api_key.revoked" and revoked["account_id"] == tenant.account.id
        assert revoked["data"]["object"]["id"] == new_id
        assert (
            revoked["data"]["object"]["status"] == "revoked"
            and "key" not in revoked["data"]["object"]
        )
        rotation = bodies[seen[1]["event_id"]]["data"]["object"]
        assert (rotation["id"], rotation["replaced_by"]) == (key["id"], new_id)
        # Both endpoints got the same event (one id, one body).
        assert (await deliveries(client, tenant, revocations["id"]))[0]["event_id"] == seen[0][
            "event_id"
        ]

    async def test_a_failed_change_writes_no_event(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        endpoint = await create_endpoint(client, tenant)
        key = await create_key(client, tenant, name="taken")
        clash = await client.post(
            "/v1/api-keys", json={"name": "TAKEN", "permissions": ["read:contacts"]},
            headers=tenant.headers,
        )  # fmt: skip
        assert_error(clash, 409, "duplicate_name")
        other = await create_key(client, tenant)
        rename = await client.patch(
            f"/v1/api-keys/{other['id']}", json={"name": "taken"}, headers=tenant.headers
        )
        assert_error(rename, 409, "duplicate_name")
        seen = await deliveries(client, tenant, endpoint["id"])
        assert [d["type"] for d in seen] == ["api_key.created", "api_key.created"]
        assert {event["data"]["object"]["id"] for event in event_bodies(app).values()} == {
            key["id"], other["id"],
        }  # fmt: skip

    async def test_no_endpoint_no_event_row(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        await create_key(client, tenant)
        assert event_bodies(app) == {}

    async def test_each_create_sees_the_endpoints_as_they_are_then(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        # A create reads the account's endpoints in its own statement (issue
        # 19): every change to them counts from the next create on.
        def created_events() -> set[str]:
            return {
                body["data"]["object"]["id"]
                for body in event_bodies(app).values()
                if body["type"] == "api_key.created"
            }

        await create_key(client, tenant)
        assert created_events() == set()
        endpoint = await create_endpoint(client, tenant)
        first = await create_key(client, tenant)
        assert created_events() == {first["id"]}
        path = f"/v1/webhook-endpoints/{endpoint['id']}"
        await client.patch(path, json={"disabled": True}, headers=tenant.headers)
        await create_key(client, tenant)
        await client.patch(
            path, json={"disabled": False, "events": ["api_key.revoked"]}, headers=tenant.headers
        )
        await create_key(client, tenant)
        await client.patch(path, json={"events": ["api_key.created"]}, headers=tenant.headers)
        second = await create_key(client, tenant)
        assert created_events() == {first["id"], second["id"]}
        assert [d["type"] for d in await deliveries(client, tenant, endpoint["id"])] == [
            "api_key.created", "api_key.created",
        ]  # fmt: skip
        await client.delete(path, headers=tenant.headers)
        await create_key(client, tenant)
        assert created_events() == {first["id"], second["id"]}

    async def test_a_leak_revocation_sends_revoked_and_leaked(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        endpoint = await create_endpoint(client, tenant)
        key = await create_key(client, tenant)
        async with app.services.storage.transaction() as uow:
            await app.services.keys.revoke(uow, None, key["id"], SYSTEM_ORIGIN, reason=LEAKED)
        async with app.services.storage.transaction() as uow:  # again: nothing more
            await app.services.keys.revoke(uow, None, key["id"], SYSTEM_ORIGIN, reason=LEAKED)
        types = [d["type"] for d in await deliveries(client, tenant, endpoint["id"])]
        assert types == ["api_key.leaked", "api_key.revoked", "api_key.created"]

    async def test_deleting_an_endpoint_deletes_its_deliveries(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        endpoint = await create_endpoint(client, tenant)
        await create_key(client, tenant)
        await client.delete(f"/v1/webhook-endpoints/{endpoint['id']}", headers=tenant.headers)
        again = await create_endpoint(client, tenant)
        assert await deliveries(client, tenant, again["id"]) == []


class TestExpiry:
    async def test_seven_days_one_day_and_expired_once_each(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        endpoint = await create_endpoint(
            client, tenant, events=["api_key.expiring", "api_key.expired"]
        )
        expires = int(clock.now) + 10 * DAY
        stamp = _rfc3339(expires)
        long_lived = await create_key(client, tenant, expires_at=stamp)
        short_lived = await create_key(client, tenant, expires_at=_rfc3339(expires - 8 * DAY))
        scan = ExpiryScan(app.services.storage, _outbox(app), clock=clock)
        await scan.run()
        assert await deliveries(client, tenant, endpoint["id"]) == []
        clock.advance(3 * DAY + 60)  # long: 7 d minus a minute left; short: expired
        for _ in range(2):  # a second run (or another instance) adds nothing
            await scan.run()
            await ExpiryScan(app.services.storage, _outbox(app), clock=clock).run()
        notices = _notices(app, await deliveries(client, tenant, endpoint["id"]))
        # The short-lived key was made with 2 days to live: no 7-day notice;
        # its 1-day notice and its expiry passed while nothing ran: both are sent.
        assert sorted(notices) == sorted(
            [
                ("api_key.expiring", long_lived["id"]),
                ("api_key.expiring", short_lived["id"]),
                ("api_key.expired", short_lived["id"]),
            ]
        )
        clock.advance(6 * DAY)
        await scan.run()
        clock.advance(DAY)
        await scan.run()
        await scan.run()
        notices = _notices(app, await deliveries(client, tenant, endpoint["id"]))
        assert notices.count(("api_key.expiring", long_lived["id"])) == 2
        assert notices.count(("api_key.expired", long_lived["id"])) == 1
        assert len(notices) == 5

    async def test_a_revoked_key_gets_no_notice_and_a_moved_expiry_gets_new_ones(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        endpoint = await create_endpoint(client, tenant, events=["api_key.expiring"])
        revoked = await create_key(client, tenant, expires_at=_rfc3339(int(clock.now) + 8 * DAY))
        await client.delete(f"/v1/api-keys/{revoked['id']}", headers=tenant.headers)
        moved = await create_key(client, tenant, expires_at=_rfc3339(int(clock.now) + 8 * DAY))
        scan = ExpiryScan(app.services.storage, _outbox(app), clock=clock)
        clock.advance(DAY + 60)
        await scan.run()
        assert _notices(app, await deliveries(client, tenant, endpoint["id"])) == [
            ("api_key.expiring", moved["id"])
        ]
        await client.patch(
            f"/v1/api-keys/{moved['id']}",
            json={"expires_at": _rfc3339(int(clock.now) + 7 * DAY + 30)},
            headers=tenant.headers,
        )
        clock.advance(60)
        await scan.run()
        assert len(await deliveries(client, tenant, endpoint["id"])) == 2


class TestTrafficEvents:
    async def test_rate_limited_once_per_window(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        endpoint = await create_endpoint(client, tenant, events=["api_key.rate_limited"])
        key = await create_key(
            client, tenant, permissions=["admin:api_keys"],
            rate_limit={"limit": 1, "window_seconds": 60},
        )  # fmt: skip
        headers = {"Authorization": f"Bearer {key['key']}"}
        responses = [await client.get("/v1/api-keys", headers=headers) for _ in "abcd"]
        assert [r.status_code for r in responses] == [200, 429, 429, 429]
        await _write_traffic_events(app)
        await _write_traffic_events(app)
        (sent,) = await deliveries(client, tenant, endpoint["id"])
        assert sent["type"] == "api_key.rate_limited"
        data = event_bodies(app)[sent["event_id"]]["data"]
        reset = int(clock()) + int(responses[1].headers["retry-after"])
        assert data["object"]["id"] == key["id"]
        assert data["rate_limit"] == {"reset_at": _rfc3339(reset)}
        clock.advance(60)
        for _ in "ab":
            await client.get("/v1/api-keys", headers=headers)
        await _write_traffic_events(app)
        assert len(await deliveries(client, tenant, endpoint["id"])) == 2

    async def test_quota_thresholds_once_each(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
    ) -> None:
        endpoint = await create_endpoint(client, tenant, events=["api_key.quota_threshold"])
        key = await create_key(
            client, tenant, permissions=["admin:api_keys"], quota={"limit": 5, "period": "day"}
        )
        headers = {"Authorization": f"Bearer {key['key']}"}
        statuses = []
        for _ in range(7):
            statuses.append((await client.get("/v1/api-keys", headers=headers)).status_code)
            await _write_traffic_events(app)
        assert statuses == [200] * 5 + [429] * 2
        seen = await deliveries(client, tenant, endpoint["id"])
        assert [d["type"] for d in seen] == ["api_key.quota_threshold"] * 2
        bodies = [event_bodies(app)[d["event_id"]]["data"] for d in seen]
        assert {data["object"]["id"] for data in bodies} == {key["id"]}
        day = int(clock()) // DAY * DAY
        assert [data["quota"] for data in bodies] == [
            {"threshold_percent": 100, "period_start": _rfc3339(day)},
            {"threshold_percent": 80, "period_start": _rfc3339(day)},
        ]


def _rfc3339(seconds: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _outbox(app: Pipeline) -> Outbox:
    outbox = app.services.keys.events
    assert isinstance(outbox, Outbox)
    return outbox


async def _write_traffic_events(app: Pipeline) -> None:
    listener = app.services.ratelimiter.listener
    assert isinstance(listener, LimitEvents)
    await listener.write(app.services.storage, _outbox(app))


def _notices(app: Pipeline, seen: list[dict[str, Any]]) -> list[tuple[str, str]]:
    bodies = event_bodies(app)
    return [(d["type"], bodies[d["event_id"]]["data"]["object"]["id"]) for d in seen]
