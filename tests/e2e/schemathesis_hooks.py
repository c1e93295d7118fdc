"""Schemathesis hooks for ``tests/e2e/test_schemathesis.py``: issue #11's kinds
of hostile input mixed into the generated cases, and the properties every
response of the run must keep.

``schemathesis run`` loads this file from the ``SCHEMATHESIS_HOOKS``
environment variable (a file path: it is not imported as a package module),
and reads what it must know about the server under test from the
environment (all set by the test):

- ``FUZZ_ADMIN_SECRET``, ``FUZZ_ADMIN_KEY_ID``, ``FUZZ_ADMIN_ACCOUNT_ID``,
  ``FUZZ_ADMIN_SCOPES`` (space-separated): the key the run authenticates
  with;
- ``FUZZ_FOREIGN_SECRET``: a key of another account;
- ``FUZZ_GATEWAY_PREFIX``: a gateway route (``GET``, the admin's
  ``read:contacts``) to the echoing upstream of ``tests/e2e/upstream.py``;
  the hooks add it to the schema, since ``/openapi.json`` describes only
  keystile's own endpoints;
- ``FUZZ_WEBHOOK_HOST``: ``127.0.0.1:<port>`` where nothing listens: the
  host every generated webhook URL is sent with, so that creating an
  endpoint never makes keystile resolve a random name (DNS traffic off the
  machine) and its deliveries fail at once on loopback (the server runs with
  ``KEYSTILE_WEBHOOK_ALLOW_HTTP`` and ``_ALLOW_PRIVATE``);
- ``FUZZ_REPORT``: where to write, at the end of the run, how many
  responses each kind of hostile request got (the test requires every kind
  to have been sent).

Generation: about half of the fuzzing phase's cases of every operation
carry one kind (path tricks and pasted secrets in path parameters, secrets
in query strings, request ids and bodies, identity headers in other
spellings, expanding characters in names, another account's key in verify,
shared idempotency keys). An edit never makes an invalid case valid: a
negative case stays negative, so Schemathesis' own
``negative_data_rejection`` keeps its meaning.

Checks (each its own name in Schemathesis' report), applied to every
response of every phase; each kind is recognised from the request as it
went on the wire, not from what the hooks meant to send.
"""

from __future__ import annotations

import json
import operator
import os
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from functools import cache, partial
from itertools import product
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes, urlsplit

import hypothesis.strategies as st
import requests.models
import schemathesis
from schemathesis.core.parameters import ParameterLocation

AnyCase = schemathesis.Case[Any]
Operation = schemathesis.APIOperation[Any, Any, Any, Any]

# --- What the run knows ---------------------------------------------------------------------------


@cache
def admin_secret() -> str:
    return os.environ["FUZZ_ADMIN_SECRET"]


@cache
def foreign_secret() -> str:
    return os.environ["FUZZ_FOREIGN_SECRET"]


@cache
def secrets() -> tuple[str, ...]:
    """Secrets that no response may contain, nor any 16-character piece of."""
    return (admin_secret(), foreign_secret())


@cache
def gateway_prefix() -> str:
    return os.environ["FUZZ_GATEWAY_PREFIX"]


# --- Sending what was generated, byte for byte --------------------------------------------------
#
# requests "requotes" every URL: it decodes escapes of unreserved characters
# (``%2e`` becomes ``.``, ``%77%62%6b`` becomes ``wbk``) before sending. The
# escapes are the point of half of these cases, so the hooks keep them:
# the same requoting without that first step. (Schemathesis percent-encodes
# generated path values itself, so for its own cases the only change is
# that ``.`` and ``..`` go out as ``%2E``, ``%2E%2E``, as it meant them to.)

_REQUOTE_SAFE = "!#$%&'()*+,/:;=?@[]~"
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _requote_keeping_escapes(uri: str) -> str:
    if _STRAY_PERCENT.search(uri):
        # As requests does for an invalid escape: the stray '%' is encoded.
        return quote(uri, safe=_REQUOTE_SAFE.replace("%", ""))
    return quote(uri, safe=_REQUOTE_SAFE)


requests.models.requote_uri = _requote_keeping_escapes  # type: ignore[attr-defined]

# --- The kinds ------------------------------------------------------------------------------------

