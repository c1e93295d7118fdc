"""``keystile usage export``: an account's metered usage of one UTC month,
one row per key and day, for billing (contract §11). The rows and formats
are ``keystile.usage.export``'s; this is the command line around them."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from keystile.cli import runtime
from keystile.cli.params import Account
from keystile.usage.export import Format, export_month, parse_month

app = typer.Typer(help="Metered usage: export a month for billing.", no_args_is_help=True)


def _month(value: str) -> str:
    try:
        parse_month(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


@app.command("export")
def export(
    account: Account,
    month: Annotated[
        str, typer.Option("--month", metavar="YYYY-MM", help="A UTC month.", callback=_month)
    ],
    fmt: Annotated[Format, typer.Option("--format", help="csv or json.")] = Format.CSV,
) -> None:
    """Print an account's usage of a month: every key with usage, every day."""

    async def work(services: runtime.Services) -> str:
        return await export_month(services.storage, account, month, fmt)

    sys.stdout.write(runtime.run(work))
    sys.stdout.flush()
