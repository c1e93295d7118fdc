"""The integrations' local cache of verifications: least recently used
entries go first past ``size``, every entry expires ``ttl`` seconds after
keystile answered it.

Keys are a SHA-256 digest of the presented key and the permission asked: the
raw key is never stored. Every outcome is cached for the same TTL, refusals
included (an unknown key asked again and again costs keystile one call per
TTL, not one per request). The cost is the documented delay: a revocation,
a change of permissions or a re-enabled key shows in the app at most ``ttl``
seconds later, and a cached answer does not use the key's rate limit or quota
again (``ttl=0`` disables the cache: every request is verified and metered).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")

DEFAULT_SIZE = 10_000
DEFAULT_TTL = 5.0


def cache_key(token: str, permission: str | None) -> bytes:
    """The digest naming a (key, permission) pair; a NUL separates the two."""
    return hashlib.sha256(f"{token}\0{permission or ''}".encode()).digest()


class VerificationCache(Generic[V]):
    """Bounded LRU with TTL of what a verification decided (``V``: the
    verifiers keep the verification and its decision, so a cache hit builds
    nothing). Not locked: the asyncio integrations use it from one event
    loop; the threaded one holds its own lock around it."""

    def __init__(
        self,
        size: int = DEFAULT_SIZE,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 0 or ttl < 0:
            raise ValueError("cache size and TTL must be >= 0")
        self.size = size
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, V]] = OrderedDict()

    def get(self, key: bytes) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, result = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return result

    def put(self, key: bytes, result: V) -> None:
        if self.size == 0 or self.ttl == 0:
            return
        self._entries[key] = (self._clock() + self.ttl, result)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
