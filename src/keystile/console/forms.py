"""Form fields to API request bodies, and back. No rule lives here: a value
the API would refuse is passed on as typed, and the API's own message is shown
next to the field it names."""

from __future__ import annotations

from typing import Any

from keystile.console.web import Ctx

KEY_FIELDS = (
    "name",
    "description",
    "permissions",
    "rate_limit_tier",
    "expires_at",
    "metadata",
    "rate_limit",
    "quota",
)
GRACE_PERIODS = (
    (0, "None: revoke the old key now"),
    (3600, "1 hour"),
    (86400, "1 day"),
    (604800, "7 days"),
)


def _number(text: str) -> int | str:
    """An integer when the text is one; else the text, for the API to refuse by name."""
    return int(text) if text.isdigit() and len(text) < 20 else text


def metadata_text(metadata: dict[str, str] | None) -> str:
    return "\n".join(f"{key}={value}" for key, value in (metadata or {}).items())


def parse_metadata(text: str) -> dict[str, str] | str:
    """``KEY=VALUE`` lines; the offending line when one has no ``=``."""
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            return line.strip()
        pairs[key.strip()] = value.strip()
    return pairs


def key_body(ctx: Ctx) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON body of a create (every field the form gives), and the
    problems the form itself cannot express as JSON (a metadata line)."""
    body: dict[str, Any] = {
        "name": ctx.value("name"),
        "permissions": ctx.values("permissions"),
        "rate_limit_tier": ctx.value("rate_limit_tier") or "standard",
        "description": ctx.value("description") or None,
        "expires_at": ctx.value("expires_at") or None,
        "rate_limit": None,
        "quota": None,
    }
    problems: dict[str, str] = {}
    metadata = parse_metadata(ctx.value("metadata"))
    if isinstance(metadata, str):
        problems["metadata"] = f"each line must read KEY=VALUE (not {metadata[:40]!r})"
    else:
        body["metadata"] = metadata
    if ctx.value("rate_limit_limit") or ctx.value("rate_limit_window_seconds"):
        body["rate_limit"] = {
            "limit": _number(ctx.value("rate_limit_limit")),
            "window_seconds": _number(ctx.value("rate_limit_window_seconds")),
        }
    if ctx.value("quota_limit"):
        body["quota"] = {
            "limit": _number(ctx.value("quota_limit")),
            "period": ctx.value("quota_period") or "month",
        }
    return body, problems


def key_changes(ctx: Ctx, current: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The PATCH body of an edit: only the fields that differ from ``current``."""
    body, problems = key_body(ctx)
    body.setdefault("metadata", current.get("metadata") or {})
    changed = {
        name: value
        for name, value in body.items()
        if _comparable(name, value) != _comparable(name, current.get(name))
    }
    return changed, problems


def _comparable(name: str, value: Any) -> Any:
    if name == "permissions":
        return sorted(value or [])
    if name == "metadata":
        return value or {}
    return value


def key_form_values(key: dict[str, Any] | None, ctx: Ctx | None = None) -> dict[str, Any]:
    """What the key form shows: what was typed (after an error), else the key's fields."""
    if ctx is not None and ctx.form:
        names = (
            "name",
            "description",
            "rate_limit_tier",
            "expires_at",
            "metadata",
            "rate_limit_limit",
            "rate_limit_window_seconds",
            "quota_limit",
            "quota_period",
        )
        values: dict[str, Any] = {name: ctx.value(name) for name in names}
        values["permissions"] = ctx.values("permissions")
        return values
    key = key or {}
    rate_limit = key.get("rate_limit") or {}
    quota = key.get("quota") or {}
    return {
        "name": key.get("name") or "",
        "description": key.get("description") or "",
        "rate_limit_tier": key.get("rate_limit_tier") or "standard",
        "expires_at": key.get("expires_at") or "",
        "metadata": metadata_text(key.get("metadata")),
        "permissions": key.get("permissions") or [],
        "rate_limit_limit": rate_limit.get("limit", ""),
        "rate_limit_window_seconds": rate_limit.get("window_seconds", ""),
        "quota_limit": quota.get("limit", ""),
        "quota_period": quota.get("period", "month"),
    }
