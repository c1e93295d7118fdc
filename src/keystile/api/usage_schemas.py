"""Wire schemas of usage (contract §11).

The bodies are rendered straight from the domain's buckets (a keyed answer
can hold 100,000 entries); the models describe them in the OpenAPI document
and the tests check the bodies against it.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, Field

from keystile.usage import buckets
from keystile.usage.models import Bucket

_START_DOC = "The bucket covers [start, start + 1 hour) or [start, start + 1 day), in UTC."


class UsageBucketOut(BaseModel):
    start: str = Field(description=_START_DOC, json_schema_extra={"format": "date-time"})
    allowed: int = Field(description="Requests that passed authentication, limits and scope.")
    rate_limited: int = Field(description="Requests refused by the key's rate limit (429).")
    quota_exceeded: int = Field(description="Requests refused by the key's quota (429).")
    forbidden: int = Field(description="Requests refused for a missing scope (403).")


class KeyUsageBucketOut(UsageBucketOut):
    key_id: str = Field(description="The key these counts are of (group_by=key).")


class UsageList(BaseModel):
    data: list[UsageBucketOut] = Field(description="Every bucket of the range, oldest first.")


class KeyUsageList(BaseModel):
    data: list[KeyUsageBucketOut] = Field(
        description="For each bucket of the range, oldest first, one entry per key with usage "
        "in the range, in key id order."
    )


def bucket_out(bucket: Bucket, with_key: bool) -> dict[str, Any]:
    """One entry, shaped like :class:`UsageBucketOut` (or
    :class:`KeyUsageBucketOut` ``with_key``)."""
    counts = bucket.counts
    entry: dict[str, Any] = {"start": buckets.rfc3339(bucket.start)}
    if with_key:
        entry["key_id"] = bucket.key_id
    entry["allowed"] = counts.allowed
    entry["rate_limited"] = counts.rate_limited
    entry["quota_exceeded"] = counts.quota_exceeded
    entry["forbidden"] = counts.forbidden
    return entry


def usage_body(found: list[Bucket], *, with_key: bool = False) -> bytes:
    """``{"data": [...]}`` as the API sends it."""
    return orjson.dumps({"data": [bucket_out(bucket, with_key) for bucket in found]})
