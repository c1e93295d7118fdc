"""A FastAPI app protected route by route with require_key
(docs/client-fastapi.md).

    pip install 'keystile-client[fastapi]' uvicorn
    KEYSTILE_URL=http://127.0.0.1:8080 KEYSTILE_SERVICE_KEY=wbk_live_… \\
        uvicorn examples.client.fastapi_app:app --port 9000
    curl -H "Authorization: Bearer $CALLER_KEY" http://127.0.0.1:9000/contacts
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI

from keystile_client import Verification
from keystile_client.fastapi import require_key, setup
from keystile_client.verifier import AsyncVerifier

Reader = Annotated[Verification, Depends(require_key("read:contacts"))]
Writer = Annotated[Verification, Depends(require_key("write:contacts"))]


def create_app(verifier: AsyncVerifier) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await verifier.aclose()

    app = FastAPI(lifespan=lifespan)
    setup(app, verifier)

    @app.get("/contacts")
    async def list_contacts(caller: Reader) -> dict[str, Any]:
        return {"contacts": [], "key_id": caller.key_id, "account_id": caller.account_id}

    @app.post("/contacts", status_code=201)
    async def create_contact(caller: Writer) -> dict[str, Any]:
        return {"created_by": caller.key_id}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}  # no dependency: open

    return app


def from_environment() -> FastAPI:
    return create_app(
        AsyncVerifier(
            os.environ.get("KEYSTILE_SERVICE_KEY"),
            base_url=os.environ.get("KEYSTILE_URL", "http://127.0.0.1:8080"),
            cache_ttl=float(os.environ.get("KEYSTILE_CACHE_TTL", "5")),
        )
    )


if os.environ.get("KEYSTILE_SERVICE_KEY"):
    app = from_environment()
