"""Storage backends for the contract suite: every backend runs the same tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keystile.storage.base import Storage
from keystile.storage.sql import migrate
from keystile.storage.sql.database import open_storage

BACKENDS = ["sqlite"]


@pytest.fixture(params=BACKENDS)
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    url = f"sqlite:///{tmp_path / 'contract.db'}"
    migrate.upgrade(url)
    backend = open_storage(url)
    yield backend
    await backend.close()
