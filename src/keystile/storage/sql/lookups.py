"""PostgreSQL's per-request reads, a key by its digest, straight on asyncpg.

With the key cache off (or missed), every request looks its key up. Through
SQLAlchemy that lookup cost ≈ 1 ms of the worker's CPU (building and
compiling the select, a pool checkout through the greenlet adaption, result
processing), and its pool (``pool_size`` plus as many again of overflow,
closed on return) opened and closed ≈ 50 connections a second under 64
concurrent requests, each a PostgreSQL backend forked and torn down.

Here the same statements (rendered once from the same SQLAlchemy selects,
and mapped to the same models by the same functions) run as prepared
statements on an asyncpg pool of their own, whose connections are reused
(asyncpg replaces one after 50,000 statements or 5 idle minutes).
Nothing else changes: a reader's other statements, and every transaction,
still run through SQLAlchemy, checked out only when one is executed.

The guarantees are those of the SQLAlchemy path: a lookup that gets no
answer within the database timeout, or whose connection fails, raises
:class:`StorageUnavailable` (503); its connection is closed at once, a lost
connection has the pool replace all of its connections on their next use,
and the next request gets a new one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cached_property
from types import SimpleNamespace
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

from keystile.keys.models import ApiKey, OperatorKey
from keystile.storage.base import StorageUnavailable
from keystile.storage.sql.common import (
    LOST_SQLSTATES,
    UNAVAILABLE_SQLSTATES,
    Connection,
    first_line,
    sqlstate_in,
)
from keystile.storage.sql.key_rows import KEY_BY_DIGEST, key_with_digest
from keystile.storage.sql.operators import (
    OPERATOR_KEY_BY_DIGEST,
    SqlOperatorKeys,
    operator_key_with_digest,
)
from keystile.storage.sql.repositories import SqlKeys, SqlUnitOfWork
from keystile.storage.sql.webhooks import SqlWebhooks

# Options of SQLAlchemy's asyncpg dialect that asyncpg.connect does not take.
_DIALECT_ONLY = (
    "async_creator_fn",
    "prepared_statement_cache_size",
    "prepared_statement_name_func",
)


def _rendered(statement: sa.Select[Any], dialect: sa.Dialect) -> str:
    """``statement`` as PostgreSQL text, ``$1`` for its one parameter."""
    return str(statement.compile(dialect=dialect))


async def _prepare_connection(conn: asyncpg.Connection) -> None:
    # JSON columns decode to Python values, as SQLAlchemy's JSON type does.
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset on release: these connections only ever run the
    statements above, outside transactions, and set no session state.
    (asyncpg's default reset is a round trip per release.)"""


def _connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says this connection is gone (cut, or its server
    stopped): it, and the pool's others, must be replaced."""
    if isinstance(exc, asyncpg.PostgresError):
        return sqlstate_in(exc, LOST_SQLSTATES)
    return isinstance(exc, asyncpg.InterfaceError | OSError | TimeoutError)


