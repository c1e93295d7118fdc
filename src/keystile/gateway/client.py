"""A lean HTTP/1.1 client for forwarding requests to upstreams.

keystile's own: keep-alive HTTP/1.1 with streaming both ways, on an asyncio
Protocol with httptools' parser (llhttp, the one uvicorn uses), with a
per-upstream LIFO pool of idle connections. Bodies stream with back-pressure
in both directions: writing waits while the socket's buffer is full, and
reading pauses while more than ``READ_BUFFER_LIMIT`` bytes of the response
wait for the client.

Why not a library (re-decided for issue 11 with ``bench/upstream_clients.py``:
64 concurrent requests to a bare local upstream on this 2-core machine, and
the corpus of ``tests/e2e/misbehaving_upstream.py``; details in
docs/gateway.md). The rule was: a well-kept library wins if it handles the
corpus and costs at most ~25 % more CPU per request. None does either:

- this client: 23 µs of CPU per request, ≈ 29,000 requests/s; 284 of 284
  variants as expected;
- aiohttp 3.14 (``TCPConnector`` tuned: no limit, keep-alive, no cookie jar,
  no decompression, no automatic headers): 85 µs (3.7×); it reads bytes
  that arrive on an idle pooled connection as the next request's response
  (one client's bytes to another), returns a ``101`` as a response, and
  never times out once an interim response has arrived;
- httpcore 1.0 (httpx's transport): 7,800 µs and 86 requests/s in its own
  pool (it re-checks every pooled connection for each request), 260 µs
  (11×) under a plain LIFO pool; it reads bytes that follow a response in
  the same read as the next request's response.

What an upstream may send and what comes of it is in docs/gateway.md ("What
an upstream sends back"); every case is tested. The rule under all of it: a
connection goes back to the pool only after a complete response that leaves
both ends agreeing where it ended, so no byte of one exchange can be read as
the next one's response. The rules are applied in :class:`Connection`'s
parser callbacks.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

from keystile.gateway.connection import (
    DONE,
    IDEMPOTENT_METHODS,
    MAX_IDLE_PER_UPSTREAM,
    READ_BUFFER_LIMIT,
    Connection,
    Exchange,
    Upstream,
    UpstreamError,
    UpstreamTimeout,
)

__all__ = ["Upstream", "UpstreamClient", "UpstreamError", "UpstreamResponse", "UpstreamTimeout"]


class UpstreamResponse:
    """Status and headers of an upstream's response; the body is read with
    :meth:`body`, after which the connection goes back to the pool."""

    def __init__(
        self,
        client: UpstreamClient,
        connection: Connection,
        exchange: Exchange,
        wait_seconds: float,
    ) -> None:
        self._client = client
        self._connection = connection
        self._exchange = exchange
        self._wait = wait_seconds
        self.status = exchange.status
        self.headers = exchange.headers
        self._released = False

    async def body(self) -> AsyncIterator[bytes]:
        exchange = self._exchange
        connection = self._connection
        while True:
            if exchange.chunks:
                chunk = exchange.chunks.popleft()
                exchange.buffered -= len(chunk)
                if exchange.buffered <= READ_BUFFER_LIMIT // 2 and connection.transport is not None:
                    connection.transport.resume_reading()
                yield chunk
                continue
            if exchange.phase == DONE:
                return
            if exchange.error is not None:
                raise exchange.error
            exchange.waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self._wait):
                    await exchange.waiter
            except TimeoutError:
                raise UpstreamTimeout("the upstream stopped sending its body") from None
            finally:
                exchange.waiter = None

    def release(self) -> None:
        """Back to the pool if the whole response was read on a keep-alive
        connection; closed otherwise."""
        if self._released:
            return
        self._released = True
        connection = self._connection
        connection.exchange = None
        exchange = self._exchange
        if exchange.phase == DONE and exchange.keep_alive and not connection.closed:
            self._client.give_back(connection)
        else:
            connection.close()


class UpstreamClient:
    def __init__(self) -> None:
        self._idle: dict[Upstream, list[Connection]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def _connect(self, upstream: Upstream, wait_seconds: float) -> Connection:
        loop = asyncio.get_running_loop()
        context = None
        if upstream.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(wait_seconds):
                _, protocol = await loop.create_connection(
                    lambda: Connection(upstream),
                    upstream.host,
                    upstream.port,
                    ssl=context,
                    server_hostname=upstream.host if context else None,
                )
        except TimeoutError:
            raise UpstreamTimeout(
                f"connecting to {upstream.host}:{upstream.port} timed out"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError(
                f"cannot connect to {upstream.host}:{upstream.port}: {exc}"
            ) from None
        return protocol

    def _take_idle(self, upstream: Upstream) -> Connection | None:
        idle = self._idle.get(upstream)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                connection.reused = True
                return connection
        return None

    def idle(self, upstream: Upstream) -> int:
        """How many open connections to ``upstream`` wait in the pool."""
        return sum(not connection.closed for connection in self._idle.get(upstream, ()))

    def give_back(self, connection: Connection) -> None:
        idle = self._idle.setdefault(connection.upstream, [])
        if len(idle) >= MAX_IDLE_PER_UPSTREAM:
            connection.close()
        else:
            idle.append(connection)

    async def send(  # each phase (connect, answer, each body chunk) waits wait_seconds
        self,
        upstream: Upstream,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | None,
        content_length: int | None,
        wait_seconds: float,
    ) -> UpstreamResponse:
        """Send the request; return once the final response's head has arrived.

        ``body`` is None for a request without one, else its chunks (sent
        with ``content_length``, or chunked when that is None). Raises
        :class:`UpstreamError` (→ 502) and :class:`UpstreamTimeout` (→ 504).
        Sent once more, on a fresh connection, only when a pooled connection
        turned out dead before any byte of a response arrived, the method is
        idempotent and the request has no body at all (so nothing of it was
        consumed): a POST is never sent twice.
        """
        head = [
            f"{method} ".encode(),
            target,
            b" HTTP/1.1\r\nhost: ",
            upstream.host_header,
            b"\r\n",
        ]
        for name, value in headers:
            head += [name, b": ", value, b"\r\n"]
        if body is not None:
            head.append(
                b"content-length: %d\r\n" % content_length
                if content_length is not None
                else b"transfer-encoding: chunked\r\n"
            )
        head.append(b"\r\n")
        request_head = b"".join(head)

        connection = self._take_idle(upstream)
        if connection is None:
            connection = await self._connect(upstream, wait_seconds)
        head_only = method == "HEAD"
        try:
            return await self._exchange(
                connection, request_head, head_only, body, content_length, wait_seconds
            )
        except UpstreamError:
            exchange = connection.exchange
            if not (
                connection.reused
                and body is None
                and method in IDEMPOTENT_METHODS
                and exchange is not None
                and not exchange.started
            ):
                raise
        connection.close()
        connection = await self._connect(upstream, wait_seconds)
        return await self._exchange(connection, request_head, head_only, None, None, wait_seconds)

    async def _exchange(
        self,
        connection: Connection,
        request_head: bytes,
        head_only: bool,
        body: AsyncIterator[bytes] | None,
        content_length: int | None,
        wait_seconds: float,
    ) -> UpstreamResponse:
        loop = asyncio.get_running_loop()
        exchange = Exchange(loop.create_future(), head_only)
        connection.renew_parser()
        connection.exchange = exchange
        try:
            async with asyncio.timeout(wait_seconds):
                connection.write(request_head)
                if body is not None:
                    await self._send_body(connection, body, chunked=content_length is None)
                await exchange.head
        except TimeoutError:
            connection.close()
            raise UpstreamTimeout("the upstream did not answer in time") from None
        except BaseException:
            connection.close()
            raise
        return UpstreamResponse(self, connection, exchange, wait_seconds)

    @staticmethod
    async def _send_body(
        connection: Connection, body: AsyncIterator[bytes], *, chunked: bool
    ) -> None:
        async for chunk in body:
            if connection.closed:
                raise UpstreamError("the upstream closed the connection")
            if chunked:
                connection.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                connection.write(chunk)
            await connection.drain()
        if chunked:
            connection.write(b"0\r\n\r\n")

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
