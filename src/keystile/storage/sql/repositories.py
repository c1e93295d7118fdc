"""Repositories over one SQL connection. Written once for both databases: the
connection may be a real ``AsyncConnection`` (PostgreSQL) or the thin async
face of a synchronous SQLite connection (see ``database.py``)."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import sqlalchemy as sa

from keystile.audit.models import AuditEvent
from keystile.errors import DuplicateName
from keystile.keys.models import (
    Account,
    AccountPage,
    AccountStatus,
    ApiKey,
    KeyPage,
    KeyStatus,
    Plan,
    Tier,
)
from keystile.storage.base import KeyFilter, StoredResponse
from keystile.storage.sql.audit import SqlAuditEvents
from keystile.storage.sql.common import Connection, insert_for, newest_first
from keystile.storage.sql.console import SqlConsoleSessions
from keystile.storage.sql.key_inserts import insert_postgres, insert_sqlite
from keystile.storage.sql.key_rows import (
    KEY_BY_DIGEST,
    KEY_COLUMNS,
    key_from_row,
    key_with_digest,
    mutable_key_fields,
)
from keystile.storage.sql.operators import SqlOperatorKeys
from keystile.storage.sql.quotas import SqlQuotaCounters
from keystile.storage.sql.tables import accounts, api_keys, idempotency_records
from keystile.storage.sql.usage import SqlUsage
from keystile.storage.sql.webhooks import SqlWebhooks


def _account(row: sa.Row[Any]) -> Account:
    return Account(
        id=row.id,
        name=row.name,
        plan=Plan(row.plan),
        created_at=row.created_at,
        status=AccountStatus(row.status),
        metadata=dict(row.metadata or {}),
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
                status=account.status.value,
                metadata=dict(account.metadata),
            )
        )

    async def get(self, account_id: str) -> Account | None:
        result = await self._conn.execute(sa.select(accounts).where(accounts.c.id == account_id))
        row = result.first()
        return None if row is None else _account(row)

    async def update(self, account: Account) -> None:
        await self._conn.execute(
            accounts.update()
            .where(accounts.c.id == account.id)
            .values(
                name=account.name,
                plan=account.plan.value,
                status=account.status.value,
                metadata=dict(account.metadata),
            )
        )

    async def list(
        self,
        *,
        limit: int,
        status: AccountStatus | None = None,
        starting_after: Account | None = None,
    ) -> AccountPage:
        query = sa.select(accounts)
        if status is not None:
            query = query.where(accounts.c.status == status.value)
        rows = (
            await self._conn.execute(newest_first(query, accounts.c, starting_after, limit))
        ).all()
        return AccountPage([_account(row) for row in rows[:limit]], has_more=len(rows) > limit)

    async def count_active_unmetered_keys(self, account_id: str, now: int) -> int:
        c = api_keys.c
        query = sa.select(sa.func.count()).where(
            c.account_id == account_id,
            c.rate_limit_tier == Tier.UNMETERED.value,
            c.revoked_at.is_(None),
            sa.or_(c.expires_at.is_(None), c.expires_at > now),
        )
        return int((await self._conn.execute(query)).scalar_one())


def _status_condition(status: KeyStatus, now: int) -> Any:
    c = api_keys.c
    live = sa.and_(c.revoked_at.is_(None), sa.or_(c.expires_at.is_(None), c.expires_at > now))
    if status is KeyStatus.ACTIVE:
        return sa.and_(live, sa.not_(c.disabled))
    if status is KeyStatus.DISABLED:
        return sa.and_(live, c.disabled)
    if status is KeyStatus.REVOKED:
        return c.revoked_at.is_not(None)
    return sa.and_(c.revoked_at.is_(None), c.expires_at <= now)


class SqlKeys:
    def __init__(self, conn: Connection, webhooks: SqlWebhooks) -> None:
        self._conn = conn
        self._webhooks = webhooks
        # Keys whose cached copies are stale once this transaction commits
        # ("*": every key); the SQLite adapter tells the host's other
        # processes after the commit.
        self.invalidated: set[str] = set()

    async def insert(
        self, key: ApiKey, digest: str, name_key: str, audit: AuditEvent | None = None
    ) -> None:
        # ON CONFLICT on the partial unique index instead of catching an
        # IntegrityError: PostgreSQL aborts a transaction on an error, and the
        # idempotency layer still has to record the 409 in this transaction.
        # The statements are in key_inserts (the create path, kept short).
        driver = self._conn.sqlite_driver()
        if driver is not None:
            inserted = insert_sqlite(driver, key, digest, name_key, audit)
        else:
            inserted = await insert_postgres(self._conn, key, digest, name_key, audit)
        if not inserted.stored:
            raise DuplicateName()
        # The webhook outbox asks for these next, in this transaction.
        self._webhooks.remember_endpoints(key.account_id, inserted.endpoints)

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

    async def update(self, key: ApiKey, name_key: str, now: int) -> None:
        """Write ``key``'s mutable fields. Raises :class:`DuplicateName` when
        another active key of the account holds ``name_key`` (an expired
        holder gives it up); the transaction stays usable either way."""
        self.invalidated.add(key.id)
        statement = (
            api_keys.update()
            .where(api_keys.c.id == key.id)
            .values(name_key=name_key, **mutable_key_fields(key))
        )
        for attempt in (1, 2):
            try:
                async with self._conn.savepoint():
                    await self._conn.execute(statement)
                return
            except sa.exc.IntegrityError:
                if attempt == 2:
                    raise DuplicateName() from None
                await self.release_expired_name(key.account_id, name_key, now)

    def invalidate(self, key_id: str) -> None:
        """Mark ``key_id`` (``*``: every key) stale in caches once this commits."""
        self.invalidated.add(key_id)

    async def release_name(self, key_id: str) -> None:
        """The key stops holding its name (a rotation passes it on)."""
        await self._conn.execute(
            api_keys.update().where(api_keys.c.id == key_id).values(holds_name=False)
        )

    async def get(self, account_id: str | None, key_id: str) -> ApiKey | None:
        query = sa.select(*KEY_COLUMNS).where(api_keys.c.id == key_id)
        if account_id is not None:
            query = query.where(api_keys.c.account_id == account_id)
        row = (await self._conn.execute(query)).first()
        return None if row is None else key_from_row(row)

    async def list(
        self,
        account_id: str,
        *,
        now: int,
        limit: int,
        status: KeyStatus | None = None,
        starting_after: ApiKey | None = None,
        where: KeyFilter | None = None,
    ) -> KeyPage:
        c = api_keys.c
        query = sa.select(*KEY_COLUMNS).where(c.account_id == account_id)
        if status is not None:
            query = query.where(_status_condition(status, now))
        if where is not None:
            if where.name_key is not None:
                query = query.where(c.name_key == where.name_key)
            for name, value in where.metadata.items():
                query = query.where(c["metadata"][name].as_string() == value)
        rows = (await self._conn.execute(newest_first(query, c, starting_after, limit))).all()
        return KeyPage(keys=[key_from_row(row) for row in rows[:limit]], has_more=len(rows) > limit)

    async def revoke(self, key_id: str, now: int) -> None:
        self.invalidated.add(key_id)
        await self._conn.execute(
            api_keys.update()
            .where(api_keys.c.id == key_id)
            .values(revoked_at=sa.func.coalesce(api_keys.c.revoked_at, now), holds_name=False)
        )

    async def find_by_digest(self, digest: str) -> tuple[ApiKey, str] | None:
        """The key (with its account's suspension) and its stored digest."""
        row = (await self._conn.execute(KEY_BY_DIGEST, {"digest": digest})).first()
        return None if row is None else key_with_digest(row)

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
            insert_for(self._conn, idempotency_records)
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
    """The repositories of one connection (``storage.base.UnitOfWork``),
    each made on first use: most units of work touch two or three."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @cached_property
    def webhooks(self) -> SqlWebhooks:
        return SqlWebhooks(self._conn)

    @cached_property
    def accounts(self) -> SqlAccounts:
        return SqlAccounts(self._conn)

    @cached_property
    def keys(self) -> SqlKeys:
        return SqlKeys(self._conn, self.webhooks)

    @cached_property
    def idempotency(self) -> SqlIdempotency:
        return SqlIdempotency(self._conn)

    @cached_property
    def operator_keys(self) -> SqlOperatorKeys:
        return SqlOperatorKeys(self._conn)

    @cached_property
    def audit(self) -> SqlAuditEvents:
        return SqlAuditEvents(self._conn)

    @cached_property
    def usage(self) -> SqlUsage:
        return SqlUsage(self._conn)

    @cached_property
    def quotas(self) -> SqlQuotaCounters:
        return SqlQuotaCounters(self._conn)

    @cached_property
    def console_sessions(self) -> SqlConsoleSessions:
        return SqlConsoleSessions(self._conn)

    @property
    def invalidated(self) -> set[str]:
        """Ids of keys (``*``: all keys) whose cached copies this transaction makes stale."""
        return self.keys.invalidated | self.operator_keys.invalidated
