"""The background task that delivers webhook events (contract §13).

Every ``KEYSTILE_WEBHOOK_POLL_SECONDS`` (at once when this process wrote an
event) it writes the traffic events the rate limiter queued, claims due
deliveries and sends each in a task of its own, at most
``KEYSTILE_WEBHOOK_CONCURRENCY`` at a time and a quarter of those to one
endpoint, so a slow receiver holds a few slots for at most 10 s each and
never the service. Every ``KEYSTILE_WEBHOOK_SCAN_SECONDS`` it also looks
for expiring and expired keys and fails deliveries whose retry window closed
while they could not be attempted (their endpoint disabled).

At least once: a delivery is claimed for a lease longer than an attempt can
take; if the process dies before it writes the outcome, the lease runs out
and any instance attempts it again. Each event is claimed by one instance
at a time (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: its write lock).

Retries: attempt ``n`` failed → the next after ``base × 2^(n-1)`` seconds
(``KEYSTILE_WEBHOOK_RETRY_BASE_SECONDS``), at most an hour, each delay drawn
between half and all of that (jitter, so receivers coming back are not hit
by every sender at once); a delivery whose next attempt would fall after
``KEYSTILE_WEBHOOK_RETRY_HOURS`` from the event is marked ``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from keystile import clock as clocks
from keystile.idempotency.crypto import DecryptionFailed
from keystile.periodic import BackgroundTask
from keystile.storage.base import Storage, StorageUnavailable
from keystile.webhooks.expiry import ExpiryScan
from keystile.webhooks.limits import LimitEvents
from keystile.webhooks.models import DeliveryState, DueDelivery, Outcome
from keystile.webhooks.outbox import Outbox
from keystile.webhooks.sender import TIMEOUT_SECONDS, Sender
from keystile.webhooks.service import WebhookService

log = logging.getLogger("keystile")

LEASE_SECONDS = 6 * TIMEOUT_SECONDS  # an attempt takes at most TIMEOUT_SECONDS
MAX_DELAY_SECONDS = 3600.0
LOG_RETENTION_DAYS = 30  # settled deliveries (and their events) are kept this long


def retry_delay(attempts: int, base_seconds: float, rng: random.Random) -> float:
    """Seconds before the attempt after ``attempts`` failed ones: exponential
    from ``base_seconds``, capped at an hour, with "equal jitter" (half fixed,
    half random)."""
    ceiling: float = min(MAX_DELAY_SECONDS, base_seconds * 2.0 ** min(attempts - 1, 30))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class Dispatcher(BackgroundTask):
    NAME = "delivering webhooks"  # its task's name

    def __init__(
        self,
        storage: Storage,
        webhooks: WebhookService,
        outbox: Outbox,
        limit_events: LimitEvents,
        sender: Sender,
        *,
        retry_hours: float,
        retry_base_seconds: float,
        poll_seconds: float,
        scan_seconds: float,
        concurrency: int,
        clock: clocks.Clock = clocks.system_clock,
    ) -> None:
        super().__init__(self.NAME)
        self._storage = storage
        self._webhooks = webhooks
        self._outbox = outbox
        self._limit_events = limit_events
        self._sender = sender
        self._window = int(retry_hours * 3600 * clocks.MICROS)
        self._base = retry_base_seconds
        self._poll = poll_seconds
        self._scan_every = scan_seconds
        self._concurrency = concurrency
        self._per_endpoint = max(1, concurrency // 4)
        self._clock = clock
        self._expiry = ExpiryScan(storage, outbox, clock=clock)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._rng = random.Random()
        self._next_scan = 0.0

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except StorageUnavailable as exc:
                log.warning("%s: the database is unavailable, will retry: %s", self.name, exc)
            except Exception:
                log.exception("%s failed; will retry", self.name)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._outbox.written.wait()
            self._outbox.written.clear()

    async def run_once(self) -> int:
        """One round: traffic events, the scan when due, then claim and start
        what is due. Returns how many attempts were started."""
        await self._limit_events.write(self._storage, self._outbox)
        loop_now = asyncio.get_running_loop().time()
        if loop_now >= self._next_scan:
            self._next_scan = loop_now + self._scan_every
            await self._expiry.run()
            await self._give_up()
        free = self._concurrency - len(self._in_flight)
        if free <= 0:
            return 0
        now = clocks.now_micros(self._clock)
        async with self._storage.reader() as uow:
            if not await uow.webhooks.has_due(now):
                return 0  # a read: no write lock taken while there is nothing to send
        async with self._storage.transaction() as uow:
            due = await uow.webhooks.claim(
                now,
                now + int(LEASE_SECONDS * clocks.MICROS),
                limit=free,
                per_endpoint=self._per_endpoint,
            )
        for delivery in due:
            task = asyncio.get_running_loop().create_task(self._attempt(delivery))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        return len(due)

    async def drain(self) -> None:
        """Wait for the attempts in progress (tests, and a graceful stop)."""
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)

    async def stop(self) -> None:
        await super().stop()
        # Attempts still running are cut short: their leases run out and
        # they are attempted again (at least once).
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*list(self._in_flight), return_exceptions=True)
        await self._sender.close()

    async def _attempt(self, delivery: DueDelivery) -> None:
        try:
            secret = self._webhooks.decrypt_secret(delivery.endpoint_id, delivery.secret_ciphertext)
        except DecryptionFailed:
            outcome = Outcome(None, "the signing secret cannot be decrypted: KEYSTILE_SECRET_KEY")
        else:
            outcome = await self._sender.send(
                delivery.url, delivery.event_id, delivery.body, secret
            )
        try:
            await self._record(delivery, outcome)
        except Exception:
            # The lease runs out and the delivery is attempted again.
            log.exception("%s: could not record an attempt of %s", self.name, delivery.id)

    async def _record(self, delivery: DueDelivery, outcome: Outcome) -> None:
        now = clocks.now_micros(self._clock)
        if outcome.succeeded:
            state, next_at = DeliveryState.SUCCEEDED, None
        else:
            delay = retry_delay(delivery.attempt_count + 1, self._base, self._rng)
            next_at = now + int(delay * clocks.MICROS)
            state = DeliveryState.PENDING
            if next_at > delivery.created_at + self._window:
                state, next_at = DeliveryState.FAILED, None
        async with self._storage.transaction() as uow:
            await uow.webhooks.record(delivery.id, outcome, state=state, next_attempt_at=next_at)

    async def _give_up(self) -> None:
        before = clocks.now_micros(self._clock) - self._window
        async with self._storage.transaction() as uow:
            await uow.webhooks.give_up(before, "the retry window closed before it could be sent")

    async def purge(self) -> int:
        """Delete settled deliveries older than :data:`LOG_RETENTION_DAYS`."""
        before = clocks.now_micros(self._clock) - LOG_RETENTION_DAYS * 86_400 * clocks.MICROS
        async with self._storage.transaction() as uow:
            return await uow.webhooks.purge(before)
