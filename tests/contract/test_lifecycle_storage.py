"""The storage contract of the key lifecycle, operator keys and the audit log
(issue #13), run against every backend."""

from __future__ import annotations

import dataclasses

import pytest

from keystile.audit.models import Action, Actor, ActorType, AuditEvent, AuditFilter
from keystile.errors import DuplicateName
from keystile.keys.ids import new_account_id, new_audit_id, new_operator_key_id
from keystile.keys.models import (
    Account,
    AccountStatus,
    KeyStatus,
    OperatorKey,
    Plan,
    Tier,
)
from keystile.keys.validation import name_key
from keystile.storage.base import KeyFilter, Storage, StoredResponse
from tests.contract.test_storage import SECOND, a_key, an_account, insert, with_every_field

pytestmark = pytest.mark.anyio


async def test_every_mutable_field_round_trips(storage: Storage) -> None:
    account = await an_account(storage)
    key = a_key(account, "k")
    await insert(storage, key)
    changed = with_every_field(key, name="K2", replaced_by="key_01ARZ3NDEKTSV4RRFFQ69G5FAV")
    async with storage.transaction() as uow:
        await uow.keys.update(changed, name_key("K2"), 0)
    async with storage.reader() as uow:
        assert await uow.keys.get(account, key.id) == changed


async def test_a_rename_onto_an_active_name_fails_and_the_transaction_lives_on(
    storage: Storage,
) -> None:
    account = await an_account(storage)
    await insert(storage, a_key(account, "taken"))
    mover = a_key(account, "mover")
    await insert(storage, mover)
    record = StoredResponse(account, "key_x", "idem", "f" * 64, 409, b"ct", 0, SECOND)
    async with storage.transaction() as uow:
        with pytest.raises(DuplicateName):
            await uow.keys.update(dataclasses.replace(mover, name="TAKEN"), "taken", 0)
        assert await uow.idempotency.insert(record)
    async with storage.reader() as uow:
        assert (await uow.keys.get(account, mover.id)).name == "mover"  # type: ignore[union-attr]


async def test_a_rename_onto_an_expired_holders_name_takes_it(storage: Storage) -> None:
    account = await an_account(storage)
    await insert(storage, a_key(account, "old", expires_at=5 * SECOND))
    mover = a_key(account, "mover")
    await insert(storage, mover)
    async with storage.transaction() as uow:
        await uow.keys.update(dataclasses.replace(mover, name="old"), "old", 10 * SECOND)


async def test_a_released_name_can_be_taken(storage: Storage) -> None:
    account = await an_account(storage)
    holder = a_key(account, "name")
    await insert(storage, holder)
    async with storage.transaction() as uow:
        await uow.keys.release_name(holder.id)
        await uow.keys.insert(a_key(account, "name"), "e" * 64, "name")


async def test_list_filters(storage: Storage) -> None:
    account = await an_account(storage)
    keys = [
        dataclasses.replace(a_key(account, f"k{n}", created_at=n * SECOND), metadata=meta)
        for n, meta in enumerate([{"team": "a"}, {"team": "a", "env": "p"}, {"team": "b"}])
    ]
    for key in keys:
        await insert(storage, key)
    async with storage.transaction() as uow:
        await uow.keys.update(dataclasses.replace(keys[2], disabled=True), "k2", 0)
    async with storage.reader() as uow:

        async def ids(where: KeyFilter, status: KeyStatus | None = None) -> list[str]:
            page = await uow.keys.list(account, now=0, limit=10, status=status, where=where)
            return [k.id for k in page.keys]

        assert await ids(KeyFilter(metadata={"team": "a"})) == [keys[1].id, keys[0].id]
        assert await ids(KeyFilter(metadata={"team": "a", "env": "p"})) == [keys[1].id]
        assert await ids(KeyFilter(name_key="k0")) == [keys[0].id]
        assert await ids(KeyFilter(), KeyStatus.DISABLED) == [keys[2].id]
        assert keys[2].id not in await ids(KeyFilter(), KeyStatus.ACTIVE)


async def test_accounts_update_list_and_count_unmetered(storage: Storage) -> None:
    accounts = [
        Account(id=new_account_id(), name=f"A{n}", plan=Plan.ENTERPRISE, created_at=n * SECOND)
        for n in range(3)
    ]
    async with storage.transaction() as uow:
        for account in accounts:
            await uow.accounts.insert(account)
        suspended = dataclasses.replace(
            accounts[1], status=AccountStatus.SUSPENDED, metadata={"x": "y"}
        )
        await uow.accounts.update(suspended)
        await uow.keys.insert(
            dataclasses.replace(a_key(accounts[0].id, "u"), rate_limit_tier=Tier.UNMETERED),
            "u" * 64,
            "u",
        )
    async with storage.reader() as uow:
        assert await uow.accounts.get(accounts[1].id) == suspended
        page = await uow.accounts.list(limit=2, status=AccountStatus.SUSPENDED)
        assert [a.id for a in page.accounts] == [accounts[1].id]
        assert await uow.accounts.count_active_unmetered_keys(accounts[0].id, 0) == 1
        assert await uow.accounts.count_active_unmetered_keys(accounts[2].id, 0) == 0


async def test_operator_keys(storage: Storage) -> None:
    key = OperatorKey(id=new_operator_key_id(), name="ops", created_at=SECOND)
    async with storage.transaction() as uow:
        await uow.operator_keys.insert(key, "o" * 64)
    async with storage.reader() as uow:
        assert await uow.operator_keys.find_by_digest("o" * 64) == (key, "o" * 64)
        assert await uow.operator_keys.list() == [key]
    async with storage.transaction() as uow:
        await uow.operator_keys.revoke(key.id, 5 * SECOND)
        await uow.operator_keys.revoke(key.id, 9 * SECOND)  # the first time stays
        await uow.operator_keys.touch({key.id: 7 * SECOND})
    async with storage.reader() as uow:
        stored = await uow.operator_keys.get(key.id)
    assert stored == dataclasses.replace(key, revoked_at=5 * SECOND, last_used_at=7 * SECOND)


async def test_audit_events_list_filter_and_purge(storage: Storage) -> None:
    account = await an_account(storage)

    def event(n: int, action: Action, account_id: str | None = account) -> AuditEvent:
        return AuditEvent(
            id=new_audit_id(), action=action, actor=Actor(ActorType.CLI),
            target_type="api_key", target_id=f"key_{n}", account_id=account_id,
            request_id=None, ip=None, created_at=n * SECOND,
            changes={"name": (None, f"k{n}"), "metadata": ({}, {"a": "b"})},
        )  # fmt: skip

    events = [event(1, Action.API_KEY_CREATED), event(2, Action.API_KEY_REVOKED),
              event(3, Action.OPERATOR_KEY_CREATED, None)]  # fmt: skip
    async with storage.transaction() as uow:
        for item in events:
            await uow.audit.insert(item)
    async with storage.reader() as uow:
        mine = await uow.audit.list(AuditFilter(account_id=account), limit=10)
        assert mine.events == [events[1], events[0]]
        everyone = await uow.audit.list(AuditFilter(account_id=None), limit=10)
        assert [e.id for e in everyone.events] == [e.id for e in reversed(events)]
        since = await uow.audit.list(AuditFilter(account_id=None, since=2 * SECOND), limit=10)
        assert [e.id for e in since.events] == [events[2].id, events[1].id]
        page = await uow.audit.list(AuditFilter(account_id=None), limit=1)
        assert page.has_more
    async with storage.transaction() as uow:
        assert await uow.audit.purge(before=3 * SECOND) == 2
