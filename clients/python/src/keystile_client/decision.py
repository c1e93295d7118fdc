"""What a protected app answers for a verification (contract §3, §5, §7):
pure functions shared by the ASGI, FastAPI and Django integrations.

A ``VALID`` key passes with the rate-limit and quota headers of its
verification. Otherwise the app answers keystile's own way: ``401
invalid_key`` (with ``WWW-Authenticate``) for a missing, unknown, expired,
revoked or disabled key, ``403 insufficient_permissions``, ``429
rate_limited`` / ``quota_exceeded`` with ``Retry-After``, and ``503
service_unavailable`` when keystile could not answer (fail closed).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field

from keystile_client.models import Verification, Window

_REFUSALS: dict[str, tuple[int, str, str]] = {
    "INSUFFICIENT_PERMISSIONS": (
        403, "insufficient_permissions", "The API key lacks the permission this request needs."
    ),
    "RATE_LIMITED": (429, "rate_limited", "Rate limit exceeded."),
    "QUOTA_EXCEEDED": (429, "quota_exceeded", "The key's quota for this period is used up."),
}  # fmt: skip
_INVALID = (401, "invalid_key", "The API key is missing, invalid, expired or revoked.")
_UNAVAILABLE = (
    503, "service_unavailable", "Keys cannot be verified right now. Retry later."
)  # fmt: skip
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([^\s]{1,512})")


@dataclass(frozen=True, slots=True)
class Decision:
    """``identity`` is set when the request may pass (``status`` 200);
    otherwise ``status`` and ``code`` are the refusal. ``headers`` go on
    the response either way (rate limit, quota, ``Retry-After``,
    ``WWW-Authenticate``)."""

    status: int
    code: str | None
    message: str
    identity: Verification | None
    headers: tuple[tuple[str, str], ...]
    # ``headers`` as ASGI wants them (lower-case bytes), made once per decision.
    encoded: tuple[tuple[bytes, bytes], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        encoded = tuple((name.lower().encode(), value.encode()) for name, value in self.headers)
        object.__setattr__(self, "encoded", encoded)

    @property
    def allowed(self) -> bool:
        return self.identity is not None

    def body(self, request_id: str | None) -> bytes:
        """The §3 error body (refusals only)."""
        rid = request_id if request_id and _REQUEST_ID.fullmatch(request_id) else None
        error = {
            "code": self.code,
            "message": self.message,
            "request_id": rid or f"req_{uuid.uuid4().hex}",
        }
        return json.dumps({"error": error}).encode()


def bearer(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, or ``None``."""
    if not authorization:
        return None
    match = _BEARER.fullmatch(authorization.strip())
    return match.group(1) if match else None


def _window_headers(prefix: str, window: Window | None) -> list[tuple[str, str]]:
    if window is None:
        return []
    return [
        (f"X-{prefix}-Limit", str(window.limit)),
        (f"X-{prefix}-Remaining", str(window.remaining)),
        (f"X-{prefix}-Reset", str(window.reset)),
    ]


def decide(result: Verification | None, now: float | None = None) -> Decision:
    """The decision for a verification; ``None``: keystile did not answer."""
    if result is None:
        status, code, message = _UNAVAILABLE
        return Decision(status, code, message, None, (("Retry-After", "1"),))
    headers = _window_headers("RateLimit", result.rate_limit)
    headers += _window_headers("Quota", result.quota)
    if result.valid:
        return Decision(200, None, "", result, tuple(headers))
    status, code, message = _REFUSALS.get(result.code, _INVALID)
    if status == 401:
        headers.append(("WWW-Authenticate", 'Bearer realm="keystile"'))
    elif status == 429:
        window = result.quota if code == "quota_exceeded" else result.rate_limit
        reset = window.reset if window is not None else 0
        wait = max(1, int(reset - (time.time() if now is None else now) + 0.999))
        headers.append(("Retry-After", str(wait)))
    return Decision(status, code, message, None, tuple(headers))


def current(result: Verification, decision: Decision) -> Decision:
    """A cached ``decision`` of ``result``, as it stands now: the same one,
    except a 429's ``Retry-After``, which counts down."""
    return decide(result) if decision.status == 429 else decision


MISSING_KEY = decide(Verification(False, "INVALID", None, None, (), {}, None, None))
UNAVAILABLE = decide(None)
