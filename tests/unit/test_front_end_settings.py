"""The front end's settings: read from the environment, bounded, consistent."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from keystile.server.protocol import HttpLimits
from keystile.settings import Settings


def test_the_limits_come_from_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "HTTP_HEADER_TIMEOUT_SECONDS": "3.5",
        "HTTP_KEEPALIVE_TIMEOUT_SECONDS": "65",
        "HTTP_MAX_HEAD_BYTES": "16384",
        "HTTP_MAX_HEADERS": "50",
        "HTTP_MAX_CONNECTIONS": "200",
    }.items():
        monkeypatch.setenv(f"KEYSTILE_{name}", value)
    assert HttpLimits.from_settings(Settings()) == HttpLimits(
        header_timeout=3.5,
        keepalive_timeout=65,
        max_head_bytes=16384,
        max_headers=50,
        max_connections=200,
    )


def test_the_defaults() -> None:
    assert HttpLimits.from_settings(Settings()) == HttpLimits()
    settings = Settings()
    assert (settings.loop_stall_seconds, settings.shutdown_timeout_seconds) == (10, 20)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("http_header_timeout_seconds", 0),
        ("http_keepalive_timeout_seconds", -1),
        ("http_max_head_bytes", 1023),
        ("http_max_headers", 7),
        ("http_max_connections", 0),
        ("loop_stall_seconds", 0),
        ("shutdown_timeout_seconds", 0),
    ],
)
def test_out_of_range_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, field: str, value: float
) -> None:
    monkeypatch.setenv(f"KEYSTILE_{field.upper()}", str(value))
    with pytest.raises(ValidationError, match=field):
        Settings()


def test_on_sqlite_the_stall_timeout_exceeds_the_database_timeout() -> None:
    """SQLite waits for another process's write lock on the event loop."""
    with pytest.raises(ValidationError, match="KEYSTILE_LOOP_STALL_SECONDS"):
        Settings(loop_stall_seconds=5, database_timeout_seconds=5)
    assert Settings(loop_stall_seconds=5.5, database_timeout_seconds=5).loop_stall_seconds == 5.5
    on_postgres = Settings(
        database_url="postgresql://u@127.0.0.1/db", loop_stall_seconds=2, database_timeout_seconds=5
    )
    assert on_postgres.loop_stall_seconds == 2


def test_the_server_is_uvicorn_unless_granian_is_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().server == "uvicorn"
    monkeypatch.setenv("KEYSTILE_SERVER", "granian")
    assert Settings().server == "granian"
    monkeypatch.setenv("KEYSTILE_SERVER", "hypercorn")
    with pytest.raises(ValidationError):
        Settings()


def test_granian_gets_the_header_timeout_and_the_head_size() -> None:
    from keystile.server.granian_server import http1_settings

    settings = http1_settings(Settings(http_header_timeout_seconds=2.5, http_max_head_bytes=65_536))
    assert (settings.header_read_timeout, settings.max_buffer_size) == (2500, 65_536)
    assert settings.keep_alive
