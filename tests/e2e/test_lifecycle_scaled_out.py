"""Key and account changes reach every instance (issue #13): two
``keystile serve`` processes of two workers each, on one PostgreSQL and one
Redis. A change made through one instance is in force on the other from its
next request on (the revocation feed, not a cache TTL)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from keystile.idempotency.crypto import generate_key
from tests.support import LEDGER, cli_admin, keystile_env, run_cli, serving

Instances = tuple[str, str, dict[str, str], dict[str, str], str]


@pytest.fixture
def instances(
    tmp_path: Path, postgres_database: str, redis_url: str, redis_prefix: str
) -> Iterator[Instances]:
    env = keystile_env(
        tmp_path / "unused",
        KEYSTILE_DATABASE_URL=postgres_database,
        KEYSTILE_REDIS_URL=redis_url,
        KEYSTILE_REDIS_PREFIX=redis_prefix,
        KEYSTILE_SECRET_KEY=generate_key(),
        KEYSTILE_TIER_STANDARD="100000/10 seconds",
        # Each key's cache entry would otherwise outlive a lost message by 10 s:
        # the test must see the feed, not the TTL, so make the TTL long.
        KEYSTILE_KEY_CACHE_TTL_SECONDS="300",
    )
    account, admin = cli_admin(env, "admin:api_keys", "read:contacts", "write:contacts")
    made = run_cli("operator-keys", "create", "--name", "ops", "--json", env=env)
    assert made.returncode == 0, made.stderr
    operator = json.loads(made.stdout)["data"]["key"]
    LEDGER.remember(operator)
    with ExitStack() as stack:
        a = stack.enter_context(serving(env, "--workers", "2", log=tmp_path / "a.log"))
        b = stack.enter_context(serving(env, "--workers", "2", log=tmp_path / "b.log"))
        yield a, b, bearer(admin), bearer(operator), account
    for name in ("a.log", "b.log"):
        log = (tmp_path / name).read_text()
        assert '"status": 500' not in log and "Traceback" not in log, log[-2000:]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def new_key(url: str, admin: dict[str, str], **body: object) -> dict[str, str]:
    response = httpx.post(
        f"{url}/v1/api-keys",
        json={"name": f"k{time.monotonic_ns()}", "permissions": ["read:contacts"], **body},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    data: dict[str, str] = response.json()["data"]
    LEDGER.remember(data["key"])
    return data


def warm(url: str, secret: str, expected: int) -> None:
    """Fresh connections reach both of the instance's workers, so both cache the key."""
    for _ in range(20):
        assert httpx.get(f"{url}/v1/api-keys/x", headers=bearer(secret)).status_code == expected


def in_force_on(
    url: str, secret: str, before: int, after: Callable[[httpx.Response], bool]
) -> None:
    """After a change made elsewhere, every request to ``url`` with ``secret``
    soon gets the new answer, and never the old one again once it has."""
    changed_at = time.monotonic()
    seen_new = 0
    while seen_new < 20:
        response = httpx.get(f"{url}/v1/api-keys/x", headers=bearer(secret))
        if after(response):
            seen_new += 1
            continue
        assert seen_new == 0, "the old answer came back after the new one"
        assert response.status_code == before, response.text
        assert time.monotonic() - changed_at < 1.0, "the change took more than a second"


def test_a_permission_change_on_b_is_in_force_on_a(instances: Instances) -> None:
    a, b, admin, _, _ = instances
    key = new_key(a, admin, permissions=["read:contacts", "admin:api_keys"])
    warm(a, key["key"], 404)  # admitted: no such key
    patched = httpx.patch(
        f"{b}/v1/api-keys/{key['id']}", json={"permissions": ["read:contacts"]}, headers=admin
    )
    assert patched.status_code == 200
    in_force_on(a, key["key"], 404, lambda r: r.status_code == 403)


def test_disabling_on_b_refuses_on_a_and_enabling_restores(instances: Instances) -> None:
    a, b, admin, _, _ = instances
    key = new_key(a, admin)
    warm(a, key["key"], 403)
    httpx.patch(f"{b}/v1/api-keys/{key['id']}", json={"disabled": True}, headers=admin)
    in_force_on(a, key["key"], 403, lambda r: r.status_code == 401)
    httpx.patch(f"{b}/v1/api-keys/{key['id']}", json={"disabled": False}, headers=admin)
    in_force_on(a, key["key"], 401, lambda r: r.status_code == 403)


def test_suspending_the_account_on_b_refuses_its_keys_on_a(instances: Instances) -> None:
    a, b, admin, operator, account = instances
    key = new_key(a, admin)
    warm(a, key["key"], 403)
    suspended = httpx.patch(
        f"{b}/v1/accounts/{account}", json={"status": "suspended"}, headers=operator
    )
    assert suspended.status_code == 200, suspended.text

    def refused(response: httpx.Response) -> bool:
        return response.status_code == 403 and (
            response.json()["error"]["code"] == "account_suspended"
        )

    in_force_on(a, key["key"], 403, refused)
    httpx.patch(f"{b}/v1/accounts/{account}", json={"status": "active"}, headers=operator)
    in_force_on(a, key["key"], 403, lambda r: not refused(r))


def test_a_rotation_without_grace_on_b_retires_the_old_key_on_a(instances: Instances) -> None:
    a, b, admin, _, _ = instances
    key = new_key(a, admin)
    warm(a, key["key"], 403)
    rotated = httpx.post(f"{b}/v1/api-keys/{key['id']}/rotate", headers=admin)
    assert rotated.status_code == 201
    LEDGER.remember(rotated.json()["data"]["key"])
    in_force_on(a, key["key"], 403, lambda r: r.status_code == 401)
    warm(a, rotated.json()["data"]["key"], 403)
