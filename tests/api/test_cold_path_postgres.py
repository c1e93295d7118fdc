"""PostgreSQL with the key cache off: every request looks its key up on the
asyncpg fast path (``storage.sql.lookups``). Black-box over HTTP: the same
answers as with the cache, 503 when the lookup gets no answer in time, and
a connection the server kills costs at most the request that was using it."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from keystile.api.app import create_app
from keystile.api.pipeline import Pipeline
from keystile.settings import Settings
from keystile.storage.base import StorageUnavailable
from keystile.storage.sql.database import async_url
from keystile.storage.sql.lookups import DigestLookups
from tests.conftest import settings_for
from tests.support import (
    PG_USER,
    Tenant,
    assert_error,
    database_name,
    make_operator,
    make_tenant,
    psql,
)

pytestmark = pytest.mark.anyio
TIMEOUT = 1.0


@pytest.fixture
def database_url(postgres_database: str) -> str:
    return postgres_database


@pytest.fixture
def settings(database_url: str, data_dir: Path) -> Settings:
    return settings_for(
        database_url,
        data_dir,
        key_cache_size=0,
        database_timeout_seconds=TIMEOUT,
        last_used_interval_seconds=0.05,
    )


def backends(database_url: str) -> int:
    """How many server connections this database has (other than psql's own)."""
    return int(
        psql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = "
            f"'{database_name(database_url)}' AND pid <> pg_backend_pid()",
            database="postgres",
        )
    )


async def verify(client: httpx.AsyncClient, tenant: Tenant) -> httpx.Response:
    return await client.post("/v1/keys/verify", json={"key": tenant.secret}, headers=tenant.headers)


class TestVerifyOnTheColdPath:
    async def test_200_valid_then_revoked_at_once(
        self, client: httpx.AsyncClient, tenant: Tenant, app: Pipeline
    ) -> None:
        other = await make_tenant(app, name="other", account=tenant.account)
        for _ in range(3):
            response = await verify(client, tenant)
            assert response.status_code == 200
            assert response.json()["data"]["code"] == "VALID"
        revoked = await client.delete(f"/v1/api-keys/{other.key_id}", headers=tenant.headers)
        assert revoked.status_code == 200, revoked.text
        response = await client.post(
            "/v1/keys/verify", json={"key": other.secret}, headers=tenant.headers
        )
        assert response.json()["data"]["code"] == "REVOKED"

    async def test_a_suspended_accounts_key_is_403_and_verifies_as_disabled(
        self, client: httpx.AsyncClient, tenant: Tenant, app: Pipeline
    ) -> None:
        operator = await make_operator(app)
        suspend = await client.patch(
            f"/v1/accounts/{tenant.account.id}",
            json={"status": "suspended"},
            headers=operator.headers(),
        )
        assert suspend.status_code == 200, suspend.text
        assert_error(await verify(client, tenant), 403, "account_suspended")
        verified = await client.post(
            "/v1/keys/verify",
            json={"key": tenant.secret},
            headers=operator.headers(tenant.account.id),
        )
        assert verified.json()["data"]["code"] == "DISABLED"


class TestTheDatabaseFailing:
    async def test_a_killed_connection_fails_at_most_the_request_using_it(
        self, client: httpx.AsyncClient, tenant: Tenant, database_url: str
    ) -> None:
        # Open several pooled connections, then have the server kill every one.
        responses = await asyncio.gather(*(verify(client, tenant) for _ in range(16)))
        assert {r.status_code for r in responses} == {200}
        assert backends(database_url) > 0
        psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
            f"'{database_name(database_url)}' AND pid <> pg_backend_pid()",
            database="postgres",
        )
        first = await verify(client, tenant)
        if first.status_code != 200:
            assert_error(first, 503, "service_unavailable")
        for _ in range(12):  # more than the pool holds: no dead connection is used again
            response = await verify(client, tenant)
            assert response.status_code == 200, response.text

    async def test_a_lookup_without_an_answer_is_a_503_within_the_timeout(
        self, client: httpx.AsyncClient, tenant: Tenant, database_url: str
    ) -> None:
        assert (await verify(client, tenant)).status_code == 200
        locker = await asyncpg.connect(database_url.partition("?")[0])
        try:
            async with locker.transaction():
                # Every read of api_keys now waits for this transaction.
                await locker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
                started = time.monotonic()
                response = await verify(client, tenant)
                waited = time.monotonic() - started
            assert_error(response, 503, "service_unavailable")
            assert TIMEOUT * 0.9 <= waited < TIMEOUT + 1.5
        finally:
            await locker.close()
        response = await verify(client, tenant)
        assert response.status_code == 200, response.text


async def test_a_server_out_of_connections_is_a_503_and_open_connections_keep_serving(
    database_url: str,
) -> None:
    """SQLSTATE 53300 (too many connections) refuses the lookup that needed
    a new connection, as unavailable (503), and retires nothing: the
    connection already open answers on, the same server process."""
    role = f"kst_{uuid.uuid4().hex[:12]}"
    psql(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1; GRANT pg_read_all_data TO {role}")
    url = database_url.replace(f"//{PG_USER}@", f"//{role}@")
    engine = create_async_engine(async_url(url))
    lookups = DigestLookups(engine, timeout=TIMEOUT * 5, pool_size=4)

    def servers() -> list[str]:
        query = f"SELECT pid FROM pg_stat_activity WHERE usename = '{role}'"
        return psql(query, database="postgres").split()

    try:
        assert await lookups.key("0" * 64) is None  # opens the one connection allowed
        first = servers()
        assert len(first) == 1
        answers = await asyncio.gather(
            *(lookups.key("0" * 64) for _ in range(4)), return_exceptions=True
        )
        refused = [a for a in answers if isinstance(a, BaseException)]
        assert refused, "every lookup found a connection: nothing was refused"
        assert all(isinstance(a, StorageUnavailable) for a in refused), refused
        assert "too many connections" in str(refused[0])
        for _ in range(3):
            assert await lookups.key("0" * 64) is None
        assert servers() == first
    finally:
        await lookups.close()
        await engine.dispose()
        for _ in range(100):  # a server process ends shortly after its client leaves
            if not servers():
                break
            await asyncio.sleep(0.1)
        psql(f"DROP ROLE {role}")


async def test_lookups_after_close_are_unavailable_and_open_nothing(database_url: str) -> None:
    engine = create_async_engine(async_url(database_url))
    lookups = DigestLookups(engine, timeout=TIMEOUT, pool_size=2)
    try:
        assert await lookups.key("0" * 64) is None
        await lookups.close()
        with pytest.raises(StorageUnavailable):
            await lookups.key("0" * 64)  # a request still running at shutdown
        for _ in range(100):  # a server process ends shortly after its client leaves
            if not backends(database_url):
                break
            await asyncio.sleep(0.1)
        assert backends(database_url) == 0, "the late lookup opened a connection"
    finally:
        await engine.dispose()


async def test_closing_the_app_closes_every_connection(
    settings: Settings, database_url: str
) -> None:
    app = create_app(settings)
    async with app.lifespan():
        tenant = await make_tenant(app)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://keystile.test") as http:
            responses = await asyncio.gather(*(verify(http, tenant) for _ in range(8)))
        assert {r.status_code for r in responses} == {200}
    for _ in range(100):  # a server process ends shortly after its client leaves
        if not backends(database_url):
            break
        await asyncio.sleep(0.1)
    assert backends(database_url) == 0
