"""``keystile serve`` as users run it: the README quickstart, several workers."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support import LEDGER, cli_admin, free_port, keystile_env, serving

README = Path(__file__).parents[2] / "README.md"


def shell_blocks(markdown: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", markdown, flags=re.S)


def test_the_readme_quickstart_works_as_printed(tmp_path: Path) -> None:
    """Runs the README's CLI and curl commands, with only the port changed."""
    blocks = shell_blocks(README.read_text())
    setup = next(b for b in blocks if "accounts create" in b)
    vendor_curl = next(b for b in blocks if "curl -X POST" in b)
    port = free_port()
    env = keystile_env(tmp_path / "data")
    repo = README.parent
    with serving(env, port=port, log=tmp_path / "server.log"):
        script = (
            setup
            + 'echo "$KEY" > key.txt\n'
            + vendor_curl.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        )
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", f"cd {repo} && {script}".replace("key.txt", str(tmp_path / "key.txt"))],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        LEDGER.remember((tmp_path / "key.txt").read_text().strip())
        (tmp_path / "key.txt").unlink()
        created = json.loads(result.stdout)
        LEDGER.remember(created["data"]["key"])
        assert created["data"]["name"] == "Ingestion worker"
        assert created["data"]["prefix"] == "wbk_live"
        assert created["data"]["permissions"] == ["read:contacts", "write:contacts"]


@pytest.fixture
def two_worker_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    # The revocation test sends 40 refused requests from one address: keep the
    # failed-authentication limit out of its way (each worker counts alone).
    env = keystile_env(tmp_path / "data", KEYSTILE_AUTH_FAILURE_LIMIT="100000/minute")
    _, admin = cli_admin(env)
    with serving(env, "--workers", "2", log=tmp_path / "server.log") as url:
        yield url, {"Authorization": f"Bearer {admin}"}


def test_two_workers_on_sqlite_one_name_one_winner(two_worker_server) -> None:  # type: ignore[no-untyped-def]
    url, auth = two_worker_server

    async def race() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=url, headers=auth, limits=limits, timeout=30) as http:
            body = {"name": "contended", "permissions": ["read:contacts"]}
            return await asyncio.gather(*(http.post("/v1/api-keys", json=body) for _ in range(50)))

    responses = asyncio.run(race())
    for response in responses:
        if response.status_code == 201:
            LEDGER.remember(response.json()["data"]["key"])
    assert Counter(r.status_code for r in responses) == {201: 1, 409: 49}


def test_two_workers_on_sqlite_revocation_bites_in_every_worker(two_worker_server) -> None:  # type: ignore[no-untyped-def]
    url, auth = two_worker_server
    with httpx.Client(base_url=url, timeout=30) as http:
        victim = http.post(
            "/v1/api-keys", json={"name": "v", "permissions": ["read:contacts"]}, headers=auth
        ).json()["data"]
        LEDGER.remember(victim["key"])
        victim_auth = {"Authorization": f"Bearer {victim['key']}"}
    # Fresh connections spread over both workers, so both caches hold the key.
    for _ in range(20):
        assert httpx.get(f"{url}/v1/api-keys/none", headers=victim_auth).status_code == 403
    assert httpx.delete(f"{url}/v1/api-keys/{victim['id']}", headers=auth).status_code == 200
    statuses = {
        httpx.get(f"{url}/v1/api-keys/none", headers=victim_auth).status_code for _ in range(40)
    }
    assert statuses == {401}


def test_two_workers_idempotent_burst_creates_one_key(two_worker_server) -> None:  # type: ignore[no-untyped-def]
    url, auth = two_worker_server
    headers = {**auth, "Idempotency-Key": "burst"}

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(
            base_url=url, headers=headers, limits=limits, timeout=30
        ) as http:
            body = {"name": "once", "permissions": ["read:contacts"]}
            return await asyncio.gather(*(http.post("/v1/api-keys", json=body) for _ in range(50)))

    responses = asyncio.run(burst())
    assert {r.status_code for r in responses} <= {201, 409}
    secrets = {r.json()["data"]["key"] for r in responses if r.status_code == 201}
    assert len(secrets) == 1
    LEDGER.remember(secrets.pop())
    assert all(
        r.json()["error"]["code"] == "idempotency_key_in_use"
        for r in responses
        if r.status_code == 409
    )
    listed = httpx.get(f"{url}/v1/api-keys?limit=100", headers=auth).json()
    assert [k["name"] for k in listed["data"]].count("once") == 1
