"""A database made by an earlier keystile upgrades in place without losing a
key (issue #13): the schema of revision 0001 (keystile 0.1.0), filled the way
0.1.0 filled it, then ``keystile migrate``'s upgrade to the newest schema."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from keystile.api.app import create_app
from keystile.keys import tokens
from keystile.storage.sql import migrate
from tests.conftest import settings_for
from tests.support import LEDGER, PG_HOST, PG_USER, database_name, psql

pytestmark = pytest.mark.anyio

ACCOUNT = "acc_01ARZ3NDEKTSV4RRFFQ69G5FAV"
KEY = "key_01ARZ3NDEKTSV4RRFFQ69G5FAW"


def _run_sql(url: str, statements: list[str]) -> None:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            for statement in statements:
                db.execute(statement)
        return
    for statement in statements:
        subprocess.run(
            ["psql", "-h", PG_HOST, "-U", PG_USER, "-d", database_name(url), "-v",
             "ON_ERROR_STOP=1", "-qc", statement],
            check=True, capture_output=True,
        )  # fmt: skip


@pytest.fixture
def old_database(database_url: str, data_dir: Path) -> str:
    if not database_url.startswith("sqlite"):
        # The per-test database is a copy of a migrated template: start over.
        name = database_name(database_url)
        psql(f"DROP DATABASE {name} WITH (FORCE)")
        psql(f"CREATE DATABASE {name}")
    data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(database_url, "0001")
    return database_url


async def test_keys_of_0_1_0_still_work_after_the_upgrade(
    old_database: str, data_dir: Path
) -> None:
    secret = tokens.generate("wbk")
    LEDGER.remember(secret)
    _run_sql(
        old_database,
        [
            f"INSERT INTO accounts (id, name, plan, created_at) "
            f"VALUES ('{ACCOUNT}', 'Old', 'standard', 1700000000000000)",
            "INSERT INTO api_keys (id, account_id, digest, name, name_key, holds_name, "
            "description, permissions, rate_limit_tier, expires_at, created_at) VALUES "
            f"('{KEY}', '{ACCOUNT}', '{tokens.digest(secret)}', 'Admin', 'admin', true, NULL, "
            "'admin:api_keys read:contacts', 'standard', NULL, 1700000000000000)",
        ],
    )
    app = create_app(settings_for(old_database, data_dir))  # migrates on start
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://k.test") as client:
            auth = {"Authorization": f"Bearer {secret}"}
            listed = await client.get("/v1/api-keys", headers=auth)
            assert listed.status_code == 200, listed.text
            [key] = listed.json()["data"]
            assert key["id"] == KEY
            assert (key["metadata"], key["disabled"], key["replaced_by"]) == ({}, False, None)
            assert key["status"] == "active"
            renamed = await client.patch(f"/v1/api-keys/{KEY}", json={"name": "x"}, headers=auth)
            assert renamed.status_code == 200
            events = await client.get("/v1/audit-events", headers=auth)
            assert [e["action"] for e in events.json()["data"]] == ["api_key.updated"]


async def test_idempotency_keys_are_digested_in_place(old_database: str) -> None:
    import asyncio
    import hashlib

    await asyncio.to_thread(migrate.upgrade, old_database, "0003")
    _run_sql(
        old_database,
        [
            "INSERT INTO idempotency_records (account_id, caller_key_id, idempotency_key, "
            "fingerprint, status_code, ciphertext, created_at, expires_at) VALUES "
            f"('{ACCOUNT}', '{KEY}', 'client-value', 'f', 201, "
            f"{'X' if old_database.startswith('sqlite') else ''}'00', 1, 2)",
        ],
    )
    await asyncio.to_thread(migrate.upgrade, old_database)
    from keystile.storage.sql.database import open_storage

    storage = open_storage(old_database)
    try:
        async with storage.reader() as uow:
            digest = hashlib.sha256(b"client-value").hexdigest()
            assert await uow.idempotency.get(ACCOUNT, KEY, digest) is not None
            assert await uow.idempotency.get(ACCOUNT, KEY, "client-value") is None
    finally:
        await storage.close()
