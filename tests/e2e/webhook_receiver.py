"""A webhook receiver for the end-to-end tests, run as its own process:
``python -m uvicorn tests.e2e.webhook_receiver:app --port N``.

The first path segment picks the behaviour, the rest names the endpoint:

- ``/ok/…`` answers 200; ``/fail/…`` 500; ``/redirect/…`` 302 to ``/ok/…``;
- ``/slow/…`` waits 12 s (past keystile's 10 s timeout), then 200;
- ``/sleepy/…`` waits 0.3 s, then 200 (overlapping attempts would show);
- ``/flaky/…`` answers 503 to the first two requests of each event, then 200.

Every request is recorded (path, headers, raw body as text, start and end
times); ``GET /_requests`` returns the records as JSON.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

from starlette.types import Receive, Scope, Send

RECORDS: list[dict[str, Any]] = []
SEEN: Counter[str] = Counter()


async def _respond(send: Send, status: int, body: bytes = b"", location: str = "") -> None:
    headers = [(b"content-type", b"text/plain")]
    if location:
        headers.append((b"location", location.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    if path == "/_requests":
        await _respond(send, 200, json.dumps(RECORDS).encode())
        return
    if path == "/ready":
        await _respond(send, 200)
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    record: dict[str, Any] = {
        "path": path,
        "headers": headers,
        "body": body.decode(),
        "start": time.time(),
    }
    RECORDS.append(record)
    mode = path.strip("/").split("/")[0]
    event = headers.get("keystile-event-id", "")
    SEEN[event] += 1
    status, location = 200, ""
    if mode == "fail":
        status = 500
    elif mode == "redirect":
        status, location = 302, "/ok" + path.removeprefix("/redirect")
    elif mode == "slow":
        await asyncio.sleep(12)
    elif mode == "sleepy":
        await asyncio.sleep(0.3)
    elif mode == "flaky" and SEEN[event] <= 2:
        status = 503
    record["end"] = time.time()
    record["status"] = status
    await _respond(send, status, b"thanks", location)
