"""A FastAPI app whose key check is an in-memory dict lookup: the SHA-256 of
the bearer token, looked up among the digests given in ``PEER_KEY_DIGESTS``
(comma-separated hex). One endpoint, ``GET /v1/contacts``; a missing or
unknown key is a 401.

``uvicorn --factory fastapi_dict:create_app`` serves it.
"""

# No `from __future__ import annotations`: FastAPI resolves the dependency
# annotations at run time, and `api_key` is local to create_app.
import hashlib
import os
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]


def create_app() -> FastAPI:
    """The app, its keys read from the environment once."""
    keys = dict.fromkeys(os.environ["PEER_KEY_DIGESTS"].split(","), "bench")

    async def api_key(credentials: Bearer) -> str:  # no I/O: no thread pool
        token = credentials.credentials if credentials else ""
        owner = keys.get(hashlib.sha256(token.encode()).hexdigest())
        if owner is None:
            raise HTTPException(401, "invalid API key")
        return owner

    app = FastAPI()

    @app.get("/v1/contacts")
    async def contacts(owner: Annotated[str, Depends(api_key)]) -> dict[str, list[str]]:
        return {"contacts": []}

    return app
