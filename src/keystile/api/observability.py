"""Structured logs and Prometheus metrics (contract §8).

One JSON object per line; the access line per request carries the request
id, method, path, status, latency and key id. Secrets never reach a log: the
Authorization header and the query string are not logged, and anything in
the path that looks like a key is masked.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pythonjsonlogger.json import JsonFormatter

from keystile.redaction import redact_log_line

ACCESS_LOGGER = "keystile.access"
access_log = logging.getLogger(ACCESS_LOGGER)


TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class _RedactingJsonFormatter(JsonFormatter):
    """JSON lines with anything secret-shaped masked (see keystile.redaction)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_log_line(super().format(record))


def json_formatter() -> logging.Formatter:
    formatter = _RedactingJsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        datefmt=TIME_FORMAT,
    )
    formatter.converter = time.gmtime
    return formatter


class AccessLog:
    """The one JSON line per request.

    By default it goes through :mod:`logging` (logger ``keystile.access``),
    like every other line. ``keystile serve`` switches it to a direct sink:
    the line is rendered with orjson and written with one ``write()`` to
    stderr. The logging machinery costs ≈ 17 µs per line, the direct sink
    ≈ 1 µs, on a hot path of a few dozen µs; one ``write()`` of a line under
    4 KiB is also atomic on a pipe, so lines of several workers never mix.
    """

    direct_fd: int | None = None  # set by configure_logging()

    def __init__(self) -> None:
        self._second = -1
        self._time_text = ""

    def _now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._time_text = time.strftime(TIME_FORMAT, time.gmtime(second))
        return self._time_text

    def write(self, fields: dict[str, Any]) -> None:
        fd = AccessLog.direct_fd
        if fd is None:
            access_log.info("request", extra=fields)
            return
        line = orjson.dumps(
            {
                "time": self._now(),
                "level": "INFO",
                "logger": ACCESS_LOGGER,
                "message": "request",
                **fields,
            }
        )
        view = memoryview(line + b"\n")
        while view:
            view = view[os.write(fd, view) :]


def configure_logging(level: str) -> None:
    """JSON lines on stderr for keystile's, uvicorn's and the root logger."""
    AccessLog.direct_fd = sys.stderr.fileno()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # keystile logs each request itself
    quiet_http_clients()


def quiet_http_clients() -> None:
    """httpx and httpcore log every request's URL at INFO: a webhook URL may
    carry a customer's token in its query, and keystile logs each delivery's
    outcome in the delivery log instead."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's ``log_config``: the same JSON lines, also in worker processes."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "keystile.api.observability.json_formatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }


class Metrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "keystile_requests",
            "HTTP requests answered, by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "keystile_request_duration_seconds",
            "Time from receiving a request to finishing its response.",
            ["route"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.verifications = Counter(
            "keystile_key_verifications",
            "Key checks by outcome (VALID, INVALID, EXPIRED, REVOKED, …).",
            ["outcome"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._outcomes: dict[str, Any] = {}
        self.key_cache_size = Gauge(
            "keystile_key_cache_entries",
            "Verified keys held in this process's cache.",
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request. The labelled children are looked up
        once per (method, route, status): ``labels()`` costs a lock and
        validation on every call."""
        children = self._children.get((method, route, status))
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(route),
            )
            self._children[(method, route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def verified(self, outcome: str) -> None:
        child = self._outcomes.get(outcome)
        if child is None:
            child = self._outcomes[outcome] = self.verifications.labels(outcome)
        child.inc()
