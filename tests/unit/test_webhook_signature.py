"""Webhook signatures (contract §13, issue #15 items 3, 4 and 6): what
keystile sends is checked here by an implementation of the scheme written
from the contract's words alone, and ``verify_signature`` refuses every
change to the body, the secret, the signature or the time."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keystile.webhooks import SignatureVerificationError, verify_signature
from keystile.webhooks.service import new_secret
from keystile.webhooks.signature import signature_header

NOW = 1_800_000_000
bodies = st.binary(max_size=2048)
secrets_ = st.builds(new_secret)


def independent_signature(body: bytes, secret: str, timestamp: int) -> str:
    """Contract §13, read literally: hex HMAC-SHA256 keyed with the whole
    whsec_… string as bytes, over "<t>.<raw body>"."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


@settings(max_examples=200, deadline=None)
@given(body=bodies, secret=secrets_, timestamp=st.integers(0, 10**11))
def test_the_header_is_the_contract_scheme(body: bytes, secret: str, timestamp: int) -> None:
    header = signature_header(body, secret, timestamp)
    assert header == f"t={timestamp},v1={independent_signature(body, secret, timestamp)}"


@settings(max_examples=200, deadline=None)
@given(body=bodies, secret=secrets_, skew=st.integers(-300, 300))
def test_a_signed_body_verifies_within_the_tolerance(body: bytes, secret: str, skew: int) -> None:
    header = signature_header(body, secret, NOW + skew)
    assert verify_signature(body, header, secret, now=NOW) is True


@settings(max_examples=300, deadline=None)
@given(body=bodies, secret=secrets_, data=st.data())
def test_any_change_to_the_body_is_refused(body: bytes, secret: str, data: st.DataObject) -> None:
    header = signature_header(body, secret, NOW)
    changed = data.draw(bodies.filter(lambda other: other != body), label="changed body")
    with pytest.raises(SignatureVerificationError):
        verify_signature(changed, header, secret, now=NOW)


@settings(max_examples=100, deadline=None)
@given(body=bodies, secret=secrets_, other=secrets_)
def test_another_secret_is_refused(body: bytes, secret: str, other: str) -> None:
    header = signature_header(body, secret, NOW)
    with pytest.raises(SignatureVerificationError):
        verify_signature(body, header, other, now=NOW)


@settings(max_examples=100, deadline=None)
@given(body=bodies, secret=secrets_, skew=st.integers(301, 10**6), sign=st.sampled_from([-1, 1]))
def test_an_old_or_future_timestamp_is_refused(
    body: bytes, secret: str, skew: int, sign: int
) -> None:
    header = signature_header(body, secret, NOW + sign * skew)
    with pytest.raises(SignatureVerificationError, match="timestamp"):
        verify_signature(body, header, secret, now=NOW)
    # A tolerance of 0 turns the time check off (a receiver replaying its own log).
    assert verify_signature(body, header, secret, tolerance_seconds=0, now=NOW)


@settings(max_examples=300, deadline=None)
@given(header=st.text(max_size=300), body=bodies)
def test_garbage_headers_raise_only_the_documented_error(header: str, body: bytes) -> None:
    with pytest.raises(SignatureVerificationError):
        verify_signature(body, header, "whsec_x", now=NOW)


def test_a_changed_timestamp_breaks_the_signature() -> None:
    body, secret = b'{"id":"evt_1"}', new_secret()
    signature = independent_signature(body, secret, NOW)
    with pytest.raises(SignatureVerificationError, match="No signature matches"):
        verify_signature(body, f"t={NOW + 1},v1={signature}", secret, now=NOW)


def test_one_matching_signature_among_several_is_enough() -> None:
    """Receivers may get several v1 values (Stripe's shape while a secret rolls)."""
    body, secret = b"{}", new_secret()
    good = independent_signature(body, secret, NOW)
    header = f"t={NOW},v1={'0' * 64},v0=ignored,v1={good}"
    assert verify_signature(body, header, secret, now=NOW)


def test_the_payload_must_be_the_raw_bytes() -> None:
    secret = new_secret()
    header = signature_header(b"{}", secret, NOW)
    with pytest.raises(TypeError):
        verify_signature("{}", header, secret, now=NOW)  # type: ignore[arg-type]


def test_the_secret_shape() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(secret) == 6 + 43
    assert secret[6:].isalnum() and new_secret() != secret
