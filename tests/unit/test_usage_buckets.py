"""Usage buckets in UTC (contract §11): flooring, zero-filling, months with
a leap day, and the API's range rules."""

from __future__ import annotations

import calendar

import pytest

from keystile.clock import MICROS
from keystile.errors import ValidationFailed
from keystile.storage.base import Storage
from keystile.usage import buckets
from keystile.usage.models import DAY, HOUR, Bucket, Counts, Granularity
from keystile.usage.service import UsageService
from tests.support import FakeClock

HOURLY, DAILY = Granularity.HOUR, Granularity.DAY


def utc(*fields: int) -> int:
    return calendar.timegm((*fields, 0, 0, 0)[:6])


class TestFlooring:
    def test_the_last_second_of_a_month_is_in_its_last_hour_and_day(self) -> None:
        last = utc(2027, 12, 31, 23, 59, 59)
        assert buckets.floor(last, HOURLY) == utc(2027, 12, 31, 23)
        assert buckets.floor(last, DAILY) == utc(2027, 12, 31)
        assert buckets.floor(last + 1, HOURLY) == utc(2028, 1, 1)
        assert buckets.floor(last + 1, DAILY) == utc(2028, 1, 1)

    def test_a_leap_day_is_a_day_of_24_hours(self) -> None:
        leap = utc(2028, 2, 29)
        assert buckets.floor(leap - 1, DAILY) == utc(2028, 2, 28)
        assert buckets.floor(leap + 23 * HOUR + 3599, DAILY) == leap
        assert buckets.floor(leap + DAY, DAILY) == utc(2028, 3, 1)
        assert buckets.rfc3339(buckets.floor(leap + 5 * HOUR + 1, HOURLY)) == (
            "2028-02-29T05:00:00Z"
        )

    def test_ceil_keeps_a_boundary_and_raises_anything_else(self) -> None:
        assert buckets.ceil(utc(2028, 3, 1), DAILY) == utc(2028, 3, 1)
        assert buckets.ceil(utc(2028, 2, 29) + 1, DAILY) == utc(2028, 3, 1)
        assert buckets.ceil(utc(2028, 2, 29, 23) + 1, HOURLY) == utc(2028, 3, 1)

    def test_months_know_their_length(self) -> None:
        assert buckets.month_bounds(2028, 2) == (utc(2028, 2, 1), utc(2028, 3, 1))
        assert (buckets.month_bounds(2028, 2)[1] - buckets.month_bounds(2028, 2)[0]) // DAY == 29
        assert (buckets.month_bounds(2027, 2)[1] - buckets.month_bounds(2027, 2)[0]) // DAY == 28
        assert buckets.month_bounds(2027, 12) == (utc(2027, 12, 1), utc(2028, 1, 1))
        assert buckets.day_of(utc(2028, 2, 29) + DAY - 1) == "2028-02-29"


class TestZeroFilling:
    def test_every_bucket_is_there_oldest_first_with_zeros_where_nothing_was_counted(
        self,
    ) -> None:
        start = utc(2028, 2, 28, 22)
        found = [Bucket(start + 2 * HOUR, Counts(1, 2, 3, 4))]
        filled = buckets.zero_filled(found, start, start + 4 * HOUR, HOURLY)
        assert [buckets.rfc3339(b.start) for b in filled] == [
            "2028-02-28T22:00:00Z", "2028-02-28T23:00:00Z",
            "2028-02-29T00:00:00Z", "2028-02-29T01:00:00Z",
        ]  # fmt: skip
        assert [b.counts for b in filled] == [Counts(), Counts(), Counts(1, 2, 3, 4), Counts()]

    def test_by_key_every_key_has_every_bucket_in_the_order_given(self) -> None:
        start = utc(2028, 2, 28)
        found = [Bucket(start + DAY, Counts(5), "key_b")]
        filled = buckets.zero_filled(found, start, start + 2 * DAY, DAILY, ["key_a", "key_b"])
        assert [(b.start, b.key_id, b.counts) for b in filled] == [
            (start, "key_a", Counts()),
            (start, "key_b", Counts()),
            (start + DAY, "key_a", Counts()),
            (start + DAY, "key_b", Counts(5)),
        ]


