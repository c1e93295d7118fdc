"""The webhook pages: endpoints (the signing secret shown once) and their deliveries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keystile.console.keys import list_params, object_id
from keystile.console.web import Ctx, redirect
from keystile.webhooks.models import ALL_EVENTS, EVENT_NAMES

if TYPE_CHECKING:
    from keystile.console.app import Console


def routes(console: Console) -> list[Route]:
    api, views = console.api, console.views

    async def endpoints(request: Request, ctx: Ctx) -> Response:
        params = list_params(request, ())
        result = await api.call(ctx.caller, "GET", "/v1/webhook-endpoints", params=params)
        if not result.ok:
            return await console.failed(request, ctx, result)
        return views.render(
            "webhooks.html", ctx, endpoints=result.data, has_more=bool(result.body.get("has_more"))
        )

    async def create(request: Request, ctx: Ctx) -> Response:
        form = {
            "url": ctx.value("url"),
            "description": ctx.value("description"),
            "events": ctx.values("events"),
        }
        if request.method == "GET":
            return views.render(
                "webhook_form.html", ctx, form=form, events=EVENT_NAMES, all_events=ALL_EVENTS
            )
        body = {
            "url": form["url"],
            "events": form["events"],
            "description": form["description"] or None,
        }
        result = await api.call(
            ctx.caller,
            "POST",
            "/v1/webhook-endpoints",
            json=body,
            idempotency_key=ctx.idempotency_key,
        )
        if result.status in (400, 403, 409, 422):
            return views.render(
                "webhook_form.html",
                ctx,
                status=result.status,
                form=form,
                events=EVENT_NAMES,
                all_events=ALL_EVENTS,
                errors=result.field_errors,
                error=result.message,
            )
        if not result.ok:
            return await console.failed(request, ctx, result)
        endpoint_id = result.data["id"]
        path = f"/webhooks/{endpoint_id}/secret"
        return await console.shown_once(ctx, result, "webhook", "secret", path)

    async def secret(request: Request, ctx: Ctx) -> Response:
        endpoint_id = object_id(request, "endpoint_id")
        if endpoint_id is None:
            return await console._not_found(request)
        return await console.show_secret(ctx, "webhook", endpoint_id, f"/webhooks/{endpoint_id}")

    async def detail(request: Request, ctx: Ctx) -> Response:
        endpoint_id = object_id(request, "endpoint_id")
        if endpoint_id is None:
            return await console._not_found(request)
        path = f"/v1/webhook-endpoints/{endpoint_id}"
        found = await api.call(ctx.caller, "GET", path)
        if not found.ok:
            return await console.failed(request, ctx, found)
        if request.method == "POST":  # delete, confirmed on the page
            deleted = await api.call(ctx.caller, "DELETE", path)
            if not deleted.ok:
                return await console.failed(request, ctx, deleted)
            return redirect("/webhooks")
        deliveries = await api.call(
            ctx.caller, "GET", f"{path}/deliveries", params=list_params(request, ())
        )
        return views.render(
            "webhook.html",
            ctx,
            endpoint=found.data,
            deliveries=deliveries.data if deliveries.ok else [],
            has_more=bool(deliveries.body.get("has_more")),
            confirm=request.query_params.get("delete") == "1",
        )

    return [
        console.route("/webhooks", endpoints, methods=["GET"]),
        console.route("/webhooks/new", create, methods=["GET", "POST"]),
        console.route("/webhooks/{endpoint_id}", detail, methods=["GET", "POST"]),
        console.route("/webhooks/{endpoint_id}/secret", secret, methods=["GET"]),
    ]
