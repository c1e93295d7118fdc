"""The key pages: list, detail (usage chart, audit events), create with the
secret shown once, edit, rotate, disable / enable, revoke."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keystile.console.chart import usage_chart
from keystile.console.forms import GRACE_PERIODS, key_body, key_changes, key_form_values
from keystile.console.web import Ctx, redirect

if TYPE_CHECKING:
    from keystile.console.app import Console

ID = re.compile(r"[A-Za-z0-9_]{1,64}")
STATUSES = ("active", "disabled", "revoked", "expired")
PAGE_SIZE = "20"


def object_id(request: Request, name: str) -> str | None:
    """A path id safe to put in an API path (no dot segment, no slash)."""
    value = str(request.path_params[name])
    return value if ID.fullmatch(value) else None


def list_params(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    """The filters of a list page that are set, for the API's query string."""
    params = {"limit": PAGE_SIZE}
    for name in (*names, "starting_after"):
        value = request.query_params.get(name, "").strip()
        if value:
            params[name] = value
    return params


def routes(console: Console) -> list[Route]:
    api, views = console.api, console.views

    async def keys_list(request: Request, ctx: Ctx) -> Response:
        params = list_params(request, ("name", "status"))
        if params.get("status") not in (None, *STATUSES):
            params.pop("status")
        result = await api.call(ctx.caller, "GET", "/v1/api-keys", params=params)
        if not result.ok and result.status != 400:
            return await console.failed(request, ctx, result)
        return views.render(
            "keys.html",
            ctx,
            status=result.status,
            keys=result.data or [],
            has_more=bool(result.body.get("has_more")),
            filters=params,
            statuses=STATUSES,
            errors=result.field_errors,
            error=None if result.ok else result.message,
        )

    def key_form(
        ctx: Ctx,
        key: dict[str, Any] | None,
        *,
        status: int = 200,
        result: Any = None,
        problems: dict[str, str] | None = None,
    ) -> Response:
        errors = dict(problems or {})
        if result is not None:
            errors.update(result.field_errors)
        return views.render(
            "key_form.html",
            ctx,
            status=status,
            key=key,
            form=key_form_values(key, ctx),
            errors=errors,
            error=result.message if result is not None else None,
        )

    async def create(request: Request, ctx: Ctx) -> Response:
        if request.method == "GET":
            return key_form(ctx, None)
        body, problems = key_body(ctx)
        if problems:
            return key_form(ctx, None, status=400, problems=problems)
        result = await api.call(
            ctx.caller, "POST", "/v1/api-keys", json=body, idempotency_key=ctx.idempotency_key
        )
        if result.status in (400, 403, 409, 422):
            return key_form(ctx, None, status=result.status, result=result)
        if not result.ok:
            return await console.failed(request, ctx, result)
        return await console.shown_once(
            ctx, result, "key", "key", f"/keys/{result.data['id']}/secret"
        )

    async def secret(request: Request, ctx: Ctx) -> Response:
        key_id = object_id(request, "key_id")
        if key_id is None:
            return await console._not_found(request)
        return await console.show_secret(ctx, "key", key_id, f"/keys/{key_id}?secret=gone")

    async def fetch(request: Request, ctx: Ctx) -> tuple[str, Any] | Response:
        key_id = object_id(request, "key_id")
        if key_id is None:
            return await console._not_found(request)
        result = await api.call(ctx.caller, "GET", f"/v1/api-keys/{key_id}")
        if not result.ok:
            return await console.failed(request, ctx, result)
        return key_id, result.data

    async def detail(
        request: Request, ctx: Ctx, *, status: int = 200, error: str | None = None
    ) -> Response:
        found = await fetch(request, ctx)
        if isinstance(found, Response):
            return found
        key_id, key = found
        usage = await api.call(
            ctx.caller, "GET", f"/v1/api-keys/{key_id}/usage", params={"granularity": "day"}
        )
        audit = await api.call(
            ctx.caller, "GET", "/v1/audit-events", params={"target_id": key_id, "limit": "20"}
        )
        notice = None
        if request.query_params.get("secret") == "gone":
            notice = (
                "The secret was shown once and is not shown again. Rotate the key for a new one."
            )
        return views.render(
            "key.html",
            ctx,
            status=status,
            key=key,
            chart=usage_chart(usage.data) if usage.ok else None,
            events=audit.data if audit.ok else [],
            error=error,
            notice=notice,
        )

    async def show(request: Request, ctx: Ctx) -> Response:
        return await detail(request, ctx)

    async def edit(request: Request, ctx: Ctx) -> Response:
        found = await fetch(request, ctx)
        if isinstance(found, Response):
            return found
        key_id, key = found
        if request.method == "GET":
            return key_form(ctx, key)
        changes, problems = key_changes(ctx, key)
        if problems:
            return key_form(ctx, key, status=400, problems=problems)
        if not changes:
            return redirect(f"/keys/{key_id}")
        result = await api.call(
            ctx.caller,
            "PATCH",
            f"/v1/api-keys/{key_id}",
            json=changes,
            idempotency_key=ctx.idempotency_key,
        )
        if result.status in (400, 403, 409, 422):
            return key_form(ctx, key, status=result.status, result=result)
        if not result.ok:
            return await console.failed(request, ctx, result)
        return redirect(f"/keys/{key_id}")

    async def rotate(request: Request, ctx: Ctx) -> Response:
        found = await fetch(request, ctx)
        if isinstance(found, Response):
            return found
        key_id, key = found
        if request.method == "GET":
            return views.render("rotate.html", ctx, key=key, grace_periods=GRACE_PERIODS)
        grace = ctx.value("grace_period_seconds")
        body = {"grace_period_seconds": int(grace) if grace.isdigit() else grace}
        result = await api.call(
            ctx.caller,
            "POST",
            f"/v1/api-keys/{key_id}/rotate",
            json=body,
            idempotency_key=ctx.idempotency_key,
        )
        if not result.ok:
            if result.status == 401:
                return await console.failed(request, ctx, result)
            return views.render(
                "rotate.html",
                ctx,
                status=result.status,
                key=key,
                grace_periods=GRACE_PERIODS,
                error=result.message,
                errors=result.field_errors,
            )
        return await console.shown_once(
            ctx, result, "key", "key", f"/keys/{result.data['id']}/secret"
        )

    def toggle(disabled: bool) -> Any:
        async def handler(request: Request, ctx: Ctx) -> Response:
            key_id = object_id(request, "key_id")
            if key_id is None:
                return await console._not_found(request)
            result = await api.call(
                ctx.caller,
                "PATCH",
                f"/v1/api-keys/{key_id}",
                json={"disabled": disabled},
                idempotency_key=ctx.idempotency_key,
            )
            if not result.ok:
                if result.status == 401:
                    return await console.failed(request, ctx, result)
                return await detail(request, ctx, status=result.status, error=result.message)
            return redirect(f"/keys/{key_id}")

        return handler

    async def revoke(request: Request, ctx: Ctx) -> Response:
        found = await fetch(request, ctx)
        if isinstance(found, Response):
            return found
        key_id, key = found
        if request.method == "GET":
            return views.render("revoke.html", ctx, key=key)
        if ctx.value("confirm") != key["name"]:
            return views.render(
                "revoke.html",
                ctx,
                status=400,
                key=key,
                errors={"confirm": "type the key's name exactly to revoke it"},
            )
        result = await api.call(ctx.caller, "DELETE", f"/v1/api-keys/{key_id}")
        if not result.ok:
            return await console.failed(request, ctx, result)
        return redirect(f"/keys/{key_id}")

    return [
        console.route("/keys", keys_list, methods=["GET"]),
        console.route("/keys/new", create, methods=["GET", "POST"]),
        console.route("/keys/{key_id}", show, methods=["GET"]),
        console.route("/keys/{key_id}/secret", secret, methods=["GET"]),
        console.route("/keys/{key_id}/edit", edit, methods=["GET", "POST"]),
        console.route("/keys/{key_id}/rotate", rotate, methods=["GET", "POST"]),
        console.route("/keys/{key_id}/disable", toggle(True), methods=["POST"]),
        console.route("/keys/{key_id}/enable", toggle(False), methods=["POST"]),
        console.route("/keys/{key_id}/revoke", revoke, methods=["GET", "POST"]),
    ]
