"""Upstream HTTP clients compared on the gateway's path, by hand:
``python -m bench.upstream_clients [--requests N] [--rounds R] [--corpus]``.

Not a test and not part of ``make bench``. It needs aiohttp, which keystile
does not depend on: ``.venv/bin/pip install aiohttp`` first.

**Speed.** One local upstream (a bare HTTP/1.1 responder on a raw asyncio
protocol under uvloop, in its own process, so its CPU is not counted) is
driven at 64 concurrent requests, a fixed count per client, by:

- ``keystile``: keystile's own client (``keystile.gateway.client``);
- ``aiohttp``: ``ClientSession`` with a ``TCPConnector`` tuned for a proxy
  (no connection limit beyond the concurrency, keep-alive, no cookie jar,
  no decompression, no automatic headers, DNS cache on);
- ``httpcore-pool``: httpcore's ``AsyncConnectionPool`` (what httpx uses),
  64 connections, HTTP/1.1 only, no retries;
- ``httpcore-lifo``: httpcore's ``AsyncHTTPConnection`` under a plain LIFO
  pool of our own (httpcore's parsing without httpcore's pool).

Each sends the gateway's request headers and streams the body, as the proxy
does. The clients run interleaved, ``--rounds`` times; reported are the
medians of requests/s and of the client process's CPU µs per request (user
plus system, ``time.process_time``). Everything runs on loopback.

**Correctness** (``--corpus``): every variant of
``tests/e2e/misbehaving_upstream.py`` through each client, judged as the
tests judge keystile's (final status and body, headers, errors, whether the
connection is reused, and whether the next request gets its own answer).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, cast

import httpcore
import uvloop

from keystile.gateway.client import Upstream, UpstreamClient, UpstreamTimeout

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = 64
# What the proxy sends upstream for a typical gateway request.
HEADERS = [
    (b"accept", b"application/json"),
    (b"user-agent", b"bench/1.0"),
    (b"x-forwarded-for", b"127.0.0.1"),
    (b"x-forwarded-proto", b"http"),
    (b"x-forwarded-host", b"127.0.0.1:8080"),
    (b"x-request-id", b"req_f25069caf36acdee7feb112f1"),
    (b"x-keystile-key-id", b"key_01M8NVTQ1EGPSTWJZB3F80TXBA"),
    (b"x-keystile-account-id", b"acc_01M8NVTP00VJP5EKTN9X864HWY"),
    (b"x-keystile-scopes", b"read:contacts read:deals"),
]
_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


# --- the upstream ------------------------------------------------------------------


class _Bare(asyncio.Protocol):
    """Answers every request head (no request bodies here) with a fixed 200."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.pending += data
        count = self.pending.count(b"\r\n\r\n")
        if count:
            self.pending = self.pending[self.pending.rindex(b"\r\n\r\n") + 4 :]
            assert self.transport is not None
            self.transport.write(_RESPONSE * count)


async def _serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Bare, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _process(*args: str) -> Iterator[int]:
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", *args, str(port)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"{args[0]} did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- the clients, behind one interface ------------------------------------------------

Headers = list[tuple[str, str]]
Sent = tuple[int, Headers, AsyncIterator[bytes]]


class Client(Protocol):
    async def send(self, method: str, target: str, wait: float) -> Sent: ...

    async def aclose(self) -> None: ...


def is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, UpstreamTimeout | TimeoutError | httpcore.TimeoutException)


class KeystileClient:
    def __init__(self, port: int) -> None:
        self.client = UpstreamClient()
        self.upstream = Upstream("http", "127.0.0.1", port)

    async def send(self, method: str, target: str, wait: float) -> Sent:
        response = await self.client.send(
            self.upstream, method, target.encode(), HEADERS, None, None, wait
        )
        headers = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in response.headers]

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.body():
                    yield chunk
            finally:
                response.release()

        return response.status, headers, body()

    async def aclose(self) -> None:
        self.client.close()


class AiohttpClient:
    def __init__(self, port: int) -> None:
        aiohttp: Any = importlib.import_module("aiohttp")
        self.yarl: Any = importlib.import_module("yarl")
        self.base = f"http://127.0.0.1:{port}"
        self.headers = {name.decode(): value.decode() for name, value in HEADERS}
        self.aiohttp = aiohttp
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0, limit_per_host=0, keepalive_timeout=60, use_dns_cache=True,
                ttl_dns_cache=None, enable_cleanup_closed=False,
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            trust_env=False,
            raise_for_status=False,
        )  # fmt: skip

    async def send(self, method: str, target: str, wait: float) -> Sent:
        response = await self.session.request(
            method,
            self.yarl.URL(self.base + target, encoded=True),
            headers=self.headers,
            allow_redirects=False,
            timeout=self.aiohttp.ClientTimeout(total=None, connect=wait, sock_read=wait),
        )
        headers = [(name.lower(), value) for name, value in response.headers.items()]

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.content.iter_any():
                    yield chunk
            finally:
                response.release()

        return response.status, headers, body()

    async def aclose(self) -> None:
        await self.session.close()


