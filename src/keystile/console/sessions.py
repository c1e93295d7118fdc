"""Console sessions (contract §16): server-side, shared by every worker and
instance through the database.

The cookie holds only a random id (256 bits). The database holds its SHA-256
digest, so a copy of the table does not yield a usable cookie, and the
signed-in key encrypted under the application key, bound to the row (a
ciphertext copied into another row does not decrypt). A session ends after
``KEYSTILE_CONSOLE_IDLE_MINUTES`` without a request, and
``KEYSTILE_CONSOLE_ABSOLUTE_HOURS`` after sign-in whatever happens.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from keystile.clock import MICROS, Clock, now_micros
from keystile.console.models import StoredSession
from keystile.idempotency.crypto import DecryptionFailed, Keyring
from keystile.storage.base import Storage

# Writing last_seen_at on every page view would turn reads into writes; the
# idle expiry is minutes, so a minute of slack is harmless.
_TOUCH_EVERY = 60 * MICROS


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    """A live session, its key decrypted for the requests made on its behalf."""

    cookie: str
    digest: str
    credential: str  # the signed-in key: never rendered, never logged
    account_id: str | None
    operator: bool
    csrf_token: str
    stored: StoredSession


class SessionStore:
    def __init__(
        self,
        storage: Storage,
        keyring: Keyring,
        *,
        idle_seconds: int,
        absolute_seconds: int,
        clock: Clock,
    ) -> None:
        self._storage = storage
        self._keyring = keyring
        self.idle_seconds = idle_seconds
        self.absolute_seconds = absolute_seconds
        self._clock = clock

    def _associated(self, digest: str, part: str) -> bytes:
        return f"keystile-console:{part}:{digest}".encode()

    async def open(self, credential: str, *, account_id: str | None, operator: bool) -> str:
        """A new session for ``credential``; returns the cookie's value."""
        cookie = secrets.token_urlsafe(32)
        digest = _digest(cookie)
        now = now_micros(self._clock)
        stored = StoredSession(
            id_digest=digest,
            account_id=account_id,
            operator=operator,
            credential=self._keyring.encrypt(
                credential.encode(), self._associated(digest, "credential")
            ),
            csrf_token=secrets.token_urlsafe(32),
            flash=None,
            created_at=now,
            last_seen_at=now,
            expires_at=now + self.absolute_seconds * MICROS,
        )
        async with self._storage.transaction() as uow:
            await uow.console_sessions.insert(stored)
        return cookie

    async def load(self, cookie: str | None) -> Session | None:
        """The live session of ``cookie``, or None (no cookie, unknown, idle
        too long, past its absolute expiry: the last two are deleted)."""
        if not cookie or len(cookie) > 100:
            return None
        digest = _digest(cookie)
        async with self._storage.reader() as uow:
            stored = await uow.console_sessions.get(digest)
        if stored is None:
            return None
        now = now_micros(self._clock)
        idle = now - stored.last_seen_at >= self.idle_seconds * MICROS
        if idle or now >= stored.expires_at:
            await self.close(cookie)
            return None
        try:
            credential = self._keyring.decrypt(
                stored.credential, self._associated(digest, "credential")
            ).decode()
        except DecryptionFailed:  # the application key changed: sign in again
            await self.close(cookie)
            return None
        if now - stored.last_seen_at >= _TOUCH_EVERY:
            async with self._storage.transaction() as uow:
                await uow.console_sessions.touch(digest, now)
        return Session(
            cookie=cookie,
            digest=digest,
            credential=credential,
            account_id=stored.account_id,
            operator=stored.operator,
            csrf_token=stored.csrf_token,
            stored=stored,
        )

    async def close(self, cookie: str) -> None:
        async with self._storage.transaction() as uow:
            await uow.console_sessions.delete(_digest(cookie))

    async def choose_account(self, session: Session, account_id: str) -> None:
        """An operator's session acts for ``account_id`` from now on."""
        async with self._storage.transaction() as uow:
            await uow.console_sessions.set_account(session.digest, account_id)

    async def stash(self, session: Session, payload: dict[str, Any]) -> None:
        """Keep ``payload`` (a new secret) encrypted until :meth:`take` reads it, once."""
        blob = self._keyring.encrypt(
            json.dumps(payload).encode(), self._associated(session.digest, "flash")
        )
        async with self._storage.transaction() as uow:
            await uow.console_sessions.set_flash(session.digest, blob)

    async def take(self, session: Session) -> dict[str, Any] | None:
        """The stashed payload, deleted in the same transaction: whoever reads
        it first gets it, nobody gets it twice (reload, back, history)."""
        async with self._storage.transaction() as uow:
            stored = await uow.console_sessions.get(session.digest)
            if stored is None or stored.flash is None:
                return None
            if not await uow.console_sessions.clear_flash(stored.id_digest, stored.flash):
                return None
        try:
            payload = self._keyring.decrypt(stored.flash, self._associated(session.digest, "flash"))
        except DecryptionFailed:
            return None
        result: dict[str, Any] = json.loads(payload)
        return result

    async def purge(self) -> int:
        """Delete idle and expired sessions (the background job)."""
        now = now_micros(self._clock)
        async with self._storage.transaction() as uow:
            return await uow.console_sessions.purge(now - self.idle_seconds * MICROS, now)
