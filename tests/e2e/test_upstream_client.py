"""keystile's upstream client against a real misbehaving upstream process
(issue 11, item 2): one client's response never reaches another client.

Every variant of ``tests/e2e/misbehaving_upstream.py`` is sent once on a
fresh client, its final status, headers and body are checked, and then a
follow-up request must get its *own* answer, on the same connection when the
variant left it reusable and on a new one otherwise. Then the retry rule, and
the original exploit through a real ``keystile serve`` with keys of two
accounts.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvloop

from keystile.gateway.client import Upstream, UpstreamClient, UpstreamError, UpstreamTimeout
from tests.e2e.misbehaving_upstream import STALE, VARIANTS, Close, Variant
from tests.support import (
    LEDGER,
    STARTUP_BOUND,
    ServerURL,
    cli_admin,
    free_port,
    keystile_env,
    run_cli,
    serving,
)

REPO = Path(__file__).parents[2]
T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """On uvloop, as ``keystile serve`` runs."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


@pytest.fixture(scope="module")
def misbehaving() -> Iterator[Upstream]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.misbehaving_upstream", str(port)], cwd=REPO
    )
    deadline = time.monotonic() + STARTUP_BOUND
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None, "the misbehaving upstream exited"
            assert time.monotonic() < deadline, "the misbehaving upstream did not start"
            time.sleep(0.05)
    yield Upstream("http", "127.0.0.1", port)
    process.terminate()
    process.wait(timeout=10)


async def read(response: Any) -> bytes:
    return b"".join([chunk async for chunk in response.body()])


async def follow_up(client: UpstreamClient, upstream: Upstream, tag: str) -> dict[str, Any]:
    """A well-behaved request after a variant: it must get its own answer."""
    response = await client.send(upstream, "GET", f"/v/ok-{tag}".encode(), [], None, None, 5)
    try:
        assert response.status == 200
        data: dict[str, Any] = json.loads(await read(response))
    finally:
        response.release()
    assert data["path"] == f"/v/ok-{tag}", "the follow-up got bytes of another exchange"
    return data


async def until_no_idle_connection(client: UpstreamClient, upstream: Upstream) -> None:
    deadline = time.monotonic() + 30
    while client.idle(upstream):
        assert time.monotonic() < deadline, "the pooled connection was kept after late bytes"
        await asyncio.sleep(0.01)


async def first_exchange(client: UpstreamClient, upstream: Upstream, variant: Variant) -> None:
    target = f"/v/{variant.name}".encode()

    async def send() -> Any:
        return await client.send(upstream, variant.method, target, [], None, None,
                                 variant.wait_seconds)  # fmt: skip

    if variant.outcome == "head-error":
        with pytest.raises(UpstreamError):
            await send()
        return
    if variant.outcome == "timeout":
        with pytest.raises(UpstreamTimeout):
            await send()
        return
    response = await send()
    try:
        assert response.status == variant.status
        headers = [(name.decode().lower(), value.decode()) for name, value in response.headers]
        for expected in variant.headers:
            assert expected in headers
        for name in variant.absent:
            assert name not in dict(headers), f"{name} is not a header of the final response"
        if variant.outcome == "body-error":
            received = b""
            with pytest.raises(UpstreamError):
                async for chunk in response.body():
                    received += chunk
            resets = any(isinstance(step, Close) and step.reset for step in variant.steps)
            assert variant.body.startswith(received) if resets else received == variant.body
        else:
            assert await read(response) == variant.body
    finally:
        response.release()


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=lambda variant: variant.name)
def test_every_upstream_behaviour(misbehaving: Upstream, variant: Variant) -> None:
    async def scenario() -> None:
        client = UpstreamClient()
        try:
            await first_exchange(client, misbehaving, variant)
            if variant.settle:
                await until_no_idle_connection(client, misbehaving)
            data = await follow_up(client, misbehaving, variant.name)
            reused = data["request_on_connection"] == 2
            assert reused == (variant.outcome == "reused"), data
            assert client.idle(misbehaving) == 1
        finally:
            client.close()

    run(scenario())


def test_the_corpus_covers_every_kind() -> None:
    """The table is generated; make sure no kind fell out of it."""
    names = set(VARIANTS)
    for kind in ("100-", "102-", "103-", "103x2-", "150-", "101", "204", "304", "head-",
                 "close-delimited", "trailers", "connection-close", "dies-", "junk-", "drip",
                 "hint-then-pause", "status-", "length-and-chunked"):  # fmt: skip
        assert any(kind in name for name in names), kind
    outcomes = {variant.outcome for variant in VARIANTS.values()}
    assert outcomes == {"reused", "closed", "head-error", "body-error", "timeout"}


