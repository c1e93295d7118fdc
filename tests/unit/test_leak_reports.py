"""Leak reports (contract §14), the pure parts: the partner's signature
checked against its public keys, the keys file, and the look-alikes
decided without storage."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from keystile.audit.models import SYSTEM_ORIGIN
from keystile.errors import ConfigurationError, InvalidSignature
from keystile.keys import tokens
from keystile.keys.service import KeyService
from keystile.leaks.public_keys import PublicKeys, PublicKeysFile, load
from keystile.leaks.service import Label, LeakService, ReportedToken
from tests.partner import Partner, keys_document

PARTNER = Partner()
KEYS = PublicKeys.parse(keys_document((PARTNER.identifier, PARTNER.key)))
BODY = b'[{"token":"wbk_live_x","type":"t","url":"u","source":"content"}]'


class TestSignature:
    def test_a_signature_by_a_listed_key_verifies(self) -> None:
        KEYS.check(BODY, PARTNER.identifier, PARTNER.signature(BODY))

    @pytest.mark.parametrize(
        ("identifier", "signature"),
        [
            (None, PARTNER.signature(BODY)),
            (PARTNER.identifier, None),
            ("another-key", PARTNER.signature(BODY)),
            (PARTNER.identifier, PARTNER.signature(BODY + b" ")),  # another body
            (PARTNER.identifier, Partner().signature(BODY)),  # another key, same id
            (PARTNER.identifier, "not base64!"),
            (PARTNER.identifier, PARTNER.signature(BODY)[:-4]),  # truncated
            (PARTNER.identifier, PARTNER.signature(BODY).rstrip("=") + "x"),
            (PARTNER.identifier, ""),
            (PARTNER.identifier, "A" * 10_000),
            (PARTNER.identifier, "é" * 10),
        ],
        # Signatures are random per process: fixed ids let xdist workers agree.
        ids=[
            "no-identifier",
            "no-signature",
            "unknown-identifier",
            "another-body",
            "another-key",
            "not-base64",
            "truncated",
            "altered",
            "empty",
            "huge",
            "non-ascii",
        ],
    )
    def test_anything_else_is_invalid_signature(
        self, identifier: str | None, signature: str | None
    ) -> None:
        with pytest.raises(InvalidSignature):
            KEYS.check(BODY, identifier, signature)

    def test_no_keys_refuse_every_report(self) -> None:
        with pytest.raises(InvalidSignature):
            PublicKeys().check(BODY, PARTNER.identifier, PARTNER.signature(BODY))

    def test_every_listed_key_verifies_current_or_not(self) -> None:
        old = Partner(identifier="old")
        keys = PublicKeys.parse(keys_document((PARTNER.identifier, PARTNER.key), ("old", old.key)))
        keys.check(BODY, "old", old.signature(BODY))
        with pytest.raises(InvalidSignature):
            keys.check(BODY, PARTNER.identifier, old.signature(BODY))

    @settings(max_examples=300, deadline=None)
    @given(
        body=st.binary(max_size=200),
        identifier=st.one_of(st.none(), st.just(PARTNER.identifier), st.text(max_size=300)),
        signature=st.one_of(
            st.none(),
            st.text(max_size=300),
            st.binary(max_size=120).map(lambda b: base64.b64encode(b).decode()),
        ),
    )
    def test_hostile_headers_raise_only_invalid_signature(
        self, body: bytes, identifier: str | None, signature: str | None
    ) -> None:
        with pytest.raises(InvalidSignature):
            KEYS.check(body, identifier, signature)


class TestKeysFile:
    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ("not json", "not valid JSON"),
            ("[]", "'public_keys' array"),
            ('{"public_keys": []}', "'public_keys' array"),
            ('{"public_keys": [1]}', "public_keys[0] must be an object"),
            ('{"public_keys": [{"key": "x"}]}', "key_identifier"),
            ('{"public_keys": [{"key_identifier": "a", "key": "x"}]}', "not a PEM public key"),
        ],
    )
    def test_an_invalid_document_names_the_variable_and_the_problem(
        self, text: str, problem: str
    ) -> None:
        with pytest.raises(ConfigurationError) as raised:
            PublicKeys.parse(text)
        message = str(raised.value)
        assert message.startswith("KEYSTILE_SECRET_SCANNING_KEYS") and problem in message
        assert "\n" not in message

    def test_a_key_on_another_curve_is_refused(self) -> None:
        p384 = ec.generate_private_key(ec.SECP384R1())
        with pytest.raises(ConfigurationError, match="not an ECDSA P-256 key"):
            PublicKeys.parse(keys_document(("a", p384)))

    def test_a_missing_file_is_a_configuration_error(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="KEYSTILE_SECRET_SCANNING_KEYS: cannot read"):
            load(tmp_path / "missing.json")

    def test_a_changed_file_is_read_again_and_a_broken_one_keeps_the_old_keys(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        path = PARTNER.write_keys(tmp_path / "keys.json")
        watched = PublicKeysFile(path)
        watched.current().check(BODY, PARTNER.identifier, PARTNER.signature(BODY))
        rotated = Partner(identifier="rotated")
        rotated.write_keys(path)
        os.utime(path, ns=(1, 1))  # a different stamp, whatever the clock's resolution
        watched.current().check(BODY, "rotated", rotated.signature(BODY))
        with pytest.raises(InvalidSignature):
            watched.current().check(BODY, PARTNER.identifier, PARTNER.signature(BODY))
        path.write_text("{broken")
        watched.current().check(BODY, "rotated", rotated.signature(BODY))
        assert "keeping the secret-scanning keys read before" in caplog.text

    def test_unset_means_no_keys(self) -> None:
        assert PublicKeysFile(None).current().keys == {}


class NoStorage:
    """Fails the test on any use."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"storage was used: {name}")


def look_alikes() -> list[str]:
    live = tokens.generate("wbk")
    wrong_checksum = live[:-1] + ("0" if live[-1] != "0" else "1")
    return [
        wrong_checksum,
        tokens.generate("other"),  # another deployment's prefix
        tokens.generate("wbk", tokens.ROOT),  # an operator key's shape: not a live key
        " " + live,
        live + "x",
        "wbk_live_",
        "",
        "ghp_" + "a" * 36,
    ]


@pytest.mark.anyio
async def test_look_alikes_are_false_positives_without_touching_storage() -> None:
    storage: Any = NoStorage()
    service = LeakService(storage, KeyService(storage, prefix="wbk"), prefix="wbk")
    report = [ReportedToken(token, "keystile_api_key") for token in look_alikes()]
    verdicts = await service.decide(report, SYSTEM_ORIGIN)
    assert [(v.token, v.type, v.label, v.key_id) for v in verdicts] == [
        (t.token, "keystile_api_key", Label.FALSE_POSITIVE, None) for t in report
    ]


def test_the_documented_regex_matches_exactly_the_well_formed_shape() -> None:
    """docs/secret-scanning.md gives partners this pattern."""
    text = (Path(__file__).parents[2] / "docs" / "secret-scanning.md").read_text()
    pattern = re.search(r"```\s*\n\s*(wbk_live_\S+)\s*\n\s*```", text)
    assert pattern is not None
    regex = re.compile(pattern.group(1))
    assert all(regex.fullmatch(tokens.generate("wbk")) for _ in range(200))
    assert not regex.fullmatch(tokens.generate("wbk", tokens.ROOT))
    assert not regex.fullmatch(tokens.generate("wbk") + "0")
