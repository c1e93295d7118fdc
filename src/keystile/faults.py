"""Test-only fault injection: crash or hang the process at a named point.

Set ``KEYSTILE_TEST_FAULT_POINT`` to one of :data:`POINTS`. At a crash point
the process sends itself SIGKILL when it gets there, as a crash or an OOM
kill would; the crash tests use them to show that an idempotent create is
never lost and never doubled. At a hang point the event loop is blocked by a
busy loop that never ends, as a handler stuck in an endless loop would; the
first process of a data directory to get there hangs, and no other (a file
in the data directory marks it), so the worker that replaces it serves
normally. Unset (always, in production), nothing happens.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

CRASHES = frozenset(
    {
        "idempotency.before_handler",  # transaction open, nothing written
        "idempotency.after_handler",  # the key is inserted, its record is not
        "idempotency.after_record",  # both inserted, not committed
        "idempotency.after_commit",  # committed, the response not yet sent
    }
)
HANGS = frozenset(
    {
        "handler.hang",  # authenticated and authorized, the endpoint not yet run
    }
)
POINTS = CRASHES | HANGS


class Faults:
    def __init__(self, point: str | None = None, data_dir: Path | None = None) -> None:
        if point is not None and point not in POINTS:
            raise ValueError(f"unknown fault point {point!r}")
        self.point = point
        self._data_dir = data_dir

    def hit(self, point: str) -> None:
        if point != self.point:
            return
        if point in HANGS:
            if self._first_to_hang(point):
                while True:  # never yields to the event loop
                    pass
            return
        os.kill(os.getpid(), signal.SIGKILL)

    def _first_to_hang(self, point: str) -> bool:
        if self._data_dir is None:
            return True
        try:
            os.close(os.open(self._data_dir / f"fault-{point}", os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return False
        return True
