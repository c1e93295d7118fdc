"""``api_key.rate_limited`` and ``api_key.quota_threshold``, produced from
traffic without a database write per refused request (contract §13).

The rate limiter tells :class:`LimitEvents` on the hot path (a dictionary
lookup and, the first time in a window, an append); the dispatcher writes
what is queued a moment later, each event with a dedupe key, so that the
database's unique index keeps it to one per key and window (one per key,
period and threshold) however many workers and instances saw it.

These events are derived from traffic, not from a change: one queued when
the process is killed before the next write is lost (a graceful shutdown
writes them). At most one per key and window is the promise, not exactly one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keystile import clock as clocks
from keystile.keys.models import ApiKey
from keystile.storage.base import Storage
from keystile.webhooks.models import EventType
from keystile.webhooks.outbox import Outbox

MAX_QUEUED = 10_000  # events waiting for the next write; past it, new ones are dropped


@dataclass(frozen=True, slots=True)
class Signal:
    type: EventType
    key: ApiKey
    dedupe_key: str
    context: dict[str, Any]


class LimitEvents:
    """The rate limiter's ``LimitListener``: queues, never does I/O."""

    def __init__(self) -> None:
        self._queue: list[Signal] = []
        self._seen: set[str] = set()
        self.dropped = 0

    def rate_limited(self, key: ApiKey, window_end: int) -> None:
        dedupe = f"rate_limited:{key.id}:{window_end}"
        if dedupe in self._seen:
            return
        context = {"rate_limit": {"reset_at": clocks.rfc3339(int(window_end * clocks.MICROS))}}
        self._add(EventType.API_KEY_RATE_LIMITED, key, dedupe, context)

    def quota_crossed(self, key: ApiKey, percent: int, period_start: int) -> None:
        dedupe = f"quota_threshold:{key.counter_id}:{period_start}:{percent}"
        if dedupe in self._seen:
            return
        start = clocks.rfc3339(period_start * clocks.MICROS)
        context = {"quota": {"threshold_percent": percent, "period_start": start}}
        self._add(EventType.API_KEY_QUOTA_THRESHOLD, key, dedupe, context)

    def _add(
        self, event_type: EventType, key: ApiKey, dedupe_key: str, context: dict[str, Any]
    ) -> None:
        if dedupe_key in self._seen:
            return
        if len(self._queue) >= MAX_QUEUED:
            self.dropped += 1
            return
        self._seen.add(dedupe_key)
        self._queue.append(Signal(event_type, key, dedupe_key, context))

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def write(self, storage: Storage, outbox: Outbox) -> int:
        """Write what is queued, in one transaction; returns how many events
        were new. On failure the queue is kept for the next call."""
        if not self._queue:
            if len(self._seen) > MAX_QUEUED:
                self._seen.clear()  # only the current windows matter; they refill at once
            return 0
        batch = self._queue
        self._queue = []
        try:
            written = 0
            async with storage.transaction() as uow:
                for signal in batch:
                    event = await outbox.emit(
                        uow,
                        signal.type,
                        signal.key,
                        dedupe_key=signal.dedupe_key,
                        context=signal.context,
                    )
                    written += event is not None
        except BaseException:
            self._queue = batch + self._queue
            raise
        return written
