"""Managing webhook endpoints and reading their delivery logs (contract §13).

Each change writes its audit event (``webhook_endpoint.created|updated|
deleted``, §12) in the same transaction. The signing secret is made here,
returned once by :meth:`WebhookService.create`, and stored only encrypted
under ``KEYSTILE_SECRET_KEY`` (AES-GCM with the endpoint's id as associated
data, so a ciphertext copied onto another endpoint does not decrypt).
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from typing import Any

from keystile import clock as clocks
from keystile.audit.models import Action, Origin, diff
from keystile.audit.service import AuditLog, created
from keystile.errors import FieldProblem, NotFound, ValidationFailed
from keystile.idempotency.crypto import DecryptionFailed, Keyring
from keystile.keys import tokens
from keystile.keys.ids import is_delivery_id, is_webhook_endpoint_id, new_webhook_endpoint_id
from keystile.storage.base import Storage, UnitOfWork
from keystile.webhooks.models import (
    ALL_EVENTS,
    EVENT_NAMES,
    DeliveryPage,
    EndpointPage,
    WebhookEndpoint,
)
from keystile.webhooks.urls import UrlPolicy, UrlRefused, check_destination

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_LENGTH = 43  # base62 characters: 256 bits
MAX_ENDPOINTS = 16  # per account, Stripe's limit


def new_secret() -> str:
    """A signing secret: ``whsec_`` and 256 random bits in base62."""
    return SECRET_PREFIX + tokens.base62(secrets.randbits(256), SECRET_LENGTH)


def endpoint_view(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """The fields of an endpoint an audit event may show (never the secret)."""
    return {
        "url": endpoint.url,
        "events": list(endpoint.events),
        "description": endpoint.description,
        "disabled": endpoint.disabled,
    }


@dataclass(frozen=True, slots=True)
class CreatedEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # whsec_…, returned in this response only


class WebhookService:
    def __init__(
        self,
        storage: Storage,
        keyring: Keyring,
        *,
        policy: UrlPolicy,
        audit: AuditLog,
        clock: clocks.Clock = clocks.system_clock,
    ) -> None:
        self._storage = storage
        self._keyring = keyring
        self.policy = policy
        self._audit = audit
        self._clock = clock

    def now(self) -> int:
        return clocks.now_micros(self._clock)

    async def check_url(self, url: str) -> str:
        """``url`` when keystile may send to it (``webhooks.urls``); else a
        400 ``validation_error`` naming ``url``."""
        try:
            await check_destination(url, self.policy)
        except UrlRefused as exc:
            raise ValidationFailed(
                "The request body is invalid.", [FieldProblem("url", str(exc))]
            ) from None
        return url

    def encrypt_secret(self, endpoint_id: str, secret: str) -> bytes:
        return self._keyring.encrypt(secret.encode(), endpoint_id.encode())

    def decrypt_secret(self, endpoint_id: str, ciphertext: bytes) -> str:
        """Raises ``idempotency.crypto.DecryptionFailed`` when no key of the
        keyring opens it (the application key was replaced, not rotated)."""
        return self._keyring.decrypt(ciphertext, endpoint_id.encode()).decode()

    async def reencrypt(self, batch: int = 500) -> int:
        """Re-encrypt, under the first key of ``KEYSTILE_SECRET_KEY``, every
        signing secret still sealed under an older one (run by the background
        job, so a rotated-out key can be dropped; docs/configuration.md).
        Secrets no configured key opens are left as they are. Returns how
        many were re-encrypted."""
        done, after = 0, ""
        while True:
            async with self._storage.reader() as uow:
                rows = await uow.webhooks.endpoint_secrets(after, batch)
            stale = [(eid, blob) for eid, blob in rows if not self._keyring.is_current(blob)]
            for endpoint_id, blob in stale:
                try:
                    secret = self.decrypt_secret(endpoint_id, blob)
                except DecryptionFailed:
                    continue
                async with self._storage.transaction() as uow:
                    await uow.webhooks.replace_secret(
                        endpoint_id, blob, self.encrypt_secret(endpoint_id, secret)
                    )
                done += 1
            if len(rows) < batch:
                return done
            after = rows[-1][0]

    async def create(
        self,
        uow: UnitOfWork,
        account_id: str,
        *,
        url: str,
        events: tuple[str, ...],
        description: str | None,
        origin: Origin,
    ) -> CreatedEndpoint:
        """A new enabled endpoint and its secret. ``url`` must have passed
        :meth:`check_url`. At most :data:`MAX_ENDPOINTS` per account (400)."""
        if await uow.webhooks.count_endpoints(account_id) >= MAX_ENDPOINTS:
            raise ValidationFailed(
                f"An account can have at most {MAX_ENDPOINTS} webhook endpoints.",
                [FieldProblem("url", f"the account already has {MAX_ENDPOINTS} endpoints")],
            )
        now = clocks.whole_seconds(self.now())
        endpoint = WebhookEndpoint(
            id=new_webhook_endpoint_id(),
            account_id=account_id,
            url=url,
            events=events,
            description=description,
            disabled=False,
            created_at=now,
            updated_at=now,
        )
        secret = new_secret()
        await uow.webhooks.insert_endpoint(endpoint, self.encrypt_secret(endpoint.id, secret))
        await self._audit.record(
            uow,
            Action.WEBHOOK_ENDPOINT_CREATED,
            origin,
            target_type="webhook_endpoint",
            target_id=endpoint.id,
            account_id=account_id,
            changes=created(endpoint_view(endpoint)),
        )
        return CreatedEndpoint(endpoint, secret)

    async def get(self, account_id: str, endpoint_id: str) -> WebhookEndpoint:
        async with self._storage.reader() as uow:
            return await _existing(uow, account_id, endpoint_id)

    async def list(
        self, account_id: str, *, limit: int, starting_after: str | None = None
    ) -> EndpointPage:
        """Newest first; ``starting_after`` must be an endpoint of the account (else 400)."""
        async with self._storage.reader() as uow:
            cursor = None
            if starting_after is not None:
                if is_webhook_endpoint_id(starting_after):
                    cursor = await uow.webhooks.get_endpoint(account_id, starting_after)
                if cursor is None:
                    raise _bad_cursor("is not a webhook endpoint of this account")
            return await uow.webhooks.list_endpoints(account_id, limit=limit, starting_after=cursor)

    async def update(
        self,
        uow: UnitOfWork,
        account_id: str,
        endpoint_id: str,
        changes: dict[str, Any],
        origin: Origin,
    ) -> WebhookEndpoint:
        """Apply ``changes`` (any of ``url`` (already checked), ``events``,
        ``description``, ``disabled``)."""
        endpoint = await _existing(uow, account_id, endpoint_id)
        changed = dataclasses.replace(
            endpoint, **changes, updated_at=clocks.whole_seconds(self.now())
        )
        await uow.webhooks.update_endpoint(changed)
        await self._audit.record(
            uow,
            Action.WEBHOOK_ENDPOINT_UPDATED,
            origin,
            target_type="webhook_endpoint",
            target_id=endpoint.id,
            account_id=account_id,
            changes=diff(endpoint_view(endpoint), endpoint_view(changed)),
        )
        return changed

    async def delete(
        self, uow: UnitOfWork, account_id: str, endpoint_id: str, origin: Origin
    ) -> WebhookEndpoint:
        """Delete the endpoint, its pending deliveries and its delivery log."""
        endpoint = await _existing(uow, account_id, endpoint_id)
        await uow.webhooks.delete_endpoint(endpoint.id)
        await self._audit.record(
            uow,
            Action.WEBHOOK_ENDPOINT_DELETED,
            origin,
            target_type="webhook_endpoint",
            target_id=endpoint.id,
            account_id=account_id,
            changes=diff(endpoint_view(endpoint), {}),
        )
        return endpoint

    async def deliveries(
        self, account_id: str, endpoint_id: str, *, limit: int, starting_after: str | None
    ) -> DeliveryPage:
        """The endpoint's delivery log, newest first (404 for another
        account's endpoint; 400 for a cursor not in this log)."""
        async with self._storage.reader() as uow:
            endpoint = await _existing(uow, account_id, endpoint_id)
            cursor = None
            if starting_after is not None:
                if is_delivery_id(starting_after):
                    cursor = await uow.webhooks.get_delivery(endpoint.id, starting_after)
                if cursor is None:
                    raise _bad_cursor("is not a delivery of this endpoint")
            return await uow.webhooks.list_deliveries(
                endpoint.id, limit=limit, starting_after=cursor
            )


