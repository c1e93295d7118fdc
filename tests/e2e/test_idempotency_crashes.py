"""Exactly once under crashes (issue #3): a server is SIGKILLed at each point
of an idempotent create, restarted, and the client retries with the same
Idempotency-Key. Over every kill point: never a duplicate, never a lost key,
and the client gets a working secret."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from keystile.faults import CRASHES
from tests.support import (
    LEDGER,
    STARTUP_BOUND,
    VENV_BIN,
    cli_admin,
    free_port,
    keystile_env,
    serving,
    worker_pids,
)

BODY = {"name": "nightly job", "permissions": ["read:contacts"]}


def crash_once(env: dict[str, str], port: int, headers: dict[str, str]) -> None:
    """Start a server whose worker dies at the fault point; send the request
    into it; stop the server."""
    process = subprocess.Popen(
        [str(VENV_BIN / "keystile"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + STARTUP_BOUND
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        [worker] = worker_pids(process.pid)
        with pytest.raises(httpx.TransportError):
            httpx.post(
                f"http://127.0.0.1:{port}/v1/api-keys", json=BODY, headers=headers, timeout=30
            )
        # The worker is gone (SIGKILL, as a crash or an OOM kill), and the
        # supervisor has started another one.
        while Path(f"/proc/{worker}").exists() or worker_pids(process.pid) in ([], [worker]):
            assert time.monotonic() < deadline + 30, "the worker was not replaced"
            time.sleep(0.1)
        process.terminate()
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("point", sorted(CRASHES))
def test_a_crash_at_any_point_neither_loses_nor_doubles_the_key(tmp_path: Path, point: str) -> None:
    env = keystile_env(tmp_path / "data")
    _, admin = cli_admin(env)
    headers = {"Authorization": f"Bearer {admin}", "Idempotency-Key": f"retry-{point}"}
    port = free_port()

    crash_once({**env, "KEYSTILE_TEST_FAULT_POINT": point}, port, headers)
    # The key and its audit event: both committed, or neither (issue #13).
    keys, events = keys_and_events(tmp_path / "data" / "keystile.db")
    assert keys == events
    assert len(keys) == (1 if point == "idempotency.after_commit" else 0)

    with serving(env, port=port, log=tmp_path / "server.log") as url:
        retried = httpx.post(f"{url}/v1/api-keys", json=BODY, headers=headers)
        assert retried.status_code == 201, retried.text
        secret = retried.json()["data"]["key"]
        LEDGER.remember(secret)
        replayed_expected = point == "idempotency.after_commit"
        assert (retried.headers.get("idempotent-replayed") == "true") is replayed_expected

        again = httpx.post(f"{url}/v1/api-keys", json=BODY, headers=headers)
        assert again.content == retried.content

        listed = httpx.get(
            f"{url}/v1/api-keys?limit=100", headers={"Authorization": f"Bearer {admin}"}
        )
        named = [k for k in listed.json()["data"] if k["name"] == BODY["name"]]
        assert len(named) == 1
        assert named[0]["id"] == retried.json()["data"]["id"]
        # The secret the client finally holds works.
        me = httpx.get(f"{url}/v1/api-keys/x", headers={"Authorization": f"Bearer {secret}"})
        assert me.status_code == 403  # authenticated; it lacks admin:api_keys
    keys, events = keys_and_events(tmp_path / "data" / "keystile.db")
    assert keys == events == {retried.json()["data"]["id"]}


def keys_and_events(database: Path) -> tuple[set[str], set[str]]:
    """The ids of the keys named like BODY, and the targets of api_key.created events."""
    with sqlite3.connect(database) as db:
        keys = {
            row[0] for row in db.execute("SELECT id FROM api_keys WHERE name = ?", (BODY["name"],))
        }
        events = {
            row[0]
            for row in db.execute(
                "SELECT target_id FROM audit_events WHERE action = 'api_key.created' "
                "AND target_id NOT IN (SELECT id FROM api_keys WHERE name = 'admin')"
            )
        }
    return keys, events
