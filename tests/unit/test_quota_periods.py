"""Quota periods are UTC calendar days and months (contract §11)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from keystile.keys.models import Quota, QuotaPeriod
from keystile.ratelimit.quota import Period, QuotaCount, QuotaDecision, period_of


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("now", "period", "start", "end"),
    [
        ("2026-11-30T23:59:59", QuotaPeriod.DAY, "2026-11-30T00:00:00", "2026-12-01T00:00:00"),
        ("2026-12-01T00:00:00", QuotaPeriod.DAY, "2026-12-01T00:00:00", "2026-12-02T00:00:00"),
        ("2028-02-29T12:00:00", QuotaPeriod.DAY, "2028-02-29T00:00:00", "2028-03-01T00:00:00"),
        (
            "2026-11-30T23:59:59.999",
            QuotaPeriod.MONTH,
            "2026-11-01T00:00:00",
            "2026-12-01T00:00:00",
        ),
        ("2026-12-31T23:59:59", QuotaPeriod.MONTH, "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
        ("2027-01-01T00:00:00", QuotaPeriod.MONTH, "2027-01-01T00:00:00", "2027-02-01T00:00:00"),
        ("2028-02-29T23:59:59", QuotaPeriod.MONTH, "2028-02-01T00:00:00", "2028-03-01T00:00:00"),
        ("2027-02-28T23:59:59", QuotaPeriod.MONTH, "2027-02-01T00:00:00", "2027-03-01T00:00:00"),
    ],
)
def test_periods(now: str, period: QuotaPeriod, start: str, end: str) -> None:
    assert period_of(period, ts(now)) == Period(int(ts(start)), int(ts(end)))


@pytest.mark.parametrize(
    ("now", "retry_after"),
    [("2026-11-30T23:59:59", 1), ("2026-11-30T23:59:59.5", 1), ("2026-11-30T00:00:00", 86400)],
)
def test_retry_after_reaches_the_periods_end(now: str, retry_after: int) -> None:
    quota = Quota(10, QuotaPeriod.DAY)
    period = period_of(QuotaPeriod.DAY, ts(now))
    refused = QuotaDecision.of(quota, period, QuotaCount(10, admitted=False), ts(now))
    assert (refused.allowed, refused.remaining, refused.retry_after) == (False, 0, retry_after)
    assert refused.reset == int(ts("2026-12-01T00:00:00"))
    assert dict(refused.headers()) == {
        b"x-quota-limit": b"10", b"x-quota-remaining": b"0", b"x-quota-reset": b"1796083200",
    }  # fmt: skip
