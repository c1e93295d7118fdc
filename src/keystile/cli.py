"""The admin CLI (contract §1). Works directly on the configured database;
this is how an account and its first admin key are made.

``--json`` prints exactly the body the HTTP API returns for the same
operation. Every failure is one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from keystile.accounts.service import AccountService
from keystile.api import schemas
from keystile.api.account_schemas import account_out
from keystile.clock import now_micros, system_clock
from keystile.errors import KeystileError, NotFound, ValidationFailed
from keystile.idempotency.crypto import generate_key
from keystile.keys.models import KeyStatus, Plan
from keystile.keys.service import KeyService
from keystile.keys.validation import check_new_key
from keystile.settings import Settings
from keystile.storage.base import Storage, StorageUnavailable
from keystile.storage.sql import migrate
from keystile.storage.sql.database import open_storage
from keystile.usage import export

T = TypeVar("T")

app = typer.Typer(
    name="keystile",
    help="keystile: issue, verify, meter and revoke API keys.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
accounts_app = typer.Typer(help="Manage accounts.", no_args_is_help=True, rich_markup_mode=None)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(accounts_app, name="accounts")
app.add_typer(keys_app, name="keys")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the HTTP API's JSON body.")]


class CliError(Exception):
    """A failure to report on one line."""


def _settings() -> Settings:
    return Settings()


def _with_service(work: Callable[[KeyService, Storage], Awaitable[T]]) -> T:
    """Migrate, open the database, run ``work`` with a key service, close."""
    settings = _settings()
    migrate.upgrade(settings.database)

    async def run() -> T:
        storage = open_storage(settings.database)
        try:
            return await work(KeyService(storage, prefix=settings.key_prefix), storage)
        finally:
            await storage.close()

    return asyncio.run(run())


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [[("" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    typer.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _emit(model: BaseModel, as_json: bool, columns: list[str]) -> None:
    if as_json:
        sys.stdout.buffer.write(schemas.dump(model) + b"\n")
        sys.stdout.flush()
        return
    data = model.model_dump()["data"]
    _print_table(data if isinstance(data, list) else [data], columns)


_KEY_COLUMNS = [
    "id",
    "name",
    "status",
    "permissions",
    "rate_limit_tier",
    "expires_at",
    "created_at",
]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [KEYSTILE_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind [KEYSTILE_PORT].")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes [KEYSTILE_WORKERS].")
    ] = None,
) -> None:
    """Start the HTTP service (migrating the database first)."""
    from keystile.api.app import check
    from keystile.api.observability import configure_logging
    from keystile.server.supervisor import serve as run_server

    # Flags override the environment; worker processes read the environment.
    for name, value in (("HOST", host), ("PORT", port), ("WORKERS", workers)):
        if value is not None:
            os.environ[f"KEYSTILE_{name}"] = str(value)
    settings = _settings()
    configure_logging(settings.log_level)
    check(settings)
    migrate.upgrade(settings.database)
    run_server(settings)


@app.command("migrate")
def migrate_command() -> None:
    """Apply database migrations (also done by every other command)."""
    settings = _settings()
    migrate.upgrade(settings.database)
    typer.echo("database is up to date")


@app.command()
def purge() -> None:
    """Delete expired idempotency records now (the server also does it periodically)."""

    async def work(_: KeyService, storage: Storage) -> int:
        async with storage.transaction() as uow:
            return await uow.idempotency.purge(now_micros(system_clock))

    typer.echo(f"purged {_with_service(work)} expired idempotency records")


@app.command("secret-key")
def secret_key() -> None:
    """Print a new application key for KEYSTILE_SECRET_KEY."""
    typer.echo(generate_key())


@accounts_app.command("create")
def accounts_create(
    name: Annotated[str, typer.Argument(help="Account name.")],
    plan: Annotated[Plan, typer.Option(help="The account's plan.")] = Plan.STANDARD,
    as_json: JsonFlag = False,
) -> None:
    """Create an account."""
    account = _with_service(lambda _, storage: AccountService(storage).create(name, plan))
    _emit(account_out(account), as_json, ["id", "name", "plan", "status", "created_at"])


@keys_app.command("create")
def keys_create(
    account: Annotated[str, typer.Option("--account", help="Account id (acc_…).")],
    name: Annotated[str, typer.Option("--name", help="Key name, unique among active keys.")],
    permission: Annotated[
        list[str], typer.Option("--permission", help="A scope; repeat for several.")
    ],
    description: Annotated[str | None, typer.Option(help="What the key is for.")] = None,
    rate_limit_tier: Annotated[
        str | None, typer.Option("--rate-limit-tier", help="standard, high or unmetered.")
    ] = None,
    expires_at: Annotated[
        str | None, typer.Option("--expires-at", help="RFC 3339 expiry, e.g. 2027-01-01T00:00:00Z.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a key; prints its secret, which is shown only this once."""
    settings = _settings()

    async def work(keys: KeyService, storage: Storage) -> schemas.CreatedApiKeyEnvelope:
        new = check_new_key(
            name=name,
            permissions=permission,
            description=description,
            rate_limit_tier=rate_limit_tier,
            expires_at=expires_at,
            catalog=settings.catalog,
            now=keys.now(),
        )
        async with storage.transaction() as uow:
            issued = await keys.issue(uow, account, new, caller=None)
        return schemas.created_key_out(issued.key, issued.secret, settings.key_prefix, keys.now())

    body = _with_service(work)
    _emit(body, as_json, ["id", "name", "key", "permissions", "rate_limit_tier", "expires_at"])
    if not as_json:
        typer.echo("Store the key now: it cannot be shown again.", err=True)


