"""require_key against a real keystile, through the example app of
docs/client-fastapi.md."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from client_support import AsyncRecording, Keystile, load_example, start_keystile
from keystile_client import AsyncClient
from keystile_client.verifier import AsyncVerifier

fastapi_app = load_example("fastapi_app")
pytestmark = pytest.mark.anyio


async def app_client(url: str, key: str, recording: AsyncRecording) -> httpx.AsyncClient:
    client = AsyncClient(key, base_url=url, transport=recording, max_retries=0, timeout=2)
    app = fastapi_app.create_app(AsyncVerifier(client=client, cache_ttl=1))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


@pytest.fixture
async def recording() -> AsyncIterator[AsyncRecording]:
    transport = AsyncRecording()
    yield transport
    await transport.aclose()


async def test_require_key_per_route(keystile: Keystile, recording: AsyncRecording) -> None:
    reader = keystile.new_key("read:contacts", rate_limit_tier="standard")
    async with await app_client(keystile.url, keystile.admin_key, recording) as http:
        headers = {"Authorization": f"Bearer {reader.key}"}
        ok = await http.get("/contacts", headers=headers)
        assert ok.status_code == 200
        assert ok.json()["key_id"] == reader.id
        assert "x-ratelimit-remaining" in ok.headers
        refused = await http.post("/contacts", headers=headers)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "insufficient_permissions"
        missing = await http.get("/contacts")
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "invalid_key"
        assert (await http.get("/healthz")).status_code == 200
        answers = await asyncio.gather(
            *(http.get("/contacts", headers=headers) for _ in range(100))
        )
        assert {a.status_code for a in answers} == {200}
    # one verify per (key, permission): read (cached for the 100), write
    assert recording.verifications == 2


async def test_fails_closed_with_keystile_stopped(
    tmp_path: Path, recording: AsyncRecording
) -> None:
    with start_keystile(tmp_path / "k") as other:
        caller = other.new_key("read:contacts")
        url, key = other.url, other.admin_key
    async with await app_client(url, key, recording) as http:
        refused = await http.get("/contacts", headers={"Authorization": f"Bearer {caller.key}"})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "service_unavailable"
