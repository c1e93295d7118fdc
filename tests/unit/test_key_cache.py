"""The verifier's cache: bounded, LRU, and never resurrecting a revoked key."""

from __future__ import annotations

from keystile.keys.models import ApiKey, Tier
from keystile.keys.verifier import KeyCache


def key(n: int) -> ApiKey:
    return ApiKey(
        id=f"key_{n}",
        account_id="acc",
        name=f"k{n}",
        description=None,
        permissions=("read:contacts",),
        rate_limit_tier=Tier.STANDARD,
        expires_at=None,
        created_at=0,
    )


def test_the_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    cache: KeyCache[ApiKey] = KeyCache(max_size=3, ttl_seconds=60)
    for n in range(3):
        cache.put(f"d{n}", key(n), now=0, epoch=cache.epoch)
    assert cache.get("d0", now=0) is not None  # d0 is now the most recent
    cache.put("d3", key(3), now=0, epoch=cache.epoch)
    assert len(cache) == 3
    assert cache.get("d1", now=0) is None
    assert cache.get("d0", now=0) is not None


def test_entries_expire_after_the_ttl() -> None:
    cache: KeyCache[ApiKey] = KeyCache(max_size=3, ttl_seconds=1)
    cache.put("d", key(1), now=0, epoch=cache.epoch)
    assert cache.get("d", now=1_000_000) is not None
    assert cache.get("d", now=1_000_001) is None


def test_forget_evicts_by_key_id() -> None:
    cache: KeyCache[ApiKey] = KeyCache(max_size=3, ttl_seconds=60)
    cache.put("d", key(1), now=0, epoch=cache.epoch)
    cache.forget("key_1")
    assert cache.get("d", now=0) is None


def test_a_lookup_that_raced_an_eviction_is_not_cached() -> None:
    cache: KeyCache[ApiKey] = KeyCache(max_size=3, ttl_seconds=60)
    epoch = cache.epoch  # a lookup starts...
    cache.forget("key_1")  # ...the key is revoked meanwhile...
    cache.put("d", key(1), now=0, epoch=epoch)  # ...and the stale row arrives
    assert cache.get("d", now=0) is None


def test_a_zero_size_cache_caches_nothing() -> None:
    cache: KeyCache[ApiKey] = KeyCache(max_size=0, ttl_seconds=60)
    cache.put("d", key(1), now=0, epoch=cache.epoch)
    assert len(cache) == 0
