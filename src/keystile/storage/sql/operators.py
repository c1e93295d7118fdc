"""Operator keys in SQL (contract §9)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from keystile.keys.models import OperatorKey
from keystile.storage.sql.common import Connection
from keystile.storage.sql.tables import operator_keys

_COLUMNS = (
    operator_keys.c.id,
    operator_keys.c.name,
    operator_keys.c.created_at,
    operator_keys.c.revoked_at,
    operator_keys.c.last_used_at,
)

# An operator key, and its digest as stored, by digest (``find_by_digest``).
OPERATOR_KEY_BY_DIGEST = sa.select(*_COLUMNS, operator_keys.c.digest).where(
    operator_keys.c.digest == sa.bindparam("digest")
)


def operator_key_with_digest(row: Any) -> tuple[OperatorKey, str]:
    """A row of :data:`OPERATOR_KEY_BY_DIGEST` (SQLAlchemy's or asyncpg's)."""
    return _operator_key(row), row.digest


def _operator_key(row: Any) -> OperatorKey:
    return OperatorKey(
        id=row.id,
        name=row.name,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


class SqlOperatorKeys:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.invalidated: set[str] = set()

    async def insert(self, key: OperatorKey, digest: str) -> None:
        await self._conn.execute(
            operator_keys.insert().values(
                id=key.id, name=key.name, digest=digest, created_at=key.created_at
            )
        )

    async def get(self, key_id: str) -> OperatorKey | None:
        query = sa.select(*_COLUMNS).where(operator_keys.c.id == key_id)
        row = (await self._conn.execute(query)).first()
        return None if row is None else _operator_key(row)

    async def list(self) -> list[OperatorKey]:
        """Every operator key, newest first (there are only ever a handful)."""
        query = sa.select(*_COLUMNS).order_by(
            operator_keys.c.created_at.desc(), operator_keys.c.id.desc()
        )
        return [_operator_key(row) for row in (await self._conn.execute(query)).all()]

    async def revoke(self, key_id: str, now: int) -> None:
        self.invalidated.add(key_id)
        await self._conn.execute(
            operator_keys.update()
            .where(operator_keys.c.id == key_id)
            .values(revoked_at=sa.func.coalesce(operator_keys.c.revoked_at, now))
        )

    async def find_by_digest(self, digest: str) -> tuple[OperatorKey, str] | None:
        row = (await self._conn.execute(OPERATOR_KEY_BY_DIGEST, {"digest": digest})).first()
        return None if row is None else operator_key_with_digest(row)

    async def touch(self, last_used: dict[str, int]) -> None:
        if not last_used:
            return
        c = operator_keys.c
        await self._conn.execute(
            operator_keys.update()
            .where(
                c.id == sa.bindparam("key_id"),
                sa.or_(c.last_used_at.is_(None), c.last_used_at < sa.bindparam("used_at")),
            )
            .values(last_used_at=sa.bindparam("used_at")),
            [{"key_id": key_id, "used_at": used_at} for key_id, used_at in last_used.items()],
        )