# One path segment each (some go on with more segments): every spelling that
# some common upstream reads as a dot segment, a separator or a path
# parameter (issue #11 item 4). Each must be a 400 validation_error.
PATH_TRICKS = (
    "..;", "..;x", ".;", "x;y", ";jsessionid=1",
    "%2e%2e", "%2E%2E", ".%2e", "%2e.", "%2e", "%2e%2e%3b",
    "%252e%252e", "%252e", "%25", "%252f", "%25252e",
    "%2f", "x%2fy", "%2F..%2F", "%5c", "..%5cx", "%3b",
    "%c0%ae%c0%ae", "%e0%80%ae", "%c0%af", "%c3",
    "．．", "%ef%bc%8e%ef%bc%8e", "‥", "﹒﹒", "․", "%e2%80%a5",
    "x.", "x..", "...", ". .", "x%20", "%20x", "%20..", "..%20", "%09", "%00", "%e2%80%ae",
    "%u002e%u002e", "x%", "%zz",
    "..;/webhooks", "..;/..;/webhooks", "%2e%2e/webhooks", "%2e%2e%2fwebhooks",
    "..%2fwebhooks", "%252e%252e/webhooks", "．．/webhooks", "‥/webhooks", "x//webhooks",
)  # fmt: skip


def percent_encoded(text: str) -> str:
    """Every byte escaped, unreserved characters included."""
    return "".join(f"%{byte:02X}" for byte in text.encode())


def secret_variants(secret: str) -> tuple[str, ...]:
    """A secret as a client might paste it where it does not belong (item 7)."""
    body = secret.rsplit("_", 1)[1]
    return (
        secret,
        secret.upper(),
        secret.lower(),
        secret.replace("_", "-"),
        body,
        secret.replace("_", "%5F"),
        percent_encoded(secret),
        percent_encoded(secret).lower(),
        percent_encoded(percent_encoded(secret)),
        f"{secret[:20]}/{secret[20:]}",
        f"{secret[:16]}/{secret[16:]}",
        f"{secret.upper()[:20]}/{secret.upper()[20:]}",
        f"{secret[:20]}%2F{secret[20:]}",
    )


# Headers a downstream might trust, in the spellings that CGI/WSGI upstreams
# merge with the dashed one (item 3; the list of docs/gateway.md).
IDENTITY_HEADERS = (
    ("X_Keystile_Scopes", "admin:webhooks"),
    ("x_keystile_key_id", "key_forged"),
    ("X-Keystile-Account-Id", "acc_forged"),
    ("X-KEYSTILE-SCOPES", "admin:webhooks"),
    ("x_forwarded_for", "6.6.6.6"),
    ("X_Forwarded_For", "6.6.6.6"),
    ("X-Forwarded-For", "6.6.6.6"),
    ("X_Real_IP", "6.6.6.6"),
    ("True-Client-IP", "6.6.6.6"),
    ("Forwarded", "for=6.6.6.6;host=evil.test"),
    ("X_Forwarded_Host", "evil.test"),
    ("X-Forwarded-Proto", "https"),
    ("X_Original_URL", "/v1/webhooks"),
    ("X-Rewrite-URL", "/v1/webhooks"),
    ("X-Envoy-Original-Path", "/v1/webhooks"),
    ("X-HTTP-Method-Override", "DELETE"),
    ("X_HTTP_Method_Override", "DELETE"),
    ("X-Original-Method", "DELETE"),
)

# Characters that grow when case-folded or NFKC-normalised (item 8), and
# lengths around the name's limit of 120 (and the description's of 1,000).
EXPANDING = ("ﬃ", "ß", "İ", "ŉ", "ΐ", "ǰ", "ﷺ", "ﬀ", "Å")
EXPANDING_COUNTS = (40, 67, 119, 120, 121, 334, 1000)

# The Idempotency-Keys that POSTs share, so some cases replay a stored
# response (item 9) and others reuse a key with another body.
IDEMPOTENCY_KEYS = ("fuzz-idempotency-1", "fuzz-idempotency-2")

# --- Generation hooks -----------------------------------------------------------------------------


