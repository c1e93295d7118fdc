"""A small upstream API for the gateway tests, run as its own process:
``python -m uvicorn tests.e2e.upstream:app --port N``."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from starlette.types import Receive, Scope, Send

CHUNK = 64 * 1024


def pattern(n: int) -> bytes:
    """Deterministic download content: the bytes 0..255 repeated."""
    block = bytes(range(256)) * (CHUNK // 256)
    return (block * (n // CHUNK + 1))[:n]


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    parts = path.strip("/").split("/")
    if parts[-2:-1] == ["bytes"]:
        size = int(parts[-1])
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/octet-stream"),
                    (b"content-length", str(size).encode()),
                    (b"cache-control", b"public, max-age=60"),
                ],
            }
        )
        block = bytes(range(256)) * (CHUNK // 256)
        sent = 0
        while sent < size:
            piece = block[: min(CHUNK, size - sent)]
            sent += len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": sent < size})
        return
    if parts[-2:-1] == ["sleep"]:
        await asyncio.sleep(float(parts[-1]))
    digest = hashlib.sha256()
    length = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        digest.update(chunk)
        length += len(chunk)
        if not message.get("more_body", False):
            break
    status = int(parts[-1]) if parts[-2:-1] == ["status"] else 200
    echo: dict[str, Any] = {
        "method": scope["method"],
        "path": path,
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "body_length": length,
        "body_sha256": digest.hexdigest(),
        "client_port": scope["client"][1] if scope.get("client") else None,
    }
    await respond(
        send,
        status,
        json.dumps(echo).encode(),
        [
            (b"content-type", b"application/json"),
            (b"cache-control", b"private, max-age=30"),
            (b"x-request-id", b"set-by-upstream"),
            (b"x-ratelimit-limit", b"999999"),
            (b"x-upstream", b"yes"),
        ],
    )
