"""Webhooks (contract §13): endpoints, events written in the same
transaction as their cause, and their signed delivery.

Receivers need only :func:`verify_signature` (standard library only)::

    from keystile.webhooks import verify_signature, SignatureVerificationError
"""

from keystile.webhooks.signature import SignatureVerificationError, verify_signature

__all__ = ["SignatureVerificationError", "verify_signature"]
