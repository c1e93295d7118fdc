"""``keystile serve`` on granian (``KEYSTILE_SERVER=granian``): Rust HTTP,
keystile's application over granian's ASGI interface.

granian's own supervisor binds the socket and runs ``KEYSTILE_WORKERS``
worker processes; each builds the application and its loop watchdog in
:func:`factory`, as uvicorn's workers do in ``keystile.server.worker``. A
worker that dies is started again (``respawn_failed_workers``); granian
gives up and exits when the same worker dies twice within about 5 s (its
"crash loop" rule), which uvicorn's supervisor never does.

On SIGTERM or SIGINT granian stops accepting, lets the requests in progress
finish, runs the application's lifespan shutdown (flushing ``last_used_at``)
and exits; a worker still alive ``KEYSTILE_SHUTDOWN_TIMEOUT_SECONDS`` +
``STOP_GRACE_SECONDS`` after SIGTERM is killed (``workers_kill_timeout``).

keystile's front-end limits, on granian (:func:`http1_settings`):

- ``KEYSTILE_HTTP_HEADER_TIMEOUT_SECONDS``: ``header_read_timeout`` (hyper's,
  from the head's first byte);
- ``KEYSTILE_HTTP_MAX_HEAD_BYTES``: ``max_buffer_size``, hyper's read buffer,
  which bounds the head (hyper refuses a larger head with its own ``431``
  with an empty body, not keystile's §3 envelope);
- ``KEYSTILE_HTTP_MAX_HEADERS``: not settable; hyper's own limit (100) applies;
- ``KEYSTILE_HTTP_KEEPALIVE_TIMEOUT_SECONDS``: not settable (keep-alive is
  on or off); an idle connection is still closed, seemingly by the header
  timeout timing the wait for the next request;
- ``KEYSTILE_HTTP_MAX_CONNECTIONS``: ``backpressure`` (set to the cap)
  bounds what a worker serves at once, but idle connections are never closed
  to make room: past it new connections wait (1,100 idle sockets leave
  ``/healthz`` unanswered).

Responses that granian writes itself (a malformed request, an oversized
head) are hyper's, without keystile's §3 envelope or request id, and are not
in keystile's access log.

Client addresses come from the socket: granian reads no forwarded header
(``KEYSTILE_TRUSTED_PROXIES`` is applied by the application).

RSGI, granian's own interface, would save the ASGI message translation but
needs the application (a Starlette-free ASGI pipeline here) written against
it a second time; ASGI is used.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
from typing import Any

from keystile.api.observability import uvicorn_log_config
from keystile.api.pipeline import Pipeline
from keystile.server import worker
from keystile.server.supervisor import STOP_GRACE_SECONDS, affordable_connections
from keystile.settings import Settings

log = logging.getLogger("keystile.server")

WORKER_FACTORY = "keystile.server.granian_server:factory"


def serve(settings: Settings) -> None:
    """Serve on granian until SIGTERM or SIGINT."""
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.log import LogLevels
    from granian.server import Server

    # Workers start as fresh interpreters, as uvicorn's do, not as forks of
    # this process (which has run the migrations, its engine included).
    multiprocessing.set_start_method("spawn", force=True)
    server = Server(
        WORKER_FACTORY,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
        factory=True,
        http1_settings=http1_settings(settings),
        # The open-file limit raised as on uvicorn (it caps nothing here).
        backpressure=affordable_connections(settings.http_max_connections),
        log_level=LogLevels(settings.log_level),
        log_dictconfig=granian_log_config(settings.log_level),
        log_access=False,  # keystile writes its own access log
        respawn_failed_workers=True,
        respawn_interval=0.0,
        workers_kill_timeout=math.ceil(settings.shutdown_timeout_seconds + STOP_GRACE_SECONDS),
    )
    server.serve()


def http1_settings(settings: Settings) -> Any:
    """granian's HTTP/1 settings for keystile's front-end limits (those it has)."""
    from granian.http import HTTP1Settings

    return HTTP1Settings(
        header_read_timeout=math.ceil(settings.http_header_timeout_seconds * 1000),
        keep_alive=True,
        max_buffer_size=max(settings.http_max_head_bytes, 8192),
    )


def granian_log_config(level: str) -> dict[str, Any]:
    """keystile's JSON log lines for granian's own loggers too."""
    config = uvicorn_log_config(level)
    config["loggers"]["_granian"] = {"handlers": [], "propagate": True}
    config["loggers"]["granian.access"] = {
        "handlers": [],
        "propagate": False,
        "level": "CRITICAL",
    }
    return config


def factory() -> Pipeline:
    """granian's application factory, called in each worker before its event
    loop runs: the application, and the watchdog over that loop."""
    return worker.application(asyncio.get_event_loop())
