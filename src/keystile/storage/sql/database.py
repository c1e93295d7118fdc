"""Opening the SQL databases, and the ``Storage`` implementations over them.

SQLite runs through the synchronous ``sqlite3`` driver *on the event loop*: a
point query costs ≈ 9 µs there, against ≈ 100 µs of thread hand-off per query
with aiosqlite (see the performance notes). That is only safe because no
SQLite call ever waits on another coroutine: writers take an ``asyncio.Lock``
before ``BEGIN IMMEDIATE``, so a write transaction that spans ``await``s (the
idempotency layer keeps one open around a handler) never makes another
coroutine of this process block inside SQLite. Other processes on the same
file wait at most ``busy_timeout``.

PostgreSQL runs through SQLAlchemy's asyncio engine on asyncpg, but for the
per-request key lookups, which run on asyncpg directly (``lookups.py``).
"""

from __future__ import annotations

import asyncio
import mmap
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql import Executable

from keystile.errors import ConfigurationError
from keystile.storage.base import StorageUnavailable
from keystile.storage.sql.common import UNAVAILABLE_SQLSTATES, first_line, sqlstate_in
from keystile.storage.sql.lookups import DigestLookups, LookupReader, OnDemandConnection
from keystile.storage.sql.repositories import SqlUnitOfWork

_UNAVAILABLE = (
    sa.exc.OperationalError,
    # Statements run on the sqlite3 connection itself (key_inserts, BEGIN)
    # raise the driver's error, which SQLAlchemy would have wrapped as above.
    sqlite3.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,
    sa.exc.DisconnectionError,
    OSError,
    TimeoutError,
)


