"""``keystile accounts``: the operator's customers (contract §1, §9).

Each command does what the operator API's endpoint does and prints its body
with ``--json``: ``create`` is ``POST /v1/accounts``, ``list`` is
``GET /v1/accounts`` and ``get`` is ``GET /v1/accounts/{id}``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from keystile.api.account_schemas import (
    AccountEnvelope,
    AccountList,
    CreateAccountRequest,
    account_list_out,
    account_out,
)
from keystile.api.body import validate_model
from keystile.cli import runtime
from keystile.cli.output import emit, note
from keystile.cli.params import (
    PAGE_DEFAULT,
    AccountPage,
    AccountStatusFilter,
    JsonFlag,
    Limit,
    PlanOption,
    StartingAfter,
    query,
)
from keystile.keys.models import Plan

app = typer.Typer(help="Create, list and read accounts.", no_args_is_help=True)

COLUMNS = ("id", "name", "plan", "status", "created_at")


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The account's name, 1-120 characters.")],
    plan: PlanOption = Plan.STANDARD.value,
    as_json: JsonFlag = False,
) -> None:
    """Create an account (like POST /v1/accounts)."""
    body = validate_model(CreateAccountRequest, {"name": name, "plan": plan})

    async def work(services: runtime.Services) -> AccountEnvelope:
        return account_out(await services.accounts.create(body.name, Plan(body.plan)))

    emit(runtime.run(work), as_json, COLUMNS)


@app.command("list")
def list_(
    limit: Limit = str(PAGE_DEFAULT),
    starting_after: StartingAfter = None,
    status: AccountStatusFilter = None,
    as_json: JsonFlag = False,
) -> None:
    """List accounts, newest first (like GET /v1/accounts)."""
    page = query(AccountPage, limit=limit, starting_after=starting_after, status=status)

    async def work(services: runtime.Services) -> AccountList:
        found = await services.accounts.list(
            limit=page.limit, status=page.status, starting_after=page.starting_after
        )
        return account_list_out(found)

    body = runtime.run(work)
    emit(body, as_json, COLUMNS)
    if body.has_more and not as_json:
        note(f"More accounts follow: add --starting-after {body.data[-1].id}")


@app.command("get")
def get(
    account_id: Annotated[str, typer.Argument(metavar="ACC_ID", help="Account id (acc_…).")],
    as_json: JsonFlag = False,
) -> None:
    """Show one account (like GET /v1/accounts/{id})."""

    async def work(services: runtime.Services) -> AccountEnvelope:
        return account_out(await services.accounts.get(account_id))

    emit(runtime.run(work), as_json, COLUMNS)
