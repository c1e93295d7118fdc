"""``keystile usage export``'s text (contract §11), on every backend: one row
per key with usage and day of the month, zero-filled, a leap day included,
hourly and rolled-up counts alike."""

from __future__ import annotations

import calendar
import csv
import io

import orjson
import pytest

from keystile.errors import NotFound
from keystile.keys.ids import new_account_id
from keystile.keys.models import Account, Plan
from keystile.storage.base import Storage
from keystile.usage.export import Format, export_month, parse_month
from keystile.usage.models import DAY, HOUR, Counts, KeyHour

pytestmark = pytest.mark.anyio

FEB_1 = calendar.timegm((2028, 2, 1, 0, 0, 0))
LEAP_DAY = calendar.timegm((2028, 2, 29, 0, 0, 0))
HEADER = "account_id,key_id,day,allowed,rate_limited,quota_exceeded,forbidden"


async def an_account(storage: Storage) -> str:
    account = Account(id=new_account_id(), name="A", plan=Plan.STANDARD, created_at=0)
    async with storage.transaction() as uow:
        await uow.accounts.insert(account)
    return account.id


@pytest.fixture
async def usage(storage: Storage) -> tuple[str, str]:
    """Two accounts; the first with two keys used in February 2028, one of
    them also in January and March, and part of it rolled up already."""
    ours, theirs = await an_account(storage), await an_account(storage)

    def row(key: str, at: int, *counts: int, account: str = ours) -> KeyHour:
        return KeyHour(key, account, key, at, Counts.of(counts))

    async with storage.transaction() as uow:
        await uow.usage.add("w", 1, [
            row("key_b", FEB_1 + 5 * HOUR, 1, 2, 3, 4),
            row("key_b", LEAP_DAY + 23 * HOUR, 10, 0, 0, 0),  # the last hour of the month
            row("key_b", LEAP_DAY + DAY, 1000, 0, 0, 0),  # 2028-03-01: not in February
            row("key_b", FEB_1 - 1 * HOUR, 1000, 0, 0, 0),  # 2028-01-31: not in February
            row("key_a", FEB_1 + 14 * DAY, 0, 0, 7, 0),
            row("key_z", FEB_1 - DAY, 5, 0, 0, 0),  # used in January only
            row("key_x", FEB_1, 9, 9, 9, 9, account=theirs),
        ], 0)  # fmt: skip
    async with storage.transaction() as uow:  # early February becomes daily rows
        await uow.usage.roll_up(FEB_1 + 7 * DAY, 1000)
    return ours, theirs


async def test_csv_has_every_day_of_february_for_every_key_with_usage(
    storage: Storage, usage: tuple[str, str]
) -> None:
    ours, _ = usage
    text = await export_month(storage, ours, "2028-02")
    lines = text.splitlines()
    assert lines[0] == HEADER
    assert text.endswith("\n")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2 * 29  # key_a and key_b, 29 days each; not key_z nor theirs
    assert [r["key_id"] for r in rows] == ["key_a"] * 29 + ["key_b"] * 29
    assert [r["day"] for r in rows[:29]] == [f"2028-02-{d:02d}" for d in range(1, 30)]
    assert {r["account_id"] for r in rows} == {ours}
    by_day = {(r["key_id"], r["day"]): r for r in rows}
    assert lines[1 + 29] == f"{ours},key_b,2028-02-01,1,2,3,4"  # rolled up, still exact
    assert by_day[("key_b", "2028-02-29")]["allowed"] == "10"
    assert by_day[("key_a", "2028-02-15")]["quota_exceeded"] == "7"
    zeros = [r for r in rows if (r["key_id"], r["day"]) not in
             {("key_b", "2028-02-01"), ("key_b", "2028-02-29"), ("key_a", "2028-02-15")}]  # fmt: skip
    assert len(zeros) == 55
    assert {(r["allowed"], r["rate_limited"], r["quota_exceeded"], r["forbidden"])
            for r in zeros} == {("0", "0", "0", "0")}  # fmt: skip


async def test_json_holds_the_same_rows(storage: Storage, usage: tuple[str, str]) -> None:
    ours, _ = usage
    as_csv = list(csv.DictReader(io.StringIO(await export_month(storage, ours, "2028-02"))))
    document = orjson.loads(await export_month(storage, ours, "2028-02", Format.JSON))
    assert set(document) == {"data"}
    assert [
        {name: str(value) for name, value in entry.items()} for entry in document["data"]
    ] == as_csv
    assert isinstance(document["data"][0]["allowed"], int)


async def test_a_month_without_usage_and_an_unknown_account(
    storage: Storage, usage: tuple[str, str]
) -> None:
    ours, _ = usage
    assert await export_month(storage, ours, "2027-02") == HEADER + "\n"
    assert orjson.loads(await export_month(storage, ours, "2027-02", Format.JSON)) == {"data": []}
    with pytest.raises(NotFound):
        await export_month(storage, "acc_01ARZ3NDEKTSV4RRFFQ69G5FAV", "2028-02")


@pytest.mark.parametrize("text", ["2028-2", "2028-13", "2028-00", "1969-12", "28-02", "x"])
def test_months_are_yyyy_mm(text: str) -> None:
    with pytest.raises(ValueError, match="must be"):
        parse_month(text)
    assert parse_month("2028-02") == (2028, 2)
