"""The commands that run or look after the service: ``serve``, ``migrate``,
``purge`` and ``secret-key`` (contract §1, §6)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from keystile.cli import runtime
from keystile.clock import now_micros, system_clock


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
    from keystile.server import granian_server, supervisor
    from keystile.storage.sql import migrate

    # Flags override the environment; worker processes read the environment.
    for name, value in (("HOST", host), ("PORT", port), ("WORKERS", workers)):
        if value is not None:
            os.environ[f"KEYSTILE_{name}"] = str(value)
    settings = runtime.settings()
    configure_logging(settings.log_level)
    check(settings)
    migrate.upgrade(settings.database)
    if settings.server == "granian":
        granian_server.serve(settings)
    else:
        supervisor.serve(settings)


def migrate_command() -> None:
    """Apply database migrations (every other command does it too)."""
    from keystile.storage.sql import migrate

    migrate.upgrade(runtime.settings().database)
    typer.echo("database is up to date")


def purge() -> None:
    """Delete expired idempotency records now (the server also does it periodically)."""

    async def work(services: runtime.Services) -> int:
        async with services.storage.transaction() as uow:
            return await uow.idempotency.purge(now_micros(system_clock))

    typer.echo(f"purged {runtime.run(work)} expired idempotency records")


def secret_key() -> None:
    """Print a new application key for KEYSTILE_SECRET_KEY."""
    from keystile.idempotency.crypto import generate_key

    typer.echo(generate_key())


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("migrate")(migrate_command)
    app.command("purge")(purge)
    app.command("secret-key")(secret_key)