# --- the retry rule -------------------------------------------------------------------------

IDEMPOTENT = ("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE")  # RFC 9110 §9.2.2
BODIES: dict[str, tuple[bytes, int | None] | None] = {
    "no-body": None,
    "empty-length": (b"", 0),
    "length": (b"data", 4),
    "chunked": (b"data", None),
}
RETRY_CASES = [
    pytest.param(
        stale,
        method,
        body,
        # Retried only when nothing of a response arrived, nothing of a body
        # was sent, and the method is idempotent.
        stale != "stale-answers-partly" and body == "no-body" and method in IDEMPOTENT,
        id=f"{stale}-{method}-{body}",
    )
    for stale in STALE
    for method in (*IDEMPOTENT, "POST", "PATCH")
    for body in BODIES
]


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.mark.parametrize(("stale", "method", "body", "retried"), RETRY_CASES)
def test_a_dead_pooled_connection_is_retried_only_when_safe(
    misbehaving: Upstream, stale: str, method: str, body: str, retried: bool
) -> None:
    case = f"{stale}-{method}-{body}-{time.monotonic_ns()}"  # a query the upstream counts

    async def scenario() -> None:
        client = UpstreamClient()
        try:
            primed = await client.send(misbehaving, "GET", f"/v/{stale}".encode(), [], None,
                                       None, 5)  # fmt: skip
            first = json.loads(await read(primed))
            primed.release()
            assert client.idle(misbehaving) == 1
            framing = BODIES[body]
            content = chunks(framing[0]) if framing else None
            length = framing[1] if framing else None
            target = f"/v/ok-retry?{case}".encode()

            if not retried:
                with pytest.raises(UpstreamError):
                    await client.send(misbehaving, method, target, [], content, length, 5)
                # Sent once: the upstream has seen it, and this follow-up.
                assert (await seen(client, misbehaving, case)) == 2
                return
            response = await client.send(misbehaving, method, target, [], content, length, 5)
            assert response.status == 200
            response.release()
            if method != "HEAD":  # the echo of a HEAD has no body to read
                assert (await seen(client, misbehaving, case)) == 3  # the dead try, the retry
                return
            # The retry went on a fresh connection.
            data = await follow_up(client, misbehaving, f"after-retry?{case}")
            assert data["connection"] != first["connection"]
        finally:
            client.close()

    run(scenario())


async def seen(client: UpstreamClient, upstream: Upstream, case: str) -> int:
    """How many requests with this query the upstream has seen, this one included."""
    response = await client.send(upstream, "GET", f"/v/ok-seen?{case}".encode(), [], None,
                                 None, 5)  # fmt: skip
    data = json.loads(await read(response))
    response.release()
    count: int = data["query_seen"]
    return count


def test_a_fresh_connection_that_fails_is_never_retried(misbehaving: Upstream) -> None:
    case = f"fresh-{time.monotonic_ns()}"

    async def scenario() -> None:
        client = UpstreamClient()
        try:
            for name in ("dies-before-response", "resets-before-response"):
                with pytest.raises(UpstreamError):
                    await client.send(misbehaving, "GET", f"/v/{name}?{case}".encode(), [],
                                      None, None, 5)  # fmt: skip
            assert (await seen(client, misbehaving, case)) == 3
        finally:
            client.close()

    run(scenario())


