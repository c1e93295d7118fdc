"""The reference point of every benchmark: the barest ASGI app, a fixed 200.

It is also the upstream behind the gateway benchmarks (run the same way:
uvicorn, uvloop, httptools)."""

from __future__ import annotations

import os
from typing import Any

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


_RSGI_HEADERS = [("content-type", "text/plain")]


async def bare_rsgi(scope: Any, protocol: Any) -> None:
    """:func:`bare` on granian's RSGI interface (granian answers with the
    length itself): what granian alone costs, without the ASGI messages."""
    protocol.response_bytes(200, _RSGI_HEADERS, b"ok")


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


# Issue #17: a user's own FastAPI app, unprotected and protected by
# keystile_client's middleware (cache hits: one key, verified once per TTL).
# uvicorn --factory bench.apps:plain_fastapi / bench.apps:protected_fastapi;
# the protected one asks keystile at BENCH_KEYSTILE_URL with BENCH_SERVICE_KEY.


def plain_fastapi() -> Any:
    """A FastAPI app with one endpoint, ``GET /v1/contacts``."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/v1/contacts")
    async def contacts() -> dict[str, list[str]]:
        return {"contacts": []}

    return app


def protected_fastapi() -> Any:
    """:func:`plain_fastapi` behind ``KeystileMiddleware`` (``read:contacts``,
    the default cache: 10,000 keys, 5 s)."""
    from keystile_client.asgi import KeystileMiddleware
    from keystile_client.verifier import AsyncVerifier

    verifier = AsyncVerifier(
        os.environ["BENCH_SERVICE_KEY"], base_url=os.environ["BENCH_KEYSTILE_URL"]
    )
    return KeystileMiddleware(plain_fastapi(), verifier, permission="read:contacts")
