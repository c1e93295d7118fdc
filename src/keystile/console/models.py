"""What the console keeps about a signed-in browser (contract §16)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A console session as stored: never the cookie's id, only its digest;
    the signed-in key (``credential``) and the one-time ``flash`` encrypted."""

    id_digest: str
    account_id: str | None  # None: an operator key that has not picked an account yet
    operator: bool
    credential: bytes
    csrf_token: str
    flash: bytes | None
    created_at: int  # microseconds since the epoch, like every stored time
    last_seen_at: int
    expires_at: int  # the absolute expiry; the idle one follows from last_seen_at
