"""Leak reports from GitHub's secret-scanning partner program (contract §14).

No bearer key: the pipeline lets the request through (``PUBLIC_PATHS``) and
the partner's signature authenticates it, checked over the raw body before
anything of it is parsed. Then, in the contract's order: the query string,
the media type and the JSON (400, 415), the report's shape and size (400),
and the decision per token.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from keystile.api.body import header, is_json_media_type, parse_json, read_body
from keystile.api.deps import ServicesDep, check_query, errors_doc, json_response
from keystile.api.leak_schemas import VerdictList, report_from, report_schema, verdicts_out
from keystile.api.schemas import ErrorEnvelope
from keystile.errors import UnsupportedMediaType
from keystile.http.context import origin_of
from keystile.leaks.public_keys import IDENTIFIER_HEADER, SIGNATURE_HEADER
from keystile.leaks.service import MAX_TOKENS

PATH = "/v1/secret-scanning/reports"
# 1,000 tokens with GitHub's URLs (up to ~400 characters each) do not fit in
# the 64 KiB of other endpoints.
MAX_REPORT_BYTES = 1024 * 1024

router = APIRouter(tags=["secret-scanning"])

_HEADERS = [
    {
        "name": name,
        "in": "header",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }
    for name, description in (
        (IDENTIFIER_HEADER, "The id of the partner's key that signed the body."),
        (SIGNATURE_HEADER, "Base64 DER ECDSA P-256/SHA-256 signature of the raw body."),
    )
]


def _one_header(request: Request, name: str) -> str | None:
    """The header's value when given exactly once (two are ambiguous: none)."""
    values = request.headers.getlist(name)
    return values[0] if len(values) == 1 else None


@router.post(
    PATH,
    operation_id="report_leaked_tokens",
    summary="Report leaked tokens (secret-scanning partner endpoint)",
    description="GitHub's secret-scanning partner format, signed by the partner "
    "(KEYSTILE_SECRET_SCANNING_KEYS); no bearer key. Each token that is a live key is "
    "revoked at once (audit actor system, reason leaked; api_key.leaked is sent) and "
    f"answered true_positive; anything else is false_positive. At most {MAX_TOKENS} "
    "tokens and 1 MiB per report.",
    response_model=VerdictList,
    responses={
        **errors_doc(400, 415, 503),
        413: {"model": ErrorEnvelope, "description": "payload_too_large: body over 1 MiB"},
        401: {
            "model": ErrorEnvelope,
            "description": "invalid_signature: missing, unknown or bad signature",
        },
    },
    openapi_extra={
        "parameters": _HEADERS,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": report_schema()}},
        },
    },
)
async def report_leaked_tokens(request: Request, services: ServicesDep) -> Response:
    body = await read_body(request.scope, request.receive, MAX_REPORT_BYTES)
    public_keys = services.leak_keys.current()
    public_keys.check(
        body, _one_header(request, IDENTIFIER_HEADER), _one_header(request, SIGNATURE_HEADER)
    )
    check_query(request)
    if not is_json_media_type(header(request.scope, b"content-type")):
        raise UnsupportedMediaType()
    report = report_from(parse_json(body))
    # No caller: the actor is ``system``, with the report's request id and address.
    verdicts = await services.leaks.decide(report, origin_of(request.scope))
    return json_response(200, verdicts_out(verdicts))
