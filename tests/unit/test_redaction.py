"""Secret-shaped text is masked however a client spells it (issue #11, item 7)."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keystile.keys import tokens
from keystile.redaction import holds_token, looks_secret, redact, redact_log_line

SPELLINGS: dict[str, Callable[[str], str]] = {
    "as is": lambda t: t,
    "upper": str.upper,
    "lower": str.lower,
    "dashes": lambda t: t.replace("_", "-"),
    "body only": lambda t: t[9:],
    "body lower-cased": lambda t: t[9:].lower(),
    "body upper-cased": lambda t: t[9:].upper(),
    "percent-encoded": lambda t: quote(t, safe=""),
    "underscores encoded": lambda t: t.replace("_", "%5F"),
    "double-encoded": lambda t: quote(quote(t, safe=""), safe=""),
    "split in two": lambda t: f"{t[:20]}/{t[20:]}",
}


def pieces(secret: str, head: int) -> set[str]:
    """16-character windows holding at least 8 characters of the random body
    (the type prefix before it is public)."""
    return {secret[i : i + 16] for i in range(max(0, head - 8), len(secret) - 15)}


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.from_regex(r"[a-z][a-z0-9]{1,15}", fullmatch=True),
    spelling=st.sampled_from(sorted(SPELLINGS)),
    context=st.sampled_from(["/v1/api-keys/{}", "No such key: '{}'.", "{}", "x={}&y=1"]),
)
def test_no_16_character_piece_survives(prefix: str, spelling: str, context: str) -> None:
    secret = tokens.generate(prefix)
    text = context.format(SPELLINGS[spelling](secret))
    for redacted in (redact(text), redact_log_line(redact(text))):
        head = len(prefix) + 6
        assert not any(piece in redacted for piece in pieces(secret, head)), (spelling, redacted)
        folded = redacted.lower()
        body = secret[len(prefix) + 6 :].lower()
        assert body[:20] not in folded and body[12:] not in folded, (spelling, redacted)


@pytest.mark.parametrize(
    "text",
    [
        "No such key: 'key_01ARZ3NDEKTSV4RRFFQ69G5FAV'.",
        "req_2b6a196609020e50966c1f",
        "acc_01JD3ZK4Q8Y6W2N5T7V9X1B3C5 and opk_01JD3ZK4Q8Y6W2N5T7V9X1B3C5",
        "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "The request is invalid.",
        "unknown scope 'fly:rockets'; the scopes are: admin:api_keys, read:contacts",
        "Nightly ingestion job",
    ],
)
def test_keystiles_own_ids_and_ordinary_text_are_kept(text: str) -> None:
    assert redact(text) == text
    assert not looks_secret(text)


def test_whole_tokens_are_recognised_in_free_text() -> None:
    secret = tokens.generate("wbk")
    root = tokens.generate("acme", tokens.ROOT)
    for text in (secret, f"key: {secret.upper()}", root.replace("_", "-"), "whsec_abc123"):
        assert holds_token(text), text
    assert not holds_token("Ingestion worker (live)")