@schemathesis.hook
def before_load_schema(context: schemathesis.HookContext, raw_schema: dict[str, Any]) -> None:
    """Describe the gateway route, as an operator would describe the upstream."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}}  # fmt: skip
    responses: dict[str, Any] = {
        status: {"description": "keystile's error", **error}
        for status in ("400", "401", "403", "404", "405", "429", "502", "504")
    }
    responses["200"] = {
        "description": "the upstream's echo of what it received",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    raw_schema["paths"][f"{gateway_prefix()}/{{contact_id}}"] = {
        "get": {
            "operationId": "gateway_get_contact",
            "summary": "A gateway route to an upstream that echoes the request",
            "security": [{"bearerAuth": []}],
            "parameters": [
                {"name": "contact_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": responses,
        }
    }


# An edit of a generated case: it changes the case (a copy) in place.
Edit = Callable[[AnyCase], None]


def loopback_url(raw: str) -> str:
    """``raw`` with its host (and port, and any credentials) replaced by
    ``FUZZ_WEBHOOK_HOST``; a string without a host is sent as generated (it
    is refused before any name is resolved)."""
    try:
        parts = urlsplit(raw)
        host = parts.hostname
    except ValueError:
        return raw
    if not host:
        return raw
    return parts._replace(netloc=os.environ["FUZZ_WEBHOOK_HOST"]).geturl()


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: AnyCase, kwargs: dict[str, Any]) -> None:
    """Every webhook URL goes to a loopback port where nothing listens."""
    body = case.body
    if case.operation.path.startswith("/v1/webhook-endpoints") and isinstance(body, dict):
        url = body.get("url")
        if isinstance(url, str):
            body["url"] = loopback_url(url)


@schemathesis.hook
def flatmap_case(context: schemathesis.HookContext, case: AnyCase) -> st.SearchStrategy[AnyCase]:
    """Half of the fuzzing phase's cases carry one kind. The other phases
    are left as generated (the stateful one follows links with the ids it
    was given), and their responses are checked all the same."""
    if case.meta is None or case.meta.phase.name != "fuzzing":
        return st.just(case)
    return edits_for(case.operation).map(lambda edit: _edited(case, edit))


def _edited(case: AnyCase, edit: Edit | None) -> AnyCase:
    if edit is None:
        return case
    copy = case.derive(keep_auth=True)
    edit(copy)
    return copy


_EDITS: dict[str, st.SearchStrategy[Edit | None]] = {}


def edits_for(operation: Operation) -> st.SearchStrategy[Edit | None]:
    """No edit half the time, else one kind that fits the operation. Built
    once per operation. Hypothesis starts from (and shrinks toward) the
    first branch: an edit, so even a short run sends every kind, and a
    failure shrinks toward its hostile input."""
    if operation.label not in _EDITS:
        kinds = [
            *_path_edits(operation),
            *_body_edits(operation),
            *_query_edits(operation),
            *_header_edits(operation),
        ]
        # (mapped, so that one_of does not flatten the kinds into it)
        _EDITS[operation.label] = st.one_of(st.one_of(*kinds).map(lambda edit: edit), st.none())
    return _EDITS[operation.label]


def _path_edits(operation: Operation) -> Iterator[st.SearchStrategy[Edit]]:
    """A path trick, or (on keystile's own endpoints) a secret, in place of
    a path parameter, sent exactly as written."""
    names = re.findall(r"\{(\w+)\}", operation.path)
    if not names:
        return
    values: list[tuple[str, ...]] = [PATH_TRICKS]
    if not operation.path.startswith(gateway_prefix()):
        values.append(secret_variants(admin_secret()) + secret_variants(foreign_secret()))
    for choices in values:
        yield st.tuples(st.sampled_from(names), st.sampled_from(choices)).map(
            lambda pick: lambda case: case.path_parameters.update({pick[0]: pick[1]})
        )


def _query_edits(operation: Operation) -> Iterator[st.SearchStrategy[Edit]]:
    """A secret as a query parameter's name, or as ``starting_after``."""
    if not operation.get_parameter_set(ParameterLocation.QUERY).items:
        return
    secrets = st.sampled_from(secret_variants(admin_secret())[:6])
    yield secrets.map(lambda secret: lambda case: case.query.update({secret: "1"}))
    if operation.get_parameter("starting_after", "query") is not None:
        yield secrets.map(partial(_replacing, "query", "starting_after"))


def _header_edits(operation: Operation) -> Iterator[st.SearchStrategy[Edit]]:
    """Identity headers in other spellings, a secret as ``X-Request-ID``,
    or (on a POST) a shared ``Idempotency-Key``."""
    identity = st.lists(
        st.sampled_from(IDENTITY_HEADERS), min_size=1, max_size=4, unique_by=lambda h: h[0].lower()
    )
    yield identity.map(lambda chosen: lambda case: case.headers.update(dict(chosen)))
    request_ids = [v for v in secret_variants(admin_secret()) if "/" not in v][:7]
    yield st.sampled_from(request_ids).map(
        lambda secret: lambda case: case.headers.update({"X-Request-ID": secret})
    )
    if operation.method.upper() == "POST":
        # The admin's own secret too: it must never be stored in clear (issue #11).
        yield st.sampled_from((*IDEMPOTENCY_KEYS, admin_secret())).map(
            lambda key: lambda case: case.headers.update({"Idempotency-Key": key})
        )


def _body_edits(operation: Operation) -> Iterator[st.SearchStrategy[Edit]]:
    """In a JSON-object body: expanding characters in a name or description,
    (in verify) another account's key or the admin's in another case, and a
    secret as an unknown field's name."""
    if operation.method.upper() not in ("POST", "PUT", "PATCH"):
        return
    if operation.path == "/v1/keys/verify":
        keys = st.sampled_from((foreign_secret(), admin_secret().upper(), admin_secret().lower()))
        yield keys.map(partial(_replacing, "body", "key"))
    texts = st.builds(operator.mul, st.sampled_from(EXPANDING), st.sampled_from(EXPANDING_COUNTS))
    for field in ("name", "description"):
        yield texts.map(partial(_replacing, "body", field))
    secrets = st.sampled_from(secret_variants(admin_secret())[:8])
    yield secrets.map(lambda secret: partial(_add_body_field, secret))


def _text_of(lengths: tuple[int, int], nullable: bool = False) -> Callable[[Any], bool]:
    """Whether a value is valid for a string field of the schema."""
    return lambda value: (
        (nullable and value is None)
        or (isinstance(value, str) and lengths[0] <= len(value) <= lengths[1])
    )


# The fields the edits replace, with what the schema accepts in each.
VALID = {
    "name": _text_of((1, 1000)),
    "description": _text_of((0, 1000), nullable=True),
    "key": _text_of((0, 512)),
    "starting_after": _text_of((0, 64), nullable=True),
}


def _replace_valid(container: str, field: str, value: str, case: AnyCase) -> None:
    """Replace ``field`` only where the generated value was valid (or, in a
    query, absent): replacing an invalid one could make a negative case
    valid, and Schemathesis would then expect a rejection that rightly
    does not come."""
    values = case.body if container == "body" else case.query
    if not isinstance(values, dict):
        return
    if container == "body" and field not in values:
        return
    if VALID[field](values.get(field)):
        values[field] = value


def _replacing(container: str, field: str, value: str) -> Edit:
    return partial(_replace_valid, container, field, value)


def _add_body_field(name: str, case: AnyCase) -> None:
    if isinstance(case.body, dict):
        case.body = {**case.body, name: "x"}


# --- Recognising a kind on the wire -----------------------------------------------------------------

_PCHAR = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%]*")


