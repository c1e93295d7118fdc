"""Apply the Alembic migrations (on ``keystile serve`` start and ``keystile migrate``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from keystile.storage.sql.database import async_url, prepare_sqlite_file, scheme_of, sqlite_path

_SCRIPTS = Path(__file__).parent / "migrations"


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to the newest schema (or to ``revision``).
    Idempotent, and safe to run from several processes at once."""
    if scheme_of(url) == "sqlite":
        path = sqlite_path(url)
        prepare_sqlite_file(path)
        driver_url = f"sqlite+pysqlite:///{path}"
    else:
        driver_url = async_url(url)
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.attributes["url"] = driver_url
    command.upgrade(config, revision)
