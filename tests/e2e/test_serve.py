"""``keystile serve`` as users run it: the README quickstart, several workers."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import LEDGER, VENV_BIN, cli_admin, free_port, keystile_env, serving

README = Path(__file__).parents[2] / "README.md"
# The vendor page's request, which the README shows unchanged.
VENDOR_CURL = """curl -X POST \\
http://127.0.0.1:8080/v1/api-keys \\
-H "Authorization: Bearer $KEY" \\
-H "Content-Type: application/json" \\
-d '{
"name": "Ingestion worker",
"permissions": ["read:contacts", "write:contacts"],
"description": "Used by the nightly ingestion job"
}'
"""


def quickstart_blocks(markdown: str) -> list[str]:
    """The ```sh blocks of the README's "Quickstart" section, in order."""
    section = markdown.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def json_documents(text: str) -> list[Any]:
    """Every JSON document in ``text`` (curl prints bodies with no newline)."""
    decoder = json.JSONDecoder()
    documents, position = [], 0
    while (start := text.find("{", position)) != -1:
        document, position = decoder.raw_decode(text, start)
        documents.append(document)
    return documents


def test_the_readme_quickstart_works_as_printed(tmp_path: Path) -> None:
    """Every ```sh block of the quickstart, exactly as printed, in one bash:
    only the port is changed, and `make run` is this test's own server."""
    readme = README.read_text()
    blocks = quickstart_blocks(readme)
    assert [i for i, block in enumerate(blocks) if "make run" in block] == [0]
    assert blocks[0].strip() == "make run"
    assert blocks[2] == VENDOR_CURL
    assert "KEYSTILE_PORT=9000 make run" in readme  # the port setting is shown
    port = free_port()
    (tmp_path / ".venv").symlink_to(VENV_BIN.parent)  # `.venv/bin/keystile`, as printed
    secrets = tmp_path / "secrets.txt"
    # A marker after each block's output; then the two secrets the blocks
    # kept in variables, for the end-of-session leak check.
    script = "".join(
        block.replace("127.0.0.1:8080", f"127.0.0.1:{port}") + f"printf '\\n@@{i}\\n'\n"
        for i, block in enumerate(blocks[1:], start=1)
    )
    script += f'printf "%s\\n" "$KEY" "$SERVICE_KEY" > {secrets}\n'
    env = keystile_env(tmp_path / "data")
    with serving(env, port=port, log=tmp_path / "server.log") as url:
        result = subprocess.run(
            ["bash", "-c", f"set -euo pipefail\n{script}"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        kept = secrets.read_text().split() if secrets.exists() else []
        secrets.unlink(missing_ok=True)
        for secret in kept:
            LEDGER.remember(secret)
        assert result.returncode == 0, result.stderr
        outputs = {
            int(number): text.strip()
            for text, number in re.findall(r"(.*?)\n@@(\d+)\n", result.stdout, flags=re.S)
        }
        assert sorted(outputs) == list(range(1, len(blocks)))
        admin, service = kept

        # The CLI makes the account and the admin key; both are captured.
        assert outputs[1] == ""
        assert admin.startswith("wbk_live_")

        # The vendor's curl: 201 and the new key.
        (created,) = json_documents(outputs[2])
        worker = created["data"]
        LEDGER.remember(worker["key"])
        assert worker["name"] == "Ingestion worker"
        assert worker["prefix"] == "wbk_live"
        assert worker["permissions"] == ["read:contacts", "write:contacts"]

        # List, then get and revoke by the id captured from the name filter.
        listed, got, revoked = json_documents(outputs[3])
        assert [k["name"] for k in listed["data"]] == ["Ingestion worker", "Admin"]
        assert got["data"]["id"] == worker["id"] and got["data"]["status"] == "active"
        assert revoked["data"]["id"] == worker["id"] and revoked["data"]["status"] == "revoked"
        refused = httpx.get(
            f"{url}/v1/api-keys", headers={"Authorization": f"Bearer {worker['key']}"}
        )
        assert refused.status_code == 401

        # The same from the CLI, as tables: the list, then the key's fields.
        table, _, fields = outputs[4].partition("\nid ")
        header, *rows = table.splitlines()
        assert header.split()[:3] == ["ID", "NAME", "STATUS"]
        assert [row.split()[:3] for row in rows] == [
            [worker["id"], "Ingestion", "worker"],
            [listed["data"][1]["id"], "Admin", "active"],
        ]
        assert fields.split("\n", 1)[0].strip() == worker["id"]
        assert re.search(r"^status +revoked$", fields, flags=re.M)
        assert re.search(r"^permissions +read:contacts write:contacts$", fields, flags=re.M)

        # A service verifies its caller's key with a key holding verify:keys.
        (verified,) = json_documents(outputs[5])
        assert verified["data"]["valid"] is True and verified["data"]["code"] == "VALID"
        assert verified["data"]["key_id"] == listed["data"][1]["id"]
        assert service.startswith("wbk_live_") and service != admin
        service_key = httpx.get(
            f"{url}/v1/api-keys?name=Contacts%20service",
            headers={"Authorization": f"Bearer {admin}"},
        ).json()["data"][0]
        assert service_key["permissions"] == ["verify:keys"]


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
