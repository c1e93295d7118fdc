"""Which requests are admitted (contract §5)."""

from __future__ import annotations

import asyncio

from keystile import clock as clocks
from keystile.keys.models import ApiKey, Tier
from keystile.ratelimit.models import (
    AddressBlocked,
    Admission,
    Count,
    Decision,
    Guard,
    Limit,
    LimitListener,
    RateLimiterUnavailable,
    WindowCounter,
)
from keystile.ratelimit.quota import Period, QuotaCounter, QuotaDecision, QuotaSeed, period_of

THRESHOLDS = (80, 100)  # percent of a quota that fire api_key.quota_threshold (§13)


def crossed(limit: int, used: int, cost: int) -> list[int]:
    """The thresholds (percent of ``limit``) that a use of ``cost`` units
    ending at ``used`` reached: exactly one request reaches each, since
    counters add atomically."""
    if used * 100 < limit * THRESHOLDS[0]:  # below the first mark: nothing (most requests)
        return []
    reached = []
    for percent in THRESHOLDS:
        mark = -(-limit * percent // 100)  # ceil(limit * percent / 100), in integers
        if used - cost < mark <= used:
            reached.append(percent)
    return reached


class BlockedAddresses:
    """The addresses this process knows to be over their failed-authentication
    limit, until their window ends: a set lookup, no I/O.

    Failed-authentication windows are aligned to the clock and all of one
    length, so every entry ends at the same instant: a block for a later
    window replaces the whole set, and memory holds only the current window's
    addresses (each of which had to fail ``limit`` times to get in)."""

    def __init__(self) -> None:
        self._until = 0.0
        self._addresses: set[str] = set()

    def add(self, address: str, until: float) -> None:
        if until > self._until:
            self._until = until
            self._addresses = set()
        if until == self._until:
            self._addresses.add(address)

    def get(self, address: str, now: float) -> AddressBlocked | None:
        if address in self._addresses and now < self._until:
            return AddressBlocked.until(self._until, now)
        return None


class RateLimiter:
    """Per-key limits by tier, and a stricter per-address limit on failed
    authentication that never touches any key's quota.

    An address that has failed ``auth_failures.amount`` times in a window is
    blocked until the window ends: every request from it is refused, whatever
    key it presents, before the key is looked up (see ``blocked``,
    ``check_address`` and ``admit_from``)."""

    def __init__(
        self,
        counter: WindowCounter,
        *,
        tiers: dict[Tier, Limit | None],
        auth_failures: Limit,
        quotas: QuotaCounter,
        quota_seed: QuotaSeed,
        clock: clocks.Clock = clocks.system_clock,
        listener: LimitListener | None = None,
    ) -> None:
        self.counter = counter
        self.listener = listener
        self.quotas = quotas
        self._quota_seed = quota_seed
        self._tiers = tiers
        self._auth_failures = auth_failures
        self._clock = clock
        self._blocked = BlockedAddresses()
        self._seeding: dict[tuple[str, int], asyncio.Future[None]] = {}

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

    async def admit(self, key: ApiKey) -> Admission:
        """Count one request of ``key`` against its rate limit, then (when the
        rate limit admits it) against its quota (contract §11)."""
        limit = self.limit_of(key)
        decision = None
        if limit is not None:
            counted = await self.counter.hit(self.counter_of(key), limit.window_seconds)
            decision = Decision.of(limit, counted, self._clock())
            self._tell_refused(key, decision)
        return Admission(decision, await self._quota(key, decision))

    def _tell_refused(self, key: ApiKey, decision: Decision) -> None:
        if not decision.allowed and self.listener is not None:
            self.listener.rate_limited(key, decision.reset)

    async def _quota(self, key: ApiKey, rate: Decision | None) -> QuotaDecision | None:
        """Use one unit of ``key``'s quota when the rate limit admitted the
        request (a rate-limited request uses none: only read then)."""
        quota = key.quota
        if quota is None:
            return None
        cost = 1 if rate is None or rate.allowed else 0
        now = self._clock()
        period = period_of(quota.period, now)
        name = key.counter_id
        counted = await self.quotas.consume(name, period, quota.limit, cost)
        if counted is None:  # a new period, or counters lost (a restart): seed it
            await self._seed_once(name, period)
            counted = await self.quotas.consume(name, period, quota.limit, cost)
            if counted is None:
                raise RateLimiterUnavailable("the quota counter could not be seeded")
        if cost and counted.admitted and self.listener is not None:
            for percent in crossed(quota.limit, counted.used, cost):
                self.listener.quota_crossed(key, percent, period.start)
        return QuotaDecision.of(quota, period, counted, now)

    async def _seed_once(self, name: str, period: Period) -> None:
        """Seed a counter from the usage records; the requests of this process
        that find it unseeded together share one read and one seed."""
        identity = (name, period.start)
        running = self._seeding.get(identity)
        if running is None:

            async def seed() -> None:
                try:
                    await self.quotas.seed(name, period, await self._quota_seed(name, period))
                finally:
                    del self._seeding[identity]

            running = self._seeding[identity] = asyncio.ensure_future(seed())
        await asyncio.shield(running)

    async def admit_from(self, address: str, key: ApiKey) -> Admission | AddressBlocked:
        """Count one request of ``key`` sent from ``address``, unless the
        address is blocked (by this or any other instance): then nothing is
        counted and the block is returned. The address's failure counter is
        read in the same call as the key's increment (a :class:`Guard`); an
        unmetered key costs one read of it."""
        limit = self.limit_of(key)
        if limit is None:
            blocked = await self.check_address(address)
            if blocked is not None:
                return blocked
            return Admission(None, await self._quota(key, None))
        guard = Guard(self._failures_of(address), self._auth_failures)
        counted = await self.counter.hit(self.counter_of(key), limit.window_seconds, guard=guard)
        if counted.guarded:
            blocked = self._note_failures(address, counted)
            assert blocked is not None  # a guard vetoes only at its limit
            return blocked
        decision = Decision.of(limit, counted, self._clock())
        self._tell_refused(key, decision)
        return Admission(decision, await self._quota(key, decision))

    async def peek(self, key: ApiKey) -> Admission:
        """``key``'s rate limit and quota as they stand, counting nothing."""
        limit = self.limit_of(key)
        decision = None
        if limit is not None:
            counted = await self.counter.hit(self.counter_of(key), limit.window_seconds, cost=0)
            decision = Decision.peek(limit, counted, self._clock())
        read = await self._quota(key, Decision(False, 0, 0, 0, 1))  # reads only
        return Admission(decision, QuotaDecision.peek(read) if read is not None else None)

    def blocked(self, address: str) -> AddressBlocked | None:
        """The block on ``address`` as this process knows it (no I/O)."""
        return self._blocked.get(address, self._clock())

    async def check_address(self, address: str) -> AddressBlocked | None:
        """The block on ``address`` as the shared counter knows it (failures
        seen by other instances included): one read, counting nothing."""
        limit = self._auth_failures
        counted = await self.counter.hit(self._failures_of(address), limit.window_seconds, cost=0)
        return self._note_failures(address, counted)

    async def failed_authentication(self, address: str) -> Decision:
        """Count one failed authentication from ``address``. The decision is
        this request's (allowed: answer 401; else 429); once the count reaches
        the limit, the address is blocked for the rest of the window."""
        limit = self._auth_failures
        counted = await self.counter.hit(self._failures_of(address), limit.window_seconds)
        self._note_failures(address, counted)
        return Decision.of(limit, counted, self._clock())

    def _note_failures(self, address: str, counted: Count) -> AddressBlocked | None:
        if counted.count < self._auth_failures.amount:
            return None
        self._blocked.add(address, counted.reset)
        return AddressBlocked.until(counted.reset, self._clock())

    @staticmethod
    def _failures_of(address: str) -> str:
        return f"auth:{address}"
