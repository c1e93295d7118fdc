"""Issuing, reading, changing, rotating and revoking keys: the rules of
contract §4 and §10.

Every change runs in a unit of work the caller passes in (the request's
transaction, so an idempotent request commits its response with it) and
writes its audit event in that same transaction (§12). Cached copies of a
changed key are dropped everywhere once the transaction commits: the
storage adapter tells every process (see ``Storage.on_invalidated``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from keystile import clock as clocks
from keystile.audit.models import CLI_ORIGIN, Action, AuditEvent, Origin, diff
from keystile.audit.service import AuditLog, created, key_view
from keystile.errors import (
    DuplicateName,
    FieldProblem,
    InsufficientPermissions,
    KeyInactive,
    NotFound,
    PlanRestricted,
    ValidationFailed,
)
from keystile.keys import tokens
from keystile.keys.ids import is_account_id, is_key_id, new_key_id
from keystile.keys.models import ApiKey, IssuedKey, KeyPage, KeyStatus, NewKey, Plan, Tier
from keystile.keys.validation import name_key
from keystile.storage.base import KeyFilter, Storage, UnitOfWork
from keystile.webhooks.models import EventType

MAX_GRACE_SECONDS = 7 * 86_400  # contract §10
LEAKED = "leaked"  # the revocation reason of a leak report (contract §14)


class KeyEvents(Protocol):
    """Where key changes are announced (the webhook outbox, contract §13),
    in the change's own unit of work."""

    async def emit(self, uow: UnitOfWork, event_type: str, key: ApiKey) -> object: ...


class _NoEvents:
    async def emit(self, uow: UnitOfWork, event_type: str, key: ApiKey) -> object:
        return None


