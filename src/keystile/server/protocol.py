"""keystile's HTTP/1.1 connections: uvicorn's httptools protocol, with limits.

uvicorn 0.54 has no header read timeout, no limit on the size or the number
of header fields, and no connection cap, and it never closes a connection
that has not sent a request. :class:`KeystileHttpProtocol` adds, per
connection (the values come from :class:`HttpLimits`):

- **Head limits.** From the first byte of the request line to the blank line
  at most ``max_head_bytes``, and at most ``max_headers`` header fields; over
  either, ``431 request_header_fields_too_large`` (RFC 6585 §5). A head is
  cut as soon as it is known to be over, so memory stays bounded by the limit
  plus one read (≤ 256 KiB).
- **Header timeout.** A head must be complete ``header_timeout`` seconds
  after its first byte, however it trickles in (slowloris); else
  ``400 validation_error`` (field ``headers``).
- **Idle timeout.** A connection with no request in progress (a new one, or
  one between keep-alive requests) is closed ``keepalive_timeout`` seconds
  after it became idle. Empty lines before a request (RFC 9112 §2.2) do not
  make it busy, so they cannot keep it open.
- **Connection cap.** At ``max_connections`` a new connection first closes the
  connections nearest their own timeout among those with no request in
  progress (idle, or still sending a head), like nginx frees its reusable
  connections; only when every connection has a request in progress is the
  new one refused with ``503 service_unavailable``. Idle sockets therefore
  cannot lock anyone out.

Every response the front end writes itself (a malformed request's 400
included) has the contract's §3 envelope and headers, and ends the
connection: the front end stops sending and drops what the client still
sends for :data:`LINGER_SECONDS`, so the client reads the answer instead of a
reset (nginx's "lingering close").

Cost per request: a head that arrives in one read, the usual case, arms no
timer and is not measured; the idle timer is uvicorn's own keep-alive handle,
armed once more per connection (at its start).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import httptools
from uvicorn import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from keystile import errors
from keystile.api.errors import error_body, error_headers, status_of
from keystile.api.pipeline import SECURITY_HEADERS, request_id_for
from keystile.http.context import SCOPE_KEY, RequestContext
from keystile.server.output import CoalescedOutput

if TYPE_CHECKING:
    from keystile.settings import Settings

log = logging.getLogger("keystile.http")

LINGER_SECONDS = 2.0
"""How long input is still read (and dropped) after an error response."""

EVICTION_SHARE = 32
"""At the cap, up to 1/32 of the connections are closed at once, so a flood
of new connections does not scan every connection for each one."""

FIELD_OVERHEAD = 4  # ": " and CRLF around each header field


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The front end's limits; seconds and bytes, per worker process."""

    header_timeout: float = 10.0
    keepalive_timeout: float = 5.0
    max_head_bytes: int = 32_768
    max_headers: int = 100
    max_connections: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            header_timeout=settings.http_header_timeout_seconds,
            keepalive_timeout=settings.http_keepalive_timeout_seconds,
            max_head_bytes=settings.http_max_head_bytes,
            max_headers=settings.http_max_headers,
            max_connections=settings.http_max_connections,
        )


