"""Rules for user-supplied key and account fields, shared by the API and the CLI.

Shape and types are checked by the wire schema first; this module checks the
domain rules and reports every problem at once as :class:`ValidationFailed`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime

from keystile.clock import to_micros
from keystile.errors import FieldProblem, ValidationFailed
from keystile.keys.models import NewKey, Tier

NAME_MAX = 120
DESCRIPTION_MAX = 1000
LATEST_EXPIRY = to_micros(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))

# Bidirectional formatting characters can make a name display differently from
# what it is ("Trojan Source", CVE-2021-42574); names are shown to humans, so
# they are refused along with control characters.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?P<fraction>\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)


def _bad_character(text: str, allow_whitespace_controls: bool) -> str | None:
    for char in text:
        category = unicodedata.category(char)
        if category == "Cs":
            return "must not contain unpaired surrogates"
        if char in _BIDI_CONTROLS:
            return "must not contain bidirectional control characters"
        if category == "Cc" and not (allow_whitespace_controls and char in "\t\n\r"):
            return "must not contain control characters"
    return None


def unknown_scope(scope: str, catalog: Iterable[str]) -> str:
    """The one wording of an unknown scope, listing the catalog (API and CLI)."""
    return f"unknown scope {scope!r}; the scopes are: {', '.join(sorted(catalog))}"


def check_name(raw: str, field: str = "name") -> tuple[str, list[FieldProblem]]:
    """A name trimmed of surrounding whitespace, 1–120 characters, printable."""
    name = raw.strip()
    problem = _bad_character(name, allow_whitespace_controls=False)
    if problem is None and not 1 <= len(name) <= NAME_MAX:
        problem = f"must be 1 to {NAME_MAX} characters after trimming whitespace"
    return name, [FieldProblem(field, problem)] if problem else []


def name_key(name: str) -> str:
    """The form in which names are compared: NFC, then case-folded (contract §4)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


def parse_timestamp(raw: str) -> datetime | None:
    """An RFC 3339 timestamp with ``Z`` or an offset, else ``None``.

    Fractions beyond microseconds are truncated (datetime cannot hold them).
    """
    match = _RFC3339.fullmatch(raw)
    if match is None:
        return None
    text = raw
    fraction = match.group("fraction")
    if fraction and len(fraction) > 7:
        text = raw.replace(fraction, fraction[:7], 1)
    try:
        return datetime.fromisoformat(text.upper())
    except ValueError:
        return None


def check_new_key(
    *,
    name: str,
    permissions: Iterable[str],
    description: str | None,
    rate_limit_tier: str | None,
    expires_at: str | None,
    catalog: frozenset[str],
    now: int,
) -> NewKey:
    """Validate every field of a create request; raise one error listing all problems."""
    problems: list[FieldProblem] = []
    clean_name, name_problems = check_name(name)
    problems += name_problems

    scopes: list[str] = []
    for index, scope in enumerate(permissions):
        if scope not in catalog:
            problems.append(FieldProblem(f"permissions[{index}]", unknown_scope(scope, catalog)))
        elif scope not in scopes:
            scopes.append(scope)
    if not scopes and not any(p.field.startswith("permissions") for p in problems):
        problems.append(FieldProblem("permissions", "at least one scope is required"))

    if description is not None:
        problem = _bad_character(description, allow_whitespace_controls=True)
        if problem is None and len(description) > DESCRIPTION_MAX:
            problem = f"must be at most {DESCRIPTION_MAX} characters"
        if problem:
            problems.append(FieldProblem("description", problem))

    tier = Tier.STANDARD
    if rate_limit_tier is not None:
        try:
            tier = Tier(rate_limit_tier)
        except ValueError:
            choices = ", ".join(t.value for t in Tier)
            problems.append(FieldProblem("rate_limit_tier", f"must be one of: {choices}"))

    expiry: int | None = None
    if expires_at is not None:
        moment = parse_timestamp(expires_at)
        if moment is None:
            problems.append(
                FieldProblem("expires_at", "must be an RFC 3339 timestamp with a Z or an offset")
            )
        elif (expiry := to_micros(moment)) <= now:
            problems.append(FieldProblem("expires_at", "must be in the future"))
        elif expiry > LATEST_EXPIRY:
            problems.append(FieldProblem("expires_at", "must be before the year 10000 in UTC"))

    if problems:
        raise ValidationFailed("The request is invalid.", problems)
    return NewKey(
        name=clean_name,
        permissions=tuple(scopes),
        description=description,
        rate_limit_tier=tier,
        expires_at=expiry,
    )