def _unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot serve now (503): a lost
    connection, or a server refusing for want of resources (too many
    connections), as opposed to an answer about the statement (a bug, 500)."""
    return _connection_lost(exc) or sqlstate_in(exc, UNAVAILABLE_SQLSTATES)


class DigestLookups:
    """Keys by digest on a pool of ``pool_size`` asyncpg connections, opened
    on first use to ``engine``'s URL (the same server, reached the same
    way), with ``timeout`` seconds to connect and to answer each statement,
    and statements rendered by ``engine``'s dialect. After :meth:`close`
    every lookup raises :class:`StorageUnavailable`."""

    def __init__(self, engine: AsyncEngine, *, timeout: float, pool_size: int) -> None:
        _, connect_args = engine.dialect.create_connect_args(engine.url)
        self._connect_args = {k: v for k, v in connect_args.items() if k not in _DIALECT_ONLY}
        self._key_by_digest = _rendered(KEY_BY_DIGEST, engine.dialect)
        self._operator_key_by_digest = _rendered(OPERATOR_KEY_BY_DIGEST, engine.dialect)
        self._timeout = timeout
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    # The rows become namespaces: their columns read as attributes, as a
    # SQLAlchemy row's do, so one mapping function serves both (and a
    # namespace reads 5 times faster than a record subclass with __getattr__).

    async def key(self, digest: str) -> tuple[ApiKey, str] | None:
        row = await self._fetch(self._key_by_digest, digest)
        return None if row is None else key_with_digest(SimpleNamespace(**row))

    async def operator_key(self, digest: str) -> tuple[OperatorKey, str] | None:
        row = await self._fetch(self._operator_key_by_digest, digest)
        return None if row is None else operator_key_with_digest(SimpleNamespace(**row))

    async def ping(self) -> None:
        """Raise :class:`StorageUnavailable` unless the pool's server answers
        a lookup (of the empty digest, which no key has)."""
        await self._fetch(self._key_by_digest, "")

    async def _fetch(self, statement: str, digest: str) -> Any:
        """The asyncpg row of ``statement`` for ``digest``, or None."""
        try:
            async with asyncio.timeout(self._timeout):
                pool = self._pool or await self._open()
                async with pool.acquire() as conn:
                    try:
                        # asyncpg prepares the statement once per connection
                        # and keeps it (its statement cache).
                        return await conn.fetchrow(statement, digest)
                    except asyncio.CancelledError:
                        # Timed out (or the request went away) mid-statement:
                        # the connection's state is unknown. Cut it now, with
                        # no goodbye to a server that may not answer.
                        conn.terminate()
                        raise
                    except Exception as exc:
                        if _connection_lost(exc):
                            conn.terminate()
                        raise
        except TimeoutError as exc:
            message = f"no answer from the database within {self._timeout} s"
            raise StorageUnavailable(message) from exc
        except Exception as exc:
            if not _unavailable(exc):
                raise  # an answer about the statement: a bug, not an outage (500)
            if self._pool is not None and _connection_lost(exc):
                # The server went away (a restart, a failover): the pool's
                # other connections are as dead as this one. Replace them all
                # on their next use, so that only the requests already under
                # way fail (SQLAlchemy invalidates its pool alike).
                await self._pool.expire_connections()
            raise StorageUnavailable(first_line(exc)) from exc

    async def _open(self) -> asyncpg.Pool:
        async with self._opening:
            if self._closed:  # a request still running at shutdown
                raise StorageUnavailable("the key lookups are closed (shutting down)")
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    **self._connect_args,
                    min_size=0,  # connects to nothing until the first lookup
                    max_size=self._pool_size,
                    timeout=self._timeout,  # to connect
                    command_timeout=self._timeout,  # and to answer, closing included
                    init=_prepare_connection,
                    reset=_keep_session,
                )
        return self._pool

    async def close(self) -> None:
        """Close the pool's connections; cut them if the server does not
        answer within the timeout."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            async with asyncio.timeout(self._timeout):
                await pool.close()
        except TimeoutError:
            pool.terminate()


class OnDemandConnection:
    """A reader's SQLAlchemy connection, checked out of ``engine`` only when
    a statement needs it: a reader that only looks a key up never takes one."""

    dialect_name = "postgresql"

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None

    async def _connection(self) -> AsyncConnection:
        if self._conn is None:
            self._conn = await self._engine.connect()
        return self._conn

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        return await (await self._connection()).execute(statement, parameters)

    def sqlite_driver(self) -> None:
        return None

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        async with (await self._connection()).begin_nested():
            yield

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


class _LookupKeys(SqlKeys):
    def __init__(self, conn: Connection, webhooks: SqlWebhooks, lookups: DigestLookups) -> None:
        super().__init__(conn, webhooks)
        self._lookups = lookups

    async def find_by_digest(self, digest: str) -> tuple[ApiKey, str] | None:
        return await self._lookups.key(digest)


class _LookupOperatorKeys(SqlOperatorKeys):
    def __init__(self, conn: Connection, lookups: DigestLookups) -> None:
        super().__init__(conn)
        self._lookups = lookups

    async def find_by_digest(self, digest: str) -> tuple[OperatorKey, str] | None:
        return await self._lookups.operator_key(digest)


class LookupReader(SqlUnitOfWork):
    """PostgreSQL's read-only unit of work: digest lookups through
    :class:`DigestLookups`, every other read through SQLAlchemy. Reads are
    in autocommit (each statement sees what was committed when it ran), so
    running them on two connections changes nothing a reader can see."""

    def __init__(self, conn: Connection, lookups: DigestLookups) -> None:
        super().__init__(conn)
        self._lookups = lookups

    @cached_property
    def keys(self) -> SqlKeys:
        return _LookupKeys(self._conn, self.webhooks, self._lookups)

    @cached_property
    def operator_keys(self) -> SqlOperatorKeys:
        return _LookupOperatorKeys(self._conn, self._lookups)
