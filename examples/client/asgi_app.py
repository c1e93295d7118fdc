"""A Starlette app protected by keystile_client.asgi.KeystileMiddleware
(docs/client-asgi.md).

    pip install 'keystile-client' starlette uvicorn
    KEYSTILE_URL=http://127.0.0.1:8080 KEYSTILE_SERVICE_KEY=wbk_live_… \\
        uvicorn examples.client.asgi_app:app --port 9000
    curl -H "Authorization: Bearer $CALLER_KEY" http://127.0.0.1:9000/contacts
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keystile_client.asgi import KeystileMiddleware
from keystile_client.verifier import AsyncVerifier


async def contacts(request: Request) -> JSONResponse:
    caller = request.state.keystile  # the Verification of the caller's key
    return JSONResponse({"contacts": [], "key_id": caller.key_id})


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_app(verifier: AsyncVerifier) -> KeystileMiddleware:
    """The app, every route but /healthz needing a key with read:contacts."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await verifier.aclose()

    inner = Starlette(
        routes=[Route("/contacts", contacts), Route("/healthz", healthz)], lifespan=lifespan
    )
    return KeystileMiddleware(inner, verifier, permission="read:contacts", exempt={"/healthz"})


def from_environment() -> KeystileMiddleware:
    return create_app(
        AsyncVerifier(
            os.environ.get("KEYSTILE_SERVICE_KEY"),
            base_url=os.environ.get("KEYSTILE_URL", "http://127.0.0.1:8080"),
            cache_ttl=float(os.environ.get("KEYSTILE_CACHE_TTL", "5")),
        )
    )


if os.environ.get("KEYSTILE_SERVICE_KEY"):
    app = from_environment()
