"""PostgreSQL going away (issue #5): the suite runs its own throwaway
PostgreSQL, stops it (and freezes it) mid-run, and keystile must answer 503
within its timeout, turn unready, recover without a restart, and lose no
write it acknowledged."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from keystile.idempotency.crypto import generate_key
from tests.conftest import require_service
from tests.support import LEDGER, cli_admin, free_port, keystile_env, postgres_url, psql, serving

PG_BIN = Path("/usr/lib/postgresql")


def pg_tool(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(PG_BIN.glob(f"*/bin/{name}"))), None)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return str(found)


@dataclass
class Cluster:
    directory: Path
    port: int

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", pg_tool("pg_ctl"), "-D", str(self.directory / "data"), *args],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._pg_ctl("-o", options, "-l", str(self.directory / "log"), "-w", "start")

    def stop(self) -> None:
        self._pg_ctl("-m", "immediate", "-w", "stop")  # as a crash: no clean shutdown

    def processes(self) -> list[int]:
        pid = int((self.directory / "data" / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
        )
        return [pid, *(int(p) for p in children.stdout.split())]

    def freeze(self, frozen: bool) -> None:
        for pid in self.processes():
            os.kill(pid, signal.SIGSTOP if frozen else signal.SIGCONT)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    require_service("PostgreSQL", "127.0.0.1", 5432)  # its binaries come with the service
    directory = Path(tempfile.mkdtemp(prefix="kst-pg-"))
    shutil.chown(directory, "postgres", "postgres")
    subprocess.run(
        ["runuser", "-u", "postgres", "--", pg_tool("initdb"), "-D", str(directory / "data"),
         "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    pg = Cluster(directory, free_port())
    pg.start()
    try:
        yield pg
    finally:
        with contextlib.suppress(subprocess.CalledProcessError, OSError):  # already stopped
            pg.freeze(False)
            pg.stop()
        shutil.rmtree(directory, ignore_errors=True)


def keystile_on(cluster: Cluster, tmp_path: Path, **settings: str) -> dict[str, str]:
    """The environment of a keystile on a new database of ``cluster``, with
    a 2 s database timeout, and ``settings`` on top."""
    psql("CREATE DATABASE keystile", database="postgres", port=cluster.port)
    return keystile_env(
        tmp_path / "unused",
        KEYSTILE_DATABASE_URL=postgres_url("keystile", cluster.port),
        KEYSTILE_SECRET_KEY=generate_key(),
        KEYSTILE_DATABASE_TIMEOUT_SECONDS="2",
        **settings,
    )


def test_postgres_stopped_frozen_and_back(tmp_path: Path, cluster: Cluster) -> None:
    env = keystile_on(cluster, tmp_path, KEYSTILE_TIER_STANDARD="100000/10 seconds")
    _, admin = cli_admin(env, "admin:api_keys", "read:contacts")
    auth = {"Authorization": f"Bearer {admin}"}
    acknowledged: list[str] = []
    statuses: list[int] = []
    stop_writing = threading.Event()

    def write_continuously(url: str) -> None:
        with httpx.Client(base_url=url, headers=auth, timeout=10) as http:
            n = 0
            while not stop_writing.is_set():
                n += 1
                started = time.monotonic()
                response = http.post(
                    "/v1/api-keys", json={"name": f"k{n}", "permissions": ["read:contacts"]}
                )
                assert time.monotonic() - started < 5, "a request hung past the timeout"
                statuses.append(response.status_code)
                if response.status_code == 201:
                    LEDGER.remember(response.json()["data"]["key"])
                    acknowledged.append(response.json()["data"]["id"])
                else:
                    assert response.status_code == 503, response.text
                    assert response.json()["error"]["code"] == "service_unavailable"
                time.sleep(0.01)

    with (
        serving(env, log=tmp_path / "server.log") as url,
        httpx.Client(base_url=url, headers=auth, timeout=10) as http,
    ):
        writer = threading.Thread(target=write_continuously, args=(url,))
        writer.start()
        try:
            time.sleep(1)
            assert http.get("/readyz").status_code == 200

            cluster.stop()  # crashed
            time.sleep(1)
            down = http.get("/v1/api-keys")
            assert (down.status_code, down.json()["error"]["code"]) == (503, "service_unavailable")
            assert down.headers["retry-after"] == "1"
            assert http.get("/readyz").status_code == 503

            cluster.start()
            wait_until(lambda: http.get("/v1/api-keys").status_code == 200)
            assert http.get("/readyz").status_code == 200

            cluster.freeze(True)  # hung: accepts nothing, answers nothing
            try:
                started = time.monotonic()
                frozen = http.get("/v1/api-keys?limit=1")
                assert frozen.status_code == 503
                assert time.monotonic() - started < 4, "waited past the configured timeout"
            finally:
                cluster.freeze(False)
            wait_until(lambda: http.get("/v1/api-keys").status_code == 200)
            time.sleep(0.5)
        finally:
            stop_writing.set()
            writer.join()

        listed: set[str] = set()
        cursor = ""
        while True:
            page = http.get(f"/v1/api-keys?limit=100{cursor}").json()
            listed |= {k["id"] for k in page["data"]}
            if not page["has_more"]:
                break
            cursor = f"&starting_after={page['data'][-1]['id']}"
    assert 503 in statuses and 201 in statuses
    assert set(acknowledged) <= listed, "an acknowledged create was lost"
    log = (tmp_path / "server.log").read_text()
    assert '"status": 500' not in log, "a 500 was answered"


def wait_until(condition: object, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if callable(condition) and condition():
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "did not recover"
        time.sleep(0.2)


def test_the_cold_path_answers_503_in_time_and_recovers(tmp_path: Path, cluster: Cluster) -> None:
    """The key cache off: every request looks its key up on the asyncpg
    lookup pool (``storage.sql.lookups``), which must fail and recover as
    the rest of the storage does."""
    env = keystile_on(cluster, tmp_path, KEYSTILE_KEY_CACHE_SIZE="0")
    _, key = cli_admin(env, "verify:keys")
    auth = {"Authorization": f"Bearer {key}"}

    def verify(http: httpx.Client) -> httpx.Response:
        return http.post("/v1/keys/verify", json={"key": key})

    with (
        serving(env, log=tmp_path / "server.log") as url,
        httpx.Client(base_url=url, headers=auth, timeout=10) as http,
    ):
        assert verify(http).json()["data"]["code"] == "VALID"

        cluster.stop()  # crashed
        down = verify(http)
        assert (down.status_code, down.json()["error"]["code"]) == (503, "service_unavailable")
        cluster.start()
        wait_until(lambda: verify(http).status_code == 200)

        cluster.freeze(True)  # hung: accepts nothing, answers nothing
        try:
            started = time.monotonic()
            frozen = verify(http)
            assert frozen.status_code == 503
            assert time.monotonic() - started < 4, "waited past the configured timeout"
        finally:
            cluster.freeze(False)
        wait_until(lambda: verify(http).status_code == 200)
        assert verify(http).json()["data"]["code"] == "VALID"
    log = (tmp_path / "server.log").read_text()
    assert '"status": 500' not in log, "a 500 was answered"
