"""Quota counts outlive a restart (issue #14): of keystile, on both
databases; of Redis, losing at most the last usage flush interval."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from keystile.idempotency.crypto import generate_key
from tests.conftest import require_service
from tests.redis_support import redis_server
from tests.support import LEDGER, cli_admin, free_port, keystile_env, run_cli, serving


def metered_key(env: dict[str, str], account: str) -> tuple[str, str]:
    made = run_cli(
        "keys", "create", "--account", account, "--name", "metered",
        "--permission", "read:contacts", "--json", env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["data"]
    LEDGER.remember(key["key"])
    return key["id"], key["key"]


def set_quota(url: str, admin: str, key_id: str, limit: int) -> None:
    response = httpx.patch(
        f"{url}/v1/api-keys/{key_id}",
        json={"quota": {"limit": limit, "period": "month"}},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert response.status_code == 200, response.text


def use(url: str, secret: str, times: int) -> list[int]:
    """The statuses of ``times`` requests (admitted ones end in 403: no admin scope)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"}) as http:
        return [http.get("/v1/api-keys").status_code for _ in range(times)]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_counts_survive_a_restart_of_keystile(
    tmp_path: Path, request: pytest.FixtureRequest, database: str
) -> None:
    extra: dict[str, str] = {"KEYSTILE_USAGE_FLUSH_SECONDS": "3600"}  # only the shutdown flush
    if database == "postgresql":
        extra |= {
            "KEYSTILE_DATABASE_URL": request.getfixturevalue("postgres_database"),
            "KEYSTILE_SECRET_KEY": generate_key(),
        }
    env = keystile_env(tmp_path / "data", **extra)
    account, admin = cli_admin(env)
    key_id, secret = metered_key(env, account)
    with serving(env, log=tmp_path / "first.log") as url:
        set_quota(url, admin, key_id, 5)
        assert use(url, secret, 3) == [403, 403, 403]
    with serving(env, log=tmp_path / "second.log") as url:
        assert use(url, secret, 3) == [403, 403, 429]


def test_a_redis_restart_loses_at_most_the_flush_interval(tmp_path: Path) -> None:
    require_service("Redis", "127.0.0.1", 6379)  # the redis-server binary comes with the service
    port = free_port()
    flush = 1.0
    env = keystile_env(
        tmp_path / "data",
        KEYSTILE_REDIS_URL=f"redis://127.0.0.1:{port}/0",
        KEYSTILE_USAGE_FLUSH_SECONDS=str(flush),
    )
    account, admin = cli_admin(env, "admin:api_keys", "read:contacts", "verify:keys")
    key_id, secret = metered_key(env, account)
    with ExitStack() as stack:
        first_redis = ExitStack()
        first_redis.enter_context(redis_server(port, tmp_path))
        url = stack.enter_context(serving(env, log=tmp_path / "server.log"))
        set_quota(url, admin, key_id, 1000)
        assert set(use(url, secret, 40)) == {403}
        time.sleep(flush * 2.5)  # flushed: these 40 are in the usage records
        assert set(use(url, secret, 10)) == {403}  # perhaps not flushed yet
        before = used(url, admin, secret)
        assert before == 50
        first_redis.close()  # Redis stops and comes back empty (no persistence)
        stack.enter_context(redis_server(port, tmp_path))
        after = used(url, admin, secret)
    lost = before - after
    # At most what was counted within the last flush interval (the last 10).
    assert 0 <= lost <= 10, (before, after)


def used(url: str, admin: str, secret: str) -> int:
    """The quota used, read (not used) with a verify of ``consume: false``;
    retried while keystile finds its Redis connections gone (503)."""
    deadline = time.monotonic() + 90
    while True:
        response = httpx.post(
            f"{url}/v1/keys/verify",
            json={"key": secret, "consume": False},
            headers={"Authorization": f"Bearer {admin}"},
        )
        if response.status_code == 200:
            quota = response.json()["data"]["quota"]
            return int(quota["limit"]) - int(quota["remaining"])
        assert response.status_code == 503, response.text
        assert time.monotonic() < deadline, "Redis did not come back"
        time.sleep(0.2)
