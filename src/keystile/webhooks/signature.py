"""Signing webhook bodies, and checking a signature as a receiver (contract §13).

The scheme is Stripe's: the header ``Keystile-Signature:
t=<unix seconds>,v1=<hex>`` where ``<hex>`` is HMAC-SHA256 keyed with the
endpoint's whole ``whsec_…`` secret (as UTF-8 bytes) over
``"<t>.<raw body>"``. The timestamp is signed, so a captured request cannot
be replayed later than the receiver's tolerance.

This module needs nothing but the standard library: a receiver can import
``keystile.webhooks`` without the server's dependencies.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Keystile-Signature"
EVENT_ID_HEADER = "Keystile-Event-Id"
SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300
_MAX_HEADER = 4096


class SignatureVerificationError(ValueError):
    """The ``Keystile-Signature`` header does not prove that keystile sent
    this body with this secret recently enough (the message says which)."""


def compute_signature(payload: bytes, secret: str, timestamp: int) -> str:
    """The lowercase hex HMAC-SHA256 of ``"<timestamp>.<payload>"`` under ``secret``."""
    signed = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(payload: bytes, secret: str, timestamp: int) -> str:
    """The ``Keystile-Signature`` value for ``payload`` sent at ``timestamp``
    (Unix seconds): ``t=<timestamp>,v1=<hex>``."""
    return f"t={timestamp},{SCHEME}={compute_signature(payload, secret, timestamp)}"


def _parse(header: str) -> tuple[int, list[str]]:
    if len(header) > _MAX_HEADER:
        raise SignatureVerificationError("The signature header is too long.")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            if not value.isascii() or not value.isdigit() or len(value) > 12:
                raise SignatureVerificationError("The signature's timestamp is not a number.")
            timestamp = int(value)
        elif name == SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise SignatureVerificationError("The signature header has no timestamp (t=).")
    if not signatures:
        raise SignatureVerificationError(f"The signature header has no {SCHEME}= signature.")
    return timestamp, signatures


def verify_signature(
    payload: bytes,
    header: str,
    secret: str,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    *,
    now: float | None = None,
) -> bool:
    """Check a webhook request as its receiver: ``payload`` is the raw body
    (bytes, exactly as received: not re-serialised JSON), ``header`` the
    ``Keystile-Signature`` value, ``secret`` the endpoint's ``whsec_…``.

    Returns True when one ``v1`` signature matches (compared in constant
    time) and the timestamp is within ``tolerance_seconds`` of ``now``
    (default: the current time) in either direction; a tolerance of 0 or
    less skips the time check. Raises :class:`SignatureVerificationError`
    otherwise, never returns False. Contract §13; the scheme of Stripe's
    ``Stripe-Signature``.
    """
    if not isinstance(payload, bytes | bytearray):
        raise TypeError("payload must be the raw request body as bytes")
    timestamp, signatures = _parse(header)
    expected = compute_signature(bytes(payload), secret, timestamp)
    matched = False
    for candidate in signatures:
        # Every candidate is compared, so the time taken does not tell which matched.
        matched |= hmac.compare_digest(expected.encode(), candidate.encode("utf-8", "replace"))
    if not matched:
        raise SignatureVerificationError("No signature matches the body and the secret.")
    if tolerance_seconds > 0:
        current = time.time() if now is None else now
        if abs(current - timestamp) > tolerance_seconds:
            raise SignatureVerificationError(
                f"The signature's timestamp is more than {tolerance_seconds} s from now."
            )
    return True