class KeyService:
    def __init__(
        self,
        storage: Storage,
        *,
        prefix: str,
        audit: AuditLog | None = None,
        events: KeyEvents | None = None,
        clock: clocks.Clock = clocks.system_clock,
    ) -> None:
        self._storage = storage
        self._prefix = prefix
        self._clock = clock
        self._audit = audit or AuditLog(clock=clock)
        self.events: KeyEvents = events or _NoEvents()

    def now(self) -> int:
        return clocks.now_micros(self._clock)

    async def issue(
        self,
        uow: UnitOfWork,
        account_id: str,
        new: NewKey,
        caller: ApiKey | None,
        origin: Origin = CLI_ORIGIN,
    ) -> IssuedKey:
        """Create a key in ``uow``'s transaction and return it with its secret.

        ``caller`` is the account key making the request (``None`` for the
        CLI and operator keys): no key can grant a permission it does not
        hold, nor outlive itself. Raises 403 (permissions, lifetime, plan),
        404 (no such account, for the CLI and operators) or 409 (name).
        """
        if caller is not None:
            check_subset(new.permissions, caller)
            check_lifetime(new.expires_at, caller)
        # The account is read only when something depends on it: its plan
        # (unmetered), or its existence (the CLI and operators name it; a
        # caller's own account always exists). Fewer statements per create.
        if caller is None or new.rate_limit_tier is Tier.UNMETERED:
            await self._check_plan(uow, account_id, new.rate_limit_tier)
        now = self.now()
        key = ApiKey(
            id=new_key_id(),
            account_id=account_id,
            name=new.name,
            description=new.description,
            permissions=new.permissions,
            rate_limit_tier=new.rate_limit_tier,
            expires_at=new.expires_at,
            created_at=clocks.whole_seconds(now),
            metadata=dict(new.metadata),
            rate_limit=new.rate_limit,
            quota=new.quota,
        )
        # The audit event goes to the repository with the key: written in
        # the same statement where the database can, never without the key.
        audit = self._audit.event(
            Action.API_KEY_CREATED,
            origin,
            target_type="api_key",
            target_id=key.id,
            account_id=account_id,
            changes=created(key_view(key)),
        )
        issued = await self._insert(uow, key, now, audit)
        await self.events.emit(uow, EventType.API_KEY_CREATED, key)
        return issued

    async def _insert(
        self, uow: UnitOfWork, key: ApiKey, now: int, audit: AuditEvent | None = None
    ) -> IssuedKey:
        secret = tokens.generate(self._prefix)
        normalised = name_key(key.name)
        digest = tokens.digest(secret)
        try:
            await uow.keys.insert(key, digest, normalised, audit)
        except DuplicateName:
            # The unique index cannot see the clock: an expired key still
            # holds its name until someone wants it. Release it and try again,
            # in the same transaction (a live holder still wins: 409).
            await uow.keys.release_expired_name(key.account_id, normalised, now)
            await uow.keys.insert(key, digest, normalised, audit)
        return IssuedKey(key=key, secret=secret)

    async def _check_plan(self, uow: UnitOfWork, account_id: str, tier: Tier) -> None:
        account = await uow.accounts.get(account_id) if is_account_id(account_id) else None
        if account is None:
            raise NotFound(f"No such account: {account_id[:64]!r}.")
        if tier is Tier.UNMETERED and account.plan is not Plan.ENTERPRISE:
            raise PlanRestricted("The unmetered tier is only available on the enterprise plan.")

    async def get(self, account_id: str | None, key_id: str) -> ApiKey:
        """The key; another account's key is :class:`NotFound` like a missing one."""
        async with self._storage.reader() as uow:
            return await _existing(uow, account_id, key_id)

    async def list(
        self,
        account_id: str,
        *,
        limit: int = 20,
        status: KeyStatus | None = None,
        starting_after: str | None = None,
        where: KeyFilter | None = None,
    ) -> KeyPage:
        async with self._storage.reader() as uow:
            cursor = None
            if starting_after is not None:
                cursor = await uow.keys.get(account_id, starting_after)
                if cursor is None:
                    raise ValidationFailed(
                        "The query string is invalid.",
                        [FieldProblem("starting_after", "is not a key of this account")],
                    )
            return await uow.keys.list(
                account_id,
                now=self.now(),
                limit=limit,
                status=status,
                starting_after=cursor,
                where=where,
            )

    async def update(
        self,
        uow: UnitOfWork,
        account_id: str | None,
        key_id: str,
        changes: dict[str, Any],
        caller: ApiKey | None,
        origin: Origin = CLI_ORIGIN,
    ) -> ApiKey:
        """Apply validated ``changes`` (``keys.validation.check_key_patch``).

        The rules of creation hold for what changes: permissions the caller
        holds, an expiry no later than the caller's, the plan for the tier,
        a unique name. A revoked or expired key is 409 ``key_inactive``.
        """
        key = await _existing(uow, account_id, key_id)
        now = self.now()
        if key.is_inactive(now):
            raise KeyInactive()
        if caller is not None:
            if "permissions" in changes:
                check_subset(changes["permissions"], caller)
            if "expires_at" in changes:
                check_lifetime(changes["expires_at"], caller)
        if changes.get("rate_limit_tier") is Tier.UNMETERED:
            await self._check_plan(uow, key.account_id, Tier.UNMETERED)
        changed = dataclasses.replace(key, **changes)
        await uow.keys.update(changed, name_key(changed.name), now)
        await self._audit.record(
            uow,
            Action.API_KEY_UPDATED,
            origin,
            target_type="api_key",
            target_id=key.id,
            account_id=key.account_id,
            changes=diff(key_view(key), key_view(changed)),
        )
        await self.events.emit(uow, EventType.API_KEY_UPDATED, changed)
        return changed

    async def rotate(
        self,
        uow: UnitOfWork,
        account_id: str | None,
        key_id: str,
        grace_seconds: int,
        caller: ApiKey | None,
        origin: Origin = CLI_ORIGIN,
    ) -> IssuedKey:
        """Replace a key with a copy holding a new secret (contract §10).

        The old key points at the new one (``replaced_by``) and expires after
        ``grace_seconds`` (never later than it would have; 0 revokes it at
        once); it gives its name to the new key. Both keys share one set of
        rate-limit and quota counters. A revoked, expired or already
        replaced key is 409 ``key_inactive``.
        """
        old = await _existing(uow, account_id, key_id)
        now = self.now()
        if old.is_inactive(now) or old.replaced_by is not None:
            raise KeyInactive()
        if caller is not None:
            check_subset(old.permissions, caller)
            check_lifetime(old.expires_at, caller)
        new = dataclasses.replace(
            old,
            id=new_key_id(),
            created_at=clocks.whole_seconds(now),
            revoked_at=None,
            last_used_at=None,
            disabled=False,
            replaced_by=None,
            limit_key=old.counter_id,
            account_suspended=False,
        )
        if grace_seconds == 0:
            retired = dataclasses.replace(old, replaced_by=new.id)
        else:
            until = clocks.whole_seconds(now) + grace_seconds * clocks.MICROS
            if old.expires_at is not None:
                until = min(until, old.expires_at)
            retired = dataclasses.replace(old, replaced_by=new.id, expires_at=until)
        await uow.keys.release_name(old.id)
        await uow.keys.update(retired, name_key(old.name), now)
        if grace_seconds == 0:
            await uow.keys.revoke(old.id, now)
            retired = dataclasses.replace(retired, revoked_at=now)
        issued = await self._insert(uow, new, now)
        await self._audit.record(
            uow,
            Action.API_KEY_ROTATED,
            origin,
            target_type="api_key",
            target_id=old.id,
            account_id=old.account_id,
            changes=diff(key_view(old), key_view(retired)),
        )
        # The rotated key is the old one (as in the audit event); its
        # replaced_by names the new key.
        await self.events.emit(uow, EventType.API_KEY_ROTATED, retired)
        return issued

    async def revoke(
        self,
        uow: UnitOfWork,
        account_id: str | None,
        key_id: str,
        origin: Origin = CLI_ORIGIN,
        *,
        reason: str | None = None,
    ) -> ApiKey:
        """Revoke, idempotently: the first ``revoked_at`` stays, and revoking
        again writes no event. ``reason`` goes into the event's changes
        (``revoked_reason``), e.g. ``leaked``. Announces ``api_key.revoked``
        and, for a leak, ``api_key.leaked`` too (contract §13, §14)."""
        key = await _existing(uow, account_id, key_id)
        if key.revoked_at is not None:
            return key
        now = self.now()
        await uow.keys.revoke(key_id, now)
        revoked = dataclasses.replace(key, revoked_at=now)
        changes = diff(key_view(key), key_view(revoked))
        if reason is not None:
            changes["revoked_reason"] = (None, reason)
        await self._audit.record(
            uow,
            Action.API_KEY_REVOKED,
            origin,
            target_type="api_key",
            target_id=key_id,
            account_id=key.account_id,
            changes=changes,
        )
        await self.events.emit(uow, EventType.API_KEY_REVOKED, revoked)
        if reason == LEAKED:
            await self.events.emit(uow, EventType.API_KEY_LEAKED, revoked)
        return revoked


