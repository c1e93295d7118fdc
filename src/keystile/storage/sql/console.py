"""Console sessions in SQL (``uow.console_sessions``), shared by every worker
and instance that uses the database."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from keystile.console.models import StoredSession
from keystile.storage.sql.common import Connection
from keystile.storage.sql.tables import console_sessions

_c = console_sessions.c


def _session(row: sa.Row[Any]) -> StoredSession:
    return StoredSession(
        id_digest=row.id_digest,
        account_id=row.account_id,
        operator=bool(row.operator),
        credential=bytes(row.credential),
        csrf_token=row.csrf_token,
        flash=bytes(row.flash) if row.flash is not None else None,
        created_at=int(row.created_at),
        last_seen_at=int(row.last_seen_at),
        expires_at=int(row.expires_at),
    )


class SqlConsoleSessions:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def insert(self, session: StoredSession) -> None:
        await self._conn.execute(
            console_sessions.insert().values(
                id_digest=session.id_digest,
                account_id=session.account_id,
                operator=session.operator,
                credential=session.credential,
                csrf_token=session.csrf_token,
                flash=session.flash,
                created_at=session.created_at,
                last_seen_at=session.last_seen_at,
                expires_at=session.expires_at,
            )
        )

    async def get(self, id_digest: str) -> StoredSession | None:
        row = (
            await self._conn.execute(sa.select(console_sessions).where(_c.id_digest == id_digest))
        ).first()
        return _session(row) if row is not None else None

    async def touch(self, id_digest: str, last_seen_at: int) -> None:
        await self._set(id_digest, last_seen_at=last_seen_at)

    async def set_account(self, id_digest: str, account_id: str) -> None:
        await self._set(id_digest, account_id=account_id)

    async def set_flash(self, id_digest: str, flash: bytes) -> None:
        await self._set(id_digest, flash=flash)

    async def _set(self, id_digest: str, **values: Any) -> None:
        await self._conn.execute(
            console_sessions.update().where(_c.id_digest == id_digest).values(**values)
        )

    async def clear_flash(self, id_digest: str, flash: bytes) -> bool:
        """Remove ``flash`` if the row still holds it; False when another
        request took it first (the condition is re-checked under the row lock)."""
        result = await self._conn.execute(
            console_sessions.update()
            .where(_c.id_digest == id_digest, _c.flash == flash)
            .values(flash=None)
        )
        return int(result.rowcount) == 1

    async def delete(self, id_digest: str) -> None:
        await self._conn.execute(console_sessions.delete().where(_c.id_digest == id_digest))

    async def purge(self, idle_before: int, now: int) -> int:
        result = await self._conn.execute(
            console_sessions.delete().where(
                sa.or_(_c.last_seen_at < idle_before, _c.expires_at <= now)
            )
        )
        return int(result.rowcount)
