"""The audit log page, with the API's filters."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keystile.console.keys import list_params
from keystile.console.web import Ctx

if TYPE_CHECKING:
    from keystile.console.app import Console

FILTERS = ("action", "target_id", "actor_id", "since", "until")


def routes(console: Console) -> list[Route]:
    async def events(request: Request, ctx: Ctx) -> Response:
        params = list_params(request, FILTERS)
        result = await console.api.call(ctx.caller, "GET", "/v1/audit-events", params=params)
        if not result.ok and result.status != 400:
            return await console.failed(request, ctx, result)
        return console.views.render(
            "audit.html",
            ctx,
            status=result.status,
            events=result.data or [],
            has_more=bool(result.body.get("has_more")),
            filters=params,
            errors=result.field_errors,
            error=None if result.ok else result.message,
        )

    return [console.route("/audit", events, methods=["GET"])]