def ambiguous_path(path: str) -> bool:
    """True when some common upstream could read the raw ``path`` as another
    path: dot segments in any spelling, ``;`` parameters, encoded separators
    or percent signs, empty segments, invalid escapes, controls, trailing
    dots or whitespace (issue #11 item 4; docs/security.md)."""
    segments = path[1:].split("/")
    for index, segment in enumerate(segments):
        if not segment:
            if index == len(segments) - 1:
                continue
            return True
        if ";" in segment or not _PCHAR.fullmatch(segment) or _STRAY_PERCENT.search(segment):
            return True
        try:
            text = unquote_to_bytes(segment).decode("utf-8")
        except UnicodeDecodeError:
            return True
        text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
        if any(c in "/\\;%" or unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in text):
            return True
        if not text.replace(".", "").strip() or text != text.strip() or text.endswith("."):
            return True
    return False


def _resolved(path: str) -> str:
    """RFC 3986 §5.2.4 dot-segment removal."""
    out: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    return "/" + "/".join(out)


def _trimmed_segments(path: str) -> str:
    """As IIS and Windows read a path: segments trimmed of spaces and
    trailing dots, and a segment of only dots and spaces a dot segment."""
    out = []
    for segment in path.split("/"):
        segment = segment.strip(" ")
        if segment and not segment.replace(".", "").strip():
            out.append(".." if segment.count(".") > 1 else ".")
        else:
            out.append(segment.rstrip(". ") or segment)
    return "/".join(out)


