"""The storage contract, run against every backend (contract §4 rules that
the database itself must enforce)."""

from __future__ import annotations

import dataclasses

import pytest

from keystile.errors import DuplicateName
from keystile.keys.ids import new_account_id, new_key_id
from keystile.keys.models import (
    Account,
    ApiKey,
    KeyStatus,
    Plan,
    Quota,
    QuotaPeriod,
    RateLimitRule,
    Tier,
)
from keystile.keys.validation import name_key
from keystile.storage.base import Storage, StoredResponse

pytestmark = pytest.mark.anyio
SECOND = 1_000_000


def a_key(account_id: str, name: str, created_at: int = 10 * SECOND, **fields: object) -> ApiKey:
    return ApiKey(
        id=new_key_id(),
        account_id=account_id,
        name=name,
        description=None,
        permissions=("read:contacts",),
        rate_limit_tier=Tier.STANDARD,
        expires_at=fields.pop("expires_at", None),  # type: ignore[arg-type]
        created_at=created_at,
    )


def with_every_field(key: ApiKey, **fields: object) -> ApiKey:
    """``key`` with every optional field set (non-ASCII metadata included),
    then ``fields`` on top: what a round trip through storage must keep."""
    filled = dataclasses.replace(
        key,
        description="d",
        permissions=("read:contacts", "write:deals"),
        rate_limit_tier=Tier.HIGH,
        expires_at=99 * SECOND,
        metadata={"team": "ops", "ü": "é"},
        disabled=True,
        rate_limit=RateLimitRule(7, 60),
        quota=Quota(10**12, QuotaPeriod.MONTH),
    )
    return dataclasses.replace(filled, **fields)  # type: ignore[arg-type]


async def an_account(storage: Storage) -> str:
    account = Account(id=new_account_id(), name="A", plan=Plan.STANDARD, created_at=0)
    async with storage.transaction() as uow:
        await uow.accounts.insert(account)
    return account.id


async def insert(storage: Storage, key: ApiKey) -> None:
    async with storage.transaction() as uow:
        await uow.keys.insert(key, key.id.ljust(64, "0")[:64], name_key(key.name))


async def test_the_database_refuses_a_second_active_holder_of_a_name(storage: Storage) -> None:
    account = await an_account(storage)
    await insert(storage, a_key(account, "Worker"))
    with pytest.raises(DuplicateName):
        await insert(storage, a_key(account, "worker"))
    other = await an_account(storage)
    await insert(storage, a_key(other, "worker"))


async def test_the_failed_insert_leaves_the_transaction_usable(storage: Storage) -> None:
    """The idempotency layer records a 409 in the transaction that got it."""
    account = await an_account(storage)
    await insert(storage, a_key(account, "taken"))
    record = StoredResponse(account, "key_x", "idem", "f" * 64, 409, b"ct", 0, SECOND)
    async with storage.transaction() as uow:
        with pytest.raises(DuplicateName):
            await uow.keys.insert(a_key(account, "taken"), "d" * 64, "taken")
        assert await uow.idempotency.insert(record)
    async with storage.reader() as uow:
        assert await uow.idempotency.get(account, "key_x", "idem") == record


async def test_revocation_and_expiry_release_a_name(storage: Storage) -> None:
    account = await an_account(storage)
    first = a_key(account, "n")
    await insert(storage, first)
    async with storage.transaction() as uow:
        await uow.keys.revoke(first.id, now=20 * SECOND)
    expiring = a_key(account, "n", expires_at=30 * SECOND)
    await insert(storage, expiring)
    async with storage.transaction() as uow:
        await uow.keys.release_expired_name(account, "n", now=29 * SECOND)  # not yet expired
        with pytest.raises(DuplicateName):
            await uow.keys.insert(a_key(account, "n"), "e" * 64, "n")
    async with storage.transaction() as uow:
        await uow.keys.release_expired_name(account, "n", now=30 * SECOND)
        await uow.keys.insert(a_key(account, "n"), "e" * 64, "n")


async def test_revoke_keeps_the_first_revocation_time(storage: Storage) -> None:
    account = await an_account(storage)
    key = a_key(account, "k")
    await insert(storage, key)
    for now in (20 * SECOND, 30 * SECOND):
        async with storage.transaction() as uow:
            await uow.keys.revoke(key.id, now=now)
    async with storage.reader() as uow:
        stored = await uow.keys.get(account, key.id)
    assert stored is not None and stored.revoked_at == 20 * SECOND


async def test_listing_is_newest_first_filtered_and_tenant_scoped(storage: Storage) -> None:
    account, other = await an_account(storage), await an_account(storage)
    keys = [a_key(account, f"k{n}", created_at=n * SECOND) for n in range(5)]
    for key in keys:
        await insert(storage, key)
    await insert(storage, a_key(other, "theirs"))
    async with storage.transaction() as uow:
        await uow.keys.revoke(keys[1].id, now=100 * SECOND)
    async with storage.reader() as uow:
        page = await uow.keys.list(account, now=100 * SECOND, limit=2)
        assert [k.id for k in page.keys] == [keys[4].id, keys[3].id] and page.has_more
        rest = await uow.keys.list(
            account, now=100 * SECOND, limit=10, starting_after=page.keys[-1]
        )
        assert [k.id for k in rest.keys] == [keys[2].id, keys[1].id, keys[0].id]
        assert not rest.has_more
        revoked = await uow.keys.list(account, now=0, limit=10, status=KeyStatus.REVOKED)
        assert [k.id for k in revoked.keys] == [keys[1].id]


async def test_touch_only_moves_last_used_forward(storage: Storage) -> None:
    account = await an_account(storage)
    key = a_key(account, "k")
    await insert(storage, key)
    for when in (50 * SECOND, 40 * SECOND):
        async with storage.transaction() as uow:
            await uow.keys.touch({key.id: when})
    async with storage.reader() as uow:
        stored = await uow.keys.get(None, key.id)
    assert stored is not None and stored.last_used_at == 50 * SECOND


async def test_idempotency_records_are_unique_and_purged(storage: Storage) -> None:
    account = await an_account(storage)
    record = StoredResponse(account, "key_a", "k1", "f" * 64, 201, b"\x00\x01", 0, 10 * SECOND)
    async with storage.transaction() as uow:
        assert await uow.idempotency.insert(record)
        assert not await uow.idempotency.insert(record)
    async with storage.transaction() as uow:
        assert await uow.idempotency.purge(now=9 * SECOND) == 0
        assert await uow.idempotency.purge(now=10 * SECOND) == 1
    async with storage.reader() as uow:
        assert await uow.idempotency.get(account, "key_a", "k1") is None


async def test_a_rolled_back_transaction_leaves_nothing(storage: Storage) -> None:
    account = await an_account(storage)
    with pytest.raises(RuntimeError):
        async with storage.transaction() as uow:
            await uow.keys.insert(a_key(account, "ghost"), "g" * 64, "ghost")
            raise RuntimeError("crash")
    async with storage.reader() as uow:
        assert (await uow.keys.list(account, now=0, limit=10)).keys == []
