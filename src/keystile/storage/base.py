"""The storage interfaces the services depend on.

Adapters live beside this module (``storage.sql`` for SQLite and PostgreSQL);
the services only ever see these Protocols.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from keystile.audit.models import AuditEvent, AuditFilter, AuditPage
from keystile.console.models import StoredSession
from keystile.keys.models import (
    Account,
    AccountPage,
    AccountStatus,
    ApiKey,
    KeyPage,
    KeyStatus,
    OperatorKey,
)
from keystile.ratelimit.quota import Period, QuotaCount
from keystile.usage.models import Bucket, Granularity, KeyHour
from keystile.webhooks.models import (
    Delivery,
    DeliveryPage,
    DeliveryState,
    DueDelivery,
    EndpointPage,
    Outcome,
    WebhookEndpoint,
    WebhookEvent,
)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """An idempotency record: the encrypted first response of a request."""

    account_id: str
    caller_key_id: str
    idempotency_key: str
    fingerprint: str
    status_code: int
    ciphertext: bytes
    created_at: int
    expires_at: int


class StorageUnavailable(Exception):
    """The database could not be reached or did not answer in time."""


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """List filters of ``GET /v1/api-keys`` beyond ``status`` (contract §10)."""

    name_key: str | None = None  # the normalised name (keys.validation.name_key)
    metadata: dict[str, str] = field(default_factory=dict)  # every pair must match


class AccountRepository(Protocol):
    async def insert(self, account: Account) -> None: ...

    async def get(self, account_id: str) -> Account | None: ...

    async def update(self, account: Account) -> None:
        """Write the account's name, plan, status and metadata."""

    async def list(
        self,
        *,
        limit: int,
        status: AccountStatus | None = None,
        starting_after: Account | None = None,
    ) -> AccountPage:
        """Newest first; ``starting_after`` is an item of a previous page."""

    async def count_active_unmetered_keys(self, account_id: str, now: int) -> int: ...


class KeyRepository(Protocol):
    async def insert(
        self, key: ApiKey, digest: str, name_key: str, audit: AuditEvent | None = None
    ) -> None:
        """Store a new active key. Raises :class:`keystile.errors.DuplicateName`
        when an active key of the account holds ``name_key``; the database's
        unique index decides, so concurrent inserts cannot both win.

        ``audit``, the key's creation event, is written with the key (in the
        same statement where the database allows it) and only when the key
        was stored: a refused insert leaves no event."""

    async def release_expired_name(self, account_id: str, name_key: str, now: int) -> None:
        """Let an *expired* holder of ``name_key`` give the name up.

        Must run in the same transaction as the insert that reuses the name."""

    async def update(self, key: ApiKey, name_key: str, now: int) -> None:
        """Write the key's mutable fields (contract §10). Raises
        :class:`keystile.errors.DuplicateName` when another active key holds
        ``name_key``; the transaction stays usable."""

    async def release_name(self, key_id: str) -> None:
        """The key stops holding its name (a rotation passes it on)."""

    def invalidate(self, key_id: str) -> None:
        """Cached copies of ``key_id`` (``*``: of every key) are stale once
        this transaction commits (every process is told)."""

    async def get(self, account_id: str | None, key_id: str) -> ApiKey | None:
        """The key, if it exists and (when ``account_id`` is given) belongs to that account."""

    async def list(
        self,
        account_id: str,
        *,
        now: int,
        limit: int,
        status: KeyStatus | None = None,
        starting_after: ApiKey | None = None,
        where: KeyFilter | None = None,
    ) -> KeyPage:
        """Newest first; ``starting_after`` is an item of a previous page."""

    async def revoke(self, key_id: str, now: int) -> None:
        """Set ``revoked_at`` (once: revoking again keeps the first time) and free the name."""

    async def find_by_digest(self, digest: str) -> tuple[ApiKey, str] | None:
        """The key whose digest is ``digest`` (with ``account_suspended``
        read from its account) and that digest, as stored."""

    async def touch(self, last_used: dict[str, int]) -> None:
        """Raise ``last_used_at`` of each key id to the given time (never lower it)."""


class IdempotencyRepository(Protocol):
    async def get(
        self, account_id: str, caller_key_id: str, idempotency_key: str
    ) -> StoredResponse | None: ...

    async def insert(self, record: StoredResponse) -> bool:
        """Store ``record``; False when a record with the same identity exists."""

    async def delete(self, account_id: str, caller_key_id: str, idempotency_key: str) -> None: ...

    async def purge(self, now: int) -> int:
        """Delete every record with ``expires_at <= now``; return how many."""