def _bad_cursor(why: str) -> ValidationFailed:
    return ValidationFailed("The query string is invalid.", [FieldProblem("starting_after", why)])


async def _existing(uow: UnitOfWork, account_id: str, endpoint_id: str) -> WebhookEndpoint:
    endpoint = None
    if is_webhook_endpoint_id(endpoint_id):
        endpoint = await uow.webhooks.get_endpoint(account_id, endpoint_id)
    if endpoint is None:
        raise NotFound(f"No such webhook endpoint: {endpoint_id[:64]!r}.")
    return endpoint


def check_events(raw: list[str]) -> tuple[str, ...]:
    """The subscribed event types: at least one, each a type of contract
    §13, or ``["*"]`` alone; duplicates dropped, order kept. Raises a 400
    ``validation_error`` naming ``events``."""
    events = tuple(dict.fromkeys(raw))
    problem = None
    if not events:
        problem = 'must list at least one event type, or ["*"]'
    elif ALL_EVENTS in events and len(events) > 1:
        problem = '"*" (every event) must be alone'
    else:
        unknown = [name for name in events if name != ALL_EVENTS and name not in EVENT_NAMES]
        if unknown:
            problem = f"unknown event type {unknown[0][:64]!r}; the types are: " + ", ".join(
                EVENT_NAMES
            )
    if problem is not None:
        raise ValidationFailed("The request body is invalid.", [FieldProblem("events", problem)])
    return events
