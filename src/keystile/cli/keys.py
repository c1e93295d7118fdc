"""``keystile keys``: an account's API keys (contract §1, §4).

The CLI acts as the operator: ``create`` is bounded by the domain rules
(catalog, plan, name uniqueness) and not by a calling key, and ``get`` and
``revoke`` take any account's key. With ``--json`` each prints the body of
the matching endpoint: ``POST /v1/api-keys`` (201), ``GET /v1/api-keys``,
``GET /v1/api-keys/{id}`` and ``DELETE /v1/api-keys/{id}``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keystile.api.body import validate_model
from keystile.api.schemas import (
    ApiKeyEnvelope,
    ApiKeyList,
    CreateApiKeyRequest,
    CreatedApiKeyEnvelope,
    created_key_out,
    key_list_out,
    key_out,
)
from keystile.cli import runtime
from keystile.cli.output import emit, note
from keystile.cli.params import (
    PAGE_DEFAULT,
    Account,
    JsonFlag,
    KeyPage,
    KeyStatusFilter,
    Limit,
    Permission,
    QuotaOption,
    RateLimitOption,
    StartingAfter,
    TierOption,
    per,
    query,
)
from keystile.keys.models import ApiKey
from keystile.keys.validation import check_new_key

app = typer.Typer(help="Create, list, read and revoke API keys.", no_args_is_help=True)

COLUMNS = (
    "id", "name", "status", "permissions", "rate_limit_tier", "expires_at", "last_used_at",
    "created_at",
)  # fmt: skip
KeyId = Annotated[str, typer.Argument(metavar="KEY_ID", help="Key id (key_…).")]


def _envelope(services: runtime.Services, key: ApiKey) -> ApiKeyEnvelope:
    return ApiKeyEnvelope(data=key_out(key, services.settings.key_prefix, services.keys.now()))


@app.command("create")
def create(
    account: Account,
    name: Annotated[
        str, typer.Option("--name", help="Key name, unique among the account's active keys.")
    ],
    permission: Permission,
    description: Annotated[
        str | None, typer.Option("--description", help="What the key is for.")
    ] = None,
    rate_limit_tier: TierOption = None,
    rate_limit: RateLimitOption = None,
    quota: QuotaOption = None,
    expires_at: Annotated[
        str | None,
        typer.Option("--expires-at", metavar="RFC3339", help="Expiry, e.g. 2027-01-01T00:00:00Z."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a key (like POST /v1/api-keys); its secret is shown this once."""
    given: dict[str, Any] = {
        "name": name, "permissions": permission, "description": description,
        "rate_limit_tier": rate_limit_tier, "expires_at": expires_at,
        "rate_limit": per(rate_limit, "window_seconds"), "quota": per(quota, "period"),
    }  # fmt: skip

    async def work(services: runtime.Services) -> CreatedApiKeyEnvelope:
        # The order of the HTTP API's checks: the account (404), then the body (400).
        await services.accounts.get(account)
        body = validate_model(
            CreateApiKeyRequest, {k: v for k, v in given.items() if v is not None}
        )
        new = check_new_key(
            name=body.name,
            permissions=body.permissions,
            description=body.description,
            rate_limit_tier=body.rate_limit_tier,
            expires_at=body.expires_at,
            catalog=services.settings.catalog,
            now=services.keys.now(),
            rate_limit=body.rate_limit.model_dump() if body.rate_limit else None,
            quota=body.quota.model_dump() if body.quota else None,
        )
        async with services.storage.transaction() as uow:
            issued = await services.keys.issue(uow, account, new, caller=None)
        prefix = services.settings.key_prefix
        return created_key_out(issued.key, issued.secret, prefix, services.keys.now())

    emit(runtime.run(work), as_json, COLUMNS)
    if not as_json:
        note("Store the key now: it cannot be shown again.")


@app.command("list")
def list_(
    account: Account,
    limit: Limit = str(PAGE_DEFAULT),
    starting_after: StartingAfter = None,
    status: KeyStatusFilter = None,
    as_json: JsonFlag = False,
) -> None:
    """List an account's keys, newest first (like GET /v1/api-keys)."""

    async def work(services: runtime.Services) -> ApiKeyList:
        await services.accounts.get(account)  # a typo must not read as "no keys"
        page = query(KeyPage, limit=limit, starting_after=starting_after, status=status)
        found = await services.keys.list(
            account, limit=page.limit, status=page.status, starting_after=page.starting_after
        )
        return key_list_out(found, services.settings.key_prefix, services.keys.now())

    body = runtime.run(work)
    emit(body, as_json, COLUMNS)
    if body.has_more and not as_json:
        note(f"More keys follow: add --starting-after {body.data[-1].id}")


@app.command("get")
def get(key_id: KeyId, as_json: JsonFlag = False) -> None:
    """Show one key, of any account (like GET /v1/api-keys/{id})."""

    async def work(services: runtime.Services) -> ApiKeyEnvelope:
        return _envelope(services, await services.keys.get(None, key_id))

    emit(runtime.run(work), as_json, COLUMNS)


@app.command("revoke")
def revoke(key_id: KeyId, as_json: JsonFlag = False) -> None:
    """Revoke a key (like DELETE /v1/api-keys/{id}); refused from its next request on."""

    async def work(services: runtime.Services) -> ApiKeyEnvelope:
        async with services.storage.transaction() as uow:
            key = await services.keys.revoke(uow, None, key_id)
        return _envelope(services, key)

    emit(runtime.run(work), as_json, COLUMNS)
