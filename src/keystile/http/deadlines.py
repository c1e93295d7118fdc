"""Deadlines for awaits that almost never wait, at the cost of a dict entry.

A request body usually arrives with its headers, so reading it does not wait
at all; yet a client trickling a body must not hold a handler forever.
``asyncio.timeout`` per read costs a timer handle, a heap push and its
cancellation on every request: about 5 % of a verify request's CPU under
load (py-spy, issue 14's note). :class:`Deadlines` keeps one timer per event
loop instead, armed only while some deadline is pending, that cancels the
tasks whose deadline has passed, the way ``asyncio.timeout`` does (the
cancellation is turned into ``TimeoutError`` for the task that overran, and
any other cancellation passes through untouched).
"""

from __future__ import annotations

import asyncio
import weakref
from types import TracebackType
from typing import Any

RESOLUTION_SECONDS = 0.1
"""How late a deadline may be noticed: the timer's period while armed."""


def within(seconds: float) -> _Deadline:
    """``with within(seconds): await ...``: the current task's deadline, on
    the :class:`Deadlines` of its event loop (raises ``TimeoutError``)."""
    loop = asyncio.get_running_loop()
    latest = _latest
    if latest is not None and latest[0]() is loop:
        return _Deadline(latest[1], seconds)
    return _Deadline(_deadlines_of(loop), seconds)


def _deadlines_of(loop: asyncio.AbstractEventLoop) -> Deadlines:
    """The loop's :class:`Deadlines`, remembered as the latest used: a
    ``WeakKeyDictionary`` lookup makes a weak reference per call, which was
    1-2 % of a verify request's CPU (py-spy); the latest loop is one call
    of a weak reference."""
    global _latest
    deadlines = _BY_LOOP.get(loop)
    if deadlines is None:
        deadlines = _BY_LOOP[loop] = Deadlines()
    _latest = (weakref.ref(loop), deadlines)
    return deadlines


class Deadlines:
    """The deadlines of one event loop's tasks.

    ``with deadlines.within(seconds): await ...`` raises ``TimeoutError`` out
    of the block when it is still running ``seconds`` after it was entered
    (noticed within :data:`RESOLUTION_SECONDS`). Not reentrant per task: a
    task holds at most one deadline at a time.
    """

    def __init__(self, resolution: float = RESOLUTION_SECONDS) -> None:
        self._resolution = resolution
        self._pending: dict[asyncio.Task[Any], float] = {}  # task -> loop time it must end by
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def within(self, seconds: float) -> _Deadline:
        """A context manager: the current task's deadline, ``seconds`` from now."""
        return _Deadline(self, seconds)

    def _enter(self, task: asyncio.Task[Any], seconds: float) -> None:
        loop = task.get_loop()
        self._pending[task] = loop.time() + seconds
        if self._timer is None:
            self._timer = loop.call_later(self._resolution, self._check, loop)

    def _leave(self, task: asyncio.Task[Any]) -> bool:
        """Drop the task's deadline; True when it had expired."""
        self._pending.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in list(self._pending.items()):
            if deadline <= now:
                del self._pending[task]
                self._expired.add(task)
                task.cancel()
        self._timer = (
            loop.call_later(self._resolution, self._check, loop) if self._pending else None
        )


class _Deadline:
    __slots__ = ("_deadlines", "_seconds", "_task")

    def __init__(self, deadlines: Deadlines, seconds: float) -> None:
        self._deadlines = deadlines
        self._seconds = seconds
        self._task: asyncio.Task[Any] | None = None

    def __enter__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline needs a running task")
        self._task = task
        self._deadlines._enter(task, self._seconds)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._task is not None
        if not self._deadlines._leave(self._task):
            return
        # The deadline cancelled the task: take that cancellation back, and
        # turn it into TimeoutError when nothing else cancelled the task too
        # (asyncio.timeout's rule: uncancel() back to zero).
        if self._task.uncancel() == 0 and kind is asyncio.CancelledError:
            raise TimeoutError from error


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = (
    weakref.WeakKeyDictionary()
)
_latest: tuple[weakref.ReferenceType[asyncio.AbstractEventLoop], Deadlines] | None = None
