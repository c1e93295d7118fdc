"""Exactness under concurrency, and no secret at rest (contract §2, §4)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import httpx
import pytest

from keystile.api.pipeline import Pipeline
from tests.support import LEDGER, Tenant, stored_bytes

pytestmark = pytest.mark.anyio


async def test_50_concurrent_creates_of_one_name_give_one_201_and_49_409(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = {"name": "contended", "permissions": ["read:contacts"]}
    responses = await asyncio.gather(
        *(client.post("/v1/api-keys", json=body, headers=tenant.headers) for _ in range(50))
    )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 409: 49}
    assert all(
        r.json()["error"]["code"] == "duplicate_name" for r in responses if r.status_code == 409
    )
    listed = (await client.get("/v1/api-keys?limit=100", headers=tenant.headers)).json()
    assert [k["name"] for k in listed["data"]].count("contended") == 1


async def test_no_issued_secret_is_stored_or_logged(
    app: Pipeline, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """Drive a representative run of requests, then read the SQLite files
    (database and write-ahead log) and every log line."""
    secrets = [tenant.secret]
    for n in range(20):
        body = {"name": f"k{n}", "permissions": ["read:contacts"], "description": f"job {n}"}
        response = await client.post("/v1/api-keys", json=body, headers=tenant.headers)
        secrets.append(response.json()["data"]["key"])
    for secret in secrets:
        auth = {"Authorization": f"Bearer {secret}"}
        await client.get("/v1/api-keys", headers=auth)
        await client.get(f"/v1/api-keys/{secret}", headers=auth)  # a key pasted into a path
        await client.get(f"/v1/api-keys?key={secret}")  # and into a query string
    listed = (await client.get("/v1/api-keys?limit=100", headers=tenant.headers)).json()
    for key in listed["data"][:5]:
        await client.delete(f"/v1/api-keys/{key['id']}", headers=tenant.headers)
    await app.services.usage.flush()

    blobs = stored_bytes(app)
    assert any(b"Acme" in blob for blob in blobs.values())  # the scan does see the data
    for secret in secrets:
        for name, blob in blobs.items():
            assert secret.encode() not in blob, f"secret found in {name}"
            assert secret[9:25].encode() not in blob, f"part of a secret found in {name}"
        assert not any(secret in line for line in LEDGER.log_lines)
    assert json.dumps(listed).count("wbk_live_") == 0
