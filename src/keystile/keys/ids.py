"""Resource ids: a type prefix and a ULID (time-ordered, 128 bits)."""

from __future__ import annotations

import re

from ulid import ULID

_ULID = r"[0-9A-HJKMNP-TV-Z]{26}"
_KEY_ID = re.compile(f"key_{_ULID}")
_ACCOUNT_ID = re.compile(f"acc_{_ULID}")
_OPERATOR_KEY_ID = re.compile(f"opk_{_ULID}")
_AUDIT_ID = re.compile(f"aud_{_ULID}")


def new_key_id() -> str:
    return f"key_{ULID()}"


def new_account_id() -> str:
    return f"acc_{ULID()}"


def new_operator_key_id() -> str:
    return f"opk_{ULID()}"


def new_audit_id() -> str:
    return f"aud_{ULID()}"


def is_key_id(text: str) -> bool:
    return _KEY_ID.fullmatch(text) is not None


def is_account_id(text: str) -> bool:
    return _ACCOUNT_ID.fullmatch(text) is not None


def is_operator_key_id(text: str) -> bool:
    return _OPERATOR_KEY_ID.fullmatch(text) is not None


def is_audit_id(text: str) -> bool:
    return _AUDIT_ID.fullmatch(text) is not None


# Webhooks (contract §13): Stripe's prefixes for endpoints and events.
_WEBHOOK_ENDPOINT_ID = re.compile(f"we_{_ULID}")
_DELIVERY_ID = re.compile(f"whd_{_ULID}")


def new_webhook_endpoint_id() -> str:
    return f"we_{ULID()}"


def new_event_id() -> str:
    return f"evt_{ULID()}"


def new_delivery_id() -> str:
    return f"whd_{ULID()}"


def is_webhook_endpoint_id(text: str) -> bool:
    return _WEBHOOK_ENDPOINT_ID.fullmatch(text) is not None


def is_delivery_id(text: str) -> bool:
    return _DELIVERY_ID.fullmatch(text) is not None
