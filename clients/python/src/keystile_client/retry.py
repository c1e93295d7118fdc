"""When to retry a request, and how long to wait first (the client's half
of contract §6).

Retried: a request that got no answer (connection refused or reset, a
timeout), ``409 idempotency_key_in_use`` (the first attempt is still
running), ``429`` and ``503`` (after their ``Retry-After``). Never any other
4xx, nor ``500``/``502``/``504``. Every ``POST``/``PATCH`` carries one
``Idempotency-Key`` on all its attempts, so a create whose answer was lost
is replayed by keystile, never made twice; ``DELETE`` is idempotent by the
API and ``GET`` changes nothing.

Bounded twice: at most ``max_retries`` retries, and no wait that would end
after ``deadline`` seconds from the first attempt (a ``Retry-After`` longer
than what is left is not waited out: the error is raised at once, with its
``retry_after``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from keystile_client.errors import ConnectionFailed, KeystileError

_RETRIED_CODES = frozenset({"idempotency_key_in_use", "rate_limited", "service_unavailable"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_retries`` retries after the first attempt (0 disables them),
    within ``deadline`` seconds in all; waits grow as ``backoff * 2**n``
    with full jitter, capped at ``max_backoff``, and are never shorter than
    keystile's ``Retry-After``."""

    max_retries: int = 2
    deadline: float = 30.0
    backoff: float = 0.2
    max_backoff: float = 5.0

    def wait(self, error: KeystileError, retries_done: int, elapsed: float) -> float | None:
        """Seconds to wait before the next attempt after ``error``, or
        ``None``: give up and raise ``error``."""
        if retries_done >= self.max_retries or not retryable(error):
            return None
        pause = random.uniform(0, min(self.max_backoff, self.backoff * 2**retries_done))
        if error.retry_after is not None:
            pause = max(pause, error.retry_after)
        if elapsed + pause >= self.deadline:
            return None
        return pause

    def remaining(self, elapsed: float) -> float:
        """What is left of the deadline, for the next attempt's timeout."""
        return max(0.001, self.deadline - elapsed)


def retryable(error: KeystileError) -> bool:
    """Whether a request that failed with ``error`` may be sent again."""
    if isinstance(error, ConnectionFailed):
        return True
    return error.code in _RETRIED_CODES or error.status in (429, 503)
