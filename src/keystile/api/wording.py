"""keystile's own sentences for what the wire schemas refuse.

pydantic (bodies) and FastAPI (query parameters) check types and bounds;
their messages ("Input should be a valid list", "Value error, …") name
library concepts. Every problem a client can see is said here instead, in
one voice: what was wrong and what is allowed, with the field named in
``details[].field``. The domain rules (``keystile.keys.validation``) word
their own problems the same way and are shared with the CLI, so one
mistake reads alike over HTTP and on the command line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from keystile.errors import FieldProblem

_TYPES = {
    "string_type": "must be a string",
    "list_type": "must be an array",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "none_required": "must be null",
    "string_unicode": "must be a string",
}


def _choices(values: Iterable[object]) -> str:
    return ", ".join(str(value) for value in values)


def sentence(error: Mapping[str, Any], allowed_fields: Iterable[str] = ()) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) in keystile's words."""
    kind = str(error["type"])
    context: Mapping[str, Any] = error.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        fields = sorted(allowed_fields)
        return f"is not a known field (known: {_choices(fields)})" if fields else "is not known"
    if kind in _TYPES:
        return _TYPES[kind]
    if kind in ("literal_error", "enum"):
        expected = str(context.get("expected", "")).replace("'", "")
        return f"must be one of: {expected.replace(' or ', ', ')}"
    if kind == "string_too_short":
        return f"must be at least {context.get('min_length')} characters"
    if kind == "string_too_long":
        return f"must be at most {context.get('max_length')} characters"
    if kind == "too_short":
        return f"must have at least {context.get('min_length')} items"
    if kind == "too_long":
        return f"must have at most {context.get('max_length')} items"
    if kind == "greater_than_equal":
        return f"must be at least {context.get('ge')}"
    if kind == "greater_than":
        return f"must be greater than {context.get('gt')}"
    if kind == "less_than_equal":
        return f"must be at most {context.get('le')}"
    if kind == "less_than":
        return f"must be less than {context.get('lt')}"
    if kind == "value_error":
        # Our own validators raise ValueError with keystile's sentence.
        cause = context.get("error")
        return str(cause) if cause is not None else "is invalid"
    return "is invalid"


def field_path(location: Iterable[int | str], skip: Iterable[str] = ()) -> str:
    """``("permissions", 1)`` → ``permissions[1]``; ``skip`` drops FastAPI's
    location prefixes (``query``, ``body``)."""
    skipped = set(skip)
    path = ""
    for part in location:
        if isinstance(part, str) and part in skipped and not path:
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def problems(
    errors: Iterable[Mapping[str, Any]],
    allowed_fields: Iterable[str] = (),
    skip: Iterable[str] = (),
) -> list[FieldProblem]:
    """Every pydantic error as a :class:`FieldProblem` in keystile's words."""
    allowed = list(allowed_fields)
    return [
        FieldProblem(field_path(error["loc"], skip), sentence(error, allowed)) for error in errors
    ]
