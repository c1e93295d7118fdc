"""Time, injectable so that expiry can be tested without sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], float]
"""Returns the current Unix time in seconds (like :func:`time.time`)."""

system_clock: Clock = time.time

MICROS = 1_000_000


def to_micros(moment: datetime) -> int:
    """A timezone-aware datetime as integer microseconds since the epoch."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * MICROS + delta.microseconds


def from_micros(micros: int) -> datetime:
    seconds, fraction = divmod(micros, MICROS)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=fraction)


def now_micros(clock: Clock) -> int:
    return int(clock() * MICROS)


def whole_seconds(micros: int) -> int:
    """Truncate to whole seconds (still in microseconds): timestamps we record."""
    return micros - micros % MICROS


def rfc3339(micros: int | None) -> str | None:
    """RFC 3339 in UTC with ``Z``; fractional seconds only when there are any."""
    if micros is None:
        return None
    moment = from_micros(micros)
    spec = "seconds" if moment.microsecond == 0 else "microseconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"