def check_subset(permissions: tuple[str, ...], caller: ApiKey) -> None:
    """No key can grant a permission it does not hold (contract §4)."""
    missing = sorted(set(permissions) - set(caller.permissions))
    if missing:
        raise InsufficientPermissions(
            "A key cannot grant permissions it does not hold: " + ", ".join(missing)
        )


def check_lifetime(expires_at: int | None, caller: ApiKey | None) -> None:
    """A key cannot outlive the key that made it (contract §4; the rule Vault
    applies to child tokens): when ``caller`` expires, ``expires_at`` must be
    set and not later. ``None`` (the CLI, an operator key) is unbounded.

    Raises :class:`InsufficientPermissions` naming ``expires_at``.
    """
    if caller is None or caller.expires_at is None:
        return
    if expires_at is not None and expires_at <= caller.expires_at:
        return
    latest = clocks.rfc3339(caller.expires_at)
    raise InsufficientPermissions(
        f"A key that expires cannot create a key that outlives it: expires_at must be "
        f"set and no later than {latest}, when the calling key expires.",
        [FieldProblem("expires_at", f"must be set and no later than {latest}")],
    )


async def _existing(uow: UnitOfWork, account_id: str | None, key_id: str) -> ApiKey:
    key = await uow.keys.get(account_id, key_id) if is_key_id(key_id) else None
    if key is None:
        raise NotFound(f"No such key: {key_id[:64]!r}.")
    return key
