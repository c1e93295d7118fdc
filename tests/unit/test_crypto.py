"""AES-GCM sealing of stored responses, bound to their record; key rotation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from keystile.errors import ConfigurationError
from keystile.idempotency.crypto import DecryptionFailed, Keyring, generate_key, load_or_create

AD = b"acc\x00key\x00idem\x00fingerprint\x00201"


def test_round_trip_and_no_plaintext_in_the_ciphertext() -> None:
    ring = Keyring.parse(generate_key())
    blob = ring.encrypt(b"wbk_live_secret", AD)
    assert b"wbk_live_secret" not in blob
    assert ring.decrypt(blob, AD) == b"wbk_live_secret"
    assert ring.encrypt(b"x", AD) != ring.encrypt(b"x", AD)  # fresh nonce each time


@pytest.mark.parametrize(
    "other", [AD.replace(b"acc", b"acd"), AD.replace(b"idem", b"idex"), AD[:-1] + b"0", b""]
)
def test_a_ciphertext_moved_to_another_record_does_not_decrypt(other: bytes) -> None:
    ring = Keyring.parse(generate_key())
    with pytest.raises(DecryptionFailed):
        ring.decrypt(ring.encrypt(b"body", AD), other)


def test_tampering_is_detected() -> None:
    ring = Keyring.parse(generate_key())
    blob = bytearray(ring.encrypt(b"body", AD))
    blob[-1] ^= 1
    with pytest.raises(DecryptionFailed):
        ring.decrypt(bytes(blob), AD)
    with pytest.raises(DecryptionFailed):
        ring.decrypt(b"\x02" + bytes(blob[1:]), AD)


def test_rotation_keeps_old_records_readable_until_the_old_key_is_dropped() -> None:
    old, new = generate_key(), generate_key()
    blob = Keyring.parse(old).encrypt(b"body", AD)
    rotated = Keyring.parse(f"{new}, {old}")
    assert rotated.decrypt(blob, AD) == b"body"
    assert Keyring.parse(new).decrypt(rotated.encrypt(b"b2", AD), AD) == b"b2"  # new key encrypts
    with pytest.raises(DecryptionFailed):
        Keyring.parse(new).decrypt(blob, AD)


@pytest.mark.parametrize(
    "text", ["", " , ", "short", "!!!!", pytest.param(generate_key()[:-4], id="truncated")]
)
def test_bad_keys_are_a_configuration_error(text: str) -> None:
    with pytest.raises(ConfigurationError):
        Keyring.parse(text)


def test_the_embedded_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_or_create(tmp_path / "data")
    path = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create(tmp_path / "data") == first
    Keyring.parse(first)
