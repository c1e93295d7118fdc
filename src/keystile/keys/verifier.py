"""Checking a presented token: the per-request hot path.

A process-local LRU cache of verified keys, keyed by digest (never by the
plaintext token), saves a database round trip per request. It stays exact:

- a revocation in this process evicts the key before the revoke response;
- other processes' revocations arrive through ``Storage.changed_elsewhere``
  (SQLite: any commit by another connection clears the cache) or through a
  revocation channel (Redis), which calls :meth:`KeyVerifier.forget`;
- a lookup that raced an eviction is not cached (the ``epoch`` check);
- entries also age out after ``ttl_seconds``, a backstop for lost messages.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from keystile import clock as clocks
from keystile.keys import tokens
from keystile.keys.models import ApiKey, KeyStatus
from keystile.keys.usage import UsageRecorder
from keystile.storage.base import Storage


class Outcome(StrEnum):
    """Verification outcomes, as ``POST /v1/keys/verify`` names them."""

    VALID = "VALID"
    INVALID = "INVALID"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"
    INSUFFICIENT_PERMISSIONS = "INSUFFICIENT_PERMISSIONS"
    RATE_LIMITED = "RATE_LIMITED"


@dataclass(frozen=True, slots=True)
class Verification:
    outcome: Outcome
    key: ApiKey | None = None  # set for VALID, EXPIRED and REVOKED

    @property
    def valid(self) -> bool:
        return self.outcome is Outcome.VALID


INVALID = Verification(Outcome.INVALID)


class KeyCache:
    """A bounded LRU of digest → key, with a time-to-live per entry."""

    def __init__(self, max_size: int, ttl_seconds: float) -> None:
        self.max_size = max_size
        self.ttl_micros = int(ttl_seconds * clocks.MICROS)
        self.epoch = 0
        self._entries: OrderedDict[str, tuple[ApiKey, int]] = OrderedDict()
        self._digest_of: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: str, now: int) -> ApiKey | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        key, stored_at = entry
        if now - stored_at > self.ttl_micros:
            self._drop(digest)
            return None
        self._entries.move_to_end(digest)
        return key

    def put(self, digest: str, key: ApiKey, now: int, epoch: int) -> None:
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
        self.cache = KeyCache(cache_size, cache_ttl_seconds)
        self._token_length = len(tokens.type_prefix(prefix)) + 1 + tokens.BODY_LENGTH

    async def verify(
        self, token: str, *, before_lookup: Callable[[], Awaitable[None]] | None = None
    ) -> Verification:
        """The outcome for ``token``; only VALID, EXPIRED and REVOKED carry the key.

        Never raises for bad input; raises ``StorageUnavailable`` when the
        database is needed and cannot answer. ``before_lookup`` is awaited
        just before storage would be searched for the token (a well-formed
        token that is not cached) and may raise to refuse the request: then
        nothing reaches storage (the failed-authentication block).
        """
        if len(token) != self._token_length or not token.isascii():
            return INVALID
        digest = tokens.digest(token)
        now = clocks.now_micros(self._clock)
        use_cache = self.cache_is_current()
        key = self.cache.get(digest, now) if use_cache else None
        if key is not None and await self._storage.changed_elsewhere():
            # A key was revoked somewhere since this process last looked:
            # nothing cached can be trusted.
            self.cache.clear()
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
            if use_cache and await self._storage.changed_elsewhere():
                self.cache.clear()
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
            if use_cache:
                self.cache.put(digest, key, now, epoch)
        status = key.status(now)
        if status is KeyStatus.REVOKED:
            return Verification(Outcome.REVOKED, key)
        if status is KeyStatus.EXPIRED:
            return Verification(Outcome.EXPIRED, key)
        if self._usage is not None:
            self._usage.record(key.id, clocks.whole_seconds(now))
        return Verification(Outcome.VALID, key)

    async def forget(self, key_id: str) -> None:
        """Drop ``key_id`` from the cache (a revocation listener)."""
        self.cache.forget(key_id)
