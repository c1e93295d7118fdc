"""Writing and reading the audit log (contract §12).

Every service that changes something calls :meth:`AuditLog.record` with the
unit of work of the change itself, so the event commits with the change or
not at all. Values in ``changes`` are shown as the API shows the fields
(timestamps as RFC 3339, limits as objects), never a secret or a digest:
the views below list exactly the fields an event may carry.
"""

from __future__ import annotations

from typing import Any, TypedDict, Unpack

from keystile import clock as clocks
from keystile.audit.models import (
    Action,
    AuditEvent,
    AuditFilter,
    AuditPage,
    Changes,
    Origin,
    diff,
)
from keystile.errors import FieldProblem, ValidationFailed
from keystile.keys.ids import is_audit_id, new_audit_id
from keystile.keys.models import Account, ApiKey, OperatorKey
from keystile.periodic import Periodic
from keystile.storage.base import Storage, UnitOfWork

DAY_SECONDS = 86_400


def key_view(key: ApiKey) -> dict[str, Any]:
    """The fields of a key an audit event may show (no secret, no digest)."""
    return {
        "name": key.name,
        "description": key.description,
        "permissions": list(key.permissions),
        "rate_limit_tier": key.rate_limit_tier.value,
        "expires_at": clocks.rfc3339(key.expires_at),
        "metadata": dict(key.metadata),
        "disabled": key.disabled,
        "replaced_by": key.replaced_by,
        "rate_limit": None
        if key.rate_limit is None
        else {"limit": key.rate_limit.limit, "window_seconds": key.rate_limit.window_seconds},
        "quota": None
        if key.quota is None
        else {"limit": key.quota.limit, "period": key.quota.period.value},
        "revoked_at": clocks.rfc3339(key.revoked_at),
    }


def account_view(account: Account) -> dict[str, Any]:
    return {
        "name": account.name,
        "plan": account.plan.value,
        "status": account.status.value,
        "metadata": dict(account.metadata),
    }


def operator_key_view(key: OperatorKey) -> dict[str, Any]:
    return {"name": key.name, "revoked_at": clocks.rfc3339(key.revoked_at)}


def created(view: dict[str, Any]) -> Changes:
    """The changes of a creation: every field, from null."""
    return diff({}, view)


class Target(TypedDict):
    """What an event is about: the object changed (``target_type`` such as
    ``"api_key"``, its id), its account (None for an operator-level
    object) and the fields changed, ``{field: (before, after)}``."""

    target_type: str
    target_id: str
    account_id: str | None
    changes: Changes


class AuditLog:
    def __init__(
        self,
        *,
        clock: clocks.Clock = clocks.system_clock,
        retention_days: int = 365,
    ) -> None:
        self._clock = clock
        self._retention = retention_days * DAY_SECONDS * clocks.MICROS

    async def record(
        self, uow: UnitOfWork, action: Action, origin: Origin, **target: Unpack[Target]
    ) -> AuditEvent:
        """Write one event in ``uow``'s transaction (the change's own)."""
        event = self.event(action, origin, **target)
        await uow.audit.insert(event)
        return event

    def event(self, action: Action, origin: Origin, **target: Unpack[Target]) -> AuditEvent:
        """The event :meth:`record` writes, for a repository that writes it
        together with its change (``KeyRepository.insert``)."""
        return AuditEvent(
            id=new_audit_id(),
            action=action,
            actor=origin.actor,
            request_id=origin.request_id,
            ip=origin.ip,
            created_at=clocks.now_micros(self._clock),
            **target,
        )

    async def list(
        self,
        storage: Storage,
        where: AuditFilter,
        *,
        limit: int = 20,
        starting_after: str | None = None,
    ) -> AuditPage:
        """Newest first. ``starting_after`` must be an event ``where`` can see
        (else a 400 naming it)."""
        async with storage.reader() as uow:
            cursor = None
            if starting_after is not None:
                if is_audit_id(starting_after):
                    cursor = await uow.audit.get(where.account_id, starting_after)
                if cursor is None:
                    raise ValidationFailed(
                        "The query string is invalid.",
                        [FieldProblem("starting_after", "is not an audit event you can see")],
                    )
            return await uow.audit.list(where, limit=limit, starting_after=cursor)

    async def purge(self, storage: Storage) -> int:
        """Delete events older than the retention (``KEYSTILE_AUDIT_RETENTION_DAYS``)."""
        before = clocks.now_micros(self._clock) - self._retention
        async with storage.transaction() as uow:
            return await uow.audit.purge(before)

    def purger(self, storage: Storage, interval_seconds: float) -> Periodic:
        return Periodic("purging audit events", interval_seconds, lambda: self.purge(storage))
