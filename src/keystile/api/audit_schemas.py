"""Wire schemas of the audit log (contract §12)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from keystile.audit.models import AuditEvent, AuditPage
from keystile.clock import rfc3339


class ActorOut(BaseModel):
    type: str = Field(description="api_key, operator_key, cli or system")
    id: str | None


class TargetOut(BaseModel):
    type: str = Field(description="account, api_key, operator_key or webhook_endpoint")
    id: str


class AuditEventOut(BaseModel):
    id: str
    action: str
    actor: ActorOut
    target: TargetOut
    account_id: str | None
    request_id: str | None
    ip: str | None
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    changes: dict[str, list[Any]] = Field(description="field: [before, after]")


class AuditEventList(BaseModel):
    data: list[AuditEventOut]
    has_more: bool


def event_out(event: AuditEvent) -> AuditEventOut:
    return AuditEventOut(
        id=event.id,
        action=event.action.value,
        actor=ActorOut(type=event.actor.type.value, id=event.actor.id),
        target=TargetOut(type=event.target_type, id=event.target_id),
        account_id=event.account_id,
        request_id=event.request_id,
        ip=event.ip,
        created_at=rfc3339(event.created_at) or "",
        changes={name: [before, after] for name, (before, after) in event.changes.items()},
    )


def event_list_out(page: AuditPage) -> AuditEventList:
    return AuditEventList(data=[event_out(e) for e in page.events], has_more=page.has_more)
