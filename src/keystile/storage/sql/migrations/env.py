"""Alembic environment, driven programmatically by ``keystile.storage.sql.migrate``.

Concurrent starts are safe: on SQLite the whole upgrade runs in one
``BEGIN IMMEDIATE`` transaction, on PostgreSQL under an advisory lock, so a
second process waits and then finds the schema current.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from keystile.storage.sql.tables import metadata

# An arbitrary constant identifying keystile's migration lock.
_ADVISORY_LOCK_ID = 0x6B657973


def _run(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text(f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK_ID})"))
        context.run_migrations()


def _run_sqlite(url: str) -> None:
    engine = sa.create_engine(url)

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: object, _record: object) -> None:
        dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
        dbapi_connection.execute("PRAGMA busy_timeout = 30000")  # type: ignore[attr-defined]
        dbapi_connection.execute("PRAGMA journal_mode = WAL")  # type: ignore[attr-defined]

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


async def _run_postgres(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


def main() -> None:
    url: str = context.config.attributes["url"]
    if url.startswith("sqlite"):
        _run_sqlite(url)
    else:
        asyncio.run(_run_postgres(url))


main()
