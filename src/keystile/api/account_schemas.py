"""Wire schemas of the operator's accounts (contract §9)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from keystile.api.schemas import METADATA_DOC
from keystile.clock import rfc3339
from keystile.keys.models import Account, AccountPage


class CreateAccountRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(description="1-120 characters after trimming.")
    plan: Literal["standard", "enterprise"] = "standard"
    metadata: dict[str, str] | None = Field(None, description=METADATA_DOC)


class UpdateAccountRequest(BaseModel):
    """Any of the fields, at least one."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = None
    plan: Literal["standard", "enterprise"] | None = None
    metadata: dict[str, str] | None = Field(None, description=METADATA_DOC)
    status: Literal["active", "suspended"] | None = Field(
        None, description="suspended: every key of the account gets 403 account_suspended."
    )

    def given(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class AccountOut(BaseModel):
    id: str
    name: str
    plan: Literal["standard", "enterprise"]
    status: Literal["active", "suspended"]
    metadata: dict[str, str]
    created_at: str = Field(json_schema_extra={"format": "date-time"})


class AccountEnvelope(BaseModel):
    data: AccountOut


class AccountList(BaseModel):
    data: list[AccountOut]
    has_more: bool


def account_fields(account: Account) -> AccountOut:
    return AccountOut(
        id=account.id,
        name=account.name,
        plan=account.plan.value,
        status=account.status.value,
        metadata=dict(account.metadata),
        created_at=rfc3339(account.created_at) or "",
    )


def account_out(account: Account) -> AccountEnvelope:
    return AccountEnvelope(data=account_fields(account))


def account_list_out(page: AccountPage) -> AccountList:
    return AccountList(data=[account_fields(a) for a in page.accounts], has_more=page.has_more)
