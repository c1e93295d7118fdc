"""Which idempotent requests are running right now (→ 409 idempotency_key_in_use).

The lock only decides who answers 409 quickly; exactly-once does not rest on
it. The record's primary key does: a second transaction that got past the
lock (a lock that expired, a process that crashed) fails to insert its record
and rolls its work back.
"""

from __future__ import annotations

from typing import Protocol


class InFlight(Protocol):
    async def acquire(self, name: str) -> bool:
        """Take the lock for ``name``; False when another request holds it."""

    async def release(self, name: str) -> None: ...


class LocalInFlight:
    """Locks within this process (the embedded default, one worker or many:
    across processes SQLite's write lock serialises the transactions)."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    async def acquire(self, name: str) -> bool:
        if name in self._held:
            return False
        self._held.add(name)
        return True

    async def release(self, name: str) -> None:
        self._held.discard(name)
