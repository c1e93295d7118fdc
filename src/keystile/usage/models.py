"""Usage metering's values: outcomes, counts and buckets (contract §11).

Bucket starts are whole Unix seconds (UTC): an hourly bucket covers
``[start, start + 3600)``, a daily one ``[start, start + 86400)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    """What became of a metered request (contract §11)."""

    ALLOWED = "allowed"  # passed authentication, the limits and the scope check
    RATE_LIMITED = "rate_limited"  # 429 of the key's rate limit
    QUOTA_EXCEEDED = "quota_exceeded"  # 429 of the key's quota
    FORBIDDEN = "forbidden"  # 403 after authentication (the endpoint's scope)


OUTCOMES = tuple(Outcome)
"""The outcomes in the order of :class:`Counts`' fields (and of the CSV export)."""


class Granularity(StrEnum):
    HOUR = "hour"
    DAY = "day"

    @property
    def seconds(self) -> int:
        return HOUR if self is Granularity.HOUR else DAY


HOUR = 3_600
DAY = 86_400


@dataclass(frozen=True, slots=True)
class Counts:
    """Requests of one bucket by outcome; every count is ≥ 0."""

    allowed: int = 0
    rate_limited: int = 0
    quota_exceeded: int = 0
    forbidden: int = 0

    @classmethod
    def of(cls, values: list[int] | tuple[int, ...]) -> Counts:
        """From four numbers in the order of :data:`OUTCOMES`."""
        allowed, rate_limited, quota_exceeded, forbidden = values
        return cls(int(allowed), int(rate_limited), int(quota_exceeded), int(forbidden))

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.allowed + other.allowed,
            self.rate_limited + other.rate_limited,
            self.quota_exceeded + other.quota_exceeded,
            self.forbidden + other.forbidden,
        )

    def values(self) -> tuple[int, int, int, int]:
        """The four counts in the order of :data:`OUTCOMES`."""
        return (self.allowed, self.rate_limited, self.quota_exceeded, self.forbidden)

    @property
    def used(self) -> int:
        """What uses quota units: requests that passed authentication and the
        limits, whatever the scope check then said (contract §11)."""
        return self.allowed + self.forbidden

    def __bool__(self) -> bool:
        return any(self.values())


ZERO = Counts()


@dataclass(frozen=True, slots=True)
class KeyHour:
    """One key's counts in one UTC hour: what the meter writes (one row)."""

    key_id: str
    account_id: str
    counter_id: str  # the key's, or the key it was rotated from (ApiKey.counter_id)
    hour: int  # Unix seconds, a multiple of 3600
    counts: Counts


@dataclass(frozen=True, slots=True)
class Bucket:
    """A reading: the counts of one bucket, of one key (``key_id``) or of
    every key of an account together (``key_id`` None)."""

    start: int  # Unix seconds, on the granularity's boundary
    counts: Counts
    key_id: str | None = None
