"""Bucket arithmetic in UTC, pure: flooring, ranges, zero-filling, months.

Times are whole Unix seconds. Unix time has no leap seconds, so every UTC
hour is 3,600 of them and every UTC day 86,400: buckets are plain integer
multiples, and a leap day is simply one more day of its month.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta

from keystile.usage.models import ZERO, Bucket, Counts, Granularity

_EPOCH = datetime(1970, 1, 1)  # naive, UTC
_EPOCH_ORDINAL = _EPOCH.toordinal()


def floor(seconds: int, granularity: Granularity) -> int:
    """The start of the bucket holding ``seconds``."""
    return seconds - seconds % granularity.seconds


def ceil(seconds: int, granularity: Granularity) -> int:
    """The first bucket boundary at or after ``seconds``."""
    size = granularity.seconds
    return -(-seconds // size) * size


def starts(start: int, end: int, granularity: Granularity) -> range:
    """The starts of the buckets in ``[start, end)`` (both on boundaries)."""
    return range(start, end, granularity.seconds)


def zero_filled(
    found: Iterable[Bucket],
    start: int,
    end: int,
    granularity: Granularity,
    key_ids: Sequence[str] | None = None,
) -> list[Bucket]:
    """One bucket per start in ``[start, end)``, oldest first, with the
    counts of ``found`` where there are any and zeros elsewhere.

    Without ``key_ids`` the result has one bucket per start (``found`` holds
    totals, ``key_id`` None). With them, one bucket per start and key, keys
    in the order given, so each key has every bucket.
    """
    counts: dict[tuple[int, str | None], Counts] = {
        (bucket.start, bucket.key_id): bucket.counts for bucket in found
    }
    if key_ids is None:
        return [Bucket(s, counts.get((s, None), ZERO)) for s in starts(start, end, granularity)]
    return [
        Bucket(s, counts.get((s, key_id), ZERO), key_id)
        for s in starts(start, end, granularity)
        for key_id in key_ids
    ]


def month_bounds(year: int, month: int) -> tuple[int, int]:
    """``[start, end)`` of a UTC calendar month, in Unix seconds."""
    first = calendar.timegm((year, month, 1, 0, 0, 0))
    days = calendar.monthrange(year, month)[1]
    return first, first + days * Granularity.DAY.seconds


def day_of(seconds: int) -> str:
    """The UTC date of ``seconds`` as ``YYYY-MM-DD``."""
    return date.fromordinal(_EPOCH_ORDINAL + seconds // Granularity.DAY.seconds).isoformat()


def rfc3339(seconds: int) -> str:
    """``seconds`` as RFC 3339 in UTC with ``Z`` (``2028-02-29T23:00:00Z``)."""
    return (_EPOCH + timedelta(seconds=seconds)).isoformat(timespec="seconds") + "Z"
