"""The domain's exception tree. No HTTP here: ``keystile.api.errors`` maps each
class to a status code, the CLI maps them to exit messages.

Each error carries the contract's error ``code`` (§3) and a message that is
safe to show to a client. Internal detail belongs in logs, never in ``message``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One invalid input field; ``field`` is a dotted/indexed path like ``permissions[1]``."""

    field: str
    message: str


class KeystileError(Exception):
    """Base of every error with a contract code (§3). ``details`` names the
    fields at fault, when there are any (always for ``validation_error``)."""

    code = "internal_error"
    default_message = "An internal error occurred."

    def __init__(self, message: str | None = None, details: list[FieldProblem] | None = None):
        self.message = message or self.default_message
        self.details = details or []
        super().__init__(self.message)


class ValidationFailed(KeystileError):
    code = "validation_error"
    default_message = "The request is invalid."


class InvalidKey(KeystileError):
    code = "invalid_key"
    default_message = "The API key is missing, invalid, expired or revoked."


class InvalidSignature(KeystileError):
    """A leak report (contract §14) without a valid secret-scanning signature."""

    code = "invalid_signature"
    default_message = "The report's signature is missing or invalid."


class InsufficientPermissions(KeystileError):
    code = "insufficient_permissions"
    default_message = "The API key lacks the permission this request needs."


class PlanRestricted(KeystileError):
    code = "plan_restricted"
    default_message = "This feature is not available on the account's plan."


class AccountSuspended(KeystileError):
    code = "account_suspended"
    default_message = "The account this key belongs to is suspended."


class NotFound(KeystileError):
    code = "not_found"
    default_message = "No such resource."


class MethodNotAllowed(KeystileError):
    code = "method_not_allowed"
    default_message = "The method is not allowed for this resource."

    def __init__(self, allowed: list[str], message: str | None = None) -> None:
        super().__init__(message)
        self.allowed = allowed


class DuplicateName(KeystileError):
    code = "duplicate_name"
    default_message = "An active key with this name already exists."


class KeyInactive(KeystileError):
    code = "key_inactive"
    default_message = "The key is revoked, expired or already replaced, and cannot be changed."


class PlanConflict(KeystileError):
    code = "plan_conflict"
    default_message = "The account's keys need the plan it has."


class IdempotencyKeyInUse(KeystileError):
    code = "idempotency_key_in_use"
    default_message = "A request with this Idempotency-Key is still being processed."


class IdempotencyKeyReused(KeystileError):
    code = "idempotency_key_reused"
    default_message = "This Idempotency-Key was used with a different request."


class PayloadTooLarge(KeystileError):
    code = "payload_too_large"
    default_message = "The request body exceeds 65536 bytes."


class RequestHeaderFieldsTooLarge(KeystileError):
    """The request head is over the front end's limits (RFC 6585 §5)."""

    code = "request_header_fields_too_large"
    default_message = "The request head is too large."


class UnsupportedMediaType(KeystileError):
    code = "unsupported_media_type"
    default_message = "The request body must be sent as Content-Type: application/json."


class RateLimited(KeystileError):
    code = "rate_limited"
    default_message = "Rate limit exceeded."

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class QuotaExceeded(KeystileError):
    code = "quota_exceeded"
    default_message = "The key's quota for this period is used up."

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class ServiceUnavailable(KeystileError):
    code = "service_unavailable"
    default_message = "The service is temporarily unavailable. Retry later."


class BadGateway(KeystileError):
    code = "bad_gateway"
    default_message = "The upstream service failed to answer."


class GatewayTimeout(KeystileError):
    code = "gateway_timeout"
    default_message = "The upstream service did not answer in time."


class ConfigurationError(KeystileError):
    """Invalid settings or routes file: stops start-up, never reaches a client."""

    code = "configuration_error"
    default_message = "Invalid configuration."
