"""Checking a presented token: the per-request hot path.

A process-local LRU cache of verified keys, keyed by digest (never by the
plaintext token), saves a database round trip per request. It stays exact:

- a revocation in this process evicts the key before the revoke response;
- other processes' revocations arrive through ``Storage.changed_elsewhere``
  (SQLite: any commit by another connection clears the cache) or through a
  revocation channel (Redis), which calls :meth:`KeyVerifier.forget`;
- a lookup that raced an eviction is not cached (the ``epoch`` check);
- entries also age out after ``ttl_seconds``, a backstop for lost messages.

Only keys that were active when read are cached: a revoked or expired key
costs a database read every time, exactly like an unknown one, so neither
the response time nor the cache's size (``/metrics``) tells a caller that
a key it presented once existed.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from keystile import clock as clocks
from keystile.keys import tokens
from keystile.keys.models import ApiKey, KeyStatus, OperatorKey
from keystile.keys.usage import UsageRecorder
from keystile.storage.base import Storage


class Outcome(StrEnum):
    """Verification outcomes, as ``POST /v1/keys/verify`` names them."""

    VALID = "VALID"
    INVALID = "INVALID"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"
    DISABLED = "DISABLED"  # the key is disabled, or its account suspended (contract §9, §10)
    INSUFFICIENT_PERMISSIONS = "INSUFFICIENT_PERMISSIONS"
    RATE_LIMITED = "RATE_LIMITED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"


@dataclass(frozen=True, slots=True)
class Verification:
    outcome: Outcome
    key: ApiKey | None = None  # set for VALID, EXPIRED, REVOKED and DISABLED

    @property
    def valid(self) -> bool:
        return self.outcome is Outcome.VALID


INVALID = Verification(Outcome.INVALID)


class _Identified(Protocol):
    @property
    def id(self) -> str: ...


K = TypeVar("K", bound=_Identified)


class KeyCache(Generic[K]):
    """A bounded LRU of digest → key, with a time-to-live per entry."""

    def __init__(self, max_size: int, ttl_seconds: float) -> None:
        self.max_size = max_size
        self.ttl_micros = int(ttl_seconds * clocks.MICROS)
        self.epoch = 0
        self._entries: OrderedDict[str, tuple[K, int]] = OrderedDict()
        self._digest_of: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: str, now: int) -> K | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        key, stored_at = entry
        if now - stored_at > self.ttl_micros:
            self._drop(digest)
            return None
        self._entries.move_to_end(digest)
        return key

    def put(self, digest: str, key: K, now: int, epoch: int) -> None:
        """Cache ``key`` unless an eviction happened since ``epoch`` was read."""
        if self.max_size == 0 or epoch != self.epoch:
            return
        self._entries[digest] = (key, now)
        self._entries.move_to_end(digest)
        self._digest_of[key.id] = digest
        while len(self._entries) > self.max_size:
            _, (old_key, _) = self._entries.popitem(last=False)
            self._digest_of.pop(old_key.id, None)

    def forget(self, key_id: str) -> None:
        self.epoch += 1
        digest = self._digest_of.get(key_id)
        if digest is not None:
            self._drop(digest)

    def clear(self) -> None:
        self.epoch += 1
        self._entries.clear()
        self._digest_of.clear()

    def invalidate(self, ids: frozenset[str]) -> None:
        """Drop the keys ``ids`` (``*``: every key)."""
        if "*" in ids:
            self.clear()
        else:
            for key_id in ids:
                self.forget(key_id)

    def _drop(self, digest: str) -> None:
        entry = self._entries.pop(digest, None)
        if entry is not None:
            self._digest_of.pop(entry[0].id, None)


class KeyVerifier:
    def __init__(
        self,
        storage: Storage,
        *,
        prefix: str,
        clock: clocks.Clock = clocks.system_clock,
        cache_size: int = 10_000,
        cache_ttl_seconds: float = 60.0,
        usage: UsageRecorder | None = None,
    ) -> None:
        self._storage = storage
        self._usage = usage
        self.cache_is_current: Callable[[], bool] = lambda: True
        """False while revocations might be missed (a broken revocation feed):
        then every check goes to the database."""
        self._prefix = prefix
        self._clock = clock
        self.cache: KeyCache[ApiKey] = KeyCache(cache_size, cache_ttl_seconds)
        self.operator_cache: KeyCache[OperatorKey] = KeyCache(
            min(cache_size, 1_000), cache_ttl_seconds
        )
        self._token_length = len(tokens.type_prefix(prefix)) + 1 + tokens.BODY_LENGTH
        self._root_head = f"{tokens.type_prefix(prefix, tokens.ROOT)}_"

    def is_operator_token(self, token: str) -> bool:
        """Whether ``token`` claims to be an operator key (``{prefix}_root_…``)."""
        return token.startswith(self._root_head)

    async def _stale(self) -> bool:
        """True (and both caches cleared) when a key may have changed in any
        process since this process last looked."""
        if await self._storage.changed_elsewhere():
            self.cache.clear()
            self.operator_cache.clear()
            return True
        return False

    async def verify_operator(
        self, token: str, *, before_lookup: Callable[[], Awaitable[None]] | None = None
    ) -> OperatorKey | None:
        """The active operator key ``token`` is, else None (contract §9).

        The same path as an account key's: length, checksum before any
        storage access, digest lookup, constant-time comparison; revocation
        reaches the cache like any key change.
        """
        if len(token) != self._token_length or not token.isascii():
            return None
        digest = tokens.digest(token)
        now = clocks.now_micros(self._clock)
        use_cache = self.cache_is_current()
        key = self.operator_cache.get(digest, now) if use_cache else None
        if key is not None and await self._stale():
            key = None
        if key is None:
            if not tokens.is_well_formed(token, self._prefix, tokens.ROOT):
                return None
            if before_lookup is not None:
                await before_lookup()
            if use_cache:
                await self._stale()
            epoch = self.operator_cache.epoch
            async with self._storage.reader() as uow:
                found = await uow.operator_keys.find_by_digest(digest)
            if found is None or not hmac.compare_digest(found[1], digest):
                return None
            key = found[0]
            if key.revoked_at is not None:
                return None
            if use_cache:
                self.operator_cache.put(digest, key, now, epoch)
        return key if key.revoked_at is None else None

    async def verify(
        self, token: str, *, before_lookup: Callable[[], Awaitable[None]] | None = None
    ) -> Verification:
        """The outcome for ``token``; all but INVALID carry the key.

        Has no side effect on the key (see :meth:`note_use`). Never raises
        for bad input; raises ``StorageUnavailable`` when the database is
        needed and cannot answer. ``before_lookup`` is awaited just before
        storage would be searched for the token (a well-formed token that is
        not cached) and may raise to refuse the request: then nothing
        reaches storage (the failed-authentication block).
        """
        if len(token) != self._token_length or not token.isascii():
            return INVALID
        digest = tokens.digest(token)
        now = clocks.now_micros(self._clock)
        use_cache = self.cache_is_current()
        key = self.cache.get(digest, now) if use_cache else None
        if key is not None and await self._stale():
            # A key changed somewhere since this process last looked:
            # nothing cached can be trusted.
            key = None
        if key is None:
            # Only well-formed tokens ever reach storage (contract §2). A cache
            # hit needs no checksum: only tokens found in storage are cached,
            # and a digest identifies its token.
            if not tokens.is_well_formed(token, self._prefix):
                return INVALID
            if before_lookup is not None:
                await before_lookup()
            # Note the revocation counter *before* reading: a revocation that
            # commits after the read changes the counter from what was noted,
            # so the next cache hit sees it and drops what this read cached.
            if use_cache:
                await self._stale()
            epoch = self.cache.epoch
            async with self._storage.reader() as uow:
                found = await uow.keys.find_by_digest(digest)
            if found is None:
                return INVALID
            key, stored_digest = found
            # The index lookup already matched; compare again in constant time
            # so that no code path ever compares secrets with ==.
            if not hmac.compare_digest(stored_digest, digest):
                return INVALID
            if use_cache and key.status(now) is KeyStatus.ACTIVE:
                self.cache.put(digest, key, now, epoch)
        status = key.status(now)
        if status is KeyStatus.REVOKED:
            return Verification(Outcome.REVOKED, key)
        if status is KeyStatus.EXPIRED:
            return Verification(Outcome.EXPIRED, key)
        if status is KeyStatus.DISABLED:
            return Verification(Outcome.DISABLED, key)
        # An active key of a suspended account is VALID here, with
        # key.account_suspended set: the caller decides (403 or DISABLED).
        return Verification(Outcome.VALID, key)

    def note_use(self, key: ApiKey | OperatorKey) -> None:
        """Record that ``key`` was used now (``last_used_at``, written in
        batches). Only for a key the caller was entitled to present: the
        pipeline after authentication, verify after the account check."""
        if self._usage is not None:
            self._usage.record(key.id, clocks.whole_seconds(clocks.now_micros(self._clock)))

    async def forget(self, key_id: str) -> None:
        """Drop ``key_id`` from the cache."""
        self.cache.forget(key_id)

    async def invalidate(self, ids: frozenset[str]) -> None:
        """Drop the keys ``ids`` (``*``: all) from the caches: an invalidation
        listener of the storage and of the revocation feed."""
        self.cache.invalidate(ids)
        self.operator_cache.invalidate(ids)

    def clear(self) -> None:
        self.cache.clear()
        self.operator_cache.clear()
