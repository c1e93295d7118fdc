"""KeystileMiddleware (and AsyncVerifier under it) against a real keystile:
the example app of docs/client-asgi.md, in process, verifying for real."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from client_support import AsyncRecording, Keystile, load_example, start_keystile
from keystile_client import AsyncClient, RateLimitRule
from keystile_client.verifier import AsyncVerifier

asgi_app = load_example("asgi_app")
pytestmark = pytest.mark.anyio

Build = Callable[..., tuple[httpx.AsyncClient, AsyncRecording, AsyncVerifier]]


@pytest.fixture
async def build(keystile: Keystile) -> AsyncIterator[Build]:
    opened: list[tuple[httpx.AsyncClient, AsyncVerifier]] = []

    def make(url: str | None = None, key: str | None = None, **options: Any) -> Any:
        recording = AsyncRecording()
        client = AsyncClient(
            key or keystile.admin_key, base_url=url or keystile.url, transport=recording,
            max_retries=0, timeout=2,
        )  # fmt: skip
        verifier = AsyncVerifier(client=client, **options)
        app = asgi_app.create_app(verifier)
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")
        opened.append((http, verifier))
        return http, recording, verifier

    yield make
    for http, verifier in opened:
        await http.aclose()
        await verifier.aclose()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def assert_refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"]
    assert response.headers["content-type"] == "application/json"
    return dict(error)


async def test_a_valid_key_passes_with_its_identity_and_limits(
    keystile: Keystile, build: Build
) -> None:
    caller = keystile.new_key("read:contacts", rate_limit_tier="standard")
    http, _, _ = build()
    response = await http.get("/contacts", headers=bearer(caller.key))
    assert response.status_code == 200
    assert response.json()["key_id"] == caller.id
    assert int(response.headers["x-ratelimit-limit"]) >= int(
        response.headers["x-ratelimit-remaining"]
    )
    assert int(response.headers["x-ratelimit-reset"]) > time.time() - 1
    assert (await http.get("/healthz")).status_code == 200  # exempt


async def test_refusals_carry_the_contract_body(keystile: Keystile, build: Build) -> None:
    http, recording, _ = build()
    missing = await http.get("/contacts", headers={"X-Request-ID": "mine-1"})
    assert assert_refused(missing, 401, "invalid_key")["request_id"] == "mine-1"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert recording.verifications == 0  # no key, no call
    unknown = await http.get("/contacts", headers=bearer("wbk_live_" + "A" * 32))
    assert_refused(unknown, 401, "invalid_key")
    writer = keystile.new_key("write:contacts")
    assert_refused(
        await http.get("/contacts", headers=bearer(writer.key)), 403, "insufficient_permissions"
    )


async def test_a_rate_limited_key_gets_429_with_retry_after(
    keystile: Keystile, build: Build
) -> None:
    caller = keystile.new_key("read:contacts", rate_limit=RateLimitRule(limit=1, window_seconds=30))
    http, _, _ = build(cache_ttl=0)  # every request verified (and metered)
    assert (await http.get("/contacts", headers=bearer(caller.key))).status_code == 200
    refused = await http.get("/contacts", headers=bearer(caller.key))
    assert_refused(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    assert refused.headers["x-ratelimit-remaining"] == "0"


async def test_single_flight_100_concurrent_requests_make_one_verify_call(
    keystile: Keystile, build: Build
) -> None:
    caller = keystile.new_key("read:contacts")
    http, recording, _ = build()
    answers = await asyncio.gather(
        *(http.get("/contacts", headers=bearer(caller.key)) for _ in range(100))
    )
    assert [a.status_code for a in answers] == [200] * 100
    assert recording.verifications == 1


async def test_the_cache_is_bounded_least_recently_used_first(
    keystile: Keystile, build: Build
) -> None:
    a, b, c = (keystile.new_key("read:contacts") for _ in range(3))
    http, recording, verifier = build(cache_size=2, cache_ttl=60)
    for key in (a, b, a, c):  # c evicts b, the least recently used
        assert (await http.get("/contacts", headers=bearer(key.key))).status_code == 200
    assert recording.verifications == 3
    assert len(verifier.cache) == 2
    await http.get("/contacts", headers=bearer(a.key))
    assert recording.verifications == 3  # a stayed
    await http.get("/contacts", headers=bearer(b.key))
    assert recording.verifications == 4  # b was evicted


async def test_a_revocation_shows_after_the_ttl(keystile: Keystile, build: Build) -> None:
    caller = keystile.new_key("read:contacts")
    http, _, _ = build(cache_ttl=1.5)
    assert (await http.get("/contacts", headers=bearer(caller.key))).status_code == 200
    with keystile.client() as admin:
        admin.api_keys.revoke(caller.id)
    revoked_at = time.monotonic()
    assert (await http.get("/contacts", headers=bearer(caller.key))).status_code == 200  # cached
    while (await http.get("/contacts", headers=bearer(caller.key))).status_code == 200:
        assert time.monotonic() - revoked_at < 1.6  # the TTL, and a little
        await asyncio.sleep(0.05)
    assert 1.0 <= time.monotonic() - revoked_at <= 1.8


async def test_fails_closed_with_keystile_stopped(tmp_path: Path, build: Build) -> None:
    with start_keystile(tmp_path / "k") as other:
        cached = other.new_key("read:contacts")
        uncached = other.new_key("read:contacts")
        http, _, _ = build(url=other.url, key=other.admin_key, cache_ttl=1)
        assert (await http.get("/contacts", headers=bearer(cached.key))).status_code == 200
    # keystile is stopped now
    refused = await http.get("/contacts", headers=bearer(uncached.key))
    assert_refused(refused, 503, "service_unavailable")
    assert refused.headers["retry-after"] == "1"
    await asyncio.sleep(1.05)
    assert_refused(
        await http.get("/contacts", headers=bearer(cached.key)), 503, "service_unavailable"
    )
