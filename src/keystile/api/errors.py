"""The one place where domain errors become HTTP responses (contract §3)."""

from __future__ import annotations

import logging

import orjson
from starlette.types import Send

from keystile import errors
from keystile.ratelimit.models import RateLimiterUnavailable
from keystile.redaction import redact
from keystile.storage.base import StorageUnavailable

log = logging.getLogger("keystile.api")

STATUS: dict[type[errors.KeystileError], int] = {
    errors.ValidationFailed: 400,
    errors.InvalidKey: 401,
    errors.InvalidSignature: 401,
    errors.InsufficientPermissions: 403,
    errors.PlanRestricted: 403,
    errors.AccountSuspended: 403,
    errors.NotFound: 404,
    errors.MethodNotAllowed: 405,
    errors.DuplicateName: 409,
    errors.KeyInactive: 409,
    errors.PlanConflict: 409,
    errors.IdempotencyKeyInUse: 409,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.IdempotencyKeyReused: 422,
    errors.RateLimited: 429,
    errors.QuotaExceeded: 429,
    errors.RequestHeaderFieldsTooLarge: 431,
    errors.KeystileError: 500,
    errors.BadGateway: 502,
    errors.ServiceUnavailable: 503,
    errors.GatewayTimeout: 504,
}

JSON_CONTENT_TYPE = (b"content-type", b"application/json")


def as_keystile_error(exc: BaseException) -> errors.KeystileError:
    """Any exception as the client-safe error it should be reported as."""
    if isinstance(exc, errors.KeystileError):
        return exc
    if isinstance(exc, StorageUnavailable):
        return errors.ServiceUnavailable()
    if isinstance(exc, RateLimiterUnavailable):
        return errors.ServiceUnavailable("Rate limiting is unavailable. Retry later.")
    return errors.KeystileError()  # 500 internal_error; detail goes to the log only


def status_of(exc: errors.KeystileError) -> int:
    """The status of ``exc``'s nearest class in :data:`STATUS` (a subclass
    answers like its parent)."""
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 500


def error_body(exc: errors.KeystileError, request_id: str) -> bytes:
    """The §3 envelope. Messages may quote what the client sent (an id, a
    path, a field name): anything secret-shaped in them is masked here, the
    one place every error body is rendered."""
    error: dict[str, object] = {
        "code": exc.code,
        "message": redact(exc.message),
        "request_id": request_id,
    }
    if isinstance(exc, errors.ValidationFailed) or exc.details:
        error["details"] = [
            {"field": redact(d.field), "message": redact(d.message)} for d in exc.details
        ]
    return orjson.dumps({"error": error})


def error_headers(exc: errors.KeystileError) -> list[tuple[bytes, bytes]]:
    headers = [JSON_CONTENT_TYPE]
    if isinstance(exc, errors.InvalidKey):
        headers.append((b"www-authenticate", b'Bearer realm="keystile"'))
    elif isinstance(exc, errors.InvalidSignature):
        # RFC 9110 §15.5.2 wants a challenge with every 401: name what the
        # report lacks (a bearer key would not help).
        headers.append((b"www-authenticate", b'Github-Public-Key-Signature realm="keystile"'))
    elif isinstance(exc, errors.MethodNotAllowed):
        headers.append((b"allow", ", ".join(exc.allowed).encode()))
    elif isinstance(exc, errors.RateLimited | errors.QuotaExceeded):
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    elif isinstance(exc, errors.ServiceUnavailable):
        headers.append((b"retry-after", b"1"))
    return headers


async def send_error(
    send: Send,
    exc: errors.KeystileError,
    request_id: str,
    *,
    status: int | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """The §3 error response for ``exc``; ``status`` overrides its status
    (forward auth for nginx), ``extra`` adds headers."""
    body = error_body(exc, request_id)
    headers = [*error_headers(exc), *(extra or ()), (b"content-length", str(len(body)).encode())]
    status = status_of(exc) if status is None else status
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
