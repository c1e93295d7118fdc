"""The rules of contract §6, independent of HTTP.

A record is identified by (account, calling key, Idempotency-Key): another
key never sees it, even in the same account. It stores the first response's
status and body, encrypted, for 24 hours; a request with the same identity
and the same fingerprint (method, path, query and canonical JSON body) gets
that response again, a different fingerprint gets 422.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from keystile import clock as clocks
from keystile.errors import FieldProblem, IdempotencyKeyReused, KeystileError, ValidationFailed
from keystile.idempotency.crypto import DecryptionFailed, Keyring
from keystile.idempotency.locks import InFlight
from keystile.periodic import Periodic
from keystile.storage.base import Storage, StoredResponse

log = logging.getLogger("keystile.idempotency")

HEADER = "Idempotency-Key"
RETENTION_SECONDS = 24 * 60 * 60
# Requests rejected before their handler ran record nothing (contract §6);
# neither do 5xx, which roll their transaction back.
NOT_RECORDED = frozenset({400, 401, 403, 404, 405, 413, 415, 429})


def is_recorded(status: int) -> bool:
    return status < 500 and status not in NOT_RECORDED


def check_key(raw: bytes) -> str:
    """An Idempotency-Key value: 1–255 printable ASCII characters."""
    if not 1 <= len(raw) <= 255 or any(byte < 0x20 or byte > 0x7E for byte in raw):
        raise ValidationFailed(
            "The Idempotency-Key header is invalid.",
            [FieldProblem(HEADER, "must be 1 to 255 printable ASCII characters")],
        )
    return raw.decode("ascii")


def canonical_json(document: Any) -> bytes:
    """A parsed JSON document in one spelling: sorted keys, no whitespace."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def fingerprint(method: str, path: str, query: bytes, canonical: bytes) -> str:
    """What makes two requests "the same": method, path, query string and the
    body's :func:`canonical_json` (``b""`` for no body), so key order and
    whitespace of the body do not count; anything else does."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query, canonical):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Identity:
    account_id: str
    caller_key_id: str
    key: str

    @property
    def stored_key(self) -> str:
        """What is stored of the client's Idempotency-Key: its SHA-256 (hex).
        Clients put anything in it, a secret included; lookups need only
        equality, so the value itself is never written (issue #11)."""
        return hashlib.sha256(self.key.encode()).hexdigest()

    @property
    def lock_name(self) -> str:
        material = "\x00".join((self.account_id, self.caller_key_id, self.key))
        return hashlib.sha256(material.encode()).hexdigest()

    def associated_data(self, fingerprint: str, status: int) -> bytes:
        parts = ("keystile-idempotency-v1", self.account_id, self.caller_key_id, self.key,
                 fingerprint, str(status))  # fmt: skip
        return "\x00".join(parts).encode()


@dataclass(frozen=True, slots=True)
class Replay:
    status: int
    body: bytes


class IdempotencyService:
    def __init__(
        self,
        storage: Storage,
        keyring: Keyring,
        in_flight: InFlight,
        *,
        clock: clocks.Clock = clocks.system_clock,
        retention_seconds: int = RETENTION_SECONDS,
    ) -> None:
        self.storage = storage
        self.in_flight = in_flight
        self._keyring = keyring
        self._clock = clock
        self._retention = retention_seconds * clocks.MICROS

    def now(self) -> int:
        return clocks.now_micros(self._clock)

    def is_live(self, record: StoredResponse) -> bool:
        return record.expires_at > self.now()

    def replay(self, identity: Identity, record: StoredResponse, fingerprint: str) -> Replay:
        """The stored response, if this request is the one that made it."""
        if record.fingerprint != fingerprint:
            raise IdempotencyKeyReused()
        try:
            body = self._keyring.decrypt(
                record.ciphertext, identity.associated_data(record.fingerprint, record.status_code)
            )
        except DecryptionFailed:
            log.error(
                "a stored idempotent response cannot be decrypted: was a key removed from "
                "KEYSTILE_SECRET_KEY within 24 hours of its use, or the record altered?"
            )
            raise KeystileError() from None  # 500: the replay exists but cannot be produced
        return Replay(record.status_code, body)

    def seal(
        self, identity: Identity, fingerprint: str, status: int, body: bytes
    ) -> StoredResponse:
        now = self.now()
        return StoredResponse(
            account_id=identity.account_id,
            caller_key_id=identity.caller_key_id,
            idempotency_key=identity.stored_key,
            fingerprint=fingerprint,
            status_code=status,
            ciphertext=self._keyring.encrypt(body, identity.associated_data(fingerprint, status)),
            created_at=now,
            expires_at=now + self._retention,
        )

    async def purge(self) -> int:
        """Physically delete every expired record; return how many."""
        async with self.storage.transaction() as uow:
            return await uow.idempotency.purge(self.now())

    def purger(self, interval_seconds: float) -> Periodic:
        """The server's background job that purges expired records."""
        return Periodic("purging idempotency records", interval_seconds, self.purge)
