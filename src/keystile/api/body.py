"""Reading a JSON request body safely: size, media type, syntax, then schema.

Every hostile body ends in a ``KeystileError`` (4xx), never in an exception
from deep inside a parser: bodies over 64 KiB (413, counted while streaming,
not trusted from Content-Length), a media type other than JSON (415), invalid
UTF-8, malformed JSON, nesting deep enough to exhaust the parser's recursion,
integers of thousands of digits, NaN/Infinity, duplicate object keys, unpaired
surrogates and NUL characters (400).
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope

from keystile.api.wording import problems
from keystile.errors import (
    FieldProblem,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from keystile.http.context import context_of
from keystile.http.deadlines import within

MAX_BODY = 64 * 1024
M = TypeVar("M", bound=BaseModel)
_MAX_NUMBER_DIGITS = 64


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def is_json_media_type(value: bytes | None) -> bool:
    if value is None:
        return False
    media_type, _, params = value.decode("latin-1").partition(";")
    if media_type.strip().lower() != "application/json":
        return False
    for param in params.split(";"):
        name, _, charset = param.partition("=")
        if name.strip().lower() == "charset" and charset.strip().strip('"').lower() != "utf-8":
            return False
    return True


async def read_body(scope: Scope, receive: Receive, limit: int = MAX_BODY) -> bytes:
    """The whole body: at most ``limit`` bytes, arriving within the request's
    body timeout (a client trickling a body cannot hold a handler forever).

    Read from the client once per request: later calls return the same bytes.
    """
    ctx = context_of(scope)
    if ctx.body is not None:
        return ctx.body
    ctx.body = await _read_body(scope, receive, limit, ctx.body_timeout)
    return ctx.body


async def _read_body(scope: Scope, receive: Receive, limit: int, seconds: float) -> bytes:
    declared = header(scope, b"content-length")
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            too_big = False  # the server rejects a malformed Content-Length itself
        if too_big:
            raise PayloadTooLarge(f"The request body exceeds {limit} bytes.")
    try:
        with within(seconds):  # not asyncio.timeout: see keystile.http.deadlines
            return await _receive_all(receive, limit)
    except TimeoutError:
        raise ValidationFailed(
            "The request body was not received in time.",
            [FieldProblem("body", "arrived too slowly")],
        ) from None


async def _receive_all(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ValidationFailed("The client disconnected before sending the whole body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body exceeds {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key!r} appears twice in one object")
        result[key] = value
    return result


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_NUMBER_DIGITS:
        raise ValueError(f"numbers may have at most {_MAX_NUMBER_DIGITS} digits")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > _MAX_NUMBER_DIGITS * 2:
        raise ValueError(f"numbers may have at most {_MAX_NUMBER_DIGITS * 2} characters")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number is too large")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# Built once: json.loads() with hooks constructs a new decoder on every call.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_reject_duplicates,
    parse_int=_parse_int,
    parse_float=_parse_float,
    parse_constant=_reject_constant,
)


def _check_strings(value: Any, path: str) -> None:
    """Refuse NUL and unpaired surrogates anywhere (keys included): neither
    can be stored in PostgreSQL text or encoded as UTF-8."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValidationFailed(
                "The request is invalid.", [FieldProblem(path or "body", "must not contain NUL")]
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationFailed(
                "The request is invalid.",
                [FieldProblem(path or "body", "must not contain unpaired surrogates")],
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key, path or "body")
            _check_strings(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_strings(item, f"{path}[{index}]")


async def read_optional_json(scope: Scope, receive: Receive) -> Any:
    """The request's JSON document, or None when the request has no body
    (an empty one); a body that is there is read like :func:`read_json`."""
    if not await read_body(scope, receive):
        return None
    return await read_json(scope, receive)


def _json_problem(message: str) -> str:
    """The decoder's complaint as a short keystile sentence."""
    if message.startswith("Expecting value"):
        return "a JSON value was expected here"
    if message.startswith("Extra data"):
        return "only one JSON document is allowed"
    if message.startswith("Expecting property name"):
        return "an object key (a string in double quotes) was expected here"
    if message.startswith(("Expecting ':'", "Expecting ','")):
        return f"a {message.removeprefix('Expecting ').split()[0]} was expected here"
    if message.startswith(("Unterminated string", "Invalid control character")):
        return "a string is not closed, or holds a raw control character"
    if "escape" in message:
        return "a string has an invalid escape sequence"
    return "the JSON is malformed here"


def parse_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationFailed("The request body is not valid UTF-8.") from None
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise ValidationFailed("The request body is nested too deeply.") from None
    except json.JSONDecodeError as exc:
        raise ValidationFailed(
            f"The request body is not valid JSON (line {exc.lineno}, column {exc.colno}).",
            [FieldProblem("body", _json_problem(exc.msg))],
        ) from None
    except ValueError as exc:  # our hooks: duplicate keys, long numbers, NaN
        raise ValidationFailed(
            "The request body is not valid JSON.", [FieldProblem("body", str(exc))]
        ) from None
    _check_strings(value, "")
    return value


async def read_json(scope: Scope, receive: Receive) -> Any:
    """The request's JSON document (413, 415 and 400 on the way).

    Parsed once per request, by one parser: the idempotency layer's
    fingerprint and the endpoint see the same document, and a body one of
    them refuses the other refuses the same way (issue #11, item 9).
    """
    ctx = context_of(scope)
    if ctx.parsed:
        return ctx.document
    if not is_json_media_type(header(scope, b"content-type")):
        raise UnsupportedMediaType()
    ctx.document = parse_json(await read_body(scope, receive))
    ctx.parsed = True
    return ctx.document


def validate_model(model: type[M], data: Any) -> M:
    """``data`` as ``model``; every problem listed in one 400 ``validation_error``."""
    if not isinstance(data, dict):
        raise ValidationFailed("The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = problems(exc.errors(), allowed_fields=model.model_fields)
        raise ValidationFailed("The request is invalid.", details) from None
