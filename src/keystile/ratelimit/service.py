"""Which requests are admitted (contract §5)."""

from __future__ import annotations

from keystile import clock as clocks
from keystile.keys.models import ApiKey, Tier
from keystile.ratelimit.models import Decision, Limit, WindowCounter


class RateLimiter:
    """Per-key limits by tier, and a stricter per-address limit on failed
    authentication that never touches any key's quota."""

    def __init__(
        self,
        counter: WindowCounter,
        *,
        tiers: dict[Tier, Limit | None],
        auth_failures: Limit,
        clock: clocks.Clock = clocks.system_clock,
    ) -> None:
        self.counter = counter
        self._tiers = tiers
        self._auth_failures = auth_failures
        self._clock = clock

    async def admit(self, key: ApiKey) -> Decision | None:
        """Count one request of ``key``; ``None`` for unmetered keys (no limit, no headers)."""
        limit = self._tiers.get(key.rate_limit_tier)
        if limit is None:
            return None
        counted = await self.counter.hit(f"key:{key.id}", limit.window_seconds)
        return Decision.of(limit, counted, self._clock())

    async def peek(self, key: ApiKey) -> Decision | None:
        """``key``'s quota as it stands, counting nothing."""
        limit = self._tiers.get(key.rate_limit_tier)
        if limit is None:
            return None
        counted = await self.counter.hit(f"key:{key.id}", limit.window_seconds, cost=0)
        return Decision.peek(limit, counted, self._clock())

    async def failed_authentication(self, address: str) -> Decision:
        """Count one failed authentication from ``address``."""
        limit = self._auth_failures
        counted = await self.counter.hit(f"auth:{address}", limit.window_seconds)
        return Decision.of(limit, counted, self._clock())
