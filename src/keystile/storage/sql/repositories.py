"""Repositories over one SQL connection. Written once for both databases: the
connection may be a real ``AsyncConnection`` (PostgreSQL) or the thin async
face of a synchronous SQLite connection (see ``database.py``)."""

from __future__ import annotations

from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.sql import Executable

from keystile.errors import DuplicateName
from keystile.keys.models import Account, ApiKey, KeyPage, KeyStatus, Plan, Tier
from keystile.storage.base import StoredResponse
from keystile.storage.sql.tables import accounts, api_keys, idempotency_records


class Connection(Protocol):
    @property
    def dialect_name(self) -> str: ...

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]: ...


def _insert(conn: Connection, table: sa.Table) -> Any:
    """An INSERT that supports ``ON CONFLICT DO NOTHING`` on this dialect."""
    dialect = postgresql if conn.dialect_name == "postgresql" else sqlite
    return dialect.insert(table)


_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.account_id,
    api_keys.c.name,
    api_keys.c.description,
    api_keys.c.permissions,
    api_keys.c.rate_limit_tier,
    api_keys.c.expires_at,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
    api_keys.c.last_used_at,
)


def _key(row: sa.Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        description=row.description,
        permissions=tuple(row.permissions.split()),
        rate_limit_tier=Tier(row.rate_limit_tier),
        expires_at=row.expires_at,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


class SqlAccounts:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def insert(self, account: Account) -> None:
        await self._conn.execute(
            accounts.insert().values(
                id=account.id,
                name=account.name,
                plan=account.plan.value,
                created_at=account.created_at,
            )
        )

    async def get(self, account_id: str) -> Account | None:
        result = await self._conn.execute(sa.select(accounts).where(accounts.c.id == account_id))
        row = result.first()
        if row is None:
            return None
        return Account(id=row.id, name=row.name, plan=Plan(row.plan), created_at=row.created_at)


class SqlKeys:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.revoked_any = False  # lets the SQLite adapter signal other processes after commit

    async def insert(self, key: ApiKey, digest: str, name_key: str) -> None:
        # ON CONFLICT on the partial unique index instead of catching an
        # IntegrityError: PostgreSQL aborts a transaction on an error, and the
        # idempotency layer still has to record the 409 in this transaction.
        statement = (
            _insert(self._conn, api_keys)
            .values(
                id=key.id,
                account_id=key.account_id,
                digest=digest,
                name=key.name,
                name_key=name_key,
                holds_name=True,
                description=key.description,
                permissions=" ".join(key.permissions),
                rate_limit_tier=key.rate_limit_tier.value,
                expires_at=key.expires_at,
                created_at=key.created_at,
            )
            .on_conflict_do_nothing(
                index_elements=[api_keys.c.account_id, api_keys.c.name_key],
                index_where=api_keys.c.holds_name,
            )
        )
        result = await self._conn.execute(statement)
        if result.rowcount != 1:
            raise DuplicateName()

    async def release_expired_name(self, account_id: str, name_key: str, now: int) -> None:
        await self._conn.execute(
            api_keys.update()
            .where(
                api_keys.c.account_id == account_id,
                api_keys.c.name_key == name_key,
                api_keys.c.holds_name,
                api_keys.c.expires_at <= now,
            )
            .values(holds_name=False)
        )

    async def get(self, account_id: str | None, key_id: str) -> ApiKey | None:
        query = sa.select(*_KEY_COLUMNS).where(api_keys.c.id == key_id)
        if account_id is not None:
            query = query.where(api_keys.c.account_id == account_id)
        row = (await self._conn.execute(query)).first()
        return None if row is None else _key(row)

    async def list(
        self,
        account_id: str,
        *,
        now: int,
        limit: int,
        status: KeyStatus | None = None,
        starting_after: ApiKey | None = None,
    ) -> KeyPage:
        c = api_keys.c
        query = sa.select(*_KEY_COLUMNS).where(c.account_id == account_id)
        if status is KeyStatus.ACTIVE:
            query = query.where(
                c.revoked_at.is_(None), sa.or_(c.expires_at.is_(None), c.expires_at > now)
            )
        elif status is KeyStatus.REVOKED:
            query = query.where(c.revoked_at.is_not(None))
        elif status is KeyStatus.EXPIRED:
            query = query.where(c.revoked_at.is_(None), c.expires_at <= now)
        if starting_after is not None:
            query = query.where(
                sa.or_(
                    c.created_at < starting_after.created_at,
                    sa.and_(c.created_at == starting_after.created_at, c.id < starting_after.id),
                )
            )
        query = query.order_by(c.created_at.desc(), c.id.desc()).limit(limit + 1)
        rows = (await self._conn.execute(query)).all()
        return KeyPage(keys=[_key(row) for row in rows[:limit]], has_more=len(rows) > limit)

    async def revoke(self, key_id: str, now: int) -> None:
        self.revoked_any = True
        await self._conn.execute(
            api_keys.update()
            .where(api_keys.c.id == key_id)
            .values(revoked_at=sa.func.coalesce(api_keys.c.revoked_at, now), holds_name=False)
        )

    async def find_by_digest(self, digest: str) -> tuple[ApiKey, str] | None:
        query = sa.select(*_KEY_COLUMNS, api_keys.c.digest).where(api_keys.c.digest == digest)
        row = (await self._conn.execute(query)).first()
        return None if row is None else (_key(row), row.digest)

    async def touch(self, last_used: dict[str, int]) -> None:
        if not last_used:
            return
        c = api_keys.c
        await self._conn.execute(
            api_keys.update()
            .where(
                c.id == sa.bindparam("key_id"),
                sa.or_(c.last_used_at.is_(None), c.last_used_at < sa.bindparam("used_at")),
            )
            .values(last_used_at=sa.bindparam("used_at")),
            [{"key_id": key_id, "used_at": used_at} for key_id, used_at in last_used.items()],
        )


class SqlIdempotency:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @staticmethod
    def _identity(account_id: str, caller_key_id: str, idempotency_key: str) -> Any:
        c = idempotency_records.c
        return sa.and_(
            c.account_id == account_id,
            c.caller_key_id == caller_key_id,
            c.idempotency_key == idempotency_key,
        )

    async def get(
        self, account_id: str, caller_key_id: str, idempotency_key: str
    ) -> StoredResponse | None:
        query = sa.select(idempotency_records).where(
            self._identity(account_id, caller_key_id, idempotency_key)
        )
        row = (await self._conn.execute(query)).first()
        if row is None:
            return None
        return StoredResponse(
            account_id=row.account_id,
            caller_key_id=row.caller_key_id,
            idempotency_key=row.idempotency_key,
            fingerprint=row.fingerprint,
            status_code=row.status_code,
            ciphertext=bytes(row.ciphertext),
            created_at=row.created_at,
            expires_at=row.expires_at,
        )

    async def insert(self, record: StoredResponse) -> bool:
        statement = (
            _insert(self._conn, idempotency_records)
            .values(
                account_id=record.account_id,
                caller_key_id=record.caller_key_id,
                idempotency_key=record.idempotency_key,
                fingerprint=record.fingerprint,
                status_code=record.status_code,
                ciphertext=record.ciphertext,
                created_at=record.created_at,
                expires_at=record.expires_at,
            )
            .on_conflict_do_nothing()
        )
        return (await self._conn.execute(statement)).rowcount == 1

    async def delete(self, account_id: str, caller_key_id: str, idempotency_key: str) -> None:
        await self._conn.execute(
            idempotency_records.delete().where(
                self._identity(account_id, caller_key_id, idempotency_key)
            )
        )

    async def purge(self, now: int) -> int:
        result = await self._conn.execute(
            idempotency_records.delete().where(idempotency_records.c.expires_at <= now)
        )
        return int(result.rowcount)


class SqlUnitOfWork:
    def __init__(self, conn: Connection) -> None:
        self.accounts = SqlAccounts(conn)
        self.keys = SqlKeys(conn)
        self.idempotency = SqlIdempotency(conn)
