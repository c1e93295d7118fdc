"""``keystile serve``: one listening socket, worker processes under a supervisor.

The workers always run under uvicorn's supervisor (``Multiprocess``), even
one: it starts a new worker when one dies, which is how a worker killed by
its watchdog (``keystile.server.watchdog``), by a crash or by the kernel's
OOM killer comes back. On SIGTERM or SIGINT it stops them: each worker stops
accepting, lets the requests in progress finish for up to
``KEYSTILE_SHUTDOWN_TIMEOUT_SECONDS``, runs the application's shutdown
(flushing ``last_used_at``) and exits; a worker still alive
:data:`STOP_GRACE_SECONDS` after that is killed, so ``keystile serve`` always
stops in bounded time.
"""

from __future__ import annotations

import logging
import math
import resource
import socket
import sys
import time
from dataclasses import replace

from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess

from keystile.api.observability import uvicorn_log_config
from keystile.server.protocol import HttpLimits, KeystileHttpProtocol, ServerConfig
from keystile.settings import Settings

log = logging.getLogger("keystile.server")

WORKER_FACTORY = "keystile.server.worker:factory"

STOP_GRACE_SECONDS = 10.0
"""After the shutdown timeout, how long a worker may take to run the
application's shutdown before it is killed."""

FILES_PER_CONNECTION = 2  # the client's socket, and an upstream's when proxying
FILES_RESERVED = 256  # the listening socket, database, Redis, logs, Python itself


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT; exit with uvicorn's start-up failure
    status (3) when a worker cannot start."""
    limits = HttpLimits.from_settings(settings)
    limits = replace(limits, max_connections=affordable_connections(limits.max_connections))
    config = ServerConfig(
        WORKER_FACTORY,
        limits=limits,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http=KeystileHttpProtocol,
        ws="none",  # keystile serves no WebSocket: an Upgrade is ignored
        log_config=uvicorn_log_config(settings.log_level),
        access_log=False,
        proxy_headers=False,  # client addresses come from the socket (see KEYSTILE_TRUSTED_PROXIES)
        server_header=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_seconds),
    )
    supervisor = Supervisor(
        config,
        sockets=[config.bind_socket()],
        stop_timeout=settings.shutdown_timeout_seconds + STOP_GRACE_SECONDS,
    )
    supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        sys.exit(STARTUP_FAILURE)


class Supervisor(Multiprocess):
    """uvicorn's supervisor, with a bounded stop."""

    def __init__(
        self, config: ServerConfig, sockets: list[socket.socket], *, stop_timeout: float
    ) -> None:
        super().__init__(config, sockets)
        self._stop_timeout = stop_timeout

    def join_all(self) -> None:
        deadline = time.monotonic() + self._stop_timeout
        for process in self.processes:
            process.process.join(max(0.0, deadline - time.monotonic()))
            if process.process.exitcode is None:
                log.error("worker %s did not stop in time: killing it", process.pid)
                process.kill()
                process.process.join()


def affordable_connections(max_connections: int) -> int:
    """The connection cap that the open-file limit allows, per worker.

    Past the limit, the event loop (libuv) accepts each new connection and
    closes it at once, so every client, ``/healthz`` included, is turned
    away. The soft limit is raised to the hard limit when the cap needs
    more; when even that is too low, the cap is lowered (with a warning) so
    that the cap, which closes idle connections to make room, is reached
    first."""
    needed = max_connections * FILES_PER_CONNECTION + FILES_RESERVED
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    target = needed if hard == resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    if soft >= needed:
        return max_connections
    affordable = max(1, (soft - FILES_RESERVED) // FILES_PER_CONNECTION)
    log.warning(
        "the open-file limit (%d) allows %d connections per worker, fewer than "
        "KEYSTILE_HTTP_MAX_CONNECTIONS=%d: using %d (raise the limit with ulimit -n "
        "or LimitNOFILE= to keep the setting)",
        soft,
        affordable,
        max_connections,
        affordable,
    )
    return affordable
