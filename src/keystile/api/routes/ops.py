"""Operations endpoints (contract §8): no key needed."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from keystile.api.deps import ServicesDep, error_response, errors_doc, json_response
from keystile.api.schemas import Health
from keystile.errors import ServiceUnavailable
from keystile.storage.base import StorageUnavailable

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process is up", response_model=Health)
async def healthz() -> Response:
    return json_response(200, Health(status="ok"))


@router.get(
    "/readyz",
    summary="Readiness: the database (and Redis, when configured) answer",
    response_model=Health,
    responses=errors_doc(503),
)
async def readyz(request: Request, services: ServicesDep) -> Response:
    try:
        await services.storage.ping()
    except StorageUnavailable:
        return error_response(request, ServiceUnavailable("The database is unreachable."))
    try:
        await services.ratelimiter.counter.ping()
    except (RedisError, OSError, TimeoutError):
        return error_response(request, ServiceUnavailable("Redis is unreachable."))
    return json_response(200, Health(status="ready"))


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(services: ServicesDep) -> Response:
    services.metrics.key_cache_size.set(len(services.verifier.cache))
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
