"""One keep-alive HTTP/1.1 connection to an upstream, and the rules its
parser applies to what the upstream sends (see :mod:`keystile.gateway.client`
for the pool and the request side, and docs/gateway.md, "What an upstream
sends back").
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools

READ_BUFFER_LIMIT = 256 * 1024
MAX_IDLE_PER_UPSTREAM = 256
MAX_HEAD_BYTES = 64 * 1024  # a response head still incomplete past this is refused
# RFC 9110 §9.2.2: the only methods a client may send twice on its own.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class UpstreamError(Exception):
    """The upstream refused, dropped the connection or broke the protocol (→ 502)."""


class UpstreamTimeout(Exception):
    """The upstream did not connect or answer within the route's timeout (→ 504)."""


@dataclass(frozen=True, slots=True)
class Upstream:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Upstream:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname or "", port)

    @property
    def host_header(self) -> bytes:
        default = 443 if self.scheme == "https" else 80
        return (self.host if self.port == default else f"{self.host}:{self.port}").encode()


# An exchange's phases: waiting for the final response's head (interim
# responses come and go here), reading its body, complete.
AWAITING_HEAD, IN_BODY, DONE = 0, 1, 2


@dataclass(eq=False, slots=True)
class Exchange:
    """One request/response on a connection."""

    head: asyncio.Future[None]
    head_only: bool  # a response to HEAD: it ends with its head
    phase: int = AWAITING_HEAD
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    status: int = 0
    keep_alive: bool = False
    until_close: bool = False  # the body ends when the upstream closes
    parser_may_finish: bool = False  # the parser may still end the message we ended
    chunks: deque[bytes] = field(default_factory=deque)
    buffered: int = 0
    head_bytes: int = 0
    error: BaseException | None = None
    waiter: asyncio.Future[None] | None = None
    started: bool = False  # any byte of a response arrived

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def fail(self, error: BaseException) -> None:
        if self.phase == DONE:
            return
        self.error = error
        if not self.head.done():
            self.head.set_exception(error)
        self.wake()


def _after_the_end() -> UpstreamError:
    return UpstreamError("the upstream sent bytes after the end of its response")


def _framing(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None]:
    """The values of Content-Length and Transfer-Encoding (None when absent)."""
    length = coding = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            length = value
        elif lowered == b"transfer-encoding":
            coding = value if coding is None else coding + b"," + value
    return length, coding


def _declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """A Content-Length other than 0, or any Transfer-Encoding: what a 1xx or
    204 must not send (RFC 9110 §8.6, RFC 9112 §6.1)."""
    length, coding = _framing(headers)
    return coding is not None or (length is not None and length.strip() != b"0")


