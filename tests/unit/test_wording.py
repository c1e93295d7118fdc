"""keystile's own sentences for what the wire schemas refuse (issue #12)."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keystile.api.body import validate_model
from keystile.api.wording import field_path, problems
from keystile.errors import ValidationFailed
from tests.support import library_wording


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(max_length=5)
    tier: Literal["standard", "high"] | None = None
    tags: list[str] = Field(default_factory=list, max_length=2)
    count: int = Field(0, ge=1, le=10)
    flag: bool = False


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({}, "name", "is required"),
        ({"name": 1}, "name", "must be a string"),
        ({"name": "toolong"}, "name", "must be at most 5 characters"),
        ({"name": "a", "tier": "gold"}, "tier", "must be one of: standard, high"),
        ({"name": "a", "tags": "x"}, "tags", "must be an array"),
        ({"name": "a", "tags": ["a", "b", "c"]}, "tags", "must have at most 2 items"),
        ({"name": "a", "tags": [1]}, "tags[0]", "must be a string"),
        ({"name": "a", "count": 0}, "count", "must be at least 1"),
        ({"name": "a", "count": 11}, "count", "must be at most 10"),
        ({"name": "a", "count": "1"}, "count", "must be an integer"),
        ({"name": "a", "flag": "yes"}, "flag", "must be true or false"),
        (
            {"name": "a", "colour": "red"},
            "colour",
            "is not a known field (known: count, flag, name, tags, tier)",
        ),
    ],
)
def test_every_problem_reads_as_keystiles_sentence(
    data: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_model(Model, data)
    details = {(d.field, d.message) for d in caught.value.details}
    assert (field, message) in details
    body = {"error": {"message": caught.value.message, "details": [
        {"field": d.field, "message": d.message} for d in caught.value.details]}}  # fmt: skip
    assert library_wording(body) == []


def test_the_wording_check_catches_library_phrases() -> None:
    try:
        Model.model_validate({"name": 1})
    except ValidationError as exc:
        raw = exc.errors()[0]["msg"]
    body = {"error": {"message": "x", "details": [{"field": "name", "message": raw}]}}
    assert library_wording(body) == [f"name: {raw}"]
    assert problems([{"type": "unheard_of", "loc": ("a",), "msg": raw}])[0].message == "is invalid"


def test_field_paths() -> None:
    assert field_path(("permissions", 1)) == "permissions[1]"
    assert field_path(("query", "limit"), skip=("query",)) == "limit"
    assert field_path(()) == "body"
