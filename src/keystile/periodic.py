"""A background job run every N seconds for the life of the server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from keystile.storage.base import StorageUnavailable

log = logging.getLogger("keystile")


class BackgroundTask:
    """A coroutine run for the life of the server, cancelled on shutdown."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class Periodic(BackgroundTask):
    """Runs ``job`` every ``interval_seconds``, on a fixed schedule (a run
    that takes time does not push the next one back; one that overruns its
    interval is followed by the next at once). A failure is logged and the
    next run happens as scheduled (an unreachable database is expected to
    come back, so it is a warning, not an error)."""

    def __init__(
        self, name: str, interval_seconds: float, job: Callable[[], Awaitable[object]]
    ) -> None:
        super().__init__(name)
        self._interval = interval_seconds
        self._job = job

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due = max(due + self._interval, loop.time())
            await asyncio.sleep(due - loop.time())
            try:
                await self._job()
            except StorageUnavailable as exc:
                log.warning("%s: the database is unavailable, will retry: %s", self.name, exc)
            except Exception:
                log.exception("%s failed", self.name)
