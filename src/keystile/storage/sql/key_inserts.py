"""Storing a new key: the statements of the create path, built once.

A create writes the key, its audit event, and (when an endpoint of the
account subscribes) a webhook event, all in one transaction. This module
does the first two, and reads the account's enabled endpoints for the third,
with as little work per create as each database allows:

- PostgreSQL: one statement, one round trip. The key is inserted in a
  ``WITH`` clause (``ON CONFLICT DO NOTHING`` on the active-name index), the
  audit row is inserted from that clause's ``RETURNING`` (so a refused key
  leaves no event), and the same statement returns the endpoints.
- SQLite cannot modify data inside ``WITH``, but runs in this process: the
  three statements go straight to the ``sqlite3`` connection of the
  transaction, a few µs each, instead of through SQLAlchemy's statement
  building and compilation (which cost more than SQLite itself).

The statements are SQLAlchemy constructs with bound parameters, built and
(for SQLite) compiled at import: constants, no connection.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect

from keystile.audit.models import AuditEvent
from keystile.keys.models import ApiKey
from keystile.storage.sql.audit import audit_row
from keystile.storage.sql.common import Connection
from keystile.storage.sql.key_rows import mutable_key_fields
from keystile.storage.sql.tables import api_keys, audit_events
from keystile.storage.sql.webhooks import ENABLED_ENDPOINTS

_KEY_COLUMNS = tuple(c.name for c in api_keys.c if c.name not in ("revoked_at", "last_used_at"))
_AUDIT_COLUMNS = tuple(c.name for c in audit_events.c)
_AUDIT = "audit_"  # the audit row's parameters, beside the key's in one statement


def _key_insert(dialect: Any) -> Any:
    return (
        dialect.insert(api_keys)
        .values({name: sa.bindparam(name, type_=api_keys.c[name].type) for name in _KEY_COLUMNS})
        .on_conflict_do_nothing(
            index_elements=[api_keys.c.account_id, api_keys.c.name_key],
            index_where=api_keys.c.holds_name,
        )
    )


def _postgres_statement(with_audit: bool) -> sa.Select[Any]:
    inserted = _key_insert(postgresql).returning(api_keys.c.id).cte("inserted_key")
    endpoints = ENABLED_ENDPOINTS.subquery("endpoints")
    # "id events" strings: an id holds no space, events are space-separated.
    pairs = sa.func.array_agg(endpoints.c.id + " " + endpoints.c.events)
    statement = sa.select(
        sa.select(sa.func.count()).select_from(inserted).scalar_subquery().label("inserted"),
        sa.select(pairs).scalar_subquery().label("endpoints"),
    )
    if not with_audit:
        return statement
    # One audit row per row the key's INSERT returned: none when it was refused.
    values = sa.select(
        *(
            sa.bindparam(_AUDIT + name, type_=audit_events.c[name].type).label(name)
            for name in _AUDIT_COLUMNS
        )
    ).select_from(inserted)
    audit = audit_events.insert().from_select(list(_AUDIT_COLUMNS), values).cte("audit")
    return statement.add_cte(audit)


def _sqlite_sql(statement: Any) -> str:
    return str(statement.compile(dialect=sqlite_dialect.dialect(paramstyle="named")))


POSTGRES_INSERT = _postgres_statement(with_audit=True)
POSTGRES_INSERT_WITHOUT_AUDIT = _postgres_statement(with_audit=False)
SQLITE_INSERT_KEY = _sqlite_sql(_key_insert(sqlite_dialect))
SQLITE_INSERT_AUDIT = _sqlite_sql(
    audit_events.insert().values({name: sa.bindparam(name) for name in _AUDIT_COLUMNS})
)
SQLITE_ENDPOINTS = _sqlite_sql(ENABLED_ENDPOINTS)


def key_values(key: ApiKey, digest: str, name_key: str) -> dict[str, Any]:
    """The new key's row, column by column (``metadata`` a dict: the SQLite
    path writes it as JSON text itself)."""
    return {
        "id": key.id,
        "account_id": key.account_id,
        "digest": digest,
        "name_key": name_key,
        "holds_name": True,
        "created_at": key.created_at,
        "limit_key": key.limit_key or None,
        **mutable_key_fields(key),
    }


@dataclass(frozen=True, slots=True)
class Inserted:
    """What the insert did: whether the key was stored, and the account's
    enabled endpoints ``(id, events)`` as the same transaction saw them."""

    stored: bool
    endpoints: list[tuple[str, str]]


async def insert_postgres(
    conn: Connection, key: ApiKey, digest: str, name_key: str, audit: AuditEvent | None
) -> Inserted:
    """One statement: the key, its audit event (when given, and only if the
    key was stored), and the endpoints."""
    params = key_values(key, digest, name_key)
    if audit is None:  # a rotation writes its own event
        result = await conn.execute(POSTGRES_INSERT_WITHOUT_AUDIT, params)
    else:
        params.update({_AUDIT + name: value for name, value in audit_row(audit).items()})
        result = await conn.execute(POSTGRES_INSERT, params)
    row = result.one()
    pairs = (pair.partition(" ") for pair in row.endpoints or ())
    return Inserted(bool(row.inserted), [(endpoint_id, events) for endpoint_id, _, events in pairs])


def insert_sqlite(
    driver: sqlite3.Connection,
    key: ApiKey,
    digest: str,
    name_key: str,
    audit: AuditEvent | None,
) -> Inserted:
    """The same on the transaction's ``sqlite3`` connection, in three
    statements (SQLite has no data-modifying ``WITH``)."""
    params = key_values(key, digest, name_key)
    params["metadata"] = json.dumps(params["metadata"])
    if driver.execute(SQLITE_INSERT_KEY, params).rowcount != 1:
        return Inserted(False, [])
    if audit is not None:
        row = audit_row(audit)
        row["changes"] = json.dumps(row["changes"])
        driver.execute(SQLITE_INSERT_AUDIT, row)
    endpoints = driver.execute(SQLITE_ENDPOINTS, {"account_id": key.account_id}).fetchall()
    return Inserted(True, [(endpoint_id, events) for endpoint_id, events in endpoints])
