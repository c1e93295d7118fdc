"""Audit events: frozen values, no storage or wire concerns.

An event records one committed change: the action, who made it (the
actor), what it changed (the target, with each changed field's value
before and after), and where the request came from. It never holds a
secret, a digest or a signing secret: only the fields the API itself shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ActorType(StrEnum):
    API_KEY = "api_key"
    OPERATOR_KEY = "operator_key"
    CLI = "cli"
    SYSTEM = "system"


class Action(StrEnum):
    """Every action of contract §12 (webhook endpoints arrive with §13)."""

    ACCOUNT_CREATED = "account.created"
    ACCOUNT_UPDATED = "account.updated"
    API_KEY_CREATED = "api_key.created"
    API_KEY_UPDATED = "api_key.updated"
    API_KEY_ROTATED = "api_key.rotated"
    API_KEY_REVOKED = "api_key.revoked"
    WEBHOOK_ENDPOINT_CREATED = "webhook_endpoint.created"
    WEBHOOK_ENDPOINT_UPDATED = "webhook_endpoint.updated"
    WEBHOOK_ENDPOINT_DELETED = "webhook_endpoint.deleted"
    OPERATOR_KEY_CREATED = "operator_key.created"
    OPERATOR_KEY_REVOKED = "operator_key.revoked"


@dataclass(frozen=True, slots=True)
class Actor:
    type: ActorType
    id: str | None = None  # the key's id; None for the CLI and the system


CLI = Actor(ActorType.CLI)
SYSTEM = Actor(ActorType.SYSTEM)


@dataclass(frozen=True, slots=True)
class Origin:
    """Who asks for a change and from where: carried from the request (or
    the CLI) down to the service that writes the event."""

    actor: Actor
    request_id: str | None = None
    ip: str | None = None


CLI_ORIGIN = Origin(CLI)
SYSTEM_ORIGIN = Origin(SYSTEM)

Changes = dict[str, tuple[Any, Any]]
"""field → (before, after), JSON values as the API shows them."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: str  # aud_ + ULID
    action: Action
    actor: Actor
    target_type: str  # "account" | "api_key" | "operator_key" | "webhook_endpoint"
    target_id: str
    account_id: str | None
    request_id: str | None
    ip: str | None
    created_at: int  # Unix microseconds
    changes: Changes = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """``GET /v1/audit-events`` filters; ``account_id`` None means every account
    (an operator key without ``Keystile-Account``)."""

    account_id: str | None
    action: str | None = None
    target_id: str | None = None
    actor_id: str | None = None
    since: int | None = None  # Unix microseconds, inclusive
    until: int | None = None  # exclusive


@dataclass(frozen=True, slots=True)
class AuditPage:
    events: list[AuditEvent]
    has_more: bool


def diff(before: dict[str, Any], after: dict[str, Any]) -> Changes:
    """The fields whose values differ, as (before, after) pairs."""
    return {
        name: (before.get(name), after.get(name))
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    }
