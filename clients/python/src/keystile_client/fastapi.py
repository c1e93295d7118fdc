"""FastAPI integration: ``require_key(permission)``, a dependency that
returns the verified identity (a :class:`~keystile_client.models.Verification`)
or refuses the request with keystile's §3 body.

Install once, then protect routes one by one::

    app = FastAPI()
    keystile_client.fastapi.setup(app, AsyncVerifier("wbk_live_…", base_url=...))

    @app.get("/contacts")
    async def contacts(caller: Annotated[Verification, Depends(require_key("read:contacts"))]):
        ...

``setup`` stores the verifier on ``app.state`` and registers the handler
that renders refusals (401, 403, 429, and 503 when keystile is unreachable).
Needs the ``fastapi`` extra.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import Response as PlainResponse

from keystile_client.decision import Decision, bearer
from keystile_client.models import Verification
from keystile_client.verifier import AsyncVerifier

STATE_NAME = "keystile_verifier"


class KeystileRefusal(Exception):
    """Raised by :func:`require_key` for a refused request; rendered by the
    handler :func:`setup` registers."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.code)
        self.decision = decision


async def _refusal(request: Request, exc: Exception) -> PlainResponse:
    assert isinstance(exc, KeystileRefusal)
    decision = exc.decision
    return PlainResponse(
        decision.body(request.headers.get("x-request-id")),
        status_code=decision.status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", **dict(decision.headers)},
    )


def setup(app: FastAPI, verifier: AsyncVerifier) -> None:
    """Make ``verifier`` the one :func:`require_key` uses in ``app``. Close
    it (``await verifier.aclose()``) in the app's lifespan."""
    setattr(app.state, STATE_NAME, verifier)
    app.add_exception_handler(KeystileRefusal, _refusal)


def require_key(
    permission: str | None = None,
) -> Callable[[Request, Response], Awaitable[Verification]]:
    """A dependency: the caller's key must hold ``permission`` (``None``: any
    valid key). Returns its verification; the key's rate-limit and quota
    headers go on the response."""

    async def verified_key(request: Request, response: Response) -> Verification:
        verifier: AsyncVerifier | None = getattr(request.app.state, STATE_NAME, None)
        if verifier is None:
            raise RuntimeError("call keystile_client.fastapi.setup(app, verifier) first")
        token = bearer(request.headers.get("authorization"))
        decision = await verifier.check(token, permission)
        if decision.identity is None:
            raise KeystileRefusal(decision)
        response.headers.update(dict(decision.headers))
        return decision.identity

    return verified_key