def _is_unavailable(exc: sa.exc.DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    return sqlstate_in(exc.orig, UNAVAILABLE_SQLSTATES)


def _unavailable(exc: BaseException) -> StorageUnavailable | None:
    """ "The database is not there" as :class:`StorageUnavailable` (→ 503);
    None for anything else (a bug, → 500)."""
    if isinstance(exc, _UNAVAILABLE) or (
        isinstance(exc, sa.exc.DBAPIError) and _is_unavailable(exc)
    ):
        return StorageUnavailable(first_line(exc))
    return None


@asynccontextmanager
async def _translate_failures() -> AsyncIterator[None]:
    """Raise :func:`_unavailable`'s answer in place of the error it names."""
    try:
        yield
    except Exception as exc:
        unavailable = _unavailable(exc)
        if unavailable is None:
            raise
        raise unavailable from exc


InvalidationListener = Callable[[frozenset[str]], Awaitable[None]]


async def _tell(listeners: list[InvalidationListener], ids: set[str]) -> None:
    frozen = frozenset(ids)
    for listener in listeners:
        await listener(frozen)


class _SyncConnection:
    """The async face of a synchronous SQLAlchemy connection (see module doc)."""

    dialect_name = "sqlite"

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        return self._conn.execute(statement, parameters)

    def sqlite_driver(self) -> sqlite3.Connection | None:
        return cast(sqlite3.Connection, self._conn.connection.driver_connection)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        with self._conn.begin_nested():
            yield


class _AsyncConnection:
    dialect_name = "postgresql"

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        return await self._conn.execute(statement, parameters)

    def sqlite_driver(self) -> sqlite3.Connection | None:
        return None

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        async with self._conn.begin_nested():
            yield


def _sqlite_engine(path: Path, begin: str, busy_timeout_ms: int) -> sa.Engine:
    engine = sa.create_engine(
        f"sqlite+pysqlite:///{path}",
        connect_args={"check_same_thread": False},
        pool_size=2,
        max_overflow=8,
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        # Take transaction control away from the sqlite3 module (its legacy
        # mode would BEGIN lazily and DEFERRED); we emit BEGIN ourselves below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk before we answer; WAL + FULL still commits
        # ≈ 5,000 times per second on this class of machine.
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        # On the driver: SQLAlchemy's execution machinery for a fixed BEGIN
        # cost ≈ 5 % of a create.
        conn.connection.driver_connection.execute(begin)  # type: ignore[union-attr]

    return engine


class RevocationCounter:
    """An 8-byte counter in a memory-mapped file beside the database, shared
    by every process on the host: each revocation increments it after its
    commit, and a verifier compares it (≈ 0.2 µs) before trusting its cache.
    Increments happen under SQLite's write lock, so none is lost."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._map: mmap.mmap | None = None

    def _mapped(self) -> mmap.mmap:
        if self._map is None:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if os.fstat(descriptor).st_size < 8:
                    os.ftruncate(descriptor, 8)
                self._map = mmap.mmap(descriptor, 8)
            finally:
                os.close(descriptor)
        return self._map

    def read(self) -> int:
        return int.from_bytes(self._mapped()[:8], "little")

    def bump(self) -> None:
        mapped = self._mapped()
        mapped[:8] = ((int.from_bytes(mapped[:8], "little") + 1) % 2**64).to_bytes(8, "little")

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None


def private_directory(path: Path) -> None:
    """Create ``path`` (and its parents) readable by this user only (0700).
    An existing directory is left as it is: it may be shared on purpose."""
    if not path.exists():
        path.mkdir(parents=True, mode=0o700, exist_ok=True)
        path.chmod(0o700)  # mkdir's mode is filtered by the umask


def prepare_sqlite_file(path: Path) -> None:
    """The embedded database file, created 0600 before SQLite opens it, so
    the database and its -wal/-shm files (SQLite gives them the database's
    mode) are never readable by other users; a looser mode is tightened."""
    private_directory(path.parent)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(descriptor).st_mode & 0o077:
            os.fchmod(descriptor, 0o600)
    finally:
        os.close(descriptor)


class SqliteStorage:
    """The embedded default: one SQLite file in WAL mode."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        prepare_sqlite_file(path)
        # IMMEDIATE takes the write lock at BEGIN, so a transaction never fails
        # half-way with SQLITE_BUSY when it upgrades from reading to writing.
        self._writer = _sqlite_engine(path, "BEGIN IMMEDIATE", busy_timeout_ms)
        self._reader = _sqlite_engine(path, "BEGIN", busy_timeout_ms)
        self._write_lock = asyncio.Lock()
        self._writer_task: asyncio.Task[object] | None = None
        # The one connection every write transaction of this process runs on:
        # the lock above lets only one at a time, so a pool checkout and
        # check-in per transaction would buy nothing (and cost ≈ 10 % of a
        # create). Opened at the first write.
        self._write_connection: sa.Connection | None = None
        self._revocations = RevocationCounter(path.with_name(path.name + "-revocations"))
        self._seen_revocations: int | None = None
        self._invalidation_listeners: list[InvalidationListener] = []

    def on_invalidated(self, listener: InvalidationListener) -> None:
        """Call ``listener(ids)`` after each commit that made cached keys stale."""
        self._invalidation_listeners.append(listener)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlUnitOfWork]:
        task = asyncio.current_task()
        if task is not None and task is self._writer_task:
            # Waiting for our own lock would hang forever: fail loudly instead.
            raise RuntimeError("nested write transaction: use the request's transaction")
        async with self._write_lock, _translate_failures():
            self._writer_task = task
            try:
                if self._write_connection is None:
                    self._write_connection = self._writer.connect()
                conn = self._write_connection
                with conn.begin():
                    uow = SqlUnitOfWork(_SyncConnection(conn))
                    yield uow
                if uow.invalidated:
                    # Committed: tell every other process before anyone is told.
                    self._revocations.bump()
                    await _tell(self._invalidation_listeners, uow.invalidated)
            finally:
                self._writer_task = None

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[SqlUnitOfWork]:
        async with _translate_failures():
            with self._reader.begin() as conn:
                yield SqlUnitOfWork(_SyncConnection(conn))

    async def changed_elsewhere(self) -> bool:
        """True when any process (this one included) revoked a key since the
        last call: only a revocation can make a cached key wrong (keys are
        otherwise immutable, and expiry is checked on every request)."""
        value = self._revocations.read()
        changed = value != self._seen_revocations
        self._seen_revocations = value
        return changed

    async def ping(self) -> None:
        async with _translate_failures():
            with self._reader.connect() as conn:
                conn.execute(sa.text("SELECT 1 FROM api_keys LIMIT 1"))

    async def close(self) -> None:
        self._revocations.close()
        if self._write_connection is not None:
            self._write_connection.close()
            self._write_connection = None
        self._writer.dispose()
        self._reader.dispose()


def _discard_timed_out_connections(context: sa.engine.ExceptionContext) -> None:
    """A statement that timed out leaves its connection in an unknown state:
    treat it as dead and cut it at once. Otherwise SQLAlchemy would first
    send a ROLLBACK, then try a graceful close (2 s), each waiting on a
    server that does not answer, and the client would wait for a multiple
    of the configured timeout."""
    if not isinstance(context.original_exception, TimeoutError | OSError):
        return
    context.is_disconnect = True
    pooled = context.connection.connection if context.connection is not None else None
    driver = getattr(pooled, "driver_connection", None)
    if driver is not None:
        driver.terminate()  # asyncpg: close the socket without a goodbye


class _Reading(AbstractAsyncContextManager[LookupReader]):
    """:meth:`PostgresStorage.reader`, a class rather than a generator: it
    wraps the lookup of every request whose key is not cached."""

    __slots__ = ("_conn", "_engine", "_lookups")

    def __init__(self, engine: AsyncEngine, lookups: DigestLookups) -> None:
        self._engine = engine
        self._lookups = lookups

    async def __aenter__(self) -> LookupReader:
        self._conn = OnDemandConnection(self._engine)
        return LookupReader(self._conn, self._lookups)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: object
    ) -> None:
        # The checks of _translate_failures, without a generator per reader.
        try:
            await self._conn.close()
        except Exception as failure:
            unavailable = _unavailable(failure)
            if unavailable is None:
                raise
            raise unavailable from failure
        unavailable = None if exc is None else _unavailable(exc)
        if unavailable is not None:
            raise unavailable from exc


