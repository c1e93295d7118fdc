"""Rate-limit values. A denial is a :class:`Decision`, not an exception."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from limits import RateLimitItem

if TYPE_CHECKING:
    from keystile.keys.models import ApiKey
    from keystile.ratelimit.quota import QuotaDecision


@dataclass(frozen=True, slots=True)
class Limit:
    """``amount`` requests per window of ``window_seconds``."""

    amount: int
    window_seconds: int

    @classmethod
    def of(cls, item: RateLimitItem) -> Limit:
        return cls(amount=int(item.amount), window_seconds=int(item.get_expiry()))

    def __str__(self) -> str:
        return f"{self.amount}/{self.window_seconds}s"


@dataclass(frozen=True, slots=True)
class Count:
    """The result of one atomic increment of a window's counter."""

    count: int  # this request's position in its window, 1-based
    reset: float  # Unix time (seconds) at which the window ends
    guarded: bool = False  # vetoed by its guard: nothing counted; count and reset are the guard's


@dataclass(frozen=True, slots=True)
class Guard:
    """A second counter that can veto a hit: while ``key``'s count in its own
    current window is at least ``limit.amount``, the hit counts nothing and
    returns the guard's count and reset (``Count.guarded``). Read in the same
    atomic step as the hit, so it costs no extra round trip."""

    key: str
    limit: Limit


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int  # 0 <= remaining <= limit
    reset: int  # whole Unix seconds when the window resets (>= now)
    retry_after: int  # whole seconds >= 1 until the window resets (meaningful when denied)

    @classmethod
    def of(cls, limit: Limit, counted: Count, now: float) -> Decision:
        allowed = counted.count <= limit.amount
        reset = max(math.ceil(counted.reset), math.ceil(now))
        return cls(
            allowed=allowed,
            limit=limit.amount,
            remaining=max(0, limit.amount - counted.count),
            reset=reset,
            retry_after=max(1, math.ceil(counted.reset - now)),
        )

    @classmethod
    def peek(cls, limit: Limit, counted: Count, now: float) -> Decision:
        """What the next request would get, from a read that counted nothing."""
        after = cls.of(limit, Count(counted.count + 1, counted.reset), now)
        remaining = max(0, limit.amount - counted.count)
        return cls(after.allowed, after.limit, remaining, after.reset, after.retry_after)

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", str(self.reset).encode()),
        ]


@dataclass(frozen=True, slots=True)
class AddressBlocked:
    """Refused: the client address has used its failed-authentication budget
    for the current window; every request from it is refused until ``reset``."""

    reset: int  # whole Unix seconds when the window ends
    retry_after: int  # whole seconds >= 1 until then

    @classmethod
    def until(cls, reset: float, now: float) -> AddressBlocked:
        return cls(reset=math.ceil(reset), retry_after=max(1, math.ceil(reset - now)))


@dataclass(frozen=True, slots=True)
class Admission:
    """A request's rate-limit decision (None without a rate limit) and quota
    decision (None without a quota). Headers for both go on every response."""

    rate: Decision | None
    quota: QuotaDecision | None

    @property
    def rate_limited(self) -> bool:
        return self.rate is not None and not self.rate.allowed

    @property
    def quota_exceeded(self) -> bool:
        return not self.rate_limited and self.quota is not None and not self.quota.allowed

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = self.rate.headers() if self.rate is not None else []
        if self.quota is not None:
            headers += self.quota.headers()
        return headers


class LimitListener(Protocol):
    """Told, on the hot path, when a key is refused by its rate limit or its
    quota use crosses a threshold (the webhooks of contract §13). Calls are
    synchronous and must not do I/O: a listener queues and returns."""

    def rate_limited(self, key: ApiKey, window_end: int) -> None:
        """A request of ``key`` was refused in the window ending at
        ``window_end`` (Unix seconds: the window's identity)."""

    def quota_crossed(self, key: ApiKey, percent: int, period_start: int) -> None:
        """A request of ``key`` brought its quota's use to ``percent`` (80 or
        100) of the limit in the period starting at ``period_start``."""


class RateLimiterUnavailable(Exception):
    """The shared counter store cannot count this request: it is unreachable
    and the policy is to fail closed, or it did not answer in time (then the
    request may or may not have been counted, so it is never admitted)."""


class WindowCounter(Protocol):
    """Fixed windows aligned to the clock: window ``n`` of a ``w``-second limit
    is ``[n*w, (n+1)*w)``. ``hit`` increments the counter of the current
    window atomically and returns the new count, so each request gets its own
    position: of any ``amount + k`` concurrent requests exactly ``amount``
    see ``count <= amount``."""

    async def hit(
        self, key: str, window_seconds: int, cost: int = 1, guard: Guard | None = None
    ) -> Count:
        """Add ``cost`` to the current window's counter; ``cost=0`` only reads it.

        With a ``guard`` whose counter has reached its limit, nothing is
        added and the guard's count is returned (see :class:`Guard`). Raises
        :class:`RateLimiterUnavailable` when the request cannot be counted."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
