"""Options the commands share, and the checks that make a mistake on the
command line read exactly as the same mistake over HTTP.

Values the API validates (a page size, a status, a plan, a tier, a scope)
are taken as plain text here and validated by the API's own wire models and
domain rules, worded by ``keystile.api.wording``; click's type checks would
word them differently.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keystile.api.wording import problems
from keystile.errors import ValidationFailed
from keystile.keys.models import AccountStatus, KeyStatus, Plan, Tier
from keystile.settings import Settings

M = TypeVar("M", bound=BaseModel)

PAGE_DEFAULT = 20  # contract §4: limit 1-100, default 20, not clamped


class KeyPage(BaseModel):
    """The query of ``GET /v1/api-keys`` the CLI takes (its bounds are the route's)."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(PAGE_DEFAULT, ge=1, le=100)
    starting_after: str | None = Field(None, max_length=64)
    status: KeyStatus | None = None


class AccountPage(BaseModel):
    """The query of ``GET /v1/accounts`` the CLI takes."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(PAGE_DEFAULT, ge=1, le=100)
    starting_after: str | None = Field(None, max_length=64)
    status: AccountStatus | None = None


def query(model: type[M], **given: Any) -> M:
    """``given`` (option values as typed, ``None`` for absent) validated
    like a query string: 400 ``validation_error`` in the API's words."""
    try:
        return model.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        raise ValidationFailed("The request is invalid.", problems(exc.errors())) from None


def _scopes(incomplete: str) -> list[str]:
    try:
        catalog = Settings().scope_list
    except ValueError:  # a bad configuration completes nothing
        return []
    return [scope for scope in catalog if scope.startswith(incomplete)]


def _choices(values: list[str]) -> Any:
    def complete(incomplete: str) -> list[str]:
        return [value for value in values if value.startswith(incomplete)]

    return complete


JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print the HTTP API's JSON body instead of a table.")
]
Limit = Annotated[
    str, typer.Option("--limit", metavar="N", help="Page size, 1-100, as in the API.")
]
Account = Annotated[str, typer.Option("--account", metavar="ACC_ID", help="Account id (acc_…).")]
StartingAfter = Annotated[
    str | None,
    typer.Option("--starting-after", metavar="ID", help="The last id of the previous page."),
]
KeyStatusFilter = Annotated[
    str | None,
    typer.Option(
        "--status",
        metavar="|".join(KeyStatus),
        help="Only keys in this state.",
        autocompletion=_choices(list(KeyStatus)),
    ),
]
AccountStatusFilter = Annotated[
    str | None,
    typer.Option(
        "--status",
        metavar="|".join(AccountStatus),
        help="Only accounts in this state.",
        autocompletion=_choices(list(AccountStatus)),
    ),
]
PlanOption = Annotated[
    str,
    typer.Option(
        "--plan",
        metavar="|".join(Plan),
        help="The account's plan; enterprise allows unmetered keys.",
        autocompletion=_choices(list(Plan)),
    ),
]
TierOption = Annotated[
    str | None,
    typer.Option(
        "--rate-limit-tier",
        metavar="|".join(Tier),
        help="standard (default), high, or unmetered (enterprise plan only).",
        autocompletion=_choices(list(Tier)),
    ),
]
RateLimitOption = Annotated[
    str | None,
    typer.Option(
        "--rate-limit",
        metavar="LIMIT/SECONDS",
        help="The key's own rate limit, e.g. 100/60: 100 requests per 60 s (the API's rate_limit).",
    ),
]
QuotaOption = Annotated[
    str | None,
    typer.Option(
        "--quota",
        metavar="LIMIT/day|month",
        help="Requests per UTC day or month, e.g. 100000/month (the API's quota).",
    ),
]


def per(text: str | None, unit: str) -> dict[str, Any] | None:
    """``"100/60"`` as ``{"limit": 100, unit: 60}`` (``"100000/month"``:
    ``{"limit": 100000, unit: "month"}``), the body the API takes for
    ``--rate-limit`` and ``--quota``; what is not a number is passed on as
    text, for the API's own validation to word the mistake."""
    if text is None:
        return None
    head, _, tail = text.partition("/")

    def number(part: str) -> int | str:
        return int(part) if part.strip().isdigit() else part.strip()

    return {"limit": number(head), unit: number(tail) if unit == "window_seconds" else tail}


Permission = Annotated[
    list[str],
    typer.Option(
        "--permission",
        metavar="SCOPE",
        help="A scope from the catalog; repeat for several.",
        autocompletion=_scopes,
    ),
]
