"""Operator keys (contract §9): made, listed and revoked only with the CLI;
checked like account keys (``KeyVerifier.verify_operator``).

An operator key belongs to no account and is never rate limited; with
``Keystile-Account`` it acts for that account with every catalog scope.
"""

from __future__ import annotations

import dataclasses

from keystile import clock as clocks
from keystile.audit.models import CLI_ORIGIN, Action, Changes, Origin, diff
from keystile.audit.service import AuditLog, created, operator_key_view
from keystile.errors import NotFound, ValidationFailed
from keystile.keys import tokens
from keystile.keys.ids import is_operator_key_id, new_operator_key_id
from keystile.keys.models import OperatorKey
from keystile.keys.validation import check_name
from keystile.storage.base import Storage, UnitOfWork


@dataclasses.dataclass(frozen=True, slots=True)
class IssuedOperatorKey:
    key: OperatorKey
    secret: str  # exists only here, shown once


class OperatorKeys:
    def __init__(
        self,
        storage: Storage,
        *,
        prefix: str,
        audit: AuditLog | None = None,
        clock: clocks.Clock = clocks.system_clock,
    ) -> None:
        self._storage = storage
        self._prefix = prefix
        self._clock = clock
        self._audit = audit or AuditLog(clock=clock)

    def now(self) -> int:
        return clocks.now_micros(self._clock)

    async def create(self, name: str, origin: Origin = CLI_ORIGIN) -> IssuedOperatorKey:
        clean, problems = check_name(name)
        if problems:
            raise ValidationFailed("The request is invalid.", problems)
        key = OperatorKey(
            id=new_operator_key_id(),
            name=clean,
            created_at=clocks.whole_seconds(self.now()),
        )
        secret = tokens.generate(self._prefix, tokens.ROOT)
        async with self._storage.transaction() as uow:
            await uow.operator_keys.insert(key, tokens.digest(secret))
            changes = created(operator_key_view(key))
            await self._record(uow, Action.OPERATOR_KEY_CREATED, origin, key, changes)
        return IssuedOperatorKey(key, secret)

    async def list(self) -> list[OperatorKey]:
        async with self._storage.reader() as uow:
            return await uow.operator_keys.list()

    async def revoke(self, key_id: str, origin: Origin = CLI_ORIGIN) -> OperatorKey:
        """Revoke, idempotently (the first ``revoked_at`` stays)."""
        async with self._storage.transaction() as uow:
            key = await uow.operator_keys.get(key_id) if is_operator_key_id(key_id) else None
            if key is None:
                raise NotFound(f"No such operator key: {key_id[:64]!r}.")
            if key.revoked_at is not None:
                return key
            now = self.now()
            await uow.operator_keys.revoke(key_id, now)
            revoked = dataclasses.replace(key, revoked_at=now)
            changes = diff(operator_key_view(key), operator_key_view(revoked))
            await self._record(uow, Action.OPERATOR_KEY_REVOKED, origin, key, changes)
        return revoked

    async def _record(
        self, uow: UnitOfWork, action: Action, origin: Origin, key: OperatorKey, changes: Changes
    ) -> None:
        await self._audit.record(
            uow, action, origin, target_type="operator_key", target_id=key.id,
            account_id=None, changes=changes,
        )  # fmt: skip