class ServerConfig(Config):
    """uvicorn's ``Config``, carrying the limits to every worker's connections
    (the config is pickled into each worker process)."""

    def __init__(self, app: str, *, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits


class _Refused(Exception):
    """Raised in a parser callback to stop parsing with ``error`` as the answer."""

    def __init__(self, error: errors.KeystileError) -> None:
        super().__init__(error.code)
        self.error = error


class KeystileHttpProtocol(HttpToolsProtocol):
    """One client connection (see the module docstring for the rules)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = cast(ServerConfig, config).limits
        self._limits = limits
        # uvicorn annotates this as int; the event loop takes float seconds.
        self.timeout_keep_alive = limits.keepalive_timeout  # type: ignore[assignment]
        self._reading_head = False  # between a request's first byte and its blank line
        self._head_spanned = False  # the head in progress began in an earlier read
        self._head_bytes = 0  # its size so far, once it spans reads
        self._read_size = 0  # the size of the read being parsed
        self._deadline: asyncio.TimerHandle | None = None  # head timeout, or end of lingering
        self._discarding = False  # input is dropped: the connection is ending
        self._pending: tuple[errors.KeystileError, str] | None = None  # after earlier answers
        self._output: CoalescedOutput | None = None  # what the request cycles write to

    # -- connections --------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        room = len(self.connections) < self._limits.max_connections or self._make_room()
        super().connection_made(transport)
        self._output = CoalescedOutput(transport, self.loop)
        if not room:
            self.connections.discard(self)
            log.warning(
                "connection refused: %d connections, all with a request in progress",
                len(self.connections),
                extra={"client": self._client_host()},
            )
            error = errors.ServiceUnavailable("The server has too many connections. Retry later.")
            self._write_error(error, request_id_for({"headers": []}))
            transport.close()
            return
        # uvicorn arms its keep-alive timeout only after a response: without
        # this a connection that never sends a request would stay forever.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self._unset_keepalive_if_required()
        super().connection_lost(exc)

    def _make_room(self) -> bool:
        """Close the connections nearest their own timeout among those with no
        request in progress; ``False`` when every connection has one."""
        waiting: list[tuple[float, KeystileHttpProtocol]] = []
        for connection in self.connections:
            if isinstance(connection, KeystileHttpProtocol):
                until = connection._idle_until()
                if until is not None:
                    waiting.append((until, connection))
        if not waiting:
            return False
        count = max(1, self._limits.max_connections // EVICTION_SHARE)
        for _, connection in heapq.nsmallest(count, waiting, key=lambda item: item[0]):
            connection._evict()
        return True

    def _idle_until(self) -> float | None:
        """When this connection will close unless a request starts (loop time),
        or ``None`` while a request is in progress."""
        if self.transport is None or self.transport.is_closing():
            return None
        cycle = self.cycle
        if cycle is not None and not (cycle.response_complete or cycle.disconnected):
            return None
        timer = self.timeout_keep_alive_task or self._deadline
        return None if timer is None else timer.when()

    def _evict(self) -> None:
        log.debug("idle connection closed to make room", extra={"client": self._client_host()})
        self.connections.discard(self)
        self.transport.close()

    def _client_host(self) -> str | None:
        return self.client[0] if self.client else None

    # -- input --------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        self._read_size = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._ignore_upgrade()
            return
        except httptools.HttpParserError as exc:
            refused = exc.__context__
            if isinstance(refused, _Refused):
                self._reject(refused.error)
            else:
                self._reject(_malformed(exc))
            return
        if self._reading_head:
            self._head_incomplete(len(data))

    def _head_incomplete(self, size: int) -> None:
        """A read ended inside a head: count it, and time the head from its start."""
        if self._head_spanned:
            self._head_bytes += size  # the head began earlier: all of this read is head
        else:
            self._head_spanned = True
            self._head_bytes = self._measured_head()
            self._deadline = self.loop.call_later(self._limits.header_timeout, self._head_late)
        error = self._head_error(self._head_bytes)
        if error is not None:
            self._reject(error)

    def _measured_head(self) -> int:
        """The head's parsed size so far: the request target and each complete
        header field (a lower bound of its size on the wire)."""
        fields = sum(len(name) + len(value) for name, value in self.headers)
        return len(self.url) + fields + FIELD_OVERHEAD * len(self.headers)

    def _head_error(self, size: int) -> errors.KeystileError | None:
        limits = self._limits
        if size > limits.max_head_bytes:
            return errors.RequestHeaderFieldsTooLarge(
                f"The request head is larger than {limits.max_head_bytes} bytes."
            )
        if len(self.headers) > limits.max_headers:
            return errors.RequestHeaderFieldsTooLarge(
                f"The request has more than {limits.max_headers} header fields."
            )
        return None

    def _head_late(self) -> None:
        self._deadline = None
        if self._reading_head:
            seconds = self._limits.header_timeout
            self._reject(
                errors.ValidationFailed(
                    f"The request head did not arrive within {seconds:g} seconds.",
                    [errors.FieldProblem("headers", "arrived too slowly")],
                )
            )

    def _ignore_upgrade(self) -> None:
        """keystile speaks no protocol to upgrade to, so Upgrade is ignored
        (RFC 9110 §7.8) and the request answered over HTTP/1.1; what follows
        its head belongs to the other protocol, so the connection ends after
        the answer."""
        self._discarding = True
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self.transport.close()
        else:
            cycle.keep_alive = False

    # -- parser callbacks ---------------------------------------------------

    # These run for every request: plain attribute tests, no helper calls.

    def on_message_begin(self) -> None:
        if self.timeout_keep_alive_task is not None:  # a request has started: no longer idle
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        self._reading_head = True
        self._head_spanned = False
        HttpToolsProtocol.on_message_begin(self)

    def on_headers_complete(self) -> None:
        # A head that arrived within one read no larger than the limit is
        # within the limit: only a larger read or a spanning head is measured.
        if len(self.headers) > self._limits.max_headers or (
            (self._head_spanned or self._read_size > self._limits.max_head_bytes)
            and self._measured_head() > self._limits.max_head_bytes
        ):
            error = self._head_error(self._measured_head())
            raise _Refused(error or errors.RequestHeaderFieldsTooLarge())
        self._reading_head = False
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        HttpToolsProtocol.on_headers_complete(self)
        if self.cycle is not None:
            # A response's head and body leave in one send (keystile.server.output).
            self.cycle.transport = self._output  # type: ignore[assignment]

    # -- answers written by the front end -----------------------------------

    def send_400_response(self, msg: str) -> None:
        self._reject(errors.ValidationFailed("The request is not valid HTTP/1.1."))

    def on_response_complete(self) -> None:
        if self._output is not None:
            self._output.flush()
        HttpToolsProtocol.on_response_complete(self)
        if (
            self._pending is not None
            and self.cycle.response_complete  # the last request before the bad one
            and not self.transport.is_closing()
        ):
            error, request_id = self._pending
            self._pending = None
            self._unset_keepalive_if_required()
            self._write_error(error, request_id)
            self._linger()

    def _reject(self, error: errors.KeystileError) -> None:
        """Answer ``error`` in place of the request, then end the connection."""
        if self.transport.is_closing() or self._discarding:
            return
        later_head = self._reading_head
        self._reading_head = False
        request_id = None
        cycle = self.cycle
        if later_head and cycle is not None and not cycle.response_complete:
            # A pipelined request is bad, the ones before it are not: they
            # are answered first (uvicorn starts them in turn), then this.
            request_id = request_id_for({"headers": self.headers or []})
            self._log_refusal(error, request_id)
            self._cancel_deadline()
            self._discarding = True
            self._pending = (error, request_id)
            return
        if cycle is not None and not cycle.response_complete:
            # The request in progress is abandoned, as if its client had
            # gone: its handler reads a disconnect and its writes go nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                if self._output is not None:
                    self._output.flush()
                self.transport.close()  # half an answer is out: nothing else can follow
                return
            context = cycle.scope.get(SCOPE_KEY)
            if isinstance(context, RequestContext):
                request_id = context.request_id
        if request_id is None:
            request_id = request_id_for({"headers": self.headers or []})
        self._log_refusal(error, request_id)
        self._write_error(error, request_id)
        self._linger()

    def _log_refusal(self, error: errors.KeystileError, request_id: str) -> None:
        log.info(
            "request refused: %s",
            error.code,
            extra={
                "request_id": request_id,
                "status": status_of(error),
                "reason": error.message,
                "client": self._client_host(),
            },
        )

    def _write_error(self, error: errors.KeystileError, request_id: str) -> None:
        if self._output is not None:
            self._output.flush()  # what the request wrote (a 100 Continue) goes first
        body = error_body(error, request_id)
        headers = [
            *self.server_state.default_headers,
            *error_headers(error),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            *SECURITY_HEADERS,
            (b"connection", b"close"),
        ]
        head = [STATUS_LINE[status_of(error)]]
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        head += (b"\r\n", body)
        self.transport.write(b"".join(head))

    def _linger(self) -> None:
        """Stop sending and drop the client's input for a moment, then close.

        Closing a socket with unread input makes the kernel send a reset,
        which can destroy the answer before the client reads it. The client
        closing its side ends the connection at once (uvicorn's
        ``eof_received`` lets the transport close)."""
        self._discarding = True
        self._unset_keepalive_if_required()
        self._cancel_deadline()
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._deadline = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


def _malformed(exc: httptools.HttpParserError) -> errors.ValidationFailed:
    """The 400 for input that is not HTTP/1.1. The parser's own reasons are
    fixed texts of llhttp, safe to show; anything raised in a callback (such
    as uvicorn's URL parsing, whose message quotes the URL) is not shown."""
    reason = ""
    if not isinstance(exc, httptools.HttpParserCallbackError) and exc.args:
        text = str(exc.args[0])[:100]
        reason = "".join(c for c in text if c.isascii() and c.isprintable()).strip()
    if not reason:
        return errors.ValidationFailed("The request is not valid HTTP/1.1.")
    return errors.ValidationFailed(f"The request is not valid HTTP/1.1: {reason}.")
