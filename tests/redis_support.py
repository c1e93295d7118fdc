"""Real Redis servers for the tests that need to stop, slow or restart one,
and a busy machine for the tests that must hold under load."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


@contextmanager
def cpu_burner(processes: int = 2) -> Iterator[None]:
    """The machine made busy: one spinning process per core, for the block's duration."""
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)
    ]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def wait_until_asleep(port: int) -> None:
    """Returns once the Redis at ``port`` has stopped answering (DEBUG SLEEP took hold)."""
    probe = redis.Redis(port=port, socket_timeout=0.1, retry=Retry(NoBackoff(), 0))
    try:
        while True:
            try:
                probe.ping()
            except redis.TimeoutError:
                return
            time.sleep(0.02)
    finally:
        probe.close()


def sleep_redis(port: int, seconds: float) -> threading.Thread:
    """Redis at ``port`` blocks for ``seconds`` (a live but slow Redis); returns
    once it is asleep, with the thread that waits for it to wake."""

    def sleep() -> None:
        # No retries (redis-py's default would send DEBUG SLEEP again).
        client = redis.Redis(port=port, socket_timeout=seconds + 60, retry=Retry(NoBackoff(), 0))
        client.execute_command("DEBUG", "SLEEP", str(seconds))  # type: ignore[no-untyped-call]
        client.close()

    sleeper = threading.Thread(target=sleep)
    sleeper.start()
    wait_until_asleep(port)
    return sleeper


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


def redis_count(port: int) -> int:
    """The one key counter in the Redis at ``port`` (the test's only key)."""
    client = redis.Redis(port=port)
    (name,) = client.keys("keystile:rl:key:*")
    value = int(client.get(name) or 0)
    client.close()
    return value
