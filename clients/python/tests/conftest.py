"""Fixtures of the client's tests: one real ``keystile serve`` per session
(the server's own test helpers start it), an enterprise account whose admin
key is unmetered, and an operator key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from client_support import Keystile, start_keystile


@pytest.fixture(scope="session")
def keystile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keystile]:
    with start_keystile(tmp_path_factory.mktemp("keystile")) as server:
        yield server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path
