"""The token format of contract §2: property tests."""

from __future__ import annotations

import re
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keystile.keys import tokens

PREFIXES = st.from_regex(r"[a-z][a-z0-9]{1,15}", fullmatch=True)
TOKEN_CHARS = st.characters(codec="ascii") | st.characters()


@given(PREFIXES)
def test_a_generated_token_has_the_documented_shape_and_round_trips(prefix: str) -> None:
    token = tokens.generate(prefix)
    assert re.fullmatch(rf"{prefix}_live_[0-9A-Za-z]{{32}}", token)
    assert tokens.is_well_formed(token, prefix)
    # The checksum is CRC32 of everything before it, in base62, 6 characters.
    head, check = token[:-6], token[-6:]
    value = 0
    for char in check:
        value = value * 62 + tokens.BASE62.index(char)
    assert value == zlib.crc32(head.encode("ascii"))


@settings(max_examples=300)
@given(st.data())
def test_every_single_character_change_is_rejected(data: st.DataObject) -> None:
    token = tokens.generate("wbk")
    index = data.draw(st.integers(0, len(token) - 1), label="index")
    replacement = data.draw(TOKEN_CHARS.filter(lambda c: c != token[index]), label="char")
    changed = token[:index] + replacement + token[index + 1 :]
    assert not tokens.is_well_formed(changed, "wbk")


def test_every_substitution_in_one_token_is_rejected_exhaustively() -> None:
    token = tokens.generate("wbk")
    for index in range(len(token)):
        for char in tokens.BASE62 + "_-":
            if char != token[index]:
                changed = token[:index] + char + token[index + 1 :]
                assert not tokens.is_well_formed(changed, "wbk"), changed


@given(st.text(max_size=80))
def test_arbitrary_text_never_raises(text: str) -> None:
    assert tokens.is_well_formed(text, "wbk") in (True, False)


def test_truncation_extension_and_other_prefixes_are_rejected() -> None:
    token = tokens.generate("wbk")
    assert not tokens.is_well_formed(token[:-1], "wbk")
    assert not tokens.is_well_formed(token + "0", "wbk")
    assert not tokens.is_well_formed(token, "abc")
    assert not tokens.is_well_formed(token.replace("_live_", "_test_"), "wbk")


def test_tokens_are_random() -> None:
    assert len({tokens.generate("wbk") for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, "000000"), (61, "00000z"), (62, "000010"), (2**32 - 1, "4gfFC3")],
)
def test_base62_is_most_significant_first_and_zero_padded(value: int, expected: str) -> None:
    assert tokens.base62(value, 6) == expected


def test_the_digest_is_sha256_hex_and_differs_from_the_token() -> None:
    token = tokens.generate("wbk")
    digest = tokens.digest(token)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert token not in digest
