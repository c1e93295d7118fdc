"""The usage meter: every metered request is counted in memory, per key, UTC
hour and outcome, and the counts are written in batches (contract §11).

Writing a row per request would make every request a database write.
Instead :meth:`UsageMeter.record` adds one to a counter in a dict (no I/O),
and :meth:`UsageMeter.flush` writes each key's hour once per flush, as an
additive upsert, so the batches of every worker and instance add up exactly.

What can be lost: counts are in memory until their flush commits. A
graceful shutdown flushes them (``stop``); a process killed without one
(SIGKILL, a crash, power loss) loses the counts since its last flush, at
most ``flush_seconds`` of them. A batch whose write fails is kept and
retried under the same sequence number, so a failure whose commit is in
doubt (the connection lost at COMMIT) never counts a batch twice.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from keystile import clock as clocks
from keystile.keys.models import ApiKey
from keystile.periodic import Periodic
from keystile.storage.base import Storage
from keystile.usage.models import HOUR, OUTCOMES, Counts, KeyHour, Outcome

log = logging.getLogger("keystile")

_INDEX = {outcome: index for index, outcome in enumerate(OUTCOMES)}
_ALLOWED, _FORBIDDEN = _INDEX[Outcome.ALLOWED], _INDEX[Outcome.FORBIDDEN]


class _Batch:
    """Counts not yet written: hour → key id → the four counts (in the order
    of ``OUTCOMES``), with each key's account and counter."""

    __slots__ = ("counters", "hours", "owners")

    def __init__(self) -> None:
        self.hours: dict[int, dict[str, list[int]]] = {}
        self.owners: dict[str, tuple[str, str]] = {}  # key id → (account id, counter id)
        # counter id → the ids of keys rotated from it (a key's own id is its
        # counter id otherwise, and needs no entry here)
        self.counters: dict[str, set[str]] = {}

    def __bool__(self) -> bool:
        return bool(self.hours)

    def rows(self) -> list[KeyHour]:
        """One row per key and hour."""
        return [
            KeyHour(key_id, *self.owners[key_id], hour, Counts.of(counts))
            for hour, keys in self.hours.items()
            for key_id, counts in keys.items()
        ]

    def requests(self) -> int:
        return sum(sum(counts) for keys in self.hours.values() for counts in keys.values())

    def used(self, counter_id: str, start: int, end: int) -> int:
        """``allowed + forbidden`` of the counter's keys in hours of ``[start, end)``."""
        key_ids = list(self.counters.get(counter_id, ()))
        owner = self.owners.get(counter_id)
        if owner is not None and owner[1] == counter_id:  # the key whose own id it is
            key_ids.append(counter_id)
        total = 0
        for hour, keys in self.hours.items():
            if start <= hour < end:
                for key_id in key_ids:
                    counts = keys.get(key_id)
                    if counts is not None:
                        total += counts[_ALLOWED] + counts[_FORBIDDEN]
        return total


class UsageMeter:
    """Counts metered requests per key, UTC hour and outcome, and writes
    them at least every ``flush_seconds`` and when stopped."""

    def __init__(
        self, storage: Storage, *, flush_seconds: float, clock: clocks.Clock = clocks.system_clock
    ) -> None:
        self._storage = storage
        self._clock = clock
        # This meter's identity among the database's writers: its batches are
        # numbered, and the database remembers the last one it added.
        self._writer = f"mtr_{secrets.token_hex(12)}"
        self._sequence = 0
        self._pending = _Batch()
        # A batch being written, or whose write failed: retried as it is,
        # under its sequence number, before anything newer is written.
        self._unsettled: tuple[int, _Batch] | None = None
        # The current hour's counters in the pending batch (a cache for
        # record(): one range check instead of a division per request).
        self._hour_start = 0
        self._hour_end = 0
        self._current: dict[str, list[int]] = {}
        self._writing = asyncio.Lock()
        self._periodic = Periodic("writing usage", flush_seconds, self.flush)

    def record(self, key: ApiKey, outcome: Outcome) -> None:
        """Count one request of ``key`` with ``outcome`` in the current UTC
        hour (of the meter's clock). O(1), no I/O: the hot path calls it."""
        now = self._clock()
        if not self._hour_start <= now < self._hour_end:
            self._enter_hour(now)
        counts = self._current.get(key.id)
        if counts is None:
            counts = self._current[key.id] = [0, 0, 0, 0]
            self._pending.owners[key.id] = (key.account_id, key.counter_id)
            if key.limit_key:
                self._pending.counters.setdefault(key.limit_key, set()).add(key.id)
        counts[_INDEX[outcome]] += 1

    def _enter_hour(self, now: float) -> None:
        hour = int(now // HOUR) * HOUR
        self._hour_start, self._hour_end = hour, hour + HOUR
        self._current = self._pending.hours.setdefault(hour, {})

    def pending_used(self, counter_id: str, start: int, end: int) -> int:
        """This process's ``allowed + forbidden`` not yet known to be written,
        for the keys of ``counter_id`` in hours starting in ``[start, end)``
        (Unix seconds). A quota counter is seeded with this plus
        ``uow.usage.used(...)``; to have no flush commit between the two
        reads, take both inside :meth:`settled`."""
        total = self._pending.used(counter_id, start, end)
        if self._unsettled is not None:
            total += self._unsettled[1].used(counter_id, start, end)
        return total

    @asynccontextmanager
    async def settled(self) -> AsyncIterator[None]:
        """While inside, no flush of this meter is in progress: a database
        read and :meth:`pending_used` together count every request once."""
        async with self._writing:
            yield

    async def flush(self) -> None:
        """Write what was recorded: the batch of a failed flush first (under
        its own sequence number), then everything recorded until now, each
        in one transaction of one upsert per key and hour.

        Raises what the database raised; the counts are kept and written by
        the next flush, never lost nor counted twice."""
        async with self._writing:
            if self._unsettled is not None:
                await self._write(*self._unsettled)
            if self._pending:
                self._sequence += 1
                self._unsettled = (self._sequence, self._pending)
                self._pending = _Batch()
                self._hour_end = 0  # record() moves on to the new batch
                await self._write(*self._unsettled)

    async def _write(self, sequence: int, batch: _Batch) -> None:
        async with self._storage.transaction() as uow:
            await uow.usage.add(
                self._writer, sequence, batch.rows(), clocks.now_micros(self._clock)
            )
        self._unsettled = None

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        """Stop flushing periodically, then flush what is left (graceful
        shutdown loses nothing while the database answers)."""
        async with self._writing:
            # A flush in progress finishes first: cancelling it mid-write
            # would cut its connection (its batch would still be retried).
            await self._periodic.stop()
        try:
            await self.flush()
        except Exception as exc:
            unwritten = self._pending.requests()
            if self._unsettled is not None:
                unwritten += self._unsettled[1].requests()
            log.error("usage: %d metered requests could not be written at shutdown: %s",
                      unwritten, exc)  # fmt: skip