_READING_STEPS: tuple[Callable[[str], str], ...] = (
    lambda path: re.sub(r";[^/]*", "", path),  # servlet containers drop path parameters
    unquote,
    unquote,  # decoding twice
    lambda path: unicodedata.normalize("NFKC", path),
    lambda path: path.replace("\\", "/"),
    _trimmed_segments,
)


def readings(path: str) -> set[str]:
    """Every path an upstream could resolve ``path`` to, by any combination
    of the ways common servers read one (case-folded)."""
    found = set()
    for chosen in product((False, True), repeat=len(_READING_STEPS)):
        text = path
        for use, step in zip(chosen, _READING_STEPS, strict=True):
            if use:
                text = step(text)
        found.add(_resolved(text).casefold())
    return found


def _pieces(secret: str) -> set[str]:
    return {secret[i : i + 16] for i in range(len(secret) - 15)}


@cache
def _secret_pieces() -> dict[str, str]:
    return {piece: secret for secret in secrets() for piece in _pieces(secret)}


def secrets_in(text: str) -> set[str]:
    """The run's secrets of which ``text`` holds any 16-character piece (as
    written, or percent-decoded), or the whole secret in any letter case."""
    found = set()
    for candidate in {text, unquote(text), unquote(unquote(text))}:
        pieces = _secret_pieces()
        for run in re.findall(r"[0-9A-Za-z_-]{16,}", candidate):
            for start in range(len(run) - 15):
                owner = pieces.get(run[start : start + 16])
                if owner is not None:
                    found.add(owner)
        folded = candidate.casefold()
        found.update(s for s in secrets() if s.casefold() in folded)
    return found


def _carries_secret(text: str) -> bool:
    folded = unquote(unquote(text)).casefold()
    return any(piece.casefold() in folded for s in secrets() for piece in _pieces(s))


# keystile's token shape (contract §2, §9), in any case and with '_' or '-'.
TOKEN = re.compile(r"[a-z][a-z0-9]{1,15}[_-](live|root)[_-][0-9A-Za-z]{10,}", re.IGNORECASE)

# --- The checks -------------------------------------------------------------------------------------


def _header(response: schemathesis.Response, name: str) -> str | None:
    values = response.headers.get(name.lower())
    return values[0] if values else None


def _proxied(response: schemathesis.Response) -> bool:
    """Answered by the upstream (tests/e2e/upstream.py marks its responses)."""
    return _header(response, "x-upstream") == "yes"


def _for_nginx(response: schemathesis.Response) -> bool:
    """A forward-auth request asked in nginx's mode (``/v1/auth?proxy=nginx``)."""
    url = urlsplit(str(response.request.url))
    return url.path.startswith("/v1/auth") and "proxy=nginx" in url.query


