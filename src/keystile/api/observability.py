"""Structured logs and Prometheus metrics (contract §8).

One JSON object per line; the access line per request carries the request
id, method, path, status, latency and key id. Secrets never reach a log: the
Authorization header and the query string are not logged, and anything in
the path that looks like a key is masked.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pythonjsonlogger.json import JsonFormatter

ACCESS_LOGGER = "keystile.access"


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


def configure_logging(level: str) -> None:
    """JSON lines on stderr for keystile's, uvicorn's and the root logger."""
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
        },
    }


def key_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(re.escape(prefix) + r"_live_[0-9A-Za-z]+")


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
        self.key_cache_size = Gauge(
            "keystile_key_cache_entries",
            "Verified keys held in this process's cache.",
            registry=self.registry,
        )
