"""Rate limits across processes (issue #4): global with Redis, and what
happens when Redis goes away and comes back."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import require_service
from tests.support import cli_admin, free_port, keystile_env, serving


def test_two_instances_with_two_workers_each_admit_exactly_the_limit(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    limit = 60
    env = keystile_env(
        tmp_path / "data",
        KEYSTILE_REDIS_URL=redis_url,
        KEYSTILE_REDIS_PREFIX=redis_prefix,
        KEYSTILE_TIER_STANDARD=f"{limit}/30 seconds",
    )
    _, admin = cli_admin(env)
    auth = {"Authorization": f"Bearer {admin}"}
    with ExitStack() as stack:
        urls = [
            stack.enter_context(serving(env, "--workers", "2", log=tmp_path / f"s{n}.log"))
            for n in range(2)
        ]

        async def load() -> list[httpx.Response]:
            async def drive(url: str) -> list[httpx.Response]:
                limits = httpx.Limits(max_connections=16)
                async with httpx.AsyncClient(
                    base_url=url, headers=auth, limits=limits, timeout=30
                ) as http:
                    return await asyncio.gather(
                        *(http.get("/v1/api-keys/none") for _ in range(150))
                    )

            batches = await asyncio.gather(*(drive(url) for url in urls))
            return [r for batch in batches for r in batch]

        responses = asyncio.run(load())

    # Admitted requests pass the limiter and end as 404 (no such key); the rest are 429.
    assert {r.status_code for r in responses} <= {404, 429}
    windows: dict[str, Counter[int]] = {}
    for response in responses:
        windows.setdefault(response.headers["x-ratelimit-reset"], Counter())[
            response.status_code
        ] += 1
    for statuses in windows.values():
        admitted = statuses[404]
        assert admitted <= limit, windows
        if statuses[429]:
            assert admitted == limit, windows
    assert sum(s[404] for s in windows.values()) >= limit


@contextmanager
def redis_server(port: int, directory: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--enable-debug-command",
            "local",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)
        client.close()


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_redis_stopped_slowed_and_restarted_mid_run(tmp_path: Path, mode: str) -> None:
    require_service("Redis", "127.0.0.1", 6379)  # the redis-server binary comes with the service
    port = free_port()
    env = keystile_env(
        tmp_path / "data",
        KEYSTILE_REDIS_URL=f"redis://127.0.0.1:{port}/0",
        KEYSTILE_REDIS_FAILURE_MODE=mode,
        KEYSTILE_REDIS_TIMEOUT_MS="200",
        KEYSTILE_TIER_STANDARD="1000/60 seconds",
    )
    _, admin = cli_admin(env)
    auth = {"Authorization": f"Bearer {admin}"}
    with (
        serving(env, log=tmp_path / "server.log") as url,
        httpx.Client(base_url=url, headers=auth, timeout=10) as http,
    ):
        with redis_server(port, tmp_path):
            ok = http.get("/v1/api-keys")
            assert ok.status_code == 200
            assert http.get("/readyz").status_code == 200
            remaining_before = int(ok.headers["x-ratelimit-remaining"])

            # Slow: Redis blocks for 2 s; keystile answers within its timeout, by the policy.
            sleeper = threading.Thread(
                target=lambda: redis.Redis(port=port).execute_command("DEBUG", "SLEEP", "2")  # type: ignore[no-untyped-call]
            )
            sleeper.start()
            time.sleep(0.2)
            started = time.monotonic()
            slow = http.get("/v1/api-keys")
            assert time.monotonic() - started < 1.5
            sleeper.join()
            expected = 200 if mode == "open" else 503
            assert slow.status_code == expected
        # Stopped.
        for _ in range(5):
            response = http.get("/v1/api-keys")
            assert response.status_code == expected, response.text
            if mode == "open":
                assert "x-ratelimit-remaining" in response.headers  # counted by this process alone
            else:
                assert response.json()["error"]["code"] == "service_unavailable"
        assert http.get("/readyz").status_code == 503
        # Restarted on the same port: back to the shared counters, without restarting keystile.
        with redis_server(port, tmp_path):
            deadline = time.monotonic() + 10
            while True:
                response = http.get("/v1/api-keys")
                if response.status_code == 200 and redis.Redis(port=port).keys("keystile:rl:key:*"):
                    break
                assert response.status_code in (200, 503)
                assert time.monotonic() < deadline, "did not recover"
                time.sleep(0.2)
            assert http.get("/readyz").status_code == 200
            assert int(response.headers["x-ratelimit-remaining"]) < 1000
    assert remaining_before == 999
    log = (tmp_path / "server.log").read_text()
    assert '"status": 500' not in log and "Traceback" not in log
