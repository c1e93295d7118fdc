"""The reference point of every benchmark: the barest ASGI app, a fixed 200.

It is also the upstream behind the gateway benchmarks (run the same way:
uvicorn, uvloop, httptools)."""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
}
_BODY = {"type": "http.response.body", "body": b"ok"}


async def bare(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send(_START)
    await send(_BODY)