@keys_app.command("list")
def keys_list(
    account: Annotated[str, typer.Option("--account", help="Account id (acc_…).")],
    limit: Annotated[int, typer.Option(min=1, max=100, help="Page size, 1-100.")] = 100,
    starting_after: Annotated[
        str | None, typer.Option("--starting-after", help="Last key id of the previous page.")
    ] = None,
    status: Annotated[KeyStatus | None, typer.Option(help="Only keys in this state.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List an account's keys, newest first."""
    settings = _settings()

    async def work(keys: KeyService, storage: Storage) -> schemas.ApiKeyList:
        async with storage.reader() as uow:
            if await uow.accounts.get(account) is None:
                raise NotFound(f"No account {account!r}.")  # a typo must not look like "no keys"
        page = await keys.list(account, limit=limit, status=status, starting_after=starting_after)
        return schemas.key_list_out(page, settings.key_prefix, keys.now())

    _emit(_with_service(work), as_json, _KEY_COLUMNS)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="Key id (key_…).")],
    as_json: JsonFlag = False,
) -> None:
    """Revoke a key; it is refused from its next request on."""
    settings = _settings()

    async def work(keys: KeyService, storage: Storage) -> schemas.ApiKeyEnvelope:
        async with storage.transaction() as uow:
            key = await keys.revoke(uow, None, key_id)
        return schemas.ApiKeyEnvelope(data=schemas.key_out(key, settings.key_prefix, keys.now()))

    _emit(_with_service(work), as_json, [*_KEY_COLUMNS, "revoked_at"])


usage_app = typer.Typer(help="Metered usage.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(usage_app, name="usage")


def _month(value: str) -> str:
    try:
        export.parse_month(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


@usage_app.command("export")
def usage_export(
    account: Annotated[str, typer.Option("--account", help="Account id (acc_…).")],
    month: Annotated[str, typer.Option("--month", help="A UTC month: YYYY-MM.", callback=_month)],
    fmt: Annotated[
        export.Format, typer.Option("--format", help="csv or json.")
    ] = export.Format.CSV,
) -> None:
    """Print an account's usage of a month, one row per key and day (for billing)."""
    text = _with_service(lambda _, storage: export.export_month(storage, account, month, fmt))
    sys.stdout.write(text)
    sys.stdout.flush()


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationFailed) and exc.details:
        problems = "; ".join(f"{d.field}: {d.message}" for d in exc.details)
        return f"{exc.message} ({problems})"
    if isinstance(exc, KeystileError):
        return exc.message
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"KEYSTILE_{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        return f"invalid configuration: {problems}"
    if isinstance(exc, StorageUnavailable):
        return f"the database is unavailable: {exc}"
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _is_usage_error(exc: BaseException) -> bool:
    """Click's usage errors (Typer vendors its own copy of click, so match by
    interface rather than by class)."""
    return callable(getattr(exc, "format_message", None)) and isinstance(
        getattr(exc, "exit_code", None), int
    )


def main(argv: list[str] | None = None) -> None:
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="keystile", standalone_mode=False)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if _is_usage_error(exc):
            message = exc.format_message()  # type: ignore[attr-defined]
            print(f"keystile: error: {message} (see keystile --help)", file=sys.stderr)
            sys.exit(int(exc.exit_code))  # type: ignore[attr-defined]
        if type(exc).__name__ == "Abort":
            print("keystile: aborted", file=sys.stderr)
            sys.exit(130)
        print(f"keystile: error: {_one_line(exc)}", file=sys.stderr)
        sys.exit(1)
    if isinstance(result, int) and result != 0:
        sys.exit(result)
