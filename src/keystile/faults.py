"""Test-only fault injection: kill the process at a named point.

Set ``KEYSTILE_TEST_FAULT_POINT`` to one of :data:`POINTS` and the process
sends itself SIGKILL when it gets there, as a crash or an OOM kill would.
The crash tests use it to show that an idempotent create is never lost and
never doubled. Unset (always, in production), it does nothing.
"""

from __future__ import annotations

import os
import signal

POINTS = frozenset(
    {
        "idempotency.before_handler",  # transaction open, nothing written
        "idempotency.after_handler",  # the key is inserted, its record is not
        "idempotency.after_record",  # both inserted, not committed
        "idempotency.after_commit",  # committed, the response not yet sent
    }
)


class Faults:
    def __init__(self, point: str | None) -> None:
        if point is not None and point not in POINTS:
            raise ValueError(f"unknown fault point {point!r}")
        self.point = point

    def hit(self, point: str) -> None:
        if point == self.point:
            os.kill(os.getpid(), signal.SIGKILL)
