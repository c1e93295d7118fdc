"""What runs in each worker process of ``keystile serve``."""

from __future__ import annotations

import asyncio
import multiprocessing

from keystile.api.app import create_app
from keystile.api.observability import configure_logging
from keystile.api.pipeline import Pipeline
from keystile.server.watchdog import LoopWatchdog
from keystile.settings import Settings


def factory() -> Pipeline:
    """uvicorn's application factory, called on the worker's running event
    loop: the application, and the watchdog over that loop."""
    return application(asyncio.get_running_loop())


def application(loop: asyncio.AbstractEventLoop) -> Pipeline:
    """One worker process's application, with a :class:`LoopWatchdog` over
    ``loop`` (the loop that will serve it) started; the front ends'
    factories (uvicorn's above, granian's in ``granian_server``) call it."""
    settings = Settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    # The supervisor as it started this process: if it has died already,
    # the parent is now another process, and the watchdog sees that.
    supervisor = multiprocessing.parent_process()
    LoopWatchdog(
        loop,
        settings.loop_stall_seconds,
        supervisor=supervisor.pid if supervisor is not None else None,
    ).start()
    return app