class OperatorKeyRepository(Protocol):
    async def insert(self, key: OperatorKey, digest: str) -> None: ...

    async def get(self, key_id: str) -> OperatorKey | None: ...

    async def list(self) -> list[OperatorKey]:
        """Every operator key, newest first."""

    async def revoke(self, key_id: str, now: int) -> None:
        """Set ``revoked_at`` once; every process stops accepting the key."""

    async def find_by_digest(self, digest: str) -> tuple[OperatorKey, str] | None: ...

    async def touch(self, last_used: dict[str, int]) -> None: ...


class AuditRepository(Protocol):
    async def insert(self, event: AuditEvent) -> None: ...

    async def get(self, account_id: str | None, event_id: str) -> AuditEvent | None: ...

    async def list(
        self, where: AuditFilter, *, limit: int, starting_after: AuditEvent | None = None
    ) -> AuditPage:
        """Newest first; ``starting_after`` is an item of a previous page."""

    async def purge(self, before: int) -> int:
        """Delete every event created before ``before``; return how many."""


class UsageRepository(Protocol):
    """Metered usage (contract §11): hourly rows per key, rolled up into
    daily rows once older than the hourly retention. Times are Unix seconds
    on bucket boundaries; ranges are ``[start, end)``."""

    async def add(self, writer: str, sequence: int, hours: Sequence[KeyHour], now: int) -> bool:
        """Add the counts of ``hours`` to their hourly rows, one additive
        upsert per (key, hour), so that any number of writers add up exactly.

        Batches of one ``writer`` carry increasing ``sequence`` numbers and
        each is added at most once: a batch already added (a retry after a
        failure whose commit was in doubt) adds nothing and returns False.
        ``now`` (Unix microseconds) dates the writer's record."""

    async def used(self, counter_id: str, start: int, end: int) -> int:
        """``allowed + forbidden`` of every key with ``counter_id`` over the
        hourly and daily rows in ``[start, end)`` (UTC day boundaries), read
        in one statement: exact while rows are being rolled up."""

    async def buckets(
        self,
        account_id: str,
        granularity: Granularity,
        start: int,
        end: int,
        *,
        key_id: str | None = None,
        by_key: bool = False,
    ) -> list[Bucket]:
        """The buckets in ``[start, end)`` that have counts, of the account's
        keys together, of ``key_id`` alone, or (``by_key``) of each key; days
        add the daily rows to the hourly ones. In no particular order."""

    async def keys_with_usage(
        self, account_id: str, granularity: Granularity, start: int, end: int
    ) -> list[str]:
        """The ids of the account's keys with any count in ``[start, end)``, sorted."""

    async def roll_up(self, before: int, limit: int) -> int:
        """Move at most ``limit`` hourly rows of hours before ``before`` (a
        day boundary) into the daily rows of their days, adding to what is
        there; returns how many moved. Rows are deleted and added in this
        transaction, so day totals (and :meth:`used`) never change."""

    async def forget_writers(self, before: int) -> int:
        """Delete the records of writers that added nothing since ``before``
        (Unix microseconds); returns how many."""


class QuotaRepository(Protocol):
    """Quota counters in the database (see ``keystile.ratelimit.quota``)."""

    async def consume(self, name: str, period: Period, limit: int, cost: int) -> QuotaCount | None:
        """Add ``cost`` unless that passes ``limit``; None when not seeded."""

    async def seed(self, name: str, period: Period, used: int) -> None:
        """Start the counter at ``used`` unless it exists."""

    async def purge(self, before: int) -> int:
        """Delete the counters of periods that started before ``before``."""