def _httpcore_request(port: int, method: str, target: str, wait: float) -> httpcore.Request:
    return httpcore.Request(
        method.encode(),
        httpcore.URL(scheme=b"http", host=b"127.0.0.1", port=port, target=target.encode()),
        headers=[(b"host", b"127.0.0.1:%d" % port), *HEADERS],
        extensions={"timeout": {"connect": wait, "read": wait, "write": wait, "pool": wait}},
    )


def _httpcore_sent(response: httpcore.Response, done: Callable[[], Awaitable[None]]) -> Sent:
    headers = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in response.headers]

    async def body() -> AsyncIterator[bytes]:
        try:
            stream: Any = response.stream
            async for chunk in stream:
                yield chunk
        finally:
            await response.aclose()
            await done()

    return response.status, headers, body()


async def _nothing() -> None:
    pass


class HttpcorePoolClient:
    def __init__(self, port: int) -> None:
        self.port = port
        self.pool = httpcore.AsyncConnectionPool(
            max_connections=CONCURRENCY,
            max_keepalive_connections=CONCURRENCY,
            keepalive_expiry=60,
            http1=True,
            http2=False,
            retries=0,
        )

    async def send(self, method: str, target: str, wait: float) -> Sent:
        request = _httpcore_request(self.port, method, target, wait)
        response = await self.pool.handle_async_request(request)
        return _httpcore_sent(response, _nothing)

    async def aclose(self) -> None:
        await self.pool.aclose()