class PostgresStorage:
    """Production: PostgreSQL through asyncpg.

    Reads use a separate engine in autocommit mode: a point lookup is one
    round trip, with no BEGIN/ROLLBACK around it. A key's lookup by digest
    (every request whose key is not cached) runs as a prepared statement on
    an asyncpg pool of its own (:class:`DigestLookups`), and a reader checks
    a SQLAlchemy connection out only for its other statements. Connections
    are not pinged on checkout; a connection found dead fails its request
    with 503 and is replaced, so the next request works again.
    """

    def __init__(self, url: str, *, timeout_seconds: float = 5.0, pool_size: int = 10) -> None:
        self.url = url
        options: dict[str, Any] = {
            "pool_size": pool_size,
            "max_overflow": pool_size,
            "pool_timeout": timeout_seconds,
            "connect_args": {"timeout": timeout_seconds, "command_timeout": timeout_seconds},
        }
        # The write pool keeps what it opens (up to 2 × pool_size): with
        # overflow connections, a busy moment closed them on check-in and the
        # next requests opened new ones, a PostgreSQL backend started per
        # connection (≈ 10 a second under a stream of creates). The key
        # lookups, most of the reads, have a pool of their own; the reader's
        # burst allowance went to it, so a process still opens at most
        # 4 × pool_size connections.
        writes = {**options, "pool_size": 2 * pool_size, "max_overflow": 0}
        self._writer: AsyncEngine = create_async_engine(async_url(url), **writes)
        self._reader: AsyncEngine = create_async_engine(
            async_url(url),
            isolation_level="AUTOCOMMIT",
            pool_reset_on_return=None,
            **{**options, "max_overflow": 0},
        )
        self._lookups = DigestLookups(self._reader, timeout=timeout_seconds, pool_size=pool_size)
        self._timeout = timeout_seconds
        self._invalidation_listeners: list[InvalidationListener] = []
        for engine in (self._writer, self._reader):
            event.listen(engine.sync_engine, "handle_error", _discard_timed_out_connections)

    def on_invalidated(self, listener: InvalidationListener) -> None:
        """Call ``listener(ids)`` after each commit that made cached keys stale."""
        self._invalidation_listeners.append(listener)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlUnitOfWork]:
        async with _translate_failures(), self._writer.begin() as conn:
            uow = SqlUnitOfWork(_AsyncConnection(conn))
            yield uow
        if uow.invalidated:
            await _tell(self._invalidation_listeners, uow.invalidated)

    def reader(self) -> _Reading:
        return _Reading(self._reader, self._lookups)

    async def changed_elsewhere(self) -> bool:
        return False  # other instances' revocations arrive through Redis (or the cache TTL)

    async def ping(self) -> None:
        async with (
            _translate_failures(),
            asyncio.timeout(self._timeout),
            self._reader.connect() as conn,
        ):
            await conn.execute(sa.text("SELECT 1 FROM api_keys LIMIT 1"))
        await self._lookups.ping()  # the path of every request whose key is not cached

    async def close(self) -> None:
        await self._lookups.close()
        await self._writer.dispose()
        await self._reader.dispose()


def sqlite_path(url: str) -> Path:
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == prefix or ":memory:" in url:
        raise ConfigurationError(
            f"KEYSTILE_DATABASE_URL {url!r}: use sqlite:///path/to/file.db (a file; "
            "an in-memory database cannot be shared between connections)"
        )
    return Path(url[len(prefix) :])


def async_url(url: str) -> str:
    """``postgresql://…`` → ``postgresql+asyncpg://…`` (the driver we ship)."""
    return "postgresql+asyncpg://" + url.partition("://")[2]


def _open_sqlite(url: str, timeout_seconds: float, pool_size: int) -> SqliteStorage:
    return SqliteStorage(sqlite_path(url), busy_timeout_ms=int(timeout_seconds * 1000))


def _open_postgres(url: str, timeout_seconds: float, pool_size: int) -> PostgresStorage:
    return PostgresStorage(url, timeout_seconds=timeout_seconds, pool_size=pool_size)


ADAPTERS: dict[str, Callable[[str, float, int], SqliteStorage | PostgresStorage]] = {
    "sqlite": _open_sqlite,
    "postgresql": _open_postgres,
    "postgres": _open_postgres,
}


def scheme_of(url: str) -> str:
    scheme = url.partition("://")[0].split("+")[0]
    if scheme not in ADAPTERS:
        raise ConfigurationError(
            f"KEYSTILE_DATABASE_URL: unsupported scheme {scheme!r} "
            f"(supported: {', '.join(sorted(ADAPTERS))})"
        )
    return scheme


def open_storage(
    url: str, *, timeout_seconds: float = 5.0, pool_size: int = 10
) -> SqliteStorage | PostgresStorage:
    """The storage adapter for ``url``'s scheme. Connects to nothing yet."""
    return ADAPTERS[scheme_of(url)](url, timeout_seconds, pool_size)
