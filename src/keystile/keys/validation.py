"""Rules for user-supplied key and account fields, shared by the API and the CLI.

Shape and types are checked by the wire schema first; this module checks the
domain rules and reports every problem at once as :class:`ValidationFailed`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from keystile.clock import to_micros
from keystile.errors import FieldProblem, ValidationFailed
from keystile.keys.models import Metadata, NewKey, Quota, QuotaPeriod, RateLimitRule, Tier
from keystile.redaction import holds_token

NAME_MAX = 120
DESCRIPTION_MAX = 1000
LATEST_EXPIRY = to_micros(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
# Stripe's metadata rules (contract §9).
METADATA_ENTRIES_MAX = 50
METADATA_KEY_MAX = 40
METADATA_VALUE_MAX = 500
# Contract §11.
RATE_LIMIT_MAX = 10**9
WINDOW_SECONDS_MAX = 86_400
QUOTA_MAX = 10**12

# Bidirectional formatting characters can make a name display differently from
# what it is ("Trojan Source", CVE-2021-42574); names are shown to humans, so
# they are refused along with control characters.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?P<fraction>\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)


SECRET_PROBLEM = "must not contain an API key or a signing secret"  # noqa: S105 (a message)


def _bad_character(text: str, allow_whitespace_controls: bool) -> str | None:
    """What is wrong with free text shown to people, or None. A whole key
    pasted into a name or a description would be stored in clear and shown
    in every listing: refused like a control character."""
    if holds_token(text):
        return SECRET_PROBLEM
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


def check_description(description: str | None) -> list[FieldProblem]:
    if description is None:
        return []
    problem = _bad_character(description, allow_whitespace_controls=True)
    if problem is None and len(description) > DESCRIPTION_MAX:
        problem = f"must be at most {DESCRIPTION_MAX} characters"
    return [FieldProblem("description", problem)] if problem else []


def check_permissions(
    permissions: Iterable[str], catalog: frozenset[str]
) -> tuple[tuple[str, ...], list[FieldProblem]]:
    """Catalog scopes in the order given, duplicates removed; at least one."""
    problems: list[FieldProblem] = []
    scopes: list[str] = []
    for index, scope in enumerate(permissions):
        if scope not in catalog:
            problems.append(FieldProblem(f"permissions[{index}]", unknown_scope(scope, catalog)))
        elif scope not in scopes:
            scopes.append(scope)
    if not scopes and not problems:
        problems.append(FieldProblem("permissions", "at least one scope is required"))
    return tuple(scopes), problems


def check_tier(raw: str | None) -> tuple[Tier, list[FieldProblem]]:
    if raw is None:
        return Tier.STANDARD, []
    try:
        return Tier(raw), []
    except ValueError:
        choices = ", ".join(t.value for t in Tier)
        return Tier.STANDARD, [FieldProblem("rate_limit_tier", f"must be one of: {choices}")]


def check_expiry(raw: str | None, now: int) -> tuple[int | None, list[FieldProblem]]:
    """An RFC 3339 instant in the future (microseconds), or None for never."""
    if raw is None:
        return None, []
    moment = parse_timestamp(raw)
    if moment is None:
        return None, [
            FieldProblem("expires_at", "must be an RFC 3339 timestamp with a Z or an offset")
        ]
    expiry = to_micros(moment)
    if expiry <= now:
        return None, [FieldProblem("expires_at", "must be in the future")]
    if expiry > LATEST_EXPIRY:
        return None, [FieldProblem("expires_at", "must be before the year 10000 in UTC")]
    return expiry, []


def check_metadata(
    raw: Mapping[str, Any] | None, field: str = "metadata"
) -> tuple[Metadata, list[FieldProblem]]:
    """Stripe's rules (contract §9): an object of at most 50 entries, keys
    1-40 characters (no ``[`` or ``]``, which the list filter
    ``metadata[KEY]=VALUE`` uses), values strings of at most 500 characters.
    ``None`` (and ``{}``) is no metadata."""
    if raw is None:
        return {}, []
    problems: list[FieldProblem] = []
    if len(raw) > METADATA_ENTRIES_MAX:
        problems.append(FieldProblem(field, f"must have at most {METADATA_ENTRIES_MAX} entries"))
    for key, value in raw.items():
        where = f"{field}.{key}"
        if not 1 <= len(key) <= METADATA_KEY_MAX:
            problems.append(FieldProblem(where, f"keys must be 1 to {METADATA_KEY_MAX} characters"))
        elif "[" in key or "]" in key:
            problems.append(FieldProblem(where, "keys must not contain '[' or ']'"))
        elif (bad := _bad_character(key, allow_whitespace_controls=False)) is not None:
            problems.append(FieldProblem(where, f"keys {bad}"))
        if not isinstance(value, str):
            problems.append(FieldProblem(where, "values must be strings"))
        elif len(value) > METADATA_VALUE_MAX:
            problems.append(
                FieldProblem(where, f"values must be at most {METADATA_VALUE_MAX} characters")
            )
        elif (problem := _bad_character(value, allow_whitespace_controls=True)) is not None:
            problems.append(FieldProblem(where, problem))
    return ({} if problems else dict(raw)), problems


def check_rate_limit(
    raw: Mapping[str, Any] | None,
) -> tuple[RateLimitRule | None, list[FieldProblem]]:
    """``{"limit": 1..10^9, "window_seconds": 1..86400}`` or None (the tier's rule)."""
    if raw is None:
        return None, []
    limit, window = raw.get("limit"), raw.get("window_seconds")
    problems = _whole_number("rate_limit.limit", limit, 1, RATE_LIMIT_MAX)
    problems += _whole_number("rate_limit.window_seconds", window, 1, WINDOW_SECONDS_MAX)
    if problems or not isinstance(limit, int) or not isinstance(window, int):
        return None, problems
    return RateLimitRule(limit, window), []


def check_quota(raw: Mapping[str, Any] | None) -> tuple[Quota | None, list[FieldProblem]]:
    """``{"limit": 1..10^12, "period": "day" | "month"}`` or None (no quota)."""
    if raw is None:
        return None, []
    limit, period = raw.get("limit"), raw.get("period")
    problems = _whole_number("quota.limit", limit, 1, QUOTA_MAX)
    periods = [p.value for p in QuotaPeriod]
    if period not in periods:
        problems.append(FieldProblem("quota.period", f"must be one of: {', '.join(periods)}"))
    if problems or not isinstance(limit, int):
        return None, problems
    return Quota(limit, QuotaPeriod(str(period))), []


def _whole_number(field: str, value: object, low: int, high: int) -> list[FieldProblem]:
    if value is None:
        return [FieldProblem(field, "is required")]
    if isinstance(value, bool) or not isinstance(value, int):
        return [FieldProblem(field, "must be an integer")]
    if not low <= value <= high:
        return [FieldProblem(field, f"must be from {low:,} to {high:,}")]
    return []


def check_new_key(
    *,
    name: str,
    permissions: Iterable[str],
    description: str | None,
    rate_limit_tier: str | None,
    expires_at: str | None,
    catalog: frozenset[str],
    now: int,
    metadata: Mapping[str, Any] | None = None,
    rate_limit: Mapping[str, Any] | None = None,
    quota: Mapping[str, Any] | None = None,
) -> NewKey:
    """Validate every field of a create request; raise one error listing all problems."""
    clean_name, problems = check_name(name)
    scopes, scope_problems = check_permissions(permissions, catalog)
    tier, tier_problems = check_tier(rate_limit_tier)
    expiry, expiry_problems = check_expiry(expires_at, now)
    clean_metadata, metadata_problems = check_metadata(metadata)
    rule, rule_problems = check_rate_limit(rate_limit)
    limit, quota_problems = check_quota(quota)
    problems += scope_problems + check_description(description) + tier_problems
    problems += expiry_problems + metadata_problems + rule_problems + quota_problems
    if problems:
        raise ValidationFailed("The request is invalid.", problems)
    return NewKey(
        name=clean_name,
        permissions=scopes,
        description=description,
        rate_limit_tier=tier,
        expires_at=expiry,
        metadata=clean_metadata,
        rate_limit=rule,
        quota=limit,
    )


# The fields of PATCH /v1/api-keys/{id} (contract §10), as ApiKey's fields.
PATCHABLE = (
    "name", "description", "metadata", "expires_at", "permissions",
    "rate_limit_tier", "rate_limit", "quota", "disabled",
)  # fmt: skip


def check_key_patch(
    given: Mapping[str, Any], *, catalog: frozenset[str], now: int
) -> dict[str, Any]:
    """The changes of a PATCH, validated, as ``ApiKey`` field → new value
    (apply with :func:`dataclasses.replace`). ``given`` holds only the
    fields the client sent (``null`` included). Raises one error listing
    every problem; an empty patch is a problem too."""
    if not given:
        raise ValidationFailed(
            "The request is invalid.",
            [FieldProblem("body", f"give at least one of: {', '.join(PATCHABLE)}")],
        )
    changes: dict[str, Any] = {}
    problems: list[FieldProblem] = []
    for field, raw in given.items():
        if field == "name":
            if raw is None:
                problems.append(FieldProblem("name", "must not be null"))
                continue
            changes["name"], found = check_name(raw)
        elif field == "description":
            changes["description"], found = raw, check_description(raw)
        elif field == "metadata":
            changes["metadata"], found = check_metadata(raw)
        elif field == "expires_at":
            changes["expires_at"], found = check_expiry(raw, now)
        elif field == "permissions":
            if raw is None:
                problems.append(FieldProblem("permissions", "must not be null"))
                continue
            changes["permissions"], found = check_permissions(raw, catalog)
        elif field == "rate_limit_tier":
            changes["rate_limit_tier"], found = check_tier(raw)
        elif field == "rate_limit":
            changes["rate_limit"], found = check_rate_limit(raw)
        elif field == "quota":
            changes["quota"], found = check_quota(raw)
        elif field == "disabled":
            if not isinstance(raw, bool):
                problems.append(FieldProblem("disabled", "must be true or false"))
                continue
            changes["disabled"], found = raw, []
        else:
            found = [FieldProblem(field, f"is not a known field (known: {', '.join(PATCHABLE)})")]
        problems += found
    if problems:
        raise ValidationFailed("The request is invalid.", problems)
    return changes
