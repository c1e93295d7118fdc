"""Provisioning and changing accounts (contract §9).

Suspending an account (or reactivating it) changes what every one of its
keys may do on the very next request, in every process: the change marks
every cached key stale once it commits (the revocation machinery, not a
TTL).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from keystile import clock as clocks
from keystile.audit.models import CLI_ORIGIN, Action, Origin, diff
from keystile.audit.service import AuditLog, account_view, created
from keystile.errors import FieldProblem, NotFound, PlanConflict, ValidationFailed
from keystile.keys.ids import is_account_id, new_account_id
from keystile.keys.models import Account, AccountPage, AccountStatus, Metadata, Plan
from keystile.keys.validation import check_metadata, check_name
from keystile.storage.base import Storage, UnitOfWork

ALL_KEYS = "*"


class AccountService:
    def __init__(
        self,
        storage: Storage,
        *,
        audit: AuditLog | None = None,
        clock: clocks.Clock = clocks.system_clock,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._audit = audit or AuditLog(clock=clock)

    def now(self) -> int:
        return clocks.now_micros(self._clock)

    async def create(
        self,
        name: str,
        plan: Plan = Plan.STANDARD,
        metadata: Metadata | None = None,
        origin: Origin = CLI_ORIGIN,
        uow: UnitOfWork | None = None,
    ) -> Account:
        """A new active account. Raises 400 for a bad name or metadata."""
        clean, problems = check_name(name)
        clean_metadata, metadata_problems = check_metadata(metadata)
        if problems or metadata_problems:
            raise ValidationFailed("The request is invalid.", problems + metadata_problems)
        account = Account(
            id=new_account_id(),
            name=clean,
            plan=plan,
            created_at=clocks.whole_seconds(self.now()),
            metadata=clean_metadata,
        )
        if uow is not None:
            await self._insert(uow, account, origin)
        else:
            async with self._storage.transaction() as own:
                await self._insert(own, account, origin)
        return account

    async def _insert(self, uow: UnitOfWork, account: Account, origin: Origin) -> None:
        await uow.accounts.insert(account)
        await self._audit.record(
            uow,
            Action.ACCOUNT_CREATED,
            origin,
            target_type="account",
            target_id=account.id,
            account_id=account.id,
            changes=created(account_view(account)),
        )

    async def get(self, account_id: str) -> Account:
        async with self._storage.reader() as uow:
            return await existing_account(uow, account_id)

    async def list(
        self,
        *,
        limit: int = 20,
        status: AccountStatus | None = None,
        starting_after: str | None = None,
    ) -> AccountPage:
        async with self._storage.reader() as uow:
            cursor = None
            if starting_after is not None:
                cursor = (
                    await uow.accounts.get(starting_after)
                    if is_account_id(starting_after)
                    else None
                )
                if cursor is None:
                    raise ValidationFailed(
                        "The query string is invalid.",
                        [FieldProblem("starting_after", "is not an account")],
                    )
            return await uow.accounts.list(limit=limit, status=status, starting_after=cursor)

    async def update(
        self,
        uow: UnitOfWork,
        account_id: str,
        changes: dict[str, Any],
        origin: Origin = CLI_ORIGIN,
    ) -> Account:
        """Apply validated ``changes`` (name, plan, metadata, status).

        Moving to ``standard`` while active ``unmetered`` keys exist is 409
        ``plan_conflict``. A change of status or plan reaches every key of
        the account on its next request, in every process.
        """
        account = await existing_account(uow, account_id)
        changed = dataclasses.replace(account, **changes)
        if changed.plan is Plan.STANDARD and account.plan is Plan.ENTERPRISE:
            count = await uow.accounts.count_active_unmetered_keys(account_id, self.now())
            if count:
                raise PlanConflict(
                    f"The account has {count} active unmetered "
                    f"key{'s' if count != 1 else ''}: revoke them, or move them to another "
                    "tier, before moving the account to the standard plan."
                )
        await uow.accounts.update(changed)
        if changed.status != account.status or changed.plan != account.plan:
            uow.keys.invalidate(ALL_KEYS)
        await self._audit.record(
            uow,
            Action.ACCOUNT_UPDATED,
            origin,
            target_type="account",
            target_id=account_id,
            account_id=account_id,
            changes=diff(account_view(account), account_view(changed)),
        )
        return changed


async def existing_account(uow: UnitOfWork, account_id: str) -> Account:
    account = await uow.accounts.get(account_id) if is_account_id(account_id) else None
    if account is None:
        raise NotFound(f"No such account: {account_id[:64]!r}.")
    return account


ACCOUNT_FIELDS = ("name", "plan", "metadata", "status")


def check_account_patch(given: dict[str, Any]) -> dict[str, Any]:
    """The changes of ``PATCH /v1/accounts/{id}``, validated, as ``Account``
    field → value. ``given`` holds only the fields sent."""
    if not given:
        raise ValidationFailed(
            "The request is invalid.",
            [FieldProblem("body", f"give at least one of: {', '.join(ACCOUNT_FIELDS)}")],
        )
    changes: dict[str, Any] = {}
    problems: list[FieldProblem] = []
    for field, raw in given.items():
        if field == "name":
            clean, found = check_name(raw) if isinstance(raw, str) else ("", [])
            if not isinstance(raw, str):
                found = [FieldProblem("name", "must be a string")]
            changes["name"] = clean
        elif field == "plan":
            found = _choice(field, raw, Plan)
            changes["plan"] = Plan(raw) if not found else None
        elif field == "status":
            found = _choice(field, raw, AccountStatus)
            changes["status"] = AccountStatus(raw) if not found else None
        elif field == "metadata":
            changes["metadata"], found = check_metadata(raw)
        else:
            found = [
                FieldProblem(field, f"is not a known field (known: {', '.join(ACCOUNT_FIELDS)})")
            ]
        problems += found
    if problems:
        raise ValidationFailed("The request is invalid.", problems)
    return changes


def _choice(field: str, raw: object, kind: type[Plan] | type[AccountStatus]) -> list[FieldProblem]:
    values = [member.value for member in kind]
    if raw not in values:
        return [FieldProblem(field, f"must be one of: {', '.join(values)}")]
    return []