def _json(response: schemathesis.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _request_body(response: schemathesis.Response) -> str:
    body = response.request.body
    if body is None:
        return ""
    return body.decode("latin-1") if isinstance(body, bytes) else str(body)


def _wire_path(response: schemathesis.Response) -> str:
    return urlsplit(str(response.request.url)).path


def _client_text(response: schemathesis.Response) -> str:
    """The response as far as keystile wrote it: a proxied response's echo
    of the path and query the client sent is the upstream's doing."""
    headers = "\n".join(
        f"{name}: {value}" for name, values in response.headers.items() for value in values
    )
    body = response.content.decode("utf-8", "replace")
    if _proxied(response):
        echo = _json(response)
        if isinstance(echo, dict):
            body = json.dumps({k: v for k, v in echo.items() if k not in ("path", "raw_path", "query")})  # fmt: skip
    return f"{headers}\n{body}"


# The 201s that hand out a new secret (contract §4, §10): a create and a rotation.
_ROTATE = re.compile(r"/v1/api-keys/key_[0-9A-HJKMNP-TV-Z]{26}/rotate")


def _is_create(case: AnyCase, response: schemathesis.Response) -> bool:
    if response.status_code != 201 or response.request.method != "POST":
        return False
    if case.operation.path == "/v1/api-keys":
        return _wire_path(response) == "/v1/api-keys"
    return case.operation.path == "/v1/api-keys/{key_id}/rotate" and bool(
        _ROTATE.fullmatch(_wire_path(response))
    )


@schemathesis.check
def no_secret_in_any_response(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: AnyCase
) -> bool | None:
    """No response holds the run's secrets, any 16-character piece of them, or
    (but the new key of a create's 201 and its replay) anything token-shaped."""
    text = _client_text(response)
    leaked = secrets_in(text)
    if leaked:
        raise AssertionError(
            f"The response holds (a piece of) a secret the client sent: {sorted(leaked)}\n{text[:2000]}"
        )
    if _is_create(case, response):
        created = _json(response)
        key = created["data"].pop("key", None) if isinstance(created, dict) else None
        if not (isinstance(key, str) and TOKEN.fullmatch(key)):
            raise AssertionError(
                f"A create's 201 without a key of the token's shape: {text[:2000]}"
            )
        text = json.dumps(created)
    match = TOKEN.search(text) or TOKEN.search(unquote(text))
    if match:
        raise AssertionError(
            f"A token-shaped string in the response: {match.group(0)!r}\n{text[:2000]}"
        )
    return None


# Contract §3 (and §9-§14 for the codes that come with later endpoints).
ERROR_CODES = {
    400: {"validation_error"},
    401: {"invalid_key", "invalid_signature"},
    403: {"insufficient_permissions", "plan_restricted", "account_suspended"},
    404: {"not_found"},
    405: {"method_not_allowed"},
    409: {"duplicate_name", "idempotency_key_in_use", "key_inactive", "plan_conflict"},
    413: {"payload_too_large"},
    415: {"unsupported_media_type"},
    422: {"idempotency_key_reused"},
    429: {"rate_limited", "quota_exceeded"},
}


@schemathesis.check
def errors_are_the_contract_envelope(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: AnyCase
) -> bool | None:
    """Never a 5xx; every 4xx is ``{"error": {code, message, request_id}}``
    (plus ``details``) with the status's code and the response's request id."""
    status = response.status_code
    if status >= 500:
        raise AssertionError(f"A {status}: {response.content[:2000]!r}")
    if status < 400 or response.request.method == "HEAD" or _proxied(response):
        return None
    body = _json(response)
    if not (isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], dict)):
        raise AssertionError(f"A {status} without the error envelope: {response.content[:2000]!r}")
    error = body["error"]
    replayed = _header(response, "idempotent-replayed") == "true"
    if not {"code", "message", "request_id"} <= set(error) <= {"code", "message", "request_id", "details"}:  # fmt: skip
        raise AssertionError(f"Error fields are {sorted(error)}: {body}")
    allowed = ERROR_CODES.get(status, set())
    if status == 403 and _for_nginx(response):
        # /v1/auth?proxy=nginx sends every refusal but a 401 as a 403 (contract §15).
        allowed = set().union(*ERROR_CODES.values()) | {"service_unavailable"}
    if error["code"] not in allowed:
        raise AssertionError(f"A {status} with code {error['code']!r}: {body}")
    if (
        "/v1/auth" in str(response.request.url)
        and _header(response, "x-keystile-error") != error["code"]
    ):
        raise AssertionError(f"X-Keystile-Error does not name {error['code']!r}: {body}")
    if not (isinstance(error["message"], str) and error["message"]):
        raise AssertionError(f"An error without a message: {body}")
    # A replay repeats the first response's body byte for byte, its request
    # id included; its X-Request-ID header is the retry's (docs/api.md).
    if not replayed and error["request_id"] != _header(response, "x-request-id"):
        raise AssertionError(
            f"request_id {error['request_id']!r} is not X-Request-ID {_header(response, 'x-request-id')!r}"
        )
    details = error.get("details", [])
    if not (
        isinstance(details, list)
        and all(isinstance(d, dict) and set(d) == {"field", "message"} for d in details)
    ):
        raise AssertionError(f"Malformed details: {body}")
    if _header(response, "content-type") != "application/json":
        raise AssertionError(f"An error as {_header(response, 'content-type')!r}")
    return None


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@schemathesis.check
def every_response_has_the_security_headers(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: AnyCase
) -> bool | None:
    """``X-Request-ID`` on every response; ``Cache-Control: no-store`` and
    ``X-Content-Type-Options: nosniff`` on keystile's own (contract §3)."""
    request_id = _header(response, "x-request-id")
    if request_id is None or not _REQUEST_ID.fullmatch(request_id):
        raise AssertionError(f"X-Request-ID is {request_id!r}")
    sent = response.request.headers.get("X-Request-ID")
    if sent is not None and sent != request_id and not request_id.startswith("req_"):
        raise AssertionError(f"X-Request-ID {sent!r} came back as {request_id!r}")
    if _proxied(response):
        return None
    for name, expected in (("cache-control", "no-store"), ("x-content-type-options", "nosniff")):
        if _header(response, name) != expected:
            raise AssertionError(f"{name} is {_header(response, name)!r}, not {expected!r}")
    return None


