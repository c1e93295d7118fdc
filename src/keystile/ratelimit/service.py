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

    def limit_of(self, key: ApiKey) -> Limit | None:
        """The key's own rule when it has one (contract §11), else its tier's;
        None for an unmetered key without one."""
        if key.rate_limit is not None:
            return Limit(key.rate_limit.limit, key.rate_limit.window_seconds)
        return self._tiers.get(key.rate_limit_tier)

    @staticmethod
    def counter_of(key: ApiKey) -> str:
        """The counter a key's requests go to: shared by a rotated key and its
        replacement (contract §10)."""
        return f"key:{key.counter_id}"

    async def admit(self, key: ApiKey) -> Decision | None:
        """Count one request of ``key``; ``None`` for unmetered keys (no limit, no headers)."""
        limit = self.limit_of(key)
        if limit is None:
            return None
        counted = await self.counter.hit(self.counter_of(key), limit.window_seconds)
        return Decision.of(limit, counted, self._clock())

    async def peek(self, key: ApiKey) -> Decision | None:
        """``key``'s quota as it stands, counting nothing."""
        limit = self.limit_of(key)
        if limit is None:
            return None
        counted = await self.counter.hit(self.counter_of(key), limit.window_seconds, cost=0)
        return Decision.peek(limit, counted, self._clock())

    async def failed_authentication(self, address: str) -> Decision:
        """Count one failed authentication from ``address``."""
        limit = self._auth_failures
        counted = await self.counter.hit(f"auth:{address}", limit.window_seconds)
        return Decision.of(limit, counted, self._clock())
