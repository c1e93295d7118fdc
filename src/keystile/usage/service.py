"""Reading usage (the API's range rules) and keeping it (the hourly
retention's rollups), contract §11.

Range rules, for ``granularity`` hour or day:

- ``start`` is floored to its bucket's start and ``end`` raised to the next
  bucket boundary (unless on one), so every bucket that overlaps
  ``[start, end)`` is returned, whole;
- defaults: ``end`` the end of the current bucket, ``start`` 24 hours
  (hour) or 30 days (day) before ``end``;
- at most 31 days of hours or 400 days of days; nothing before 1970;
- hourly rows older than the retention exist only as daily totals, so an
  hourly range starting before the retention's horizon is refused (ask
  ``granularity=day``).
"""

from __future__ import annotations

from dataclasses import dataclass

from keystile import clock as clocks
from keystile.errors import FieldProblem, NotFound, ValidationFailed
from keystile.keys.ids import is_key_id
from keystile.storage.base import Storage
from keystile.usage import buckets
from keystile.usage.models import DAY, HOUR, Bucket, Granularity

MAX_SPAN = {Granularity.HOUR: 31 * DAY, Granularity.DAY: 400 * DAY}
DEFAULT_SPAN = {Granularity.HOUR: 24 * HOUR, Granularity.DAY: 30 * DAY}
MAX_KEYED_ENTRIES = 100_000  # group_by=key: keys with usage × buckets
ROLLUP_BATCH = 2_000  # hourly rows moved per transaction
WRITER_MEMORY_DAYS = 7  # how long the database remembers a silent meter's last batch


@dataclass(frozen=True, slots=True)
class UsageRange:
    """Whole buckets ``[start, end)`` in Unix seconds."""

    granularity: Granularity
    start: int
    end: int

    @property
    def buckets(self) -> int:
        return (self.end - self.start) // self.granularity.seconds


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed("The query string is invalid.", [FieldProblem(field, message)])


class UsageService:
    def __init__(
        self,
        storage: Storage,
        *,
        clock: clocks.Clock = clocks.system_clock,
        hourly_retention_days: int = 90,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self.hourly_retention_days = hourly_retention_days

    def _now(self) -> int:
        return int(self._clock())

    def hourly_horizon(self) -> int:
        """Hours before this (a UTC midnight, Unix seconds) may exist only as
        daily totals: the retention counts whole days back from today's start."""
        return buckets.floor(self._now(), Granularity.DAY) - self.hourly_retention_days * DAY

    def range(
        self, granularity: Granularity, start: int | None = None, end: int | None = None
    ) -> UsageRange:
        """The buckets a query covers; ``start`` and ``end`` in Unix
        microseconds as given (or None for the defaults). Raises
        :class:`ValidationFailed` naming ``start`` or ``end``."""
        for field, value in (("start", start), ("end", end)):
            if value is not None and value < 0:
                raise _invalid(field, "must be 1970-01-01T00:00:00Z or later")
        if start is not None and end is not None and end <= start:
            raise _invalid("end", "must be after start")
        if end is None:
            last = buckets.ceil(self._now() + 1, granularity)  # the current bucket's end
            if start is not None and start // clocks.MICROS >= last:
                raise _invalid("start", "must be before end (default: the current bucket's end)")
        else:
            last = buckets.ceil(-(-end // clocks.MICROS), granularity)
        if start is None:
            first = max(0, last - DEFAULT_SPAN[granularity])
        else:
            first = buckets.floor(start // clocks.MICROS, granularity)
        if last - first > MAX_SPAN[granularity]:
            days = MAX_SPAN[granularity] // DAY
            raise _invalid(
                "start", f"must be at most {days} days before end for granularity={granularity}"
            )
        if granularity is Granularity.HOUR and first < self.hourly_horizon():
            raise _invalid(
                "start",
                f"hourly usage is kept for {self.hourly_retention_days} days; before "
                f"{buckets.rfc3339(self.hourly_horizon())} ask granularity=day",
            )
        return UsageRange(granularity, first, last)

    async def of_key(self, account_id: str, key_id: str, span: UsageRange) -> list[Bucket]:
        """Every bucket of ``span`` for one key of the account, oldest first,
        zero-filled. Another account's key is :class:`NotFound`."""
        async with self._storage.reader() as uow:
            key = await uow.keys.get(account_id, key_id) if is_key_id(key_id) else None
            if key is None:
                raise NotFound(f"No such key: {key_id[:64]!r}.")
            found = await uow.usage.buckets(
                account_id, span.granularity, span.start, span.end, key_id=key_id
            )
        return buckets.zero_filled(
            [Bucket(b.start, b.counts) for b in found], span.start, span.end, span.granularity
        )

    async def of_account(
        self, account_id: str, span: UsageRange, *, by_key: bool = False
    ) -> list[Bucket]:
        """Every bucket of ``span``, oldest first, zero-filled: the account's
        totals, or (``by_key``) one entry per bucket for each key with any
        usage in the span, keys in id order within a bucket. A keyed answer
        of more than ``MAX_KEYED_ENTRIES`` entries is refused (400)."""
        g, start, end = span.granularity, span.start, span.end
        async with self._storage.reader() as uow:
            if not by_key:
                found = await uow.usage.buckets(account_id, g, start, end)
                return buckets.zero_filled(found, start, end, g)
            key_ids = await uow.usage.keys_with_usage(account_id, g, start, end)
            entries = len(key_ids) * span.buckets
            if entries > MAX_KEYED_ENTRIES:
                raise _invalid(
                    "group_by",
                    f"would return {entries} entries ({len(key_ids)} keys × {span.buckets} "
                    f"buckets), more than {MAX_KEYED_ENTRIES}: shorten the range or use "
                    "granularity=day",
                )
            found = await uow.usage.buckets(account_id, g, start, end, by_key=True)
        return buckets.zero_filled(found, start, end, g, key_ids)

    async def roll_up(self) -> int:
        """The retention (the background job): move hourly rows older than
        the horizon into daily rows, a batch per transaction, and forget
        meters silent for a week. Returns how many hourly rows moved."""
        before = self.hourly_horizon()
        moved = 0
        while True:
            async with self._storage.transaction() as uow:
                batch = await uow.usage.roll_up(before, ROLLUP_BATCH)
            moved += batch
            if batch < ROLLUP_BATCH:
                break
        async with self._storage.transaction() as uow:
            forgotten = clocks.now_micros(self._clock) - WRITER_MEMORY_DAYS * DAY * clocks.MICROS
            await uow.usage.forget_writers(forgotten)
        return moved
