"""Leak reports (contract §14, issue #15 item 5): ``POST
/v1/secret-scanning/reports`` over HTTP, on both databases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from keystile.api.app import create_app
from keystile.api.pipeline import Pipeline
from keystile.keys import tokens
from keystile.settings import Settings
from tests.api.test_webhooks import create_endpoint, create_key, deliveries, event_bodies
from tests.conftest import settings_for
from tests.partner import REPORTS, Partner
from tests.support import LEDGER, FakeClock, Tenant, assert_error, assert_own_headers

pytestmark = pytest.mark.anyio


@pytest.fixture
def partner() -> Partner:
    return Partner()


@pytest.fixture
def settings(database_url: str, data_dir: Path, tmp_path: Path, partner: Partner) -> Settings:
    return settings_for(
        database_url,
        data_dir,
        secret_scanning_keys=partner.write_keys(tmp_path / "github-keys.json"),
        webhook_allow_http=True,
        webhook_allow_private=True,
        webhook_poll_seconds=60,
        webhook_scan_seconds=3600,
    )


async def report(
    client: httpx.AsyncClient, partner: Partner, *secrets: str
) -> list[dict[str, Any]]:
    for secret in secrets:
        LEDGER.remember(secret)
    body, headers = partner.report(*secrets)
    response = await client.post(REPORTS, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert_own_headers(response)
    answer: list[dict[str, Any]] = response.json()
    return answer


def labels(answer: list[dict[str, Any]]) -> list[str]:
    return [item["label"] for item in answer]


async def key_status(client: httpx.AsyncClient, tenant: Tenant, key_id: str) -> str:
    response = await client.get(f"/v1/api-keys/{key_id}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["status"])


async def revocation_events(
    client: httpx.AsyncClient, tenant: Tenant, key_id: str
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/v1/audit-events?action=api_key.revoked&target_id={key_id}", headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


class TestTruePositive:
    async def test_a_live_key_is_revoked_at_once_and_answered_true_positive(
        self, client: httpx.AsyncClient, tenant: Tenant, partner: Partner
    ) -> None:
        key = await create_key(client, tenant)
        used = {"Authorization": f"Bearer {key['key']}"}
        assert (await client.get("/v1/api-keys", headers=used)).status_code == 403  # cached, valid
        answer = await report(client, partner, key["key"])
        assert answer == [
            {"token_raw": key["key"], "token_type": "keystile_api_key", "label": "true_positive"}
        ]
        assert_error(await client.get("/v1/api-keys", headers=used), 401, "invalid_key")
        assert await key_status(client, tenant, key["id"]) == "revoked"

    async def test_the_audit_event_names_the_system_and_the_reason(
        self, client: httpx.AsyncClient, tenant: Tenant, partner: Partner
    ) -> None:
        key = await create_key(client, tenant)
        body, headers = partner.report(key["key"])
        response = await client.post(
            REPORTS, content=body, headers={**headers, "X-Request-ID": "github-report-1"}
        )
        assert response.status_code == 200
        [event] = await revocation_events(client, tenant, key["id"])
        assert event["actor"] == {"type": "system", "id": None}
        assert event["changes"]["revoked_reason"] == [None, "leaked"]
        assert event["account_id"] == tenant.account.id
        assert event["request_id"] == "github-report-1"
        assert event["ip"] == "127.0.0.1"
        assert key["key"] not in json.dumps(event)

    async def test_api_key_revoked_and_api_key_leaked_are_sent(
        self, app: Pipeline, client: httpx.AsyncClient, tenant: Tenant, partner: Partner
    ) -> None:
        endpoint = await create_endpoint(client, tenant)
        key = await create_key(client, tenant)
        await report(client, partner, key["key"])
        types = [d["type"] for d in await deliveries(client, tenant, endpoint["id"])]
        assert types == ["api_key.leaked", "api_key.revoked", "api_key.created"]
        leaked = [b for b in event_bodies(app).values() if b["type"] == "api_key.leaked"]
        assert [b["data"]["object"]["id"] for b in leaked] == [key["id"]]
        assert leaked[0]["data"]["object"]["status"] == "revoked"

    async def test_a_token_reported_twice_is_revoked_once_and_answered_twice(
        self, client: httpx.AsyncClient, tenant: Tenant, partner: Partner
    ) -> None:
        key = await create_key(client, tenant)
        answer = await report(client, partner, key["key"], key["key"])
        assert labels(answer) == ["true_positive", "true_positive"]
        assert len(await revocation_events(client, tenant, key["id"])) == 1

    async def test_a_disabled_key_is_revoked_too(
        self, client: httpx.AsyncClient, tenant: Tenant, partner: Partner
    ) -> None:
        key = await create_key(client, tenant)
        patched = await client.patch(
            f"/v1/api-keys/{key['id']}", json={"disabled": True}, headers=tenant.headers
        )
        assert patched.status_code == 200
        assert labels(await report(client, partner, key["key"])) == ["true_positive"]
        assert await key_status(client, tenant, key["id"]) == "revoked"


class TestFalsePositive:
    async def test_everything_but_a_live_key_in_one_report(
        self, client: httpx.AsyncClient, tenant: Tenant, partner: Partner, clock: FakeClock
    ) -> None:
        live = await create_key(client, tenant)
        revoked = await create_key(client, tenant)
        await client.delete(f"/v1/api-keys/{revoked['id']}", headers=tenant.headers)
        expiring = await create_key(client, tenant, expires_at="2030-01-01T00:00:00Z")
        clock.now = 1_900_000_000.0  # 2030-03: past the expiry
        unknown = tokens.generate("wbk")
        look_alike = live["key"][:-1] + ("A" if live["key"][-1] != "A" else "B")
        answer = await report(
            client, partner, revoked["key"], expiring["key"], unknown, look_alike, "hunter2",
            live["key"],
        )  # fmt: skip
        assert labels(answer) == ["false_positive"] * 5 + ["true_positive"]
        assert [a["token_raw"] for a in answer][:4] == [
            revoked["key"], expiring["key"], unknown, look_alike,
        ]  # fmt: skip
        assert len(await revocation_events(client, tenant, revoked["id"])) == 1  # the DELETE's
        assert await revocation_events(client, tenant, expiring["id"]) == []

    async def test_a_replayed_report_revokes_nothing_more(
        self, client: httpx.AsyncClient, tenant: Tenant, partner: Partner
    ) -> None:
        key = await create_key(client, tenant)
        assert labels(await report(client, partner, key["key"])) == ["true_positive"]
        assert labels(await report(client, partner, key["key"])) == ["false_positive"]
        assert len(await revocation_events(client, tenant, key["id"])) == 1

    async def test_an_empty_report_is_an_empty_answer(
        self, client: httpx.AsyncClient, partner: Partner
    ) -> None:
        assert await report(client, partner) == []


def signed(partner: Partner, document: Any) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(document).encode()
    return body, partner.headers(body)


class TestRefused:
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Github-Public-Key-Identifier": "unknown", "Github-Public-Key-Signature": "AAAA"},
            {"Github-Public-Key-Signature": "MEUCIQ=="},
        ],
    )
    async def test_without_a_valid_signature_401_and_nothing_revoked(
        self, client: httpx.AsyncClient, tenant: Tenant, headers: dict[str, str]
    ) -> None:
        key = await create_key(client, tenant)
        body = json.dumps([{"token": key["key"], "type": "t"}]).encode()
        response = await client.post(
            REPORTS, content=body, headers={"Content-Type": "application/json", **headers}
        )
        assert_error(response, 401, "invalid_signature")
        assert await key_status(client, tenant, key["id"]) == "active"

    async def test_a_signature_of_another_body_or_by_another_key_is_401(
        self, client: httpx.AsyncClient, tenant: Tenant, partner: Partner
    ) -> None:
        key = await create_key(client, tenant)
        body, headers = partner.report(key["key"])
        tampered = body.replace(b"content", b"commit!")
        assert_error(await client.post(REPORTS, content=tampered, headers=headers), 401,
                     "invalid_signature")  # fmt: skip
        impostor = Partner(identifier=partner.identifier)
        _, forged = impostor.report(key["key"])
        assert_error(await client.post(REPORTS, content=body, headers=forged), 401,
                     "invalid_signature")  # fmt: skip
        twice = [*headers.items(), ("Github-Public-Key-Signature", headers[
            "Github-Public-Key-Signature"])]  # fmt: skip
        assert_error(await client.post(REPORTS, content=body, headers=twice), 401,
                     "invalid_signature")  # fmt: skip
        assert await key_status(client, tenant, key["id"]) == "active"

    async def test_a_bearer_key_is_no_substitute_for_a_signature(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        body = json.dumps([{"token": tenant.secret, "type": "t"}]).encode()
        headers = {**tenant.headers, "Content-Type": "application/json"}
        assert_error(await client.post(REPORTS, content=body, headers=headers), 401,
                     "invalid_signature")  # fmt: skip

    async def test_over_a_thousand_tokens_is_400_and_nothing_revoked(
        self, client: httpx.AsyncClient, tenant: Tenant, partner: Partner
    ) -> None:
        key = await create_key(client, tenant)
        body, headers = partner.report(key["key"], *["wbk_live_x"] * 1000)
        error = assert_error(await client.post(REPORTS, content=body, headers=headers), 400,
                             "validation_error")  # fmt: skip
        assert error["details"] == [{"field": "body", "message": "must have at most 1000 items"}]
        assert await key_status(client, tenant, key["id"]) == "active"
        body, headers = partner.report(key["key"], *["wbk_live_x"] * 999)
        response = await client.post(REPORTS, content=body, headers=headers)
        assert response.status_code == 200 and len(response.json()) == 1000

    @pytest.mark.parametrize(
        ("document", "fields"),
        [
            ({"token": "x", "type": "t"}, ["body"]),
            ([{"type": "t"}], ["[0].token"]),
            ([{"token": "x", "type": "t"}, {"token": 1, "type": "t", "url": 2}], ["[1].token", "[1].url"]),
            (["x"], ["[0]"]),
        ],
    )  # fmt: skip
    async def test_a_malformed_report_is_400_with_the_fields(
        self, client: httpx.AsyncClient, partner: Partner, document: Any, fields: list[str]
    ) -> None:
        body, headers = signed(partner, document)
        error = assert_error(await client.post(REPORTS, content=body, headers=headers), 400,
                             "validation_error")  # fmt: skip
        assert [d["field"] for d in error["details"]] == fields

    async def test_malformed_json_and_media_type_come_after_the_signature(
        self, client: httpx.AsyncClient, partner: Partner
    ) -> None:
        body = b'[{"token": '
        response = await client.post(REPORTS, content=body, headers=partner.headers(body))
        assert_error(response, 400, "validation_error")
        assert_error(await client.post(REPORTS, content=body), 401, "invalid_signature")
        body, headers = partner.report("x")
        response = await client.post(
            REPORTS, content=body, headers={**headers, "Content-Type": "text/plain"}
        )
        assert_error(response, 415, "unsupported_media_type")

    async def test_a_body_over_one_mib_is_413(
        self, client: httpx.AsyncClient, partner: Partner
    ) -> None:
        body, headers = partner.report("x" * (1024 * 1024))
        error = assert_error(await client.post(REPORTS, content=body, headers=headers), 413,
                             "payload_too_large")  # fmt: skip
        assert "1048576" in error["message"]
        # Under the limit, a body larger than other endpoints' 64 KiB is read.
        body, headers = partner.report(*["wbk_live_x" * 10] * 900)
        assert len(body) > 64 * 1024
        assert (await client.post(REPORTS, content=body, headers=headers)).status_code == 200


async def test_without_keys_configured_every_report_is_401(
    database_url: str, data_dir: Path, clock: FakeClock, partner: Partner
) -> None:
    app = create_app(settings_for(database_url, data_dir), clock=clock)
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://keystile.test") as http:
            body, headers = partner.report("wbk_live_x")
            assert_error(await http.post(REPORTS, content=body, headers=headers), 401,
                         "invalid_signature")  # fmt: skip
