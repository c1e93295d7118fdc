"""Wire schemas of operator keys (contract §9).

Operator keys are made and managed only with the CLI, so no endpoint serves
these shapes yet; ``keystile operator-keys … --json`` prints them, shaped
like the key resource's bodies: the object in ``data``, the secret only in
the body of its creation, lists with ``has_more``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from keystile.clock import rfc3339
from keystile.keys.models import OperatorKey

OperatorKeyStatus = Literal["active", "revoked"]


class _OperatorKeyId(BaseModel):
    id: str = Field(examples=["opk_01JD3ZK4Q8Y6W2N5T7V9X1B3C5"])


class _OperatorKeySecret(BaseModel):
    key: str = Field(description="The plaintext secret. Shown only when the key is created.")


class _OperatorKeyFields(BaseModel):
    name: str
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    revoked_at: str | None = Field(json_schema_extra={"format": "date-time"})
    last_used_at: str | None = Field(
        json_schema_extra={"format": "date-time"},
        description="Last successful authentication; written at most every few seconds.",
    )
    status: OperatorKeyStatus


# Fields are ordered by the bases in reverse: id, (key,) name, … as in the
# key resource's bodies.
class OperatorKeyOut(_OperatorKeyFields, _OperatorKeyId):
    """An operator key as every body but its creation shows it: never the secret."""


class CreatedOperatorKeyOut(_OperatorKeyFields, _OperatorKeySecret, _OperatorKeyId):
    """An operator key when it is made: with the secret."""


class OperatorKeyEnvelope(BaseModel):
    data: OperatorKeyOut


class CreatedOperatorKeyEnvelope(BaseModel):
    data: CreatedOperatorKeyOut


class OperatorKeyList(BaseModel):
    data: list[OperatorKeyOut]
    has_more: bool = Field(description="Always false: every operator key is listed.")


def operator_key_fields(key: OperatorKey) -> OperatorKeyOut:
    return OperatorKeyOut(
        id=key.id,
        name=key.name,
        created_at=rfc3339(key.created_at) or "",
        revoked_at=rfc3339(key.revoked_at),
        last_used_at=rfc3339(key.last_used_at),
        status="revoked" if key.revoked_at is not None else "active",
    )


def operator_key_out(key: OperatorKey) -> OperatorKeyEnvelope:
    return OperatorKeyEnvelope(data=operator_key_fields(key))


def created_operator_key_out(key: OperatorKey, secret: str) -> CreatedOperatorKeyEnvelope:
    fields = operator_key_fields(key).model_dump()
    return CreatedOperatorKeyEnvelope(data=CreatedOperatorKeyOut(key=secret, **fields))


def operator_key_list_out(keys: list[OperatorKey]) -> OperatorKeyList:
    return OperatorKeyList(data=[operator_key_fields(key) for key in keys], has_more=False)
