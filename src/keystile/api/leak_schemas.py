"""Wire schemas of leak reports (contract §14): GitHub's secret-scanning
partner request and response formats (GitHub docs, "Secret scanning partner
program")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, TypeAdapter, ValidationError

from keystile.api.wording import problems
from keystile.errors import FieldProblem, ValidationFailed
from keystile.leaks.service import MAX_TOKENS, ReportedToken, Verdict


class ReportedTokenIn(BaseModel):
    """One token GitHub found. Fields GitHub may add later are ignored, not
    refused: the format is the partner's, not ours."""

    model_config = ConfigDict(extra="ignore", strict=True)

    token: str = Field(description="The string that matched the registered pattern.")
    type: str = Field(description="The partner's name for the pattern (answered as token_type).")
    url: str | None = Field(None, description="Where it was found.")
    source: str | None = Field(None, description="What it was found in: content, commit, issue, …")


class VerdictOut(BaseModel):
    token_raw: str = Field(description="The token as reported.")
    token_type: str = Field(description="The type as reported.")
    label: Literal["true_positive", "false_positive"] = Field(
        description="true_positive: a live key, now revoked; false_positive: anything else."
    )


class VerdictList(RootModel[list[VerdictOut]]):
    """One verdict per reported token, in the report's order."""


_REPORT = TypeAdapter(list[ReportedTokenIn])


def report_from(document: Any) -> list[ReportedToken]:
    """The report in ``document`` (parsed JSON). Raises 400
    :class:`ValidationFailed`: not an array, more than
    :data:`MAX_TOKENS` items (field ``body``; nothing is decided), or items
    with missing or ill-typed fields (fields like ``[3].token``)."""
    if not isinstance(document, list):
        raise ValidationFailed(
            "A report is a JSON array of tokens.", [FieldProblem("body", "must be an array")]
        )
    if len(document) > MAX_TOKENS:
        raise ValidationFailed(
            f"A report holds at most {MAX_TOKENS} tokens.",
            [FieldProblem("body", f"must have at most {MAX_TOKENS} items")],
        )
    try:
        items = _REPORT.validate_python(document)
    except ValidationError as exc:
        raise ValidationFailed("The report is invalid.", problems(exc.errors())) from None
    return [ReportedToken(i.token, i.type, i.url, i.source) for i in items]


def verdicts_out(verdicts: list[Verdict]) -> VerdictList:
    return VerdictList(
        [VerdictOut(token_raw=v.token, token_type=v.type, label=v.label.value) for v in verdicts]
    )


def report_schema() -> dict[str, Any]:
    """The request body's JSON schema (an array of :class:`ReportedTokenIn`)."""
    return {
        "type": "array",
        "maxItems": MAX_TOKENS,
        "items": {"$ref": "#/components/schemas/ReportedTokenIn"},
    }
