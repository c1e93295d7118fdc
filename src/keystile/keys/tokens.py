"""The key token format (contract §2). Pure functions, no I/O.

A token reads ``{prefix}_live_{body}`` (an account's key) or
``{prefix}_root_{body}`` (an operator key, contract §9); ``body`` is 26 random base62 characters
followed by a 6-character checksum: the CRC32 of everything before the
checksum, written in base62 (``0-9A-Za-z``), most significant digit first,
zero-padded. The checksum lets us reject typos and forged-looking strings
without a storage round trip; it is *not* a secret and proves nothing.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import zlib

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_BASE62_SET = frozenset(BASE62)
RANDOM_LENGTH = 26  # 26 * log2(62) ≈ 154.8 bits of entropy (contract: ≥ 150)
CHECKSUM_LENGTH = 6  # 62**6 > 2**32, so any CRC32 fits
BODY_LENGTH = RANDOM_LENGTH + CHECKSUM_LENGTH
ENVIRONMENT = "live"
ROOT = "root"  # operator keys


def type_prefix(prefix: str, kind: str = ENVIRONMENT) -> str:
    """The key's public type prefix, e.g. ``wbk_live`` (the ``prefix`` field)."""
    return f"{prefix}_{kind}"


def base62(value: int, width: int) -> str:
    """``value`` in base62, most significant digit first, left-padded with ``0``."""
    if value < 0:
        raise ValueError("base62 encodes non-negative integers only")
    digits: list[str] = []
    while value:
        value, remainder = divmod(value, 62)
        digits.append(BASE62[remainder])
    encoded = "".join(reversed(digits)).rjust(width, "0")
    if len(encoded) != width:
        raise ValueError(f"{value} does not fit in {width} base62 digits")
    return encoded


def checksum(text: str) -> str:
    """The 6-character base62 CRC32 of ``text`` (ASCII)."""
    value = zlib.crc32(text.encode("ascii"))
    # base62(value, 6) unrolled: this runs for every token that reaches storage.
    value, d5 = divmod(value, 62)
    value, d4 = divmod(value, 62)
    value, d3 = divmod(value, 62)
    value, d2 = divmod(value, 62)
    d0, d1 = divmod(value, 62)
    return BASE62[d0] + BASE62[d1] + BASE62[d2] + BASE62[d3] + BASE62[d4] + BASE62[d5]


def generate(prefix: str, kind: str = ENVIRONMENT) -> str:
    """A new token. ``secrets.choice`` draws each character uniformly (no modulo bias)."""
    random_part = "".join(secrets.choice(BASE62) for _ in range(RANDOM_LENGTH))
    head = f"{type_prefix(prefix, kind)}_{random_part}"
    return head + checksum(head)


def is_well_formed(token: str, prefix: str, kind: str = ENVIRONMENT) -> bool:
    """True when ``token`` has this deployment's shape (of ``kind``) and a
    matching checksum.

    Runs on untrusted input before any storage access, so it must never raise.
    """
    head = f"{type_prefix(prefix, kind)}_"
    if len(token) != len(head) + BODY_LENGTH or not token.startswith(head):
        return False
    body = token[len(head) :]
    if not _BASE62_SET.issuperset(body):
        return False
    return checksum(token[:-CHECKSUM_LENGTH]) == body[RANDOM_LENGTH:]


def digest(token: str) -> str:
    """The one-way digest stored at rest: hex SHA-256 of the whole token.

    A fast hash is right here, unlike for passwords: a token carries ≥ 150 bits
    of randomness, so guessing a token from its digest is infeasible whatever
    the hash speed, and a slow hash (≈ 100 ms for argon2id) would cap
    verification at ~10 per second per core. No pepper: the digest never
    depends on a rotatable secret, so rotating ``KEYSTILE_SECRET_KEY`` never
    invalidates a key.
    """
    return hashlib.sha256(token.encode("ascii")).hexdigest()
