"""The documentation keeps up with the code."""

from __future__ import annotations

from pathlib import Path

from keystile.api.errors import STATUS
from keystile.errors import KeystileError
from keystile.settings import Settings

DOCS = Path(__file__).parents[2] / "docs"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [
        f"KEYSTILE_{name.upper()}"
        for name in Settings.model_fields
        if f"`KEYSTILE_{name.upper()}`" not in text
    ]
    assert missing == []


def test_every_error_code_is_in_the_api_reference() -> None:
    text = (DOCS / "api.md").read_text()
    codes = {error.code for error in STATUS if error is not KeystileError} | {"internal_error"}
    missing = sorted(code for code in codes if f"`{code}`" not in text)
    assert missing == []
