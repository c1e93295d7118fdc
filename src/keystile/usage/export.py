"""``keystile usage export``: an account's usage of one UTC month, per key
and day, for billing (contract §11).

Which rows: every key of the account with any count in the month (of any
outcome, revoked and rotated keys included), and for each of them every day
of the month, zero-filled: a month of 29 days gives 29 rows per key. Rows
are ordered by key id, then day. Keys without usage in the month do not
appear; an account without usage gives the header alone (CSV) or an empty
``data`` list (JSON).

Formats:

- ``csv``: the header ``account_id,key_id,day,allowed,rate_limited,
  quota_exceeded,forbidden``, then one line per row; ``day`` is
  ``YYYY-MM-DD``; lines end with ``\\n``.
- ``json``: ``{"data": [{"account_id", "key_id", "day", "allowed",
  "rate_limited", "quota_exceeded", "forbidden"}, …]}`` with the same rows,
  on one line.

The export reads the database: counts a running server has not flushed yet
(at most ``KEYSTILE_USAGE_FLUSH_SECONDS`` old) are not in it.
"""

from __future__ import annotations

import csv
import io
import re
from enum import StrEnum
from typing import Any

import orjson

from keystile.errors import NotFound
from keystile.storage.base import Storage
from keystile.usage import buckets
from keystile.usage.models import OUTCOMES, ZERO, Counts, Granularity


class Format(StrEnum):
    CSV = "csv"
    JSON = "json"


COLUMNS = ("account_id", "key_id", "day", *(outcome.value for outcome in OUTCOMES))
_MONTH = re.compile(r"(?P<year>\d{4})-(?P<month>\d{2})")


def parse_month(text: str) -> tuple[int, int]:
    """``YYYY-MM`` (1970-01 to 9999-12) → (year, month); else ValueError."""
    match = _MONTH.fullmatch(text)
    if match is None:
        raise ValueError("must be a month written YYYY-MM, e.g. 2028-02")
    year, month = int(match["year"]), int(match["month"])
    if not 1 <= month <= 12:
        raise ValueError("the month must be 01 to 12")
    if year < 1970:
        raise ValueError("must be 1970-01 or later")
    return year, month


async def month_rows(
    storage: Storage, account_id: str, year: int, month: int
) -> list[dict[str, Any]]:
    """The export's rows (see the module doc). Raises :class:`NotFound` for
    an account that does not exist (a typo must not read as "no usage")."""
    start, end = buckets.month_bounds(year, month)
    day = Granularity.DAY
    async with storage.reader() as uow:
        if await uow.accounts.get(account_id) is None:
            raise NotFound(f"No such account: {account_id[:64]!r}.")
        key_ids = await uow.usage.keys_with_usage(account_id, day, start, end)
        found = await uow.usage.buckets(account_id, day, start, end, by_key=True)
    counts: dict[tuple[str | None, int], Counts] = {(b.key_id, b.start): b.counts for b in found}
    return [
        {
            "account_id": account_id,
            "key_id": key_id,
            "day": buckets.day_of(first),
            **dict(zip(COLUMNS[3:], counts.get((key_id, first), ZERO).values(), strict=True)),
        }
        for key_id in key_ids
        for first in buckets.starts(start, end, day)
    ]


def render(rows: list[dict[str, Any]], fmt: Format) -> str:
    """The rows as CSV (header first) or as a JSON document."""
    if fmt is Format.JSON:
        return orjson.dumps({"data": rows}).decode() + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


async def export_month(
    storage: Storage, account_id: str, month: str, fmt: Format = Format.CSV
) -> str:
    """The text ``keystile usage export`` prints for ``month`` (``YYYY-MM``).
    Raises ValueError for a bad month, :class:`NotFound` for no account."""
    year, number = parse_month(month)
    return render(await month_rows(storage, account_id, year, number), fmt)
