"""Storage backends for the contract suite: every backend runs the same tests
(``database_url`` is parametrized over SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from keystile.storage.base import Storage
from keystile.storage.sql import migrate
from keystile.storage.sql.database import open_storage


@pytest.fixture
async def storage(database_url: str) -> AsyncIterator[Storage]:
    await asyncio.to_thread(migrate.upgrade, database_url)
    backend = open_storage(database_url)
    yield backend
    await backend.close()
