"""A key by its digest, the per-request lookup (``find_by_digest``), run
against every backend: a reader answers exactly what a transaction reads,
whichever path serves it (PostgreSQL's readers look keys up on asyncpg
directly, ``storage.sql.lookups``)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from keystile.keys.ids import new_operator_key_id
from keystile.keys.models import (
    AccountStatus,
    OperatorKey,
)
from keystile.storage.base import Storage
from tests.contract.test_storage import SECOND, a_key, an_account, with_every_field

pytestmark = pytest.mark.anyio


async def test_a_key_reads_the_same_through_a_reader_and_a_transaction(storage: Storage) -> None:
    account = await an_account(storage)
    key = with_every_field(a_key(account, "every field"), limit_key="key_rotatedfrom")
    async with storage.transaction() as uow:
        await uow.keys.insert(key, "f" * 64, "every field")
        await uow.keys.touch({key.id: 12 * SECOND})
        await uow.keys.revoke(key.id, 13 * SECOND)
    expected = dataclasses.replace(key, last_used_at=12 * SECOND, revoked_at=13 * SECOND)
    async with storage.reader() as uow:
        assert await uow.keys.find_by_digest("f" * 64) == (expected, "f" * 64)
        assert await uow.keys.get(account, key.id) == expected  # the other reads still work
    async with storage.transaction() as uow:
        assert await uow.keys.find_by_digest("f" * 64) == (expected, "f" * 64)


async def test_a_key_carries_its_accounts_suspension(storage: Storage) -> None:
    account = await an_account(storage)
    key = a_key(account, "k")
    async with storage.transaction() as uow:
        await uow.keys.insert(key, "s" * 64, "k")
        stored = await uow.accounts.get(account)
        assert stored is not None
        await uow.accounts.update(dataclasses.replace(stored, status=AccountStatus.SUSPENDED))
    async with storage.reader() as uow:
        found = await uow.keys.find_by_digest("s" * 64)
    assert found == (dataclasses.replace(key, account_suspended=True), "s" * 64)
    async with storage.transaction() as uow:
        await uow.accounts.update(stored)  # active again
    async with storage.reader() as uow:
        assert await uow.keys.find_by_digest("s" * 64) == (key, "s" * 64)


async def test_an_unknown_digest_finds_nothing(storage: Storage) -> None:
    account = await an_account(storage)
    async with storage.transaction() as uow:
        await uow.keys.insert(a_key(account, "k"), "a" * 64, "k")
        await uow.operator_keys.insert(
            OperatorKey(id=new_operator_key_id(), name="ops", created_at=SECOND), "b" * 64
        )
    async with storage.reader() as uow:
        assert await uow.keys.find_by_digest("b" * 64) is None  # an operator key's digest
        assert await uow.keys.find_by_digest("c" * 64) is None
        assert await uow.operator_keys.find_by_digest("a" * 64) is None  # an account key's
        assert await uow.operator_keys.find_by_digest("c" * 64) is None


async def test_an_operator_key_reads_the_same_through_a_reader_and_a_transaction(
    storage: Storage,
) -> None:
    key = OperatorKey(id=new_operator_key_id(), name="ops", created_at=SECOND)
    async with storage.transaction() as uow:
        await uow.operator_keys.insert(key, "o" * 64)
        await uow.operator_keys.touch({key.id: 3 * SECOND})
        await uow.operator_keys.revoke(key.id, 4 * SECOND)
    expected = dataclasses.replace(key, last_used_at=3 * SECOND, revoked_at=4 * SECOND)
    async with storage.reader() as uow:
        assert await uow.operator_keys.find_by_digest("o" * 64) == (expected, "o" * 64)
    async with storage.transaction() as uow:
        assert await uow.operator_keys.find_by_digest("o" * 64) == (expected, "o" * 64)


async def test_many_concurrent_lookups_all_answer(storage: Storage) -> None:
    """More lookups at once than the pool has connections: they wait their turn."""
    account = await an_account(storage)
    keys = [a_key(account, f"k{n}") for n in range(8)]
    async with storage.transaction() as uow:
        for n, key in enumerate(keys):
            await uow.keys.insert(key, f"{n:064d}", f"k{n}")

    async def look_up(n: int) -> object:
        async with storage.reader() as uow:
            return await uow.keys.find_by_digest(f"{n % 8:064d}")

    found = await asyncio.gather(*(look_up(n) for n in range(64)))
    assert found == [(keys[n % 8], f"{n % 8:064d}") for n in range(64)]
