"""What runs in each worker process of ``keystile serve``."""

from __future__ import annotations

from keystile.api.app import create_app
from keystile.api.observability import configure_logging
from keystile.api.pipeline import Pipeline
from keystile.settings import Settings


def factory() -> Pipeline:
    """uvicorn's application factory, called in each worker process."""
    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)