# --- through the real gateway --------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(
    misbehaving: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerURL, dict[str, tuple[str, str]]]]:
    """keystile in front of the misbehaving upstream, with a key of each of
    two accounts: name -> (account id, key)."""
    directory = tmp_path_factory.mktemp("misbehaving-gateway")
    routes = directory / "routes.toml"
    routes.write_text(
        f"""
[[routes]]
prefix = "/v"
methods = ["GET", "HEAD", "POST"]
scope = "read:contacts"
upstream = "http://{misbehaving.host}:{misbehaving.port}"
timeout_seconds = 5
"""
    )
    env = keystile_env(
        directory / "data",
        KEYSTILE_ROUTES=str(routes),
        KEYSTILE_TIER_STANDARD="100000/10 seconds",
    )
    keys = {"a": cli_admin(env, "read:contacts")}
    created = run_cli("accounts", "create", "Other", "--json", env=env)
    other = json.loads(created.stdout)["data"]["id"]
    made = run_cli("keys", "create", "--account", other, "--name", "b",
                   "--permission", "read:contacts", "--json", env=env)  # fmt: skip
    keys["b"] = (other, json.loads(made.stdout)["data"]["key"])
    LEDGER.remember(keys["b"][1])
    assert keys["a"][0] != keys["b"][0]
    with serving(env, log=directory / "server.log") as url:
        yield url, keys


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_an_early_hint_never_hands_one_accounts_response_to_another(gateway: Any) -> None:
    """Issue 11's exploit: A's upstream answers 103, then its 200 a moment
    later; B, of another account, asks right after. B must get its own."""
    url, keys = gateway
    (_, key_a), (account_b, key_b) = keys["a"], keys["b"]

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            for round_ in range(3):
                slow_a = asyncio.create_task(
                    http.get("/v/slow-final-after-hint", headers=bearer(key_a))
                )
                during = await asyncio.gather(
                    *(http.get(f"/v/ok-b{round_}-{n}", headers=bearer(key_b)) for n in range(5))
                )
                a = await slow_a
                after = await http.get(f"/v/ok-b{round_}-after", headers=bearer(key_b))
                assert (a.status_code, a.content) == (200, b"hello world")
                for n, b in enumerate([*during, after]):
                    assert b.status_code == 200, b.text
                    data = b.json()
                    assert data["account"] == account_b
                    assert data["path"] == f"/v/ok-b{round_}-{'after' if n == 5 else n}"

    asyncio.run(scenario())


def raw_exchange(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_interim_responses_are_not_forwarded(gateway: Any) -> None:
    url, keys = gateway
    key = keys["a"][1]
    for name in ("103-length-one-write", "100-102-103-chunked-drip", "103x2-trailers-one-write"):
        data = raw_exchange(
            url,
            f"GET /v/{name} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data[:80]
        head, _, _ = data.partition(b"\r\n\r\n")
        assert b"link:" not in head.lower() and b"x-checksum" not in head.lower()


@pytest.mark.parametrize("name", ["101", "103-then-101", "status-999", "length-and-chunked"])
def test_unusable_responses_are_502(gateway: Any, name: str) -> None:
    url, keys = gateway
    response = httpx.get(f"{url}/v/{name}", headers=bearer(keys["a"][1]))
    assert (response.status_code, response.json()["error"]["code"]) == (502, "bad_gateway")


@pytest.mark.parametrize("name", ["dies-mid-length", "dies-mid-chunk", "hint-then-dies-mid-body"])
def test_an_upstream_dying_mid_body_cuts_the_client(gateway: Any, name: str) -> None:
    url, keys = gateway
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{url}/v/{name}", headers=bearer(keys["a"][1]))


class RawClient:
    """One keep-alive connection to keystile, read by hand: shows whether
    keystile kept the client's connection as well as what it answered."""

    def __init__(self, url: str, key: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.key = key
        self.buffer = b""

    def request(self, method: str, target: str) -> tuple[int, dict[bytes, bytes], bytes]:
        self.sock.sendall(
            f"{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {self.key}\r\n\r\n"
            .encode()
        )  # fmt: skip
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
        length = 0 if method == "HEAD" or status in (204, 304) else int(headers[b"content-length"])
        while len(self.buffer) < length:
            self.buffer += self._recv()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        assert chunk, "keystile closed the client's connection"
        return chunk

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize(
    ("method", "name", "status", "length"),
    [("HEAD", "head-length", 200, b"1000"), ("HEAD", "head-chunked", 200, None),
     ("GET", "204", 204, None), ("GET", "304-length", 304, None),
     ("GET", "103-304", 304, None), ("HEAD", "103-head-length", 200, b"1000")],
)  # fmt: skip
def test_bodiless_responses_keep_both_connections(
    gateway: Any, method: str, name: str, status: int, length: bytes | None
) -> None:
    url, keys = gateway
    client = RawClient(url, keys["a"][1])
    try:
        _, _, before = client.request("GET", "/v/ok-before")
        got, headers, body = client.request(method, f"/v/{name}")
        assert (got, body) == (status, b"")
        assert headers.get(b"content-length") == length
        _, _, after = client.request("GET", "/v/ok-after")
    finally:
        client.close()
    first, last = json.loads(before), json.loads(after)
    assert last["connection"] == first["connection"]  # the upstream connection, reused
    assert last["request_on_connection"] == first["request_on_connection"] + 2