class WebhookRepository(Protocol):
    """Webhook endpoints, the outbox of events and their deliveries
    (contract §13). Times are Unix microseconds."""

    async def insert_endpoint(self, endpoint: WebhookEndpoint, secret: bytes) -> None:
        """Store a new endpoint with its encrypted signing secret."""

    async def get_endpoint(
        self, account_id: str | None, endpoint_id: str
    ) -> WebhookEndpoint | None: ...

    async def update_endpoint(self, endpoint: WebhookEndpoint) -> None:
        """Write url, events, description, disabled and updated_at."""

    async def delete_endpoint(self, endpoint_id: str) -> None:
        """Delete the endpoint and its deliveries."""

    async def list_endpoints(
        self, account_id: str, *, limit: int, starting_after: WebhookEndpoint | None = None
    ) -> EndpointPage:
        """Newest first; ``starting_after`` is an item of a previous page."""

    async def count_endpoints(self, account_id: str) -> int: ...

    async def endpoint_secrets(self, after_id: str, limit: int) -> list[tuple[str, bytes]]:
        """Up to ``limit`` ``(endpoint id, encrypted secret)`` pairs with an
        id greater than ``after_id``, in id order (for re-encryption)."""

    async def replace_secret(self, endpoint_id: str, old: bytes, new: bytes) -> None:
        """Store ``new`` as the endpoint's encrypted secret if it still holds ``old``."""

    async def subscribers(self, account_id: str, event_type: str) -> list[str]:
        """Ids of the account's enabled endpoints that want ``event_type``."""

    async def subscribed_accounts(self, event_type: str) -> list[str]:
        """Ids of the accounts with an enabled endpoint that wants ``event_type``."""

    async def insert_event(self, event: WebhookEvent) -> bool:
        """Store ``event``; False (nothing stored) when an event with its
        ``dedupe_key`` exists, decided by the database's unique index."""

    async def insert_deliveries(
        self, event: WebhookEvent, endpoint_ids: Sequence[str], now: int
    ) -> None:
        """One pending delivery of ``event`` per endpoint, due at ``now``."""

    async def get_delivery(self, endpoint_id: str, delivery_id: str) -> Delivery | None: ...

    async def list_deliveries(
        self, endpoint_id: str, *, limit: int, starting_after: Delivery | None = None
    ) -> DeliveryPage:
        """Newest first."""

    async def has_due(self, now: int) -> bool:
        """True when a pending delivery's next attempt is at or before ``now``."""

    async def claim(
        self, now: int, lease_until: int, *, limit: int, per_endpoint: int
    ) -> list[DueDelivery]:
        """Lease up to ``limit`` due deliveries (``per_endpoint`` at most per
        endpoint) until ``lease_until``; no other claim returns them before."""

    async def record(
        self,
        delivery_id: str,
        outcome: Outcome,
        *,
        state: DeliveryState,
        next_attempt_at: int | None,
    ) -> None:
        """Count one attempt of a pending delivery and write its outcome."""

    async def give_up(self, created_before: int, reason: str) -> int:
        """Fail every pending delivery created before ``created_before``."""

    async def purge(self, before: int) -> int:
        """Delete settled deliveries (and unreferenced events) created before ``before``."""

    async def keys_expiring(
        self,
        account_ids: Sequence[str],
        after: int,
        until: int,
        *,
        notice: int,
        limit: int,
        cursor: tuple[int, str] | None = None,
    ) -> list[ApiKey]:
        """Unrevoked keys of the accounts whose ``expires_at - notice`` lies
        in ``(after, until]`` and after their creation, ordered by
        ``(expires_at, id)``, after ``cursor`` (the last of a previous batch)."""


class ConsoleSessionRepository(Protocol):
    async def insert(self, session: StoredSession) -> None: ...

    async def get(self, id_digest: str) -> StoredSession | None: ...

    async def touch(self, id_digest: str, last_seen_at: int) -> None: ...

    async def set_account(self, id_digest: str, account_id: str) -> None: ...

    async def set_flash(self, id_digest: str, flash: bytes) -> None: ...

    async def clear_flash(self, id_digest: str, flash: bytes) -> bool:
        """Remove ``flash`` if the row still holds it: True for exactly one caller."""

    async def delete(self, id_digest: str) -> None: ...

    async def purge(self, idle_before: int, now: int) -> int:
        """Delete the sessions idle since before ``idle_before`` or past their
        absolute expiry; returns how many."""


class UnitOfWork(Protocol):
    """The repositories of one transaction (or of one read)."""

    @property
    def accounts(self) -> AccountRepository: ...

    @property
    def keys(self) -> KeyRepository: ...

    @property
    def idempotency(self) -> IdempotencyRepository: ...

    @property
    def operator_keys(self) -> OperatorKeyRepository: ...

    @property
    def audit(self) -> AuditRepository: ...

    @property
    def usage(self) -> UsageRepository: ...

    @property
    def quotas(self) -> QuotaRepository: ...

    @property
    def webhooks(self) -> WebhookRepository: ...

    @property
    def console_sessions(self) -> ConsoleSessionRepository: ...


class Storage(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """A read-write transaction: committed when the block exits normally,
        rolled back when it raises."""

    def reader(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """Read-only access to committed data."""

    def on_invalidated(self, listener: Callable[[frozenset[str]], Awaitable[None]]) -> None:
        """Call ``listener(ids)`` after every commit that changed keys (or, with
        ``*``, every key): cached copies of them are stale from then on."""

    async def changed_elsewhere(self) -> bool:
        """True when a key may have been revoked (by any process) since the last call.

        Lets a process-local cache of verified keys stay exact without a
        message bus (SQLite: a revocation counter shared by the host's
        processes); adapters that cannot tell cheaply return False and rely
        on a revocation channel instead."""

    async def ping(self) -> None:
        """Raise :class:`StorageUnavailable` unless the database answers."""

    async def close(self) -> None: ...