@schemathesis.check
def ambiguous_paths_are_refused(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: AnyCase
) -> bool | None:
    """A path an upstream could read as another path is a ``400
    validation_error`` naming ``path``, never routed (issue #11 item 4)."""
    path = _wire_path(response)
    if not ambiguous_path(path):
        return None
    if response.status_code != 400:
        raise AssertionError(f"{path!r} is ambiguous, and got {response.status_code}")
    if response.request.method == "HEAD":
        return None
    error = (_json(response) or {}).get("error", {})
    if error.get("code") != "validation_error" or [
        detail.get("field") for detail in error.get("details", [])
    ] != ["path"]:
        raise AssertionError(f"{path!r} is ambiguous, and got {error}")
    return None


# Canonical names (lower case, '_' read as '-') that only keystile may set
# on a forwarded request, with the value it must set; and the client's
# identity, address, routing and method headers that must never cross
# (docs/gateway.md).
_SET_BY_KEYSTILE = (
    "x-keystile-key-id", "x-keystile-account-id", "x-keystile-scopes", "x-request-id",
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
)  # fmt: skip
_NEVER_FORWARDED = frozenset((
    "authorization", "proxy-authorization",
    "forwarded", "x-forwarded", "forwarded-for", "x-real-ip", "x-client-ip", "client-ip",
    "true-client-ip", "cf-connecting-ip", "fastly-client-ip", "x-cluster-client-ip",
    "x-originating-ip", "x-remote-ip", "x-remote-addr", "x-appengine-user-ip",
    "x-forwarded-port", "x-forwarded-prefix", "x-forwarded-scheme", "x-forwarded-ssl",
    "x-forwarded-server", "x-forwarded-path", "x-forwarded-uri", "x-url-scheme",
    "front-end-https", "x-original-host", "x-host", "x-original-url", "x-original-uri",
    "x-rewrite-url", "x-envoy-original-path",
    "x-http-method-override", "x-http-method", "x-method-override", "x-original-method",
    "x-forwarded-method",
))  # fmt: skip


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-")


def _forwarded_problems(response: schemathesis.Response, echo: dict[str, Any]) -> Iterator[str]:
    headers: list[list[str]] = echo.get("headers", [])
    client = urlsplit(str(response.request.url))
    expected = {
        "x-keystile-key-id": os.environ["FUZZ_ADMIN_KEY_ID"],
        "x-keystile-account-id": os.environ["FUZZ_ADMIN_ACCOUNT_ID"],
        "x-request-id": _header(response, "x-request-id"),
        "x-forwarded-for": "127.0.0.1",
        "x-forwarded-proto": "http",
        "x-forwarded-host": client.netloc,
    }
    for name in _SET_BY_KEYSTILE:
        values = [(n, v) for n, v in headers if _canonical(n) == name]
        if len(values) != 1 or values[0][0] != name:
            yield f"{name} arrived as {values}"
        elif name == "x-keystile-scopes":
            if set(values[0][1].split()) != set(os.environ["FUZZ_ADMIN_SCOPES"].split()):
                yield f"x-keystile-scopes arrived as {values[0][1]!r}"
        elif values[0][1] != expected[name]:
            yield f"{name} arrived as {values[0][1]!r}, not {expected[name]!r}"
    for name, value in headers:
        canonical = _canonical(name)
        if canonical in _NEVER_FORWARDED or (
            canonical.startswith("x-keystile-") and canonical not in _SET_BY_KEYSTILE
        ):
            yield f"the client's {name}: {value!r} reached the upstream"
    if echo.get("raw_path") != client.path:
        yield f"the path {client.path!r} was forwarded as {echo.get('raw_path')!r}"
    prefix = gateway_prefix().casefold()
    escaped = {r for r in readings(client.path) if not (r == prefix or r.startswith(prefix + "/"))}
    if escaped:
        yield f"{client.path!r} was forwarded under {prefix} but reads as {sorted(escaped)}"


