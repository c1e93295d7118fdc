"""Webhook endpoints, events and deliveries (contract §13): frozen values,
no storage or wire concerns.

An *event* is one thing that happened to a key, with the exact JSON body
every receiver gets (signed as sent, so it is stored as bytes). A
*delivery* is one event on its way to one endpoint: attempted until a 2xx
or until the retry window closes. The endpoint's signing secret is not a
field of :class:`WebhookEndpoint`: it is stored encrypted and read only by
the sender, so it cannot reach a response by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EventType(StrEnum):
    """Every event of contract §13."""

    API_KEY_CREATED = "api_key.created"
    API_KEY_UPDATED = "api_key.updated"
    API_KEY_ROTATED = "api_key.rotated"
    API_KEY_REVOKED = "api_key.revoked"
    API_KEY_LEAKED = "api_key.leaked"
    API_KEY_EXPIRING = "api_key.expiring"
    API_KEY_EXPIRED = "api_key.expired"
    API_KEY_RATE_LIMITED = "api_key.rate_limited"
    API_KEY_QUOTA_THRESHOLD = "api_key.quota_threshold"


ALL_EVENTS = "*"
EVENT_NAMES = tuple(event.value for event in EventType)


class DeliveryState(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    id: str  # we_ + ULID
    account_id: str
    url: str
    events: tuple[str, ...]  # event names, or ("*",) for every event
    description: str | None
    disabled: bool
    created_at: int  # Unix microseconds
    updated_at: int

    def wants(self, event_type: str) -> bool:
        """True when this endpoint subscribes to ``event_type``."""
        return ALL_EVENTS in self.events or event_type in self.events


@dataclass(frozen=True, slots=True)
class EndpointPage:
    endpoints: list[WebhookEndpoint]
    has_more: bool


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    id: str  # evt_ + ULID, the body's "id" and the Keystile-Event-Id header
    type: str
    account_id: str
    created_at: int  # Unix microseconds
    body: bytes  # the exact JSON sent (and signed) on every attempt
    # Makes an event that several instances may produce (time-based, or
    # derived from traffic) exist once: a second insert with it is ignored.
    dedupe_key: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event on its way to one endpoint, as the delivery log shows it."""

    id: str  # whd_ + ULID
    endpoint_id: str
    event_id: str
    type: str
    state: DeliveryState
    attempt_count: int
    last_status_code: int | None  # the receiver's last HTTP status, if it answered
    last_error: str | None  # why the last attempt failed, when it did
    next_attempt_at: int | None  # Unix microseconds; None once settled
    created_at: int


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    deliveries: list[Delivery]
    has_more: bool


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery claimed for one attempt: everything the sender needs."""

    id: str
    event_id: str
    attempt_count: int  # attempts made before this one
    created_at: int
    url: str
    secret_ciphertext: bytes
    endpoint_id: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one attempt: the receiver's status (None when it never
    answered) and, on failure, a short reason for the delivery log."""

    status_code: int | None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300
