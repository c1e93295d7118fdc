"""Fixtures for every test package.

The suite is hermetic: KEYSTILE_* variables of the calling shell are ignored,
each test gets its own data directory, and the secrets any test is given are
recorded so that the session can check at its end that none reached a
database file or a log line.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from keystile.api.app import create_app
from keystile.api.observability import json_formatter
from keystile.api.pipeline import Pipeline
from keystile.idempotency.crypto import generate_key
from keystile.settings import Settings
from keystile.storage.sql import migrate
from tests.support import (
    LEDGER,
    PG_HOST,
    PG_USER,
    FakeClock,
    LedgerLogHandler,
    Tenant,
    library_wording,
    make_tenant,
    postgres_url,
    psql,
)

# Knobs of the suite itself, not settings of keystile's.
_SUITE_KNOBS = frozenset({"KEYSTILE_FUZZ_EXAMPLES", "KEYSTILE_TEST_SERVER"})
for _name in [n for n in os.environ if n.startswith("KEYSTILE_") and n not in _SUITE_KNOBS]:
    del os.environ[_name]


# The longest files, longest first: under xdist (`make test`: a file per
# worker at a time, in this order, --no-loadscope-reorder) they start first,
# so the suite does not end with one of them running alone.
LONGEST_FIRST = (
    "tests/e2e/test_schemathesis.py",
    "tests/e2e/test_webhooks.py",
    "tests/e2e/test_idempotency_crashes.py",
    "tests/e2e/test_cli.py",
    "tests/e2e/test_rate_limits_redis.py",
    "tests/e2e/test_packaging.py",
    "tests/e2e/test_lifecycle_scaled_out.py",
    "tests/e2e/test_scaled_out.py",
    "tests/e2e/test_hung_worker.py",
    "tests/e2e/test_console_browser.py",
    "tests/e2e/test_front_end.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put :data:`LONGEST_FIRST` ahead, the rest in collection order (every
    xdist worker sorts the same way, as it must)."""
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], len(rank)))


@pytest.fixture(scope="session", autouse=True)
def _capture_logs() -> Iterator[None]:
    """Record every line keystile (and uvicorn) logs; the test client's own
    httpx logging is not keystile's and is left out."""
    handler = LedgerLogHandler(level=logging.DEBUG)
    handler.setFormatter(json_formatter())
    loggers = [logging.getLogger(name) for name in ("keystile", "uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated database that each PostgreSQL test copies (fast)."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"kst_template_{uuid.uuid4().hex[:10]}"
    psql(f"CREATE DATABASE {name}")
    try:
        migrate.upgrade(postgres_url(name))
        yield name
    finally:
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def postgres_database(pg_template: str) -> Iterator[str]:
    """A database of this test's own, dropped afterwards: its URL."""
    name = f"kst_{uuid.uuid4().hex[:12]}"
    psql(f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    try:
        yield postgres_url(name)
    finally:
        dump = subprocess.run(
            ["pg_dump", "-h", PG_HOST, "-U", PG_USER, name], capture_output=True, check=False
        )
        LEDGER.captured.append((f"PostgreSQL database {name}", dump.stdout))
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    """Every test that stores anything runs on both databases."""
    if request.param == "sqlite":
        return f"sqlite:///{data_dir / 'keystile.db'}"
    return str(request.getfixturevalue("postgres_database"))


def settings_for(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test app; PostgreSQL needs an explicit application key."""
    if not database_url.startswith("sqlite"):
        overrides.setdefault("secret_key", SecretStr(generate_key()))
    return Settings(data_dir=data_dir, database_url=database_url, **overrides)


@pytest.fixture
def settings(database_url: str, data_dir: Path) -> Settings:
    return settings_for(database_url, data_dir, last_used_interval_seconds=0.05)


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> AsyncIterator[Pipeline]:
    application = create_app(settings, clock=clock)
    async with application.lifespan():
        yield application


@pytest.fixture
async def client(app: Pipeline) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://keystile.test",
        event_hooks={"response": [LEDGER.capture]},
    ) as http:
        yield http


@pytest.fixture
async def tenant(app: Pipeline) -> Tenant:
    """An account on the standard plan with a key holding every scope."""
    return await make_tenant(app)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a server is not running here, but fail under CI=true:
    there, a missing service must never turn into a silent skip."""
    require(_reachable(host, port), f"{name} is not reachable at {host}:{port}")


def require(present: bool, message: str) -> None:
    """Skip when something a test needs (a server, a tool) is missing here,
    but fail under CI=true."""
    if present:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (required under CI=true)")
    pytest.skip(message)


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import redis

    prefix = f"kstest-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    for key in keys:  # DUMP of every key, for the session's secret scan
        LEDGER.captured.append((f"Redis key {key!r}", bytes(key) + (client.dump(key) or b"")))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session", autouse=True)
def _nothing_leaked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the session (of each xdist worker): no secret issued
    during it may be in a log line or a file the suite left behind (SQLite
    databases and their WAL files included), and no 400 it received may speak
    in a validation library's words. A finding fails the session as an error
    in the teardown of its last test, which xdist reports like any other."""
    yield
    problems = [f"library wording in a 400: {request}: {phrase}" for request, phrase in _worded()]
    problems += [
        f"secret leak: an issued secret is at rest in {where}" for where in _leaks(tmp_path_factory)
    ]
    if problems:
        pytest.fail("\n".join(problems[:40]), pytrace=False)


def _worded() -> list[tuple[str, str]]:
    return [
        (request, phrase)
        for request, body in LEDGER.validation_errors
        for phrase in library_wording(body)
    ]


def _leaks(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    if not LEDGER.secrets:
        return []
    leaks = [
        f"log line: {line[:200]}" for line in LEDGER.log_lines if LEDGER.leaks_in(line.encode())
    ]
    leaks += [where for where, blob in LEDGER.captured if LEDGER.leaks_in(blob)]
    for path in tmp_path_factory.getbasetemp().rglob("*"):
        is_small_file = path.is_file() and path.stat().st_size < 256 * 1024 * 1024
        if is_small_file and LEDGER.leaks_in(path.read_bytes()):
            leaks.append(f"file: {path}")
    return leaks
