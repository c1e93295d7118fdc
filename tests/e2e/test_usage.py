"""Usage metering with real processes (contract §11, issue #14): a SIGTERM
loses nothing, instances flushing concurrently add up exactly, and the
export a billing system runs."""

from __future__ import annotations

import csv
import io
import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from keystile.idempotency.crypto import generate_key
from tests.support import LEDGER, cli_admin, keystile_env, run_cli, serving

OUTCOMES = ("allowed", "rate_limited", "quota_exceeded", "forbidden")


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def a_key(url: str, admin: dict[str, str], name: str, *permissions: str) -> tuple[str, str]:
    body = {"name": name, "permissions": list(permissions)}
    response = httpx.post(f"{url}/v1/api-keys", json=body, headers=admin)
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    LEDGER.remember(data["key"])
    return data["id"], data["key"]


def totals(url: str, reader: dict[str, str], key_id: str) -> dict[str, int]:
    """The key's counts of the last 30 days, as written."""
    response = httpx.get(f"{url}/v1/api-keys/{key_id}/usage?granularity=day", headers=reader)
    assert response.status_code == 200, response.text
    return {o: sum(e[o] for e in response.json()["data"]) for o in OUTCOMES}


def export(env: dict[str, str], account: str, *extra: str) -> str:
    month = datetime.now(UTC).strftime("%Y-%m")
    result = run_cli("usage", "export", "--account", account, "--month", month, *extra, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_sigterm_writes_every_count_of_every_worker(tmp_path: Path) -> None:
    """No periodic flush can happen (an hour apart): what is there after the
    restart was written by the graceful shutdown of each worker."""
    env = keystile_env(
        tmp_path / "data",
        KEYSTILE_USAGE_FLUSH_SECONDS="3600",
        KEYSTILE_TIER_STANDARD="100000/10 seconds",
    )
    account, secret = cli_admin(env, "admin:api_keys", "read:contacts")
    admin = bearer(secret)
    log = tmp_path / "server.log"
    with serving(env, "--workers", "2", log=log) as url:
        reader_id, reader = a_key(url, admin, "reader", "read:contacts")
        with httpx.Client(base_url=url) as http:  # new connections: both workers serve
            for n in range(60):
                path = "/v1/api-keys" if n % 4 else "/v1/api-keys/key_unknown"
                assert http.get(path, headers=bearer(reader)).status_code == 403
                http.get("/v1/api-keys", headers={**admin, "Connection": "close"})
        url.process.send_signal(signal.SIGTERM)
        assert url.process.wait(timeout=60) == 0
    with serving(env, log=tmp_path / "again.log") as url:
        assert totals(url, admin, reader_id) == {
            "allowed": 0, "rate_limited": 0, "quota_exceeded": 0, "forbidden": 60,
        }  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(export(env, account))))
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    mine = {r["key_id"]: r for r in rows if r["day"] == today}
    assert mine[reader_id]["forbidden"] == "60"
    # The admin's 60 lists and its key creation, counted before the shutdown.
    assert int(next(r for k, r in mine.items() if k != reader_id)["allowed"]) >= 61
    assert "could not be written" not in log.read_text()


@pytest.fixture
def two_instances(
    tmp_path: Path, postgres_database: str
) -> Iterator[tuple[str, str, dict[str, str], str, dict[str, str]]]:
    """Two ``keystile serve`` of two workers each on one PostgreSQL, every
    worker flushing ten times a second."""
    env = keystile_env(
        tmp_path / "unused",
        KEYSTILE_DATABASE_URL=postgres_database,
        KEYSTILE_SECRET_KEY=generate_key(),
        KEYSTILE_TIER_STANDARD="100000/10 seconds",
        KEYSTILE_USAGE_FLUSH_SECONDS="0.1",
    )
    account, admin = cli_admin(env, "admin:api_keys", "read:contacts")
    with ExitStack() as stack:
        a = stack.enter_context(serving(env, "--workers", "2", log=tmp_path / "a.log"))
        b = stack.enter_context(serving(env, "--workers", "2", log=tmp_path / "b.log"))
        yield a, b, bearer(admin), account, env
    for name in ("a.log", "b.log"):
        text = (tmp_path / name).read_text()
        assert "Traceback" not in text and "could not be written" not in text, text[-2000:]


def test_two_instances_on_postgresql_add_up_exactly(
    two_instances: tuple[str, str, dict[str, str], str, dict[str, str]],
) -> None:
    a, b, admin, account, env = two_instances
    key_id, secret = a_key(a, admin, "busy", "admin:api_keys", "read:contacts")
    sent = {"allowed": 0, "forbidden": 0}
    lock = threading.Lock()

    def load(url: str) -> None:
        # A new connection per request: every worker of the instance serves some.
        headers = {**bearer(secret), "Connection": "close"}
        with httpx.Client(base_url=url, headers=headers) as http:
            for n in range(120):
                if n % 3:
                    assert http.get(f"/v1/api-keys/{key_id}").status_code == 200
                    outcome = "allowed"
                else:  # operator keys only
                    assert http.get("/v1/accounts").status_code == 403
                    outcome = "forbidden"
                with lock:
                    sent[outcome] += 1

    threads = [threading.Thread(target=load, args=(url,)) for url in (a, b, a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = {**dict.fromkeys(OUTCOMES, 0), **sent}
    assert sum(sent.values()) == 480
    # Written by the periodic flushes of four workers, each adding its part.
    deadline = time.monotonic() + 90
    while (seen := totals(b, admin, key_id)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert seen == expected
    rows = [r for r in csv.DictReader(io.StringIO(export(env, account))) if r["key_id"] == key_id]
    assert {o: sum(int(r[o]) for r in rows) for o in OUTCOMES} == expected


def test_the_export_command_fails_in_one_line(tmp_path: Path) -> None:
    env = keystile_env(tmp_path / "data")
    account, _ = cli_admin(env)
    unknown = run_cli("usage", "export", "--account", "acc_nope", "--month", "2028-02", env=env)
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr.strip() == "keystile: error: No such account: 'acc_nope'."
    for month in ("2028-2", "2028-13", "Feb"):
        bad = run_cli("usage", "export", "--account", account, "--month", month, env=env)
        assert bad.returncode == 2 and bad.stdout == ""
        assert len(bad.stderr.strip().splitlines()) == 1 and "--month" in bad.stderr
    bad_format = run_cli("usage", "export", "--account", account, "--month", "2028-02",
                         "--format", "xml", env=env)  # fmt: skip
    assert bad_format.returncode == 2 and "--format" in bad_format.stderr
    document = json.loads(export(env, account, "--format", "json"))
    assert document == {"data": []}
