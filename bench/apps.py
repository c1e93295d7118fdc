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


_SHAPED_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", b"262"),
        (b"x-request-id", b"req_f25069caf36acdee7feb112f1"),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-ratelimit-limit", b"100000000"),
        (b"x-ratelimit-remaining", b"99999999"),
        (b"x-ratelimit-reset", b"1795675000"),
    ],
}
_SHAPED_BODY = {"type": "http.response.body", "body": b"x" * 262}


async def shaped(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the request body and answers like ``POST /v1/keys/verify`` does
    (same headers, same size), doing none of the work: what uvicorn alone
    costs for keystile's request and response shapes."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send(_SHAPED_START)
    await send(_SHAPED_BODY)
