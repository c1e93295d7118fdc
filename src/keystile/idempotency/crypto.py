"""Encryption of stored responses (AES-256-GCM) under the application key.

The stored response of an idempotent create holds a plaintext secret, so it
is encrypted, and bound to its record: the record's identity (account,
calling key, Idempotency-Key, request fingerprint, status) is the associated
data, so a ciphertext copied into another record does not decrypt.

``KEYSTILE_SECRET_KEY`` is a comma-separated list of base64 keys of 32 bytes:
the first encrypts, every one decrypts. Rotation: prepend a new key, keep the
old one for the 24-hour replay window, then drop it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keystile.errors import ConfigurationError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 4
_VERSION = b"\x01"
SECRET_FILE = "secret.key"  # noqa: S105 (a file name, not a secret)


class DecryptionFailed(Exception):
    """No configured key opens the ciphertext for this identity."""


def generate_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def _decode_key(text: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ConfigurationError(
            "KEYSTILE_SECRET_KEY must list base64 keys of 32 bytes, separated by commas "
            "(make one with: keystile secret-key)"
        )
    return raw


@dataclass(frozen=True)
class Keyring:
    keys: tuple[bytes, ...]

    @classmethod
    def parse(cls, text: str) -> Keyring:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if not parts:
            raise ConfigurationError("KEYSTILE_SECRET_KEY is empty")
        return cls(tuple(_decode_key(part) for part in parts))

    @staticmethod
    def _tag(key: bytes) -> bytes:
        # Names the key without revealing it, so decryption tries the right one first.
        return hashlib.sha256(b"keystile-key-id" + key).digest()[:TAG_BYTES]

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        key = self.keys[0]
        nonce = os.urandom(
            NONCE_BYTES
        )  # random 96-bit nonces: safe far beyond 2**32 records per key
        sealed = AESGCM(key).encrypt(nonce, plaintext, associated_data)
        return _VERSION + self._tag(key) + nonce + sealed

    def is_current(self, blob: bytes) -> bool:
        """Whether ``blob`` names the first (encrypting) key: a record for
        which it is false is re-encrypted after a rotation."""
        return blob[1 : 1 + TAG_BYTES] == self._tag(self.keys[0])

    def decrypt(self, blob: bytes, associated_data: bytes) -> bytes:
        header = 1 + TAG_BYTES + NONCE_BYTES
        if len(blob) < header or blob[:1] != _VERSION:
            raise DecryptionFailed("unknown ciphertext format")
        tag, nonce, sealed = blob[1 : 1 + TAG_BYTES], blob[1 + TAG_BYTES : header], blob[header:]
        candidates = sorted(self.keys, key=lambda k: self._tag(k) != tag)
        for key in candidates:
            try:
                return AESGCM(key).decrypt(nonce, sealed, associated_data)
            except InvalidTag:
                continue
        raise DecryptionFailed("no configured key decrypts this record")


def load_or_create(data_dir: Path) -> str:
    """The embedded default's application key: ``secret.key`` in the data
    directory, created (mode 0600, atomically) on first start."""
    path = data_dir / SECRET_FILE
    if not data_dir.exists():
        data_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
        data_dir.chmod(0o700)
    if not path.exists():
        temporary = path.with_name(f".{SECRET_FILE}.{os.getpid()}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(generate_key() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # fails if another process won the race: keep theirs
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return path.read_text().strip()
