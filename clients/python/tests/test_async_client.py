"""AsyncClient against a real keystile, and its parity with Client."""

from __future__ import annotations

import inspect
import uuid

import pytest
from tests.support import LEDGER

from client_support import Keystile
from keystile_client import AsyncClient, Client
from keystile_client import errors as e

pytestmark = pytest.mark.anyio


async def test_create_list_all_verify_revoke(keystile: Keystile) -> None:
    tag = uuid.uuid4().hex[:8]
    async with AsyncClient(keystile.admin_key, base_url=keystile.url) as client:
        made = [
            await client.api_keys.create(f"a-{tag}-{i}", ["read:contacts"], metadata={"t": tag})
            for i in range(3)
        ]
        for key in made:
            LEDGER.remember(key.key)
        listed = [k.id async for k in client.api_keys.list_all(limit=1, metadata={"t": tag})]
        assert listed == [k.id for k in reversed(made)]
        assert (await client.api_keys.verify(made[0].key, "read:contacts")).valid
        await client.api_keys.revoke(made[0].id)
        assert (await client.api_keys.verify(made[0].key)).code == "REVOKED"
        with pytest.raises(e.NotFound):
            await client.api_keys.get("key_01JD3ZK4Q8Y6W2N5T7V9X1B3C5")


async def test_accounts_need_an_operator_key(keystile: Keystile) -> None:
    async with AsyncClient(keystile.admin_key, base_url=keystile.url) as client:
        with pytest.raises(e.InsufficientPermissions):
            await client.accounts.list()
    async with AsyncClient(keystile.operator_key, base_url=keystile.url) as ops:
        assert (await ops.accounts.get(keystile.account)).plan == "enterprise"


def test_the_two_clients_have_the_same_resources_and_signatures() -> None:
    sync = Client("k")
    asynchronous = AsyncClient("k")
    for name in ("api_keys", "accounts", "audit_events", "usage", "webhook_endpoints"):
        left, right = getattr(sync, name), getattr(asynchronous, name)
        methods = {m for m in dir(left) if not m.startswith("_")}
        assert methods == {m for m in dir(right) if not m.startswith("_")}, name
        for method in methods:
            assert (
                inspect.signature(getattr(left, method)).parameters
                == inspect.signature(getattr(right, method)).parameters
            ), f"{name}.{method}"