class HttpcoreLifoClient:
    """httpcore's HTTP/1.1 connections, pooled by a plain LIFO list."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.origin = httpcore.Origin(b"http", b"127.0.0.1", port)
        self.idle: list[httpcore.AsyncHTTPConnection] = []

    async def send(self, method: str, target: str, wait: float) -> Sent:
        connection = None
        while self.idle:
            candidate = self.idle.pop()
            if candidate.is_available() and not candidate.has_expired():
                connection = candidate
                break
            await candidate.aclose()
        if connection is None:
            connection = httpcore.AsyncHTTPConnection(self.origin, keepalive_expiry=60)
        request = _httpcore_request(self.port, method, target, wait)
        try:
            response = await connection.handle_async_request(request)
        except BaseException:
            await connection.aclose()
            raise
        chosen = connection

        async def done() -> None:
            if chosen.is_idle():
                self.idle.append(chosen)
            else:
                await chosen.aclose()

        return _httpcore_sent(response, done)

    async def aclose(self) -> None:
        for connection in self.idle:
            await connection.aclose()


# httpcore's pool serves ~100 requests/s at this concurrency; its cost per
# request does not shrink with more of them, so it gets fewer.
SHARE = {"httpcore-pool": 0.05}

CLIENTS: dict[str, Callable[[int], Client]] = {
    "keystile": KeystileClient,
    "aiohttp": AiohttpClient,
    "httpcore-pool": HttpcorePoolClient,
    "httpcore-lifo": HttpcoreLifoClient,
}


# --- speed -------------------------------------------------------------------------------


async def _drive(client: Client, total: int) -> None:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            status, _, body = await client.send("GET", "/bench", 10)
            async for _ in body:
                pass
            assert status == 200

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def _measure(name: str, port: int, total: int) -> tuple[float, float]:
    client = CLIENTS[name](port)
    total = int(total * SHARE.get(name, 1))
    try:
        await _drive(client, min(total, 2000))  # warm-up: connections, caches
        wall, cpu = time.perf_counter(), time.process_time()
        await _drive(client, total)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await client.aclose()
    return total / wall, cpu / total * 1e6


def speed(total: int, rounds: int) -> None:
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CLIENTS}
    with _process("bench.upstream_clients", "--serve") as port:
        for round_ in range(rounds):
            for name in CLIENTS:  # interleaved: drift on a shared machine hits all alike
                rps, cpu = uvloop.run(_measure(name, port, total))
                results[name].append((rps, cpu))
                print(f"round {round_ + 1} {name:14} {rps:9,.0f} req/s {cpu:7.1f} µs CPU/req")
    print(f"\n{total:,} requests per client per round (httpcore-pool: "
          f"{int(total * SHARE['httpcore-pool']):,}), {CONCURRENCY} concurrent, medians:")  # fmt: skip
    base = statistics.median(cpu for _, cpu in results["keystile"])
    print("| client | requests/s | client CPU µs/request | CPU vs keystile |")
    print("|---|---:|---:|---:|")
    for name, runs in results.items():
        rps = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"| {name} | {rps:,.0f} | {cpu:.1f} | {cpu / base:.2f}× |")


# --- correctness ----------------------------------------------------------------------------


async def _judge(client: Client, variant: Any) -> tuple[str, str]:
    """(what happened, verdict). Verdicts: ``ok``; ``leak`` (the next request
    got bytes of this exchange as its response); ``next-broken`` (the next
    request failed on this exchange's leftovers); ``wrong`` (a response the
    rules refuse, or a cut one, delivered as good; or a connection reused
    after bytes it should have distrusted); ``hung``; ``conservative`` (an
    error or a closed connection where the exchange could have succeeded)."""
    outcome = variant.outcome
    try:
        status, headers, body = await client.send(
            variant.method, f"/v/{variant.name}", variant.wait_seconds
        )
    except Exception as exc:  # each library raises its own classes
        got = "timeout" if is_timeout(exc) else "head-error"
        if got == outcome or (outcome == "timeout" and got == "head-error"):
            return got, "ok"
        return f"{got} ({type(exc).__name__})", "conservative"
    received = b""
    try:
        async for chunk in body:
            received += chunk
    except Exception as exc:
        if outcome == "body-error":
            return "body-error", "ok"
        verdict = "conservative" if status == variant.status else "wrong"
        return f"status {status}, then body error ({type(exc).__name__})", verdict
    if outcome in ("head-error", "timeout", "body-error"):
        return f"status {status}, body {received[:20]!r} delivered as complete", "wrong"
    if status != variant.status or received != variant.body:
        return f"status {status}, body {received[:20]!r}", "wrong"
    names = {name for name, _ in headers}
    if any(name in names for name in variant.absent) or any(
        header not in headers for header in variant.headers
    ):
        return "wrong headers (interim or trailer fields kept, or headers lost)", "wrong"
    if variant.settle:
        await asyncio.sleep(0.3)
    try:
        status, _, body = await client.send("GET", f"/v/ok-{variant.name}", 5)
        answer = b"".join([chunk async for chunk in body])
    except Exception as exc:
        return f"the next request failed ({type(exc).__name__})", "next-broken"
    try:
        data = json.loads(answer)
    except ValueError:
        return f"the next request got {answer[:30]!r}", "leak"
    if status != 200 or data.get("path") != f"/v/ok-{variant.name}":
        return f"the next request got {answer[:30]!r}", "leak"
    reused = data["request_on_connection"] == 2
    if reused and outcome != "reused":
        return "connection reused after a response it should distrust", "wrong"
    if not reused and outcome == "reused":
        return "connection not reused", "conservative"
    return outcome, "ok"


async def _corpus_one(name: str, port: int, variant: Any) -> tuple[str, str]:
    client = CLIENTS[name](port)
    try:
        async with asyncio.timeout(15):
            return await _judge(client, variant)
    except TimeoutError:
        return "hung", "hung"
    finally:
        await client.aclose()


def corpus() -> None:
    sys.path.insert(0, str(ROOT))
    table = importlib.import_module("tests.e2e.misbehaving_upstream")
    variants: dict[str, Any] = table.VARIANTS
    interims = sorted((name for name in table.INTERIMS if name), key=len, reverse=True)
    with _process("tests.e2e.misbehaving_upstream") as port:
        for name in CLIENTS:
            verdicts: Counter[str] = Counter()
            failures: Counter[str] = Counter()
            for variant in variants.values():
                what, verdict = uvloop.run(_corpus_one(name, port, variant))
                verdicts[verdict] += 1
                if verdict != "ok":
                    failures[f"{verdict}: {_kind(variant.name, interims)}: {what}"] += 1
            counts = ", ".join(f"{verdict} {n}" for verdict, n in verdicts.most_common())
            print(f"\n## {name}: {verdicts['ok']}/{len(variants)} as expected ({counts})")
            for failure, count in sorted(failures.items()):
                print(f"- {count} × {failure}")


def _kind(name: str, interims: list[str]) -> str:
    """A variant's kind, from its generated name."""
    for suffix in ("-one-write", "-drip", "-hint-then-pause"):
        if name.endswith(suffix):
            final = name.removesuffix(suffix)
            for interim in interims:
                if final.startswith(f"{interim}-"):
                    return f"1xx then {final.removeprefix(interim + '-')}"
            return final
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--corpus", action="store_true", help="run the correctness corpus only")
    args = parser.parse_args()
    if not args.serve and importlib.util.find_spec("aiohttp") is None:
        raise SystemExit("aiohttp is not installed: .venv/bin/pip install aiohttp")
    if args.serve:
        uvloop.run(_serve(args.serve))
    elif args.corpus:
        corpus()
    else:
        speed(args.requests, args.rounds)


if __name__ == "__main__":
    main()
