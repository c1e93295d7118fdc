"""The backstop against a stalled worker: a thread that kills the process
when its event loop stops running.

A handler that never yields (a loop that does not end, a blocking call)
stops everything its worker does: ``/healthz`` goes unanswered and SIGTERM is
ignored, because both need the event loop. uvicorn's supervisor does not see
it: its health ping is answered by a thread of the worker, which keeps
running. So the loop itself beats a few times a second (one timer, never per
request), and a thread checks the beat. When the loop has not run for
``stall_seconds``, the thread logs an error with the stack of the loop's
thread (file, line and function names and source lines only: no variable's
value, so no request data) and sends its own process SIGKILL; the supervisor
starts a fresh worker.

A call that holds the GIL (a C extension that never releases it) stops this
thread as well; uvicorn's supervisor catches that case, since its ping thread
stops too (``timeout_worker_healthcheck``, 5 s).

The thread also ends the worker (with SIGTERM, so gracefully) when the
supervisor has gone, so a killed ``keystile serve`` leaves no worker behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
import traceback

log = logging.getLogger("keystile.watchdog")

REPORT_SECONDS = 2.0
"""The longest the report may take: the kill never waits on a blocked log."""


class LoopWatchdog:
    """Watches ``loop`` (running in the calling thread) from a daemon thread;
    with ``supervisor`` (a process id), also that this process's parent is
    still that process."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, stall_seconds: float, supervisor: int | None = None
    ) -> None:
        self._loop = loop
        self._stall_seconds = stall_seconds
        self._interval = min(1.0, stall_seconds / 4)
        self._loop_thread = threading.get_ident()
        self._supervisor = supervisor
        self._last_beat = time.monotonic()
        self._beat_handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="keystile-watchdog", daemon=True)

    def start(self) -> None:
        self._beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._beat_handle is not None:
            self._beat_handle.cancel()

    def _beat(self) -> None:
        self._last_beat = time.monotonic()
        self._beat_handle = self._loop.call_later(self._interval, self._beat)

    def _watch(self) -> None:
        checked = time.monotonic()
        while not self._stop.wait(self._interval):
            if self._loop.is_closed():
                return  # the worker is finishing: nothing more to watch
            if not self._loop.is_running():
                # Between two runs of the loop (granian runs it once for the
                # lifespan start-up, once to serve, once for the shutdown):
                # nothing to watch now, no evidence against it later.
                self._last_beat = time.monotonic()
                checked = self._last_beat
                continue
            if self._supervisor is not None and os.getppid() != self._supervisor:
                log.error("the supervisor is gone; stopping this worker")
                os.kill(os.getpid(), signal.SIGTERM)
                return
            now = time.monotonic()
            if now - checked > 2 * self._interval + 1:
                # This thread did not run either (the process was stopped, or
                # the GIL was held): no evidence against the loop yet.
                self._last_beat = max(self._last_beat, now - self._interval)
            checked = now
            # The loop last ran at least this long ago: its next beat was due
            # one interval after the last.
            stalled = now - self._last_beat - self._interval
            if stalled >= self._stall_seconds:
                self._kill(stalled)
                return

    def _kill(self, stalled: float) -> None:
        reporter = threading.Thread(target=self._report, args=(stalled,), daemon=True)
        reporter.start()
        reporter.join(REPORT_SECONDS)
        os.kill(os.getpid(), signal.SIGKILL)

    def _report(self, stalled: float) -> None:
        frame = sys._current_frames().get(self._loop_thread)
        stack = traceback.format_stack(frame) if frame is not None else []
        log.error(
            "event loop stalled for over %.1f s: killing worker %d",
            stalled,
            os.getpid(),
            extra={"stack": [line.rstrip() for line in stack]},
        )