def _until_close(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the body is delimited by the end of the connection (RFC 9112
    §6.3): no Content-Length and no chunked coding last."""
    length, coding = _framing(headers)
    if coding is not None:
        return coding.rsplit(b",", 1)[-1].strip().lower() != b"chunked"
    return length is None


def _persistent(version: str, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the upstream keeps the connection open (RFC 9112 §9.3)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens |= {token.strip().lower() for token in value.split(b",")}
    return b"close" not in tokens if version == "1.1" else b"keep-alive" in tokens


class Connection(asyncio.Protocol):
    """One connection to an upstream and the exchange it is carrying.

    The parser's callbacks apply every rule about what an upstream may send
    (RFC 9110, RFC 9112); anything out of place raises :class:`UpstreamError`
    from a callback, which stops the parser, fails the exchange (unless it is
    already complete) and closes the connection:

    - interim responses (1xx but 101) are dropped until the final one; one
      that declares a body (RFC 9110 §8.6), a 101 (never asked for) and a
      status outside 100-599 are errors;
    - a response to HEAD, a 204 and a 304 end with their head (RFC 9112 §6.3
      rule 1). httptools cannot be told that a response answers a HEAD (its
      parser ignores what ``on_headers_complete`` returns), so the exchange
      is ended here, the parser may still end the message once without a
      byte more, and the connection gets a fresh parser for its next
      exchange. A 204 that declares a body is not reused;
    - a body with neither a length nor chunked coding last ends at the
      upstream's EOF (rules 4 and 8) and the connection is not reused;
    - trailer fields are read and dropped;
    - any byte after a complete response closes the connection, whether it
      comes in the same read (a callback after the end) or later
      (``data_received`` with no exchange in progress). The exception is
      llhttp's: empty lines between two messages in one read are skipped
      without a callback; they can never form a response;
    - a head (interim responses included) still incomplete after
      ``MAX_HEAD_BYTES`` is an error.
    """

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.between_messages = True  # the parser expects a new response
        self.closed = False
        self.reused = False
        self.exchange: Exchange | None = None
        self._writable = asyncio.Event()
        self._writable.set()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None or exchange.phase == DONE:
            # Nothing may follow a complete response: these bytes would be
            # taken for the answer to the next request sent on this connection.
            self.close()
            return
        exchange.started = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            cause = exc.__context__
            exchange.fail(
                cause
                if isinstance(cause, UpstreamError)
                else UpstreamError(f"invalid response: {exc}")
            )
            self.close()
            return
        if exchange.phase == AWAITING_HEAD:
            exchange.head_bytes += len(data)
            if exchange.head_bytes > MAX_HEAD_BYTES:
                exchange.fail(UpstreamError("the response head is too large"))
                self.close()

    def eof_received(self) -> bool:
        exchange = self.exchange
        if exchange is not None and exchange.phase == IN_BODY and exchange.until_close:
            exchange.phase = DONE  # the end of a close-delimited body
            exchange.keep_alive = False
            exchange.wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._writable.set()
        if self.exchange is not None:
            self.exchange.fail(UpstreamError("the upstream closed the connection"))

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # httptools callbacks (only called while an exchange is in progress)
    def on_message_begin(self) -> None:
        self.between_messages = False
        exchange = self.exchange
        assert exchange is not None
        if exchange.phase != AWAITING_HEAD:
            raise _after_the_end()

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self.exchange
        assert exchange is not None
        if exchange.phase == AWAITING_HEAD:
            exchange.headers.append((name, value))
        elif exchange.phase == DONE:
            raise _after_the_end()
        # else a trailer field (RFC 9112 §7.1.2): read and dropped

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        assert exchange is not None
        status = self.parser.get_status_code()
        if not 100 <= status <= 599:
            raise UpstreamError(f"invalid status code {status}")
        if status < 200:
            if status == 101:
                raise UpstreamError("the upstream switched protocols (keystile never asks to)")
            if _declares_body(exchange.headers):
                raise UpstreamError(f"a {status} interim response declared a body")
            exchange.headers = []  # an interim response (RFC 9110 §15.2): dropped
            return
        exchange.status = status
        keep_alive = self.parser.should_keep_alive()
        if exchange.head_only or status == 204 or status == 304:
            # No body, whatever the headers say (RFC 9112 §6.3 rule 1). The
            # parser cannot be told so for HEAD: it may still expect one.
            if exchange.head_only and not keep_alive:
                keep_alive = _persistent(self.parser.get_http_version(), exchange.headers)
            if status == 204 and _declares_body(exchange.headers):
                keep_alive = False  # it may well send the body it declared
            exchange.keep_alive = keep_alive
            exchange.phase = DONE
            exchange.parser_may_finish = True
        else:
            exchange.keep_alive = keep_alive
            exchange.until_close = not keep_alive and _until_close(exchange.headers)
            exchange.phase = IN_BODY
        if not exchange.head.done():
            exchange.head.set_result(None)

    def on_chunk_header(self) -> None:
        exchange = self.exchange
        assert exchange is not None
        if exchange.phase != IN_BODY:
            raise _after_the_end()

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        assert exchange is not None
        assert self.transport is not None
        if exchange.phase != IN_BODY:
            raise _after_the_end()
        exchange.chunks.append(body)
        exchange.buffered += len(body)
        if exchange.buffered > READ_BUFFER_LIMIT:
            self.transport.pause_reading()
        exchange.wake()

    def on_message_complete(self) -> None:
        self.between_messages = True
        exchange = self.exchange
        assert exchange is not None
        if exchange.phase == IN_BODY:
            exchange.phase = DONE
            exchange.wake()
        elif exchange.phase == DONE:
            if not exchange.parser_may_finish:
                raise _after_the_end()
            exchange.parser_may_finish = False  # the parser agrees: no body
        # else the end of an interim response: the final one follows

    # helpers
    def renew_parser(self) -> None:
        """A fresh parser when the last one was left expecting a body that
        never comes (the response to a HEAD request)."""
        if not self.between_messages:
            self.parser = httptools.HttpResponseParser(self)
            self.between_messages = True

    async def drain(self) -> None:
        await self._writable.wait()
        if self.closed:
            raise UpstreamError("the upstream closed the connection")

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
