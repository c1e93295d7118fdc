"""What every console page shares: templates, the security headers of an
HTML response, form bodies, redirects and the session cookie."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import Message, Scope, Send

from keystile.api.body import read_body
from keystile.console.api import Caller
from keystile.console.sessions import Session
from keystile.http.clients import Network, is_trusted

SESSION_COOKIE = "keystile_console"
PREFIX = "/console"

# No inline script or style, nothing from another host, no framing, forms
# post only here (contract §16).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
STATIC_TYPES = {"console.css": "text/css", "console.js": "text/javascript"}


def with_page_headers(send: Send) -> Send:
    async def send_page(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *PAGE_HEADERS]}
        await send(message)

    return send_page


@dataclass(slots=True)
class Ctx:
    """One signed-in request: its session, who the API calls act as, the form."""

    session: Session
    caller: Caller
    form: dict[str, list[str]] = field(default_factory=dict)

    def value(self, name: str) -> str:
        values = self.form.get(name)
        return values[0].strip() if values else ""

    def values(self, name: str) -> list[str]:
        return self.form.get(name, [])

    @property
    def idempotency_key(self) -> str | None:
        """The form's one-time token: a double submit replays the first answer."""
        token = self.value("idempotency_token")
        return token[:64] if token else None


async def read_form(request: Request) -> dict[str, list[str]]:
    """An ``application/x-www-form-urlencoded`` body (64 KiB at most, like
    every body keystile reads)."""
    body = await read_body(request.scope, request.receive)
    text = body.decode("utf-8", errors="replace")
    return parse_qs(text, keep_blank_values=True, max_num_fields=500)


def over_https(scope: Scope, proxies: tuple[Network, ...]) -> bool:
    """Whether the browser reached keystile over https: directly, or through a
    trusted proxy that says so (``X-Forwarded-Proto``)."""
    if scope.get("scheme") == "https":
        return True
    peer = scope.get("client")
    if peer is None or not is_trusted(peer[0], proxies):
        return False
    forwarded = [v for k, v in scope["headers"] if k == b"x-forwarded-proto"]
    return bool(forwarded) and forwarded[-1].decode("latin-1").strip().lower() == "https"


def set_cookie(response: Response, name: str, value: str, *, max_age: int, secure: bool) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def clear_cookie(response: Response, name: str, *, secure: bool) -> None:
    response.delete_cookie(name, path=PREFIX, httponly=True, samesite="strict", secure=secure)


def redirect(path: str) -> RedirectResponse:
    """303: the browser follows with a GET (post/redirect/get)."""
    return RedirectResponse(PREFIX + path, status_code=303)


class Views:
    def __init__(self) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("keystile.console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.globals["prefix"] = PREFIX
        self._env.globals["new_token"] = lambda: secrets.token_urlsafe(16)

    def render(
        self, template: str, ctx: Ctx | None = None, *, status: int = 200, **values: Any
    ) -> HTMLResponse:
        page: dict[str, Any] = {
            "csrf_token": ctx.session.csrf_token if ctx else "",
            "account_id": ctx.session.account_id if ctx else None,
            "operator": ctx.session.operator if ctx else False,
            "signed_in": ctx is not None,
            "errors": {},
            "error": None,
            "notice": None,
        }
        page.update(values)
        html = self._env.get_template(template).render(page)
        return HTMLResponse(html, status_code=status)


def static_file(name: str) -> Response | None:
    media_type = STATIC_TYPES.get(name)
    if media_type is None:
        return None
    content = resources.files("keystile.console").joinpath("static").joinpath(name).read_bytes()
    return Response(content, media_type=media_type)
