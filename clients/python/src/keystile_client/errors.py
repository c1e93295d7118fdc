"""The exception tree: one class per error code of keystile's contract §3,
all under :class:`KeystileError`.

Every error keystile answers carries the §3 body
``{"error": {"code", "message", "request_id", "details"?}}``; the client
raises the class registered for ``code`` (an unknown code raises the class
of its status, else :class:`KeystileError` itself), so new server codes never
break old clients. A request that never got an answer (connection refused,
timeout) raises :class:`ConnectionFailed`, whose ``status`` is ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """One field at fault: ``field`` is a path such as ``permissions[1]``."""

    field: str
    message: str


class KeystileError(Exception):
    """Base of every error this package raises.

    ``status`` is the HTTP status (``None`` when no answer came), ``code``
    the §3 code, ``request_id`` keystile's ``X-Request-ID`` for the logs,
    ``details`` the fields at fault, ``retry_after`` the seconds keystile
    asked to wait (429 and 503 only, else ``None``)."""

    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        details: tuple[ErrorDetail, ...] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        if code is not None:
            self.code = code
        self.request_id = request_id
        self.details = details
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.status or '-'} {self.code}: {self.message}{where}"


class ConnectionFailed(KeystileError):
    """keystile could not be reached, or did not answer within the timeout,
    on every attempt the retry policy allowed."""

    code = "connection_failed"


class ValidationError(KeystileError):
    code = "validation_error"


class InvalidKey(KeystileError):
    code = "invalid_key"


class InsufficientPermissions(KeystileError):
    code = "insufficient_permissions"


class PlanRestricted(KeystileError):
    code = "plan_restricted"


class AccountSuspended(KeystileError):
    code = "account_suspended"


class NotFound(KeystileError):
    code = "not_found"


class MethodNotAllowed(KeystileError):
    code = "method_not_allowed"


class DuplicateName(KeystileError):
    code = "duplicate_name"


class KeyInactive(KeystileError):
    code = "key_inactive"


class PlanConflict(KeystileError):
    code = "plan_conflict"


class IdempotencyKeyInUse(KeystileError):
    code = "idempotency_key_in_use"


class PayloadTooLarge(KeystileError):
    code = "payload_too_large"


class UnsupportedMediaType(KeystileError):
    code = "unsupported_media_type"


class IdempotencyKeyReused(KeystileError):
    code = "idempotency_key_reused"


class RateLimited(KeystileError):
    code = "rate_limited"


class QuotaExceeded(KeystileError):
    code = "quota_exceeded"


class RequestHeaderFieldsTooLarge(KeystileError):
    code = "request_header_fields_too_large"


class InternalError(KeystileError):
    code = "internal_error"


class BadGateway(KeystileError):
    code = "bad_gateway"


class ServiceUnavailable(KeystileError):
    code = "service_unavailable"


class GatewayTimeout(KeystileError):
    code = "gateway_timeout"


_BY_CODE: dict[str, type[KeystileError]] = {
    cls.code: cls
    for cls in (
        ValidationError, InvalidKey, InsufficientPermissions, PlanRestricted,
        AccountSuspended, NotFound, MethodNotAllowed, DuplicateName, KeyInactive,
        PlanConflict, IdempotencyKeyInUse, PayloadTooLarge, UnsupportedMediaType,
        IdempotencyKeyReused, RateLimited, QuotaExceeded, RequestHeaderFieldsTooLarge,
        InternalError, BadGateway, ServiceUnavailable, GatewayTimeout,
    )
}  # fmt: skip

# An unknown code falls back to the class of its status.
_BY_STATUS: dict[int, type[KeystileError]] = {
    400: ValidationError, 401: InvalidKey, 403: InsufficientPermissions, 404: NotFound,
    405: MethodNotAllowed, 413: PayloadTooLarge, 415: UnsupportedMediaType,
    422: IdempotencyKeyReused, 429: RateLimited, 431: RequestHeaderFieldsTooLarge,
    500: InternalError, 502: BadGateway, 503: ServiceUnavailable, 504: GatewayTimeout,
}  # fmt: skip


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds (keystile sends whole seconds); ``None``
    when absent or not a number (an HTTP date is not sent by keystile)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_from_response(
    status: int, body: Any, request_id: str | None, retry_after: str | None
) -> KeystileError:
    """The exception for an error response: ``body`` is its parsed JSON
    (anything, when keystile or a proxy in front sent something else)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {}
    code = str(error.get("code") or "")
    message = str(error.get("message") or f"HTTP {status}")
    details = tuple(
        ErrorDetail(str(d.get("field", "")), str(d.get("message", "")))
        for d in error.get("details") or ()
        if isinstance(d, dict)
    )
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or KeystileError
    return cls(
        message,
        status=status,
        code=code or cls.code,
        request_id=str(error.get("request_id") or request_id or "") or None,
        details=details,
        retry_after=retry_after_seconds(retry_after) if status in (429, 503) else None,
    )
