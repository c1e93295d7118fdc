"""Quotas are exact across processes (issue #14): 200 concurrent requests
against a quota of 50 admit exactly 50, with two workers of one
``keystile serve`` (no Redis: counted in the database) and with two
instances over Redis."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from keystile.idempotency.crypto import generate_key
from tests.support import LEDGER, cli_admin, keystile_env, run_cli, serving


def quota_key(env: dict[str, str], account: str) -> str:
    made = run_cli(
        "keys", "create", "--account", account, "--name", "metered",
        "--permission", "read:contacts", "--json", env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["data"]
    LEDGER.remember(key["key"])
    return str(key["key"])


async def burst(urls: list[str], admin: str, secret: str) -> Counter[int]:
    async with httpx.AsyncClient(timeout=60) as setup:
        me = await setup.get(f"{urls[0]}/v1/api-keys?name=metered", headers=bearer(admin))
        key_id = me.json()["data"][0]["id"]
        patched = await setup.patch(
            f"{urls[0]}/v1/api-keys/{key_id}",
            json={"quota": {"limit": 50, "period": "month"}},
            headers=bearer(admin),
        )
        assert patched.status_code == 200, patched.text

    async def drive(url: str) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
            return await asyncio.gather(
                *(
                    http.get("/v1/api-keys/none", headers=bearer(secret))
                    for _ in range(200 // len(urls))
                )
            )

    batches = await asyncio.gather(*(drive(url) for url in urls))
    return Counter(r.status_code for batch in batches for r in batch)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_two_workers_without_redis_admit_exactly_the_quota(tmp_path: Path) -> None:
    env = keystile_env(tmp_path / "data", KEYSTILE_TIER_STANDARD="100000/10 seconds")
    account, admin = cli_admin(env)
    secret = quota_key(env, account)
    with serving(env, "--workers", "2", log=tmp_path / "server.log") as url:
        statuses = asyncio.run(burst([url], admin, secret))
    # Admitted requests end in 403 (the key lacks admin:api_keys); the rest 429.
    assert statuses == {403: 50, 429: 150}


@pytest.fixture
def instances(
    tmp_path: Path, postgres_database: str, redis_url: str, redis_prefix: str
) -> Iterator[tuple[list[str], str, str]]:
    env = keystile_env(
        tmp_path / "unused",
        KEYSTILE_DATABASE_URL=postgres_database,
        KEYSTILE_REDIS_URL=redis_url,
        KEYSTILE_REDIS_PREFIX=redis_prefix,
        KEYSTILE_SECRET_KEY=generate_key(),
        KEYSTILE_TIER_STANDARD="100000/10 seconds",
    )
    account, admin = cli_admin(env)
    secret = quota_key(env, account)
    with ExitStack() as stack:
        urls: list[str] = [
            stack.enter_context(serving(env, "--workers", "2", log=tmp_path / f"{n}.log"))
            for n in ("a", "b")
        ]
        yield urls, admin, secret


def test_two_instances_over_redis_admit_exactly_the_quota(
    instances: tuple[list[str], str, str],
) -> None:
    urls, admin, secret = instances
    assert asyncio.run(burst(urls, admin, secret)) == {403: 50, 429: 150}