@schemathesis.check
def the_gateway_forwards_only_what_keystile_vouches_for(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: AnyCase
) -> bool | None:
    """What reached the upstream (its echo): keystile's identity headers, once,
    with the caller's true values; none of the client's identity, address,
    routing or method headers in any spelling; the path as sent, and one
    that no reading takes out of the route (issue #11 items 3 and 4)."""
    if not _proxied(response):
        return None
    echo = _json(response)
    if not isinstance(echo, dict):
        raise AssertionError(f"The upstream's echo is not JSON: {response.content[:500]!r}")
    problems = list(_forwarded_problems(response, echo))
    if problems:
        raise AssertionError("; ".join(problems) + f"\nupstream saw: {json.dumps(echo)[:3000]}")
    return None


@schemathesis.check
def another_accounts_key_verifies_as_invalid(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: AnyCase
) -> bool | None:
    """Verify answers INVALID, with nothing about the key, for another
    account's key (contract §7, issue #11 item 11)."""
    if _wire_path(response) != "/v1/keys/verify" or response.status_code != 200:
        return None
    if foreign_secret() not in _request_body(response):
        return None
    result = (_json(response) or {}).get("data", {})
    if result.get("valid") is not False or result.get("code") != "INVALID" or result.get("key_id"):
        raise AssertionError(f"Another account's key verified as {result}")
    return None


@schemathesis.check
def replays_only_what_a_handler_answered(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: AnyCase
) -> bool | None:
    """A replay repeats a response a handler produced, never a refusal made
    before it ran (contract §6; issue #11 item 9)."""
    if _header(response, "idempotent-replayed") != "true":
        return None
    if (
        response.status_code in (400, 401, 403, 404, 405, 413, 415, 429)
        or response.status_code >= 500
    ):
        raise AssertionError(f"A replayed {response.status_code}: {response.content[:1000]!r}")
    return None


# --- What was sent --------------------------------------------------------------------------------


def kinds_of(response: schemathesis.Response) -> Iterator[str]:
    """The kinds of hostile input that a request, as sent, carried."""
    request = response.request
    url = urlsplit(str(request.url))
    gateway = url.path.startswith(gateway_prefix())
    where = "the gateway" if gateway else "keystile's endpoints"
    if ambiguous_path(url.path):
        yield f"ambiguous path to {where}"
    if not gateway and _carries_secret(url.path):
        yield "secret in the path"
    if _carries_secret(url.query):
        yield "secret in the query"
    headers = {str(name).lower(): str(value) for name, value in request.headers.items()}
    headers.pop("authorization", None)
    if any(_canonical(n) in _NEVER_FORWARDED or _canonical(n).startswith("x-keystile-") for n in headers):  # fmt: skip
        yield f"identity headers to {where}"
    if _carries_secret(headers.get("x-request-id", "")):
        yield "secret as X-Request-ID"
    if "idempotency-key" in headers:
        yield "Idempotency-Key"
    if _header(response, "idempotent-replayed") == "true":
        yield "idempotent replay"
    body = _request_body(response)
    if _carries_secret(body):
        yield "secret in the body"
    try:
        text = json.dumps(json.loads(body), ensure_ascii=False) if body else ""
    except ValueError:
        text = body
    if any(char in text for char in EXPANDING):
        yield "expanding characters in a body"
    if url.path == "/v1/keys/verify" and foreign_secret() in body:
        yield "another account's key to verify"


@schemathesis.check
class HostileKindsSent:
    """Counts the responses to each kind of hostile request, and writes them
    to ``FUZZ_REPORT`` when the run ends (a bookkeeping check: it never fails)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def after_response(
        self, ctx: schemathesis.CheckContext, response: schemathesis.Response, case: AnyCase
    ) -> bool | None:
        kinds = list(kinds_of(response))
        with self.lock:
            self.counts.update(kinds)
            self.counts["responses"] += 1
        return None

    def after_run(self, ctx: schemathesis.CheckContext) -> None:
        Path(os.environ["FUZZ_REPORT"]).write_text(json.dumps(dict(self.counts), indent=1))
