"""``last_used_at``: recorded in memory per request, written in batches.

Writing a row on every request would make each verification a database write;
instead the newest use per key is kept and flushed every interval (and on
shutdown), so ``last_used_at`` lags real use by at most that interval.
"""

from __future__ import annotations

import contextlib

from keystile.periodic import Periodic
from keystile.storage.base import Storage, StorageUnavailable


class UsageRecorder:
    def __init__(self, storage: Storage, interval_seconds: float) -> None:
        self._storage = storage
        self._pending: dict[str, int] = {}
        self._periodic = Periodic("writing last_used_at", interval_seconds, self.flush)

    def record(self, key_id: str, used_at: int) -> None:
        if self._pending.get(key_id, 0) < used_at:
            self._pending[key_id] = used_at

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            async with self._storage.transaction() as uow:
                await uow.keys.touch({k: v for k, v in batch.items() if not k.startswith("opk_")})
                await uow.operator_keys.touch(
                    {k: v for k, v in batch.items() if k.startswith("opk_")}
                )
        except StorageUnavailable:
            for key_id, used_at in batch.items():
                self.record(key_id, used_at)
            raise

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
        with contextlib.suppress(StorageUnavailable):
            await self.flush()
