"""``keystile operator-keys``: the operator's own keys (contract §9).

They are made and managed only here, on the server's database: an operator
key provisions accounts over HTTP (``/v1/accounts``) and acts for any
account named in ``Keystile-Account``. Its secret (``{prefix}_root_…``) is
printed once, by ``create``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from keystile.api.operator_key_schemas import (
    CreatedOperatorKeyEnvelope,
    OperatorKeyEnvelope,
    OperatorKeyList,
    created_operator_key_out,
    operator_key_list_out,
    operator_key_out,
)
from keystile.cli import runtime
from keystile.cli.output import emit, note
from keystile.cli.params import JsonFlag

app = typer.Typer(
    help="Create, list and revoke operator keys (they provision accounts over HTTP).",
    no_args_is_help=True,
)

COLUMNS = ("id", "name", "status", "created_at", "last_used_at", "revoked_at")


@app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="What the key is for, 1-120 characters.")],
    as_json: JsonFlag = False,
) -> None:
    """Create an operator key; its secret is shown this once."""

    async def work(services: runtime.Services) -> CreatedOperatorKeyEnvelope:
        issued = await services.operator_keys.create(name)
        return created_operator_key_out(issued.key, issued.secret)

    emit(runtime.run(work), as_json, COLUMNS)
    if not as_json:
        note("Store the key now: it cannot be shown again.")


@app.command("list")
def list_(as_json: JsonFlag = False) -> None:
    """List every operator key, newest first."""

    async def work(services: runtime.Services) -> OperatorKeyList:
        return operator_key_list_out(await services.operator_keys.list())

    emit(runtime.run(work), as_json, COLUMNS)


@app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(metavar="OPK_ID", help="Operator key id (opk_…).")],
    as_json: JsonFlag = False,
) -> None:
    """Revoke an operator key; refused from its next request on (idempotent)."""

    async def work(services: runtime.Services) -> OperatorKeyEnvelope:
        return operator_key_out(await services.operator_keys.revoke(key_id))

    emit(runtime.run(work), as_json, COLUMNS)