NOW = utc(2028, 3, 1, 10) + 1234  # 2028-03-01T10:20:34Z


def service(retention_days: int = 90) -> UsageService:
    storage: Storage = None  # type: ignore[assignment]  # range() reads no storage
    return UsageService(storage, clock=FakeClock(NOW + 0.5), hourly_retention_days=retention_days)


def refused(field: str, **given: object) -> str:
    with pytest.raises(ValidationFailed) as caught:
        service().range(**given)  # type: ignore[arg-type]
    [problem] = caught.value.details
    assert problem.field == field
    return problem.message


class TestRanges:
    def test_the_defaults_end_with_the_current_bucket(self) -> None:
        hours = service().range(HOURLY)
        assert (hours.start, hours.end) == (utc(2028, 2, 29, 11), utc(2028, 3, 1, 11))
        assert hours.buckets == 24
        days = service().range(DAILY)
        assert (days.start, days.end) == (utc(2028, 2, 1), utc(2028, 3, 2))  # Feb has 29 days
        assert days.buckets == 30

    def test_start_is_floored_and_end_raised_to_whole_buckets(self) -> None:
        span = service().range(
            HOURLY, (utc(2028, 2, 29, 5) + 1) * MICROS + 7, utc(2028, 2, 29, 7) * MICROS + 1
        )
        assert (span.start, span.end) == (utc(2028, 2, 29, 5), utc(2028, 2, 29, 8))
        exact = service().range(DAILY, utc(2028, 2, 1) * MICROS, utc(2028, 3, 1) * MICROS)
        assert exact.buckets == 29  # February of a leap year

    def test_one_bound_given_takes_the_default_span_from_it(self) -> None:
        span = service().range(DAILY, end=utc(2028, 2, 10) * MICROS)
        assert (span.start, span.end) == (utc(2028, 1, 11), utc(2028, 2, 10))
        since = service().range(HOURLY, start=utc(2028, 3, 1, 8) * MICROS)
        assert (since.start, since.end) == (utc(2028, 3, 1, 8), utc(2028, 3, 1, 11))

    def test_at_most_31_days_of_hours_and_400_days_of_days(self) -> None:
        end = utc(2028, 3, 1) * MICROS
        assert service().range(HOURLY, end - 31 * DAY * MICROS, end).buckets == 31 * 24
        assert "31 days" in refused("start", granularity=HOURLY,
                                    start=end - 31 * DAY * MICROS - 1, end=end)  # fmt: skip
        assert service().range(DAILY, end - 400 * DAY * MICROS, end).buckets == 400
        assert "400 days" in refused("start", granularity=DAILY,
                                     start=end - 401 * DAY * MICROS, end=end)  # fmt: skip

    def test_the_end_must_come_after_the_start(self) -> None:
        at = utc(2028, 2, 29) * MICROS
        refused("end", granularity=HOURLY, start=at, end=at)
        refused("end", granularity=HOURLY, start=at, end=at - 1)
        refused("start", granularity=HOURLY, start=utc(2028, 3, 1, 11) * MICROS)  # future

    def test_nothing_before_1970(self) -> None:
        refused("start", granularity=DAILY, start=-1, end=DAY * MICROS)
        refused("end", granularity=DAILY, end=-1)
        early = service().range(DAILY, end=2 * DAY * MICROS)  # the default span is clipped
        assert (early.start, early.end) == (0, 2 * DAY)

    def test_hours_past_the_retention_are_refused_with_a_hint_to_ask_for_days(self) -> None:
        horizon = utc(2028, 3, 1) - 90 * DAY
        assert service().hourly_horizon() == horizon
        assert service().range(HOURLY, horizon * MICROS, (horizon + DAY) * MICROS).buckets == 24
        message = refused(
            "start", granularity=HOURLY, start=(horizon - 1) * MICROS, end=horizon * MICROS
        )
        assert "granularity=day" in message and "90 days" in message
        assert service().range(DAILY, (horizon - DAY) * MICROS, horizon * MICROS).buckets == 1
