"""What runs in each worker process of ``keystile serve``."""

from __future__ import annotations

import asyncio
import gc
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
    tune_garbage_collection()
    return app


GC_THRESHOLDS = (20_000, 10, 10)
"""The collector's thresholds in a worker (CPython's defaults: 700, 10, 10)."""


def tune_garbage_collection() -> None:
    """Collect less often in a serving worker: what start-up made (modules,
    the application, its settings) is moved out of the collector's sight
    (``gc.freeze``), and a young-generation collection runs every 20,000
    net allocations instead of 700. A request allocates a few hundred
    short-lived objects, nearly all freed by reference counting, so the
    default thresholds ran a collection every couple of requests for
    nothing: about 4 % of the CPU of ``POST /v1/keys/verify``
    (docs/benchmarks.md, issue 19). The older generations keep CPython's
    ratios (10, 10), so a full collection still follows at most every
    2,000,000 net allocations: the cycles of failed requests (exceptions,
    tracebacks, cancelled tasks) are reclaimed as surely as before, only
    later. Resident memory under verifications is measured by ``make
    bench`` (1,000,000 requests)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
