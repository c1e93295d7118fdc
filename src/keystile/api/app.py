"""``create_app(settings)``: the one place where the service is wired together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from keystile.api.deps import Services
from keystile.api.management import create_management_app
from keystile.api.observability import Metrics, configure_logging
from keystile.api.pipeline import Pipeline, Router
from keystile.clock import Clock, system_clock
from keystile.keys.service import KeyService
from keystile.keys.usage import UsageRecorder
from keystile.keys.verifier import KeyVerifier
from keystile.settings import Settings
from keystile.storage.sql import migrate
from keystile.storage.sql.database import open_storage

log = logging.getLogger("keystile")


def create_app(settings: Settings, *, clock: Clock = system_clock) -> Pipeline:
    """The ASGI application for ``settings``. Connects to nothing until started."""
    storage = open_storage(settings.database)
    keys = KeyService(storage, prefix=settings.key_prefix, clock=clock)
    usage = UsageRecorder(storage, settings.last_used_interval_seconds)
    verifier = KeyVerifier(
        storage,
        prefix=settings.key_prefix,
        clock=clock,
        cache_size=settings.key_cache_size,
        usage=usage,
    )
    keys.on_revoke(verifier.forget)
    metrics = Metrics()
    services = Services(
        settings=settings,
        storage=storage,
        keys=keys,
        verifier=verifier,
        usage=usage,
        metrics=metrics,
        clock=clock,
    )
    management = create_management_app(services)

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        await asyncio.to_thread(migrate.upgrade, settings.database)
        usage.start()
        try:
            yield
        finally:
            await usage.stop()
            await storage.close()

    return Pipeline(services=services, router=Router(management, hot={}), lifespan=lifespan)


def factory() -> Pipeline:
    """Entry point for uvicorn (``keystile serve``), in each worker process."""
    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)
