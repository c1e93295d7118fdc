"""A hung handler cannot take ``/healthz`` with it (issue #11, item 1).

The test-only fault point ``handler.hang`` blocks the event loop of the
worker that reaches it with a busy loop that never ends (once per data
directory), as a handler stuck in an endless loop would. The worker's
watchdog kills it, the supervisor starts another, and the service answers
again; SIGTERM stops everything in bounded time, even during the hang.

Bounds are generous ("does not hang"), never a performance claim."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support import ServerURL, cli_admin, keystile_env, serving, worker_pids

BOUND = 60.0


def hanging_env(data: Path, stall_seconds: str) -> dict[str, str]:
    return keystile_env(
        data,
        KEYSTILE_LOOP_STALL_SECONDS=stall_seconds,
        # The stall timeout must exceed SQLite's lock wait, which blocks the loop.
        KEYSTILE_DATABASE_TIMEOUT_SECONDS="1",
        KEYSTILE_SHUTDOWN_TIMEOUT_SECONDS="1",
    )


def healthz(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code
    except httpx.TransportError:
        return None


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, "not within the bound"
        time.sleep(0.1)


def hang(url: ServerURL, admin: str) -> threading.Thread:
    """Send the request that hangs its worker; it gets no answer."""

    def request() -> None:
        with pytest.raises(httpx.TransportError):
            httpx.get(
                f"{url}/v1/api-keys", headers={"Authorization": f"Bearer {admin}"}, timeout=BOUND
            )

    thread = threading.Thread(target=request)
    thread.start()
    return thread


def assert_stopped(url: ServerURL, workers: list[int]) -> None:
    """SIGTERM ends ``keystile serve`` and every worker, within the bound."""
    url.process.send_signal(signal.SIGTERM)
    assert url.process.wait(timeout=BOUND) == 0
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_hung_handler_costs_its_worker_not_the_service(tmp_path: Path, workers: str) -> None:
    # With two workers, the healthy one must be seen answering while the other
    # hangs: a longer stall leaves room for that on a busy machine.
    env = hanging_env(tmp_path / "data", stall_seconds="2" if workers == "1" else "8")
    _, admin = cli_admin(env)
    log = tmp_path / "server.log"
    faulty = {**env, "KEYSTILE_TEST_FAULT_POINT": "handler.hang"}
    with serving(faulty, "--workers", workers, log=log) as url:
        first = worker_pids(url.pid)
        request = hang(url, admin)
        if workers == "2":
            time.sleep(0.5)
            deadline = time.monotonic() + 5  # well inside the 8 s stall
            while healthz(url) != 200:  # the other worker answers meanwhile
                assert time.monotonic() < deadline, "no worker answered during the hang"
        request.join(BOUND)
        assert not request.is_alive()

        # The stalled worker was killed and replaced; the service answers.
        wait_until(lambda: healthz(url) == 200 and len(worker_pids(url.pid)) == int(workers))
        replaced = set(first) - set(worker_pids(url.pid))
        assert len(replaced) == 1
        auth = {"Authorization": f"Bearer {admin}"}
        for _ in range(10):  # on new connections, so on every worker
            assert httpx.get(f"{url}/v1/api-keys", headers=auth).status_code == 200

        assert_stopped(url, worker_pids(url.pid))

    reports = [
        json.loads(line)
        for line in log.read_text().splitlines()
        if '"keystile.watchdog"' in line and line.startswith("{")
    ]
    assert len(reports) == 1
    report = reports[0]
    assert report["level"] == "ERROR"
    assert f"killing worker {replaced.pop()}" in report["message"]
    assert any("faults.py" in frame and "in hit" in frame for frame in report["stack"])
    assert admin not in log.read_text()


def test_sigterm_stops_the_server_while_a_worker_hangs(tmp_path: Path) -> None:
    env = hanging_env(tmp_path / "data", stall_seconds="8")
    _, admin = cli_admin(env)
    faulty = {**env, "KEYSTILE_TEST_FAULT_POINT": "handler.hang"}
    with serving(faulty, log=tmp_path / "server.log") as url:
        workers = worker_pids(url.pid)
        request = hang(url, admin)
        wait_until(lambda: healthz(url) is None)  # the only worker is stuck
        assert_stopped(url, workers)
        request.join(BOUND)


def test_a_killed_supervisor_leaves_no_worker_behind(tmp_path: Path) -> None:
    """The workers notice their supervisor is gone and stop (their watchdog
    checks), so ``kill -9`` of ``keystile serve`` frees the port."""
    with serving(keystile_env(tmp_path / "data"), "--workers", "2") as url:
        workers = worker_pids(url.pid)
        assert len(workers) == 2
        url.process.kill()
        url.process.wait()
        wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers))
        assert healthz(url) is None


WATCHED = """
import asyncio, time
from keystile.api.observability import configure_logging
from keystile.server.watchdog import LoopWatchdog

async def main() -> None:
    configure_logging("info")
    LoopWatchdog(asyncio.get_running_loop(), stall_seconds=0.5).start()
    for _ in range(30):  # 3 s of a loop that keeps running, busy in short bursts
        started = time.monotonic()
        while time.monotonic() - started < 0.05:
            pass
        await asyncio.sleep(0.05)
    if {stall}:
        stuck_here()

def stuck_here() -> None:
    time.sleep(BOUND)  # the loop stops; the GIL is free, so the watchdog runs

BOUND = {bound}
asyncio.run(main())
"""


@pytest.mark.parametrize("stall", [False, True])
def test_the_watchdog_kills_a_stalled_loop_and_only_that(stall: bool) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WATCHED.format(stall=stall, bound=BOUND)],
        capture_output=True,
        text=True,
        timeout=BOUND * 2,
        check=False,
    )
    if not stall:
        assert (result.returncode, result.stderr) == (0, "")
        return
    assert result.returncode == -signal.SIGKILL
    [report] = [json.loads(line) for line in result.stderr.splitlines()]
    assert report["logger"] == "keystile.watchdog"
    assert report["message"].startswith("event loop stalled")
    assert "in stuck_here" in report["stack"][-1]  # where the loop stalled
