"""The browser console at ``/console`` (contract §16): server-rendered pages
that work without JavaScript, signed in with an account admin key (or an
operator key and an account picked from a list).

Requests reach it through the pipeline (request id, ``Cache-Control:
no-store``, ``nosniff``, the access log) without bearer authentication: the
console authenticates its own requests by session cookie, and acts through
the API in process (:mod:`keystile.console.api`), where every rule applies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from keystile import errors
from keystile.api.errors import status_of
from keystile.console import csrf
from keystile.console.api import ApiClient, ApiResult, Caller
from keystile.console.sessions import Session, SessionStore
from keystile.console.web import (
    PREFIX,
    SESSION_COOKIE,
    Ctx,
    Views,
    clear_cookie,
    over_https,
    read_form,
    redirect,
    set_cookie,
    static_file,
    with_page_headers,
)
from keystile.http.context import context_of
from keystile.idempotency.crypto import Keyring

if TYPE_CHECKING:
    from keystile.api.deps import Services

Handler = Callable[[Request, Ctx], Awaitable[Response]]
SIGN_IN_SECONDS = 3600  # how long a sign-in form stays valid


class Console:
    """The ASGI app of ``/console``; :meth:`attach` gives it the pipeline it acts through."""

    def __init__(self, services: Services, keyring: Keyring) -> None:
        settings = services.settings
        self.services = services
        self.keyring = keyring
        self.sessions = SessionStore(
            services.storage,
            keyring,
            idle_seconds=settings.console_idle_minutes * 60,
            absolute_seconds=settings.console_absolute_hours * 3600,
            clock=services.clock,
        )
        self.api = ApiClient()
        self.views = Views()
        self.views_globals()
        from keystile.console import audit, keys, webhooks  # the pages use this module's helpers

        routes = [
            Route(PREFIX, self._home, methods=["GET"]),
            Route(f"{PREFIX}/", self._home, methods=["GET"]),
            Route(f"{PREFIX}/sign-in", self._sign_in_form, methods=["GET"]),
            Route(f"{PREFIX}/sign-in", self._sign_in, methods=["POST"]),
            Route(f"{PREFIX}/static/{{name}}", self._static, methods=["GET"]),
            self.route("/sign-out", self._sign_out, methods=["POST"], account=False),
            self.route("/accounts", self._accounts, methods=["GET", "POST"], account=False),
            *keys.routes(self),
            *webhooks.routes(self),
            *audit.routes(self),
        ]
        self.router = Router(routes=routes, default=self._unrouted)

    def views_globals(self) -> None:
        self.views._env.globals["scopes"] = self.services.settings.scope_list

    def attach(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.api.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.router(scope, receive, with_page_headers(send))

    # -- what every signed-in page goes through --------------------------------

    def route(
        self, path: str, handler: Handler, *, methods: list[str], account: bool = True
    ) -> Route:
        """A signed-in page: no session, back to sign-in; a POST needs the
        session's CSRF token; ``account`` pages need an account picked."""

        async def endpoint(request: Request) -> Response:
            session = await self.sessions.load(request.cookies.get(SESSION_COOKIE))
            if session is None:
                response = redirect("/sign-in")
                if SESSION_COOKIE in request.cookies:
                    clear_cookie(response, SESSION_COOKIE, secure=self._secure(request))
                return response
            ctx = Ctx(session=session, caller=self._caller(request, session))
            if request.method == "POST":
                try:
                    ctx.form = await read_form(request)
                except errors.KeystileError as exc:
                    return self.views.render(
                        "error.html", ctx, status=status_of(exc), error=exc.message
                    )
                valid = csrf.same_token(session.csrf_token, ctx.value("csrf_token"))
                if not valid or csrf.cross_site(request.headers):
                    return self.views.render(
                        "error.html",
                        ctx,
                        status=403,
                        error="This form was not sent from this console session, or the "
                        "session changed since the page loaded. Reload the page and try again.",
                    )
            if account and session.operator and session.account_id is None:
                return redirect("/accounts")
            return await handler(request, ctx)

        return Route(PREFIX + path, endpoint, methods=methods)

    def _caller(self, request: Request, session: Session) -> Caller:
        ctx = context_of(request.scope)
        return Caller(
            credential=session.credential,
            account_id=session.account_id if session.operator else None,
            client=ctx.client,
            request_id=ctx.request_id,
        )

    def _secure(self, request: Request) -> bool:
        return over_https(request.scope, self.services.settings.proxies)

    async def failed(self, request: Request, ctx: Ctx, result: ApiResult) -> Response:
        """An API refusal as a page; a key that stopped working ends the session."""
        if result.status == 401:
            await self.sessions.close(ctx.session.cookie)
            response = redirect("/sign-in?ended=1")
            clear_cookie(response, SESSION_COOKIE, secure=self._secure(request))
            return response
        return self.views.render("error.html", ctx, status=result.status, error=result.message)

    # -- a new secret, shown once ---------------------------------------------

    async def shown_once(
        self, ctx: Ctx, result: ApiResult, kind: str, secret_field: str, path: str
    ) -> Response:
        """Keep the new secret for one viewing, then post/redirect/get to
        ``path``. A replayed answer (the same form sent twice) stores nothing:
        the first one did, and its secret is shown once, whichever response
        the browser ends up following."""
        if not result.replayed:
            payload = {"kind": kind, "id": result.data["id"], "secret": result.data[secret_field]}
            await self.sessions.stash(ctx.session, payload)
        return redirect(path)

    async def show_secret(self, ctx: Ctx, kind: str, object_id: str, gone: str) -> Response:
        """The stashed secret of ``object_id``, taken (deleted) as it is
        rendered; afterwards (reload, back, history) a redirect to ``gone``."""
        taken = await self.sessions.take(ctx.session)
        if taken is None or taken.get("kind") != kind or taken.get("id") != object_id:
            return redirect(gone)
        return self.views.render(
            "secret.html", ctx, kind=kind, object_id=object_id, secret=taken["secret"]
        )

    # -- sign-in, sign-out, the account picker ---------------------------------

    async def _home(self, request: Request) -> Response:
        return redirect("/keys")

    def _sign_in_page(
        self, request: Request, *, status: int = 200, error: str | None = None
    ) -> Response:
        pre_session = csrf.new_pre_session()
        notice = None
        if request.query_params.get("ended"):
            notice = "Your session ended. Sign in again."
        response = self.views.render(
            "sign_in.html",
            status=status,
            error=error,
            notice=notice,
            sign_in_token=csrf.sign_in_token(self.keyring, pre_session),
        )
        set_cookie(
            response,
            csrf.PRE_SESSION_COOKIE,
            pre_session,
            max_age=SIGN_IN_SECONDS,
            secure=self._secure(request),
        )
        return response

    async def _sign_in_form(self, request: Request) -> Response:
        if await self.sessions.load(request.cookies.get(SESSION_COOKIE)) is not None:
            return redirect("/keys")
        return self._sign_in_page(request)

    async def _sign_in(self, request: Request) -> Response:
        try:
            form = await read_form(request)
        except errors.KeystileError as exc:
            return self._sign_in_page(request, status=status_of(exc), error=exc.message)
        pre_session = request.cookies.get(csrf.PRE_SESSION_COOKIE, "")
        given = (form.get("csrf_token") or [""])[0]
        if (
            not pre_session
            or not csrf.same_token(csrf.sign_in_token(self.keyring, pre_session), given)
            or csrf.cross_site(request.headers)
        ):
            return self._sign_in_page(
                request,
                status=403,
                error="The sign-in form expired or was not sent from this console. Try again.",
            )
        credential = (form.get("key") or [""])[0].strip()
        operator = self.services.verifier.is_operator_token(credential)
        ctx = context_of(request.scope)
        caller = Caller(credential, None, ctx.client, ctx.request_id)
        # The API decides: an unknown key is its 401 (counted by the per-address
        # failed-authentication limit, then 429), a key without admin:api_keys
        # its 403. An operator key must be able to list accounts.
        path = "/v1/accounts" if operator else "/v1/api-keys"
        result = await self.api.call(caller, "GET", path, params={"limit": "1"})
        if result.status == 401:
            return self._sign_in_page(request, status=401, error="That key is not valid.")
        if not result.ok:
            return self._sign_in_page(request, status=result.status, error=result.message)
        account_id = None
        if not operator:  # the account the key belongs to, shown in the page header
            verified = await self.services.verifier.verify(credential)
            account_id = verified.key.account_id if verified.key is not None else None
        cookie = await self.sessions.open(credential, account_id=account_id, operator=operator)
        response = redirect("/accounts" if operator else "/keys")
        set_cookie(
            response,
            SESSION_COOKIE,
            cookie,
            max_age=self.sessions.absolute_seconds,
            secure=self._secure(request),
        )
        clear_cookie(response, csrf.PRE_SESSION_COOKIE, secure=self._secure(request))
        return response

    async def _sign_out(self, request: Request, ctx: Ctx) -> Response:
        await self.sessions.close(ctx.session.cookie)
        response = redirect("/sign-in")
        clear_cookie(response, SESSION_COOKIE, secure=self._secure(request))
        return response

    async def _accounts(self, request: Request, ctx: Ctx) -> Response:
        if not ctx.session.operator:
            return redirect("/keys")
        operator_caller = Caller(
            ctx.caller.credential, None, ctx.caller.client, ctx.caller.request_id
        )
        if request.method == "POST":
            chosen = ctx.value("account_id")
            found = await self.api.call(operator_caller, "GET", f"/v1/accounts/{chosen}")
            if found.ok:
                await self.sessions.choose_account(ctx.session, found.data["id"])
                return redirect("/keys")
            if found.status != 404:
                return await self.failed(request, ctx, found)
        params = {"limit": "100"}
        listed = await self.api.call(operator_caller, "GET", "/v1/accounts", params=params)
        if not listed.ok:
            return await self.failed(request, ctx, listed)
        return self.views.render("accounts.html", ctx, accounts=listed.data)

    async def _static(self, request: Request) -> Response:
        found = static_file(request.path_params["name"])
        return found if found is not None else await self._not_found(request)

    async def _unrouted(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._not_found(Request(scope, receive))
        await response(scope, receive, send)

    async def _not_found(self, request: Request) -> Response:
        return self.views.render("error.html", status=404, error="There is no such page.")
