"""Domain rules for key fields (contract §2, §4)."""

from __future__ import annotations

import pytest

from keystile.clock import to_micros
from keystile.errors import ValidationFailed
from keystile.keys.models import Tier
from keystile.keys.validation import check_new_key, name_key, parse_timestamp

CATALOG = frozenset({"read:contacts", "write:contacts", "admin:api_keys"})
NOW = to_micros(parse_timestamp("2026-01-01T00:00:00Z"))  # type: ignore[arg-type]


def check(**fields: object) -> object:
    arguments: dict[str, object] = {
        "name": "worker",
        "permissions": ["read:contacts"],
        "description": None,
        "rate_limit_tier": None,
        "expires_at": None,
        "catalog": CATALOG,
        "now": NOW,
    }
    arguments.update(fields)
    return check_new_key(**arguments)  # type: ignore[arg-type]


def problems(**fields: object) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        check(**fields)
    return {d.field: d.message for d in caught.value.details}


def test_defaults_and_trimming() -> None:
    new = check(name="  worker  ", permissions=["read:contacts", "read:contacts"])
    assert new.name == "worker"  # type: ignore[attr-defined]
    assert new.permissions == ("read:contacts",)  # type: ignore[attr-defined]
    assert new.rate_limit_tier is Tier.STANDARD  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "name",
    ["", "   ", "x" * 121, "a\x00b", "a\x07b", "tab\there", "evil\u202egnp.exe", "iso\u2066late"],
)
def test_bad_names_are_refused(name: str) -> None:
    assert "name" in problems(name=name)


@pytest.mark.parametrize(
    "name", ["x" * 120, "  " + "x" * 120 + "  ", "Ingestion worker", "日本語キー", "emoji 🔑"]
)
def test_good_names_are_accepted(name: str) -> None:
    check(name=name)


def test_names_compare_after_nfc_and_casefolding() -> None:
    assert name_key("Straße") == name_key("STRASSE")
    assert name_key("e\u0301") == name_key("\u00e9")
    assert name_key("Worker") == name_key("worker")
    assert name_key("worker") != name_key("worker2")


def test_unknown_and_missing_scopes() -> None:
    assert problems(permissions=["read:contacts", "fly:rockets"]) == {
        "permissions[1]": "unknown scope 'fly:rockets'; the scopes are: "
        "admin:api_keys, read:contacts, write:contacts"
    }
    assert "permissions" in problems(permissions=[])


def test_tier_and_description_rules() -> None:
    assert "rate_limit_tier" in problems(rate_limit_tier="platinum")
    assert "description" in problems(description="x" * 1001)
    assert "description" in problems(description="bad\x00")
    check(description="line one\nline two\ttabbed")


@pytest.mark.parametrize(
    "stamp",
    [
        "2027-01-01",
        "2027-01-01T00:00:00",
        "2027-01-01 00:00:00Z",
        "tomorrow",
        "2027-13-01T00:00:00Z",
        "1735689600",
    ],
)
def test_expiry_must_be_rfc3339_with_offset(stamp: str) -> None:
    assert "expires_at" in problems(expires_at=stamp)


def test_expiry_must_be_in_the_future() -> None:
    assert problems(expires_at="2025-12-31T23:59:59Z") == {"expires_at": "must be in the future"}
    assert "expires_at" in problems(expires_at="2026-01-01T00:00:00Z")
    new = check(expires_at="2026-01-01T02:00:00.5+01:00")
    assert new.expires_at == NOW + 3_600_000_000 + 500_000  # type: ignore[attr-defined]
    assert "expires_at" in problems(expires_at="9999-12-31T23:59:59-23:59")


def test_all_problems_are_reported_at_once() -> None:
    found = problems(name="", permissions=["nope"], rate_limit_tier="x", expires_at="x")
    assert set(found) == {"name", "permissions[0]", "rate_limit_tier", "expires_at"}
