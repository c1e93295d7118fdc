"""``last_used_at``: recorded in memory per request, written in batches.

Writing a row on every request would make each verification a database write;
instead the newest use per key is kept and flushed every interval (and on
shutdown), so ``last_used_at`` lags real use by at most that interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from keystile.storage.base import Storage, StorageUnavailable

log = logging.getLogger("keystile.usage")


class UsageRecorder:
    def __init__(self, storage: Storage, interval_seconds: float) -> None:
        self._storage = storage
        self._interval = interval_seconds
        self._pending: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def record(self, key_id: str, used_at: int) -> None:
        if self._pending.get(key_id, 0) < used_at:
            self._pending[key_id] = used_at

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            async with self._storage.transaction() as uow:
                await uow.keys.touch(batch)
        except StorageUnavailable:
            for key_id, used_at in batch.items():
                self.record(key_id, used_at)
            raise

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except StorageUnavailable as exc:
                log.warning("could not write last_used_at, will retry: %s", exc)
            except Exception:
                log.exception("writing last_used_at failed")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(StorageUnavailable):
            await self.flush()
