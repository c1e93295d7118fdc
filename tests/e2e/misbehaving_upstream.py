"""An upstream that misbehaves on purpose, run as its own process:
``python -m tests.e2e.misbehaving_upstream PORT``.

It writes raw bytes on a plain socket, so it can send what no framework
would: interim 1xx responses before the final one, 101 unasked, bodies where
none may be, bodies delimited by closing the connection, trailers, a death in
the middle of a body, bytes after a complete response, a response in
three-byte drips. Each request's last path segment names a variant of
:data:`VARIANTS`, which also says what a correct client makes of it (the
tests read the same table). ``ok`` and any name starting with ``ok-`` get a
well-behaved keep-alive answer echoing what the upstream saw, including which
connection it came on and how many requests that connection has carried: the
tests send one after each variant to see whether the client reused the
connection and whether the answer is the follow-up's own. The echo also
says how many requests with the same query string the upstream has seen,
which shows whether a failed request was sent again.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import struct
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Drip:
    """Write ``data`` three bytes at a time, a millisecond apart."""

    data: bytes


@dataclass(frozen=True)
class Close:
    """End the connection: FIN, or RST when ``reset``."""

    reset: bool = False


@dataclass(frozen=True)
class OnNextRequest:
    """Answer the next request on this connection with these steps instead."""

    steps: tuple[Step, ...]


Step = bytes | Pause | Drip | Close | OnNextRequest

Outcome = Literal[
    "reused",  # the final response as given; the connection goes back to the pool
    "closed",  # the final response as given; the connection is not reused
    "head-error",  # no response: UpstreamError before any status is delivered (502)
    "body-error",  # status and headers delivered, then the body fails (the client is cut)
    "timeout",  # no final response in time: UpstreamTimeout (504)
]


@dataclass(frozen=True)
class Variant:
    name: str
    steps: tuple[Step, ...]
    outcome: Outcome
    method: str = "GET"
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()  # must be among the final headers
    absent: tuple[str, ...] = ()  # header names that must not be there
    settle: bool = False  # bytes follow later: wait until the client has seen them
    wait_seconds: float = 5.0


# --- well-formed parts --------------------------------------------------------

HELLO = b"hello world"

INTERIMS: dict[str, bytes] = {
    "": b"",
    "100": b"HTTP/1.1 100 Continue\r\n\r\n",
    "102": b"HTTP/1.1 102 Processing\r\n\r\n",
    "103": b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
    "103x2": (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </b.js>; rel=preload\r\nX-Hint: 2\r\n\r\n"
    ),
    "100-102-103": (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 102 Processing\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    ),
    "150": b"HTTP/1.1 150 Unassigned\r\nX-Hint: unassigned\r\n\r\n",  # unknown 1xx: still interim
}
# Headers only the interim responses carry: never part of the final response.
INTERIM_ONLY = ("link", "x-hint")


@dataclass(frozen=True)
class Final:
    raw: bytes
    reusable: bool
    close_after: bool = False  # the upstream also closes its end after writing
    headers: tuple[tuple[str, str], ...] = ()
    absent: tuple[str, ...] = ()


FINALS: dict[str, Final] = {
    "length": Final(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\n" + HELLO,
        reusable=True,
        headers=(("content-type", "text/plain"), ("content-length", "11")),
    ),
    "chunked": Final(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        reusable=True,
    ),
    "trailers": Final(  # trailer fields are read and dropped, never merged into the headers
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum, X-Late\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Checksum: abc\r\nX-Late: 1\r\n\r\n",
        reusable=True,
        absent=("x-checksum", "x-late"),
    ),
    "close-delimited": Final(  # no length, not chunked: the body ends when the upstream closes
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + HELLO,
        reusable=False,
        close_after=True,
    ),
    "unknown-coding-until-close": Final(  # RFC 9112 §6.3: chunked is not last, so read to close
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n" + HELLO,
        reusable=False,
        close_after=True,
    ),
    "connection-close": Final(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 11\r\n\r\n" + HELLO,
        reusable=False,
        close_after=True,
    ),
    "connection-close-kept-open": Final(  # says close but keeps the socket open
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 11\r\n\r\n" + HELLO,
        reusable=False,
    ),
    "http10": Final(b"HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\n" + HELLO, reusable=False),
    "http10-keep-alive": Final(
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 11\r\n\r\n" + HELLO,
        reusable=True,
    ),
    "upgrade-advertised": Final(  # Upgrade on a 200 only advertises (RFC 9110 §7.8)
        b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nContent-Length: 11\r\n\r\n"
        + HELLO,
        reusable=True,
    ),
}


def _final_variants() -> list[Variant]:
    """Every interim prefix x every body framing x three ways of delivery:
    one write; three-byte drips; the interim part, a pause, then the final
    part (the shape of the cross-client leak of issue 11)."""
    variants = []
    for (interim_name, interim), (final_name, final) in itertools.product(
        INTERIMS.items(), FINALS.items()
    ):
        deliveries: dict[str, tuple[Step, ...]] = {
            "one-write": (interim + final.raw,),
            "drip": (Drip(interim + final.raw),),
        }
        if interim:
            deliveries["hint-then-pause"] = (interim, Pause(0.05), final.raw)
        for delivery, steps in deliveries.items():
            prefix = f"{interim_name}-" if interim_name else ""
            variants.append(
                Variant(
                    name=f"{prefix}{final_name}-{delivery}",
                    steps=steps + ((Close(),) if final.close_after else ()),
                    outcome="reused" if final.reusable else "closed",
                    body=HELLO,
                    headers=final.headers,
                    absent=final.absent + INTERIM_ONLY,
                )
            )
    return variants


# --- responses without a body (RFC 9112 §6.3 rule 1) -----------------------------


def _bodiless_variants() -> list[Variant]:
    """HEAD, 204 and 304: the response ends with its head whatever its
    headers say; reused unless the upstream showed it disagrees (a 204 that
    declares a body, or bytes after the head)."""
    head = "HEAD"
    table: list[tuple[str, str, bytes, Outcome, tuple[tuple[str, str], ...]]] = [
        (head, "head-length", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", "reused",
         (("content-length", "1000"),)),
        (head, "head-chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "reused", ()),
        (head, "head-no-length", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", "reused", ()),
        (head, "head-zero-length", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "reused", ()),
        (head, "head-404", b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n", "reused", ()),
        (head, "head-close", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\n",
         "closed", ()),
        (head, "head-http10", b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", "closed", ()),
        (head, "head-with-body", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "closed", ()),
        (head, "head-chunked-with-body",
         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "closed", ()),
        (head, "head-chunked-with-empty-body",
         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "closed", ()),
        ("GET", "204", b"HTTP/1.1 204 No Content\r\nX-Done: yes\r\n\r\n", "reused",
         (("x-done", "yes"),)),
        ("GET", "204-zero-length", b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", "reused", ()),
        ("GET", "204-length", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "closed", ()),
        ("GET", "204-length-with-body",
         b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", "closed", ()),
        ("GET", "204-chunked",
         b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "closed", ()),
        ("POST", "204-to-post", b"HTTP/1.1 204 No Content\r\n\r\n", "reused", ()),
        ("GET", "304", b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n', "reused",
         (("etag", '"v1"'),)),
        ("GET", "304-length", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\n\r\n", "reused",
         (("content-length", "1000"),)),
        ("GET", "304-chunked", b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
         "reused", ()),
        ("GET", "304-length-with-body",
         b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello", "closed", ()),
    ]  # fmt: skip
    variants = []
    for (method, name, raw, outcome, headers), (interim_name, interim) in itertools.product(
        table, [("", b""), ("103", INTERIMS["103"])]
    ):
        status = int(raw.split(b" ", 2)[1])
        prefix = f"{interim_name}-" if interim_name else ""
        variants.append(
            Variant(f"{prefix}{name}", (interim + raw,), outcome, method, status, b"", headers)
        )
    # The illegal body comes in a later write: the client must see it while
    # the connection is idle and drop the connection.
    variants += [
        Variant("head-with-late-body", (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Pause(0.05), b"hello"), "closed", "HEAD", settle=True),
        Variant("204-with-late-body", (b"HTTP/1.1 204 No Content\r\n\r\n", Pause(0.05),
                b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nJUNK"), "closed", status=204,
                settle=True),
    ]  # fmt: skip
    return variants


# --- everything else ------------------------------------------------------------------

OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n"
JUNK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 22\r\n\r\nsomeone else's answer!"


def _other_variants() -> list[Variant]:
    many_hints = b"HTTP/1.1 103 Early Hints\r\nLink: </x.css>; rel=preload\r\n\r\n"
    v = Variant
    return [
        # Switching protocols: keystile never asks for it.
        v("101", (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\n\r\n\x81\x05hello",), "head-error"),
        v("101-bare", (b"HTTP/1.1 101 Switching Protocols\r\n\r\n",), "head-error"),
        v("103-then-101", (INTERIMS["103"] + b"HTTP/1.1 101 Switching Protocols\r\n"
                           b"Upgrade: h2c\r\nConnection: Upgrade\r\n\r\n",), "head-error"),
        # An interim response that declares a body breaks RFC 9110 §8.6.
        v("103-with-length", (b"HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\n"
                              + OK_HEAD + HELLO,), "head-error"),
        v("150-with-length-and-body", (b"HTTP/1.1 150 X\r\nContent-Length: 5\r\n\r\nhello"
                                       + OK_HEAD + HELLO,), "head-error"),
        v("100-chunked", (b"HTTP/1.1 100 Continue\r\nTransfer-Encoding: chunked\r\n\r\n"
                          + OK_HEAD + HELLO,), "head-error"),
        # Status codes outside 100-599 (RFC 9110 §15).
        v("status-000", (b"HTTP/1.1 000 Zero\r\nContent-Length: 11\r\n\r\n" + HELLO,), "head-error"),
        v("status-099", (b"HTTP/1.1 099 Low\r\nContent-Length: 11\r\n\r\n" + HELLO,), "head-error"),
        v("status-600", (b"HTTP/1.1 600 High\r\nContent-Length: 11\r\n\r\n" + HELLO,), "head-error"),
        v("status-999", (b"HTTP/1.1 999 High\r\nContent-Length: 11\r\n\r\n" + HELLO,), "head-error"),
        # Framing a client cannot trust (response splitting material).
        v("length-and-chunked", (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n",),
          "head-error"),
        v("two-lengths", (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Length: 5\r\n\r\n"
                          + HELLO,), "head-error"),
        v("bad-length", (b"HTTP/1.1 200 OK\r\nContent-Length: eleven\r\n\r\n" + HELLO,), "head-error"),
        v("negative-length", (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n" + HELLO,), "head-error"),
        v("not-http", (b"SSH-2.0-OpenSSH_9.2\r\n",), "head-error"),
        v("bad-chunk-size", (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"zz\r\nhello\r\n0\r\n\r\n",), "body-error"),
        # Heads too large to hold, interim responses included.
        v("huge-head", (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\n"
                        b"Content-Length: 11\r\n\r\n" + HELLO,), "head-error"),
        v("many-interims", (many_hints * 500 + OK_HEAD + HELLO,), "reused", body=HELLO),
        v("endless-interims", (many_hints * 20000 + OK_HEAD + HELLO,), "head-error"),
        # The upstream dies.
        v("dies-before-response", (Close(),), "head-error"),
        v("resets-before-response", (Close(reset=True),), "head-error"),
        v("dies-mid-head", (b"HTTP/1.1 200 OK\r\nContent-Len", Close()), "head-error"),
        v("dies-after-interim", (INTERIMS["103"], Close()), "head-error"),
        v("dies-mid-length", (OK_HEAD + b"hello", Close()), "body-error", body=b"hello"),
        v("dies-mid-chunk", (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n6\r\n wo", Close()), "body-error", body=b"hello wo"),
        v("dies-between-chunks", (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  b"5\r\nhello\r\n", Close()), "body-error", body=b"hello"),
        v("dies-in-trailers", (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"5\r\nhello\r\n0\r\nX-Checksum: a", Close()), "body-error",
          body=b"hello"),
        v("resets-mid-length", (OK_HEAD + b"hello", Pause(0.05), Close(reset=True)), "body-error",
          body=b"hello"),
        v("hint-then-dies-mid-body", (INTERIMS["103"] + OK_HEAD + b"hel", Close()), "body-error",
          body=b"hel"),
        # Bytes after a complete response are never the next response.
        v("junk-response-same-write", (OK_HEAD + HELLO + JUNK_RESPONSE,), "closed", body=HELLO),
        v("junk-bytes-same-write", (OK_HEAD + HELLO + b"garbage",), "closed", body=HELLO),
        v("junk-after-chunked", (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"b\r\nhello world\r\n0\r\n\r\n" + JUNK_RESPONSE,), "closed",
          body=HELLO),
        v("junk-after-close", (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 11\r\n\r\n"
                               + HELLO + JUNK_RESPONSE,), "closed", body=HELLO),
        v("junk-after-hinted-response", (INTERIMS["103"] + OK_HEAD + HELLO + JUNK_RESPONSE,),
          "closed", body=HELLO),
        v("junk-response-later", (OK_HEAD + HELLO, Pause(0.05), JUNK_RESPONSE), "closed",
          body=HELLO, settle=True),
        v("junk-bytes-later", (OK_HEAD + HELLO, Pause(0.05), b"garbage"), "closed", body=HELLO,
          settle=True),
        v("blank-line-later", (OK_HEAD + HELLO, Pause(0.05), b"\r\n"), "closed", body=HELLO,
          settle=True),
        # The one tolerance: empty lines in the same write as the response are
        # skipped by the parser between messages (llhttp cannot report them)
        # and can never form a response.
        v("blank-line-same-write", (OK_HEAD + HELLO + b"\r\n",), "reused", body=HELLO),
        # Too slow.
        v("silence", (Pause(3),), "timeout", wait_seconds=0.5),
        v("hint-then-silence", (INTERIMS["103"], Pause(3)), "timeout", wait_seconds=0.5),
        v("hints-forever", tuple(step for _ in range(30) for step in (INTERIMS["102"], Pause(0.1))),
          "timeout", wait_seconds=0.5),
        v("slow-final-after-hint", (INTERIMS["103"], Pause(0.3), OK_HEAD + HELLO), "reused",
          body=HELLO),
    ]  # fmt: skip


VARIANTS: dict[str, Variant] = {
    variant.name: variant
    for variant in [*_final_variants(), *_bodiless_variants(), *_other_variants()]
}

# Answered well, after which the next request on the same connection meets
# the given steps: a pooled connection that is dead by the time it is reused.
STALE: dict[str, tuple[Step, ...]] = {
    "stale-closes": (Close(),),
    "stale-resets": (Close(reset=True),),
    "stale-answers-partly": (b"HTTP/1.1 200 OK\r\nContent-Le", Close()),
}


# --- the server ----------------------------------------------------------------------------


@dataclass
class _Connection:
    number: int
    requests: int = 0
    next_steps: tuple[Step, ...] | None = None


_numbers = itertools.count(1)
_queries: Counter[str] = Counter()


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], int] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = 0
    if "content-length" in headers:
        length = int(headers["content-length"])
        await reader.readexactly(length)
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
            length += size
        await reader.readuntil(b"\r\n")  # no trailers are sent to us
    return method, target, headers, length


def _echo(
    method: str, target: str, headers: dict[str, str], length: int, conn: _Connection
) -> bytes:
    body = json.dumps(
        {
            "method": method,
            "path": target,
            "connection": conn.number,
            "request_on_connection": conn.requests,
            "account": headers.get("x-keystile-account-id"),
            "query_seen": _queries[target.partition("?")[2]],
            "body_length": length,
        }
    ).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return head % len(body) + (b"" if method == "HEAD" else body)


async def _play(steps: tuple[Step, ...], writer: asyncio.StreamWriter, conn: _Connection) -> bool:
    """Write the steps; False once the connection is closed."""
    for step in steps:
        if isinstance(step, bytes):
            writer.write(step)
            await writer.drain()
        elif isinstance(step, Drip):
            for start in range(0, len(step.data), 3):
                writer.write(step.data[start : start + 3])
                await writer.drain()
                await asyncio.sleep(0.001)
        elif isinstance(step, Pause):
            await asyncio.sleep(step.seconds)
        elif isinstance(step, OnNextRequest):
            conn.next_steps = step.steps
        else:
            if step.reset:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            else:
                writer.close()
            return False
    return True


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    conn = _Connection(next(_numbers))
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while request := await _read_request(reader):
            method, target, headers, length = request
            conn.requests += 1
            if "?" in target:
                _queries[target.partition("?")[2]] += 1
            name = target.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
            if conn.next_steps is not None:
                steps, conn.next_steps = conn.next_steps, None
            elif name == "ok" or name.startswith("ok-"):
                steps = (_echo(method, target, headers, length, conn),)
            elif name in STALE:
                steps = (_echo(method, target, headers, length, conn), OnNextRequest(STALE[name]))
            elif name in VARIANTS:
                steps = VARIANTS[name].steps
            else:
                steps = (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",)
            if not await _play(steps, writer, conn):
                return
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
