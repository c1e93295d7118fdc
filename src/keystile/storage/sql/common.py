"""What every SQL repository shares: the connection it runs on, dialect
differences, cursor pagination."""

from __future__ import annotations

import sqlite3
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.sql import Executable

# SQLSTATE classes that mean "the server cannot serve now", not "your query is
# wrong": connection exceptions, insufficient resources (too many
# connections), operator intervention (shutting down, starting up, crashed).
UNAVAILABLE_SQLSTATES = ("08", "53", "57P")
# Of those, the classes after which the connection itself is gone.
LOST_SQLSTATES = ("08", "57P")


def sqlstate_in(error: object, classes: tuple[str, ...]) -> bool:
    """Whether the driver error ``error`` (asyncpg's ``sqlstate``,
    psycopg's ``pgcode``) carries a SQLSTATE of one of ``classes``."""
    sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(classes)


def first_line(exc: BaseException) -> str:
    """``exc``'s message up to its first line break (drivers append
    details and hints on later lines), or its repr when it has none."""
    return (str(exc).splitlines() or [repr(exc)])[0]


class Connection(Protocol):
    @property
    def dialect_name(self) -> str: ...

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]: ...

    def sqlite_driver(self) -> sqlite3.Connection | None:
        """SQLite: the transaction's own ``sqlite3`` connection (a statement
        run on it is part of the transaction); None on other databases."""
        ...

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A nested transaction: rolled back alone when its block raises."""
        ...


def insert_for(conn: Connection, table: sa.Table) -> Any:
    """An INSERT that supports ``ON CONFLICT DO NOTHING`` on this dialect."""
    dialect = postgresql if conn.dialect_name == "postgresql" else sqlite
    return dialect.insert(table)


def newest_first(query: Any, columns: Any, starting_after: Any, limit: int) -> Any:
    """Cursor pagination, newest first: ``starting_after`` is the last item
    of the previous page (anything with ``created_at`` and ``id``)."""
    if starting_after is not None:
        query = query.where(
            sa.or_(
                columns.created_at < starting_after.created_at,
                sa.and_(
                    columns.created_at == starting_after.created_at,
                    columns.id < starting_after.id,
                ),
            )
        )
    return query.order_by(columns.created_at.desc(), columns.id.desc()).limit(limit + 1)
