"""The partner's public keys, and checking a report's signature with them.

GitHub signs each secret-scanning report with ECDSA over the NIST P-256
curve and SHA-256, over the raw request body; the base64 DER signature is in
``Github-Public-Key-Signature`` and the id of the signing key in
``Github-Public-Key-Identifier``. Its keys are published at
https://api.github.com/meta/public_keys/secret_scanning as
``{"public_keys": [{"key_identifier", "key" (PEM), "is_current"}]}``
(GitHub docs, "Secret scanning partner program", "Implement signature
verification"); ``KEYSTILE_SECRET_SCANNING_KEYS`` names a copy of that
document. Every key listed is accepted, current or not: GitHub lists a key
it is retiring until no report signed with it can still be in flight.
"""

from __future__ import annotations

import binascii
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature as BadSignature
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keystile.errors import ConfigurationError, InvalidSignature

log = logging.getLogger("keystile.leaks")

VARIABLE = "KEYSTILE_SECRET_SCANNING_KEYS"
SIGNATURE_HEADER = "Github-Public-Key-Signature"
IDENTIFIER_HEADER = "Github-Public-Key-Identifier"
# A DER ECDSA P-256 signature is at most 72 bytes (96 in base64); anything
# much longer is refused before it is decoded.
_MAX_SIGNATURE_CHARS = 256
_MAX_IDENTIFIER_CHARS = 256
_ALGORITHM = ec.ECDSA(hashes.SHA256())


@dataclass(frozen=True, slots=True)
class PublicKeys:
    """The keys that may sign a report, by ``key_identifier``. Empty: none may."""

    keys: dict[str, ec.EllipticCurvePublicKey] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, source: str = VARIABLE) -> PublicKeys:
        """The keys of a document in GitHub's format. Raises
        :class:`ConfigurationError` (one line, naming ``source``) when it is
        not JSON of that shape, lists no key, or a key is not an EC P-256
        public key in PEM."""
        try:
            document: Any = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(f"{source}: not valid JSON ({exc})") from None
        entries = document.get("public_keys") if isinstance(document, dict) else None
        if not isinstance(entries, list) or not entries:
            raise ConfigurationError(f"{source}: expected a non-empty 'public_keys' array")
        keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for index, entry in enumerate(entries):
            where = f"{source}: public_keys[{index}]"
            if not isinstance(entry, dict):
                raise ConfigurationError(f"{where} must be an object")
            identifier, pem = entry.get("key_identifier"), entry.get("key")
            if not isinstance(identifier, str) or not identifier:
                raise ConfigurationError(f"{where}.key_identifier must be a non-empty string")
            if not isinstance(pem, str):
                raise ConfigurationError(f"{where}.key must be a PEM public key")
            keys[identifier] = _p256_key(pem, where)
        return cls(keys)

    def check(self, body: bytes, identifier: str | None, signature: str | None) -> None:
        """Return when ``signature`` (base64 DER) is the signature of
        ``body`` (the raw request bytes) by the key ``identifier``.

        Raises :class:`InvalidSignature` (401 ``invalid_signature``) for
        anything else: a missing header, an unknown key id, a signature that
        is not strict base64 or not DER, or that does not verify. Never
        raises anything else, whatever the input.
        """
        if identifier is None or signature is None or len(identifier) > _MAX_IDENTIFIER_CHARS:
            raise InvalidSignature()
        key = self.keys.get(identifier)
        if key is None or len(signature) > _MAX_SIGNATURE_CHARS:
            raise InvalidSignature()
        try:
            der = binascii.a2b_base64(signature.encode("ascii"), strict_mode=True)
            key.verify(der, body, _ALGORITHM)
        except (BadSignature, ValueError, binascii.Error):  # UnicodeError is a ValueError
            raise InvalidSignature() from None


def _p256_key(pem: str, where: str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigurationError(f"{where}.key is not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigurationError(f"{where}.key is not an ECDSA P-256 key")
    return key


def load(path: Path) -> PublicKeys:
    """The keys in the file at ``path``; raises :class:`ConfigurationError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{VARIABLE}: cannot read {path}: {exc}") from None
    return PublicKeys.parse(text, f"{VARIABLE} ({path})")


class PublicKeysFile:
    """The keys of ``KEYSTILE_SECRET_SCANNING_KEYS``, re-read when the file
    changes, so that an operator rotates keys without a restart.

    Read once at start-up (an invalid file stops it). Afterwards each report
    compares the file's modification time and size with what was read; a
    changed file is loaded again, and one that is now invalid or gone keeps
    the keys last read, with one error logged per change.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._keys = PublicKeys() if path is None else load(path)
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            stat = os.stat(self._path)
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def current(self) -> PublicKeys:
        """The keys in force (an empty set when the setting is unset)."""
        if self._path is None:
            return self._keys
        stamp = self._stamp()
        if stamp != self._seen:
            self._seen = stamp
            try:
                self._keys = load(self._path)
            except ConfigurationError as exc:
                log.error("keeping the secret-scanning keys read before: %s", exc)
            else:
                log.info("secret-scanning keys re-read: %d key(s)", len(self._keys.keys))
        return self._keys
