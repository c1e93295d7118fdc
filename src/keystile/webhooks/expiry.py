"""``api_key.expiring`` (7 days and 1 day before ``expires_at``) and
``api_key.expired``, found by a background scan (contract §13).

Each run looks at the keys whose notice time (``expires_at`` minus 7 days,
minus 1 day, or ``expires_at`` itself) passed since the previous run, so a
run reads only what is new. After a start, the first run looks back 7 days
(events already written are not written again: each carries a dedupe key
naming the key, its ``expires_at`` and the notice, held unique by the
database, which also keeps several instances from writing one twice).

Rules: a revoked key gets none of these; a key made with less than 7 days
to live gets no 7-day notice (nor one made with less than a day, the 1-day
one); when the 7-day notice is found only after the 1-day mark passed (the
service was down), only the 1-day one is sent; a key whose expiry is moved
gets notices for its new expiry.
"""

from __future__ import annotations

from dataclasses import dataclass

from keystile import clock as clocks
from keystile.storage.base import Storage
from keystile.webhooks.models import EventType
from keystile.webhooks.outbox import Outbox

DAY = 86_400 * clocks.MICROS
LOOKBACK = 7 * DAY
BATCH = 500


@dataclass(frozen=True, slots=True)
class Notice:
    type: EventType
    before: int  # microseconds before expires_at
    label: str


NOTICES = (
    Notice(EventType.API_KEY_EXPIRING, 7 * DAY, "7d"),
    Notice(EventType.API_KEY_EXPIRING, DAY, "1d"),
    Notice(EventType.API_KEY_EXPIRED, 0, "expired"),
)


class ExpiryScan:
    def __init__(self, storage: Storage, outbox: Outbox, *, clock: clocks.Clock) -> None:
        self._storage = storage
        self._outbox = outbox
        self._clock = clock
        self._watermark: int | None = None  # the previous run's "now"

    async def run(self) -> int:
        """Write the notices due since the previous run; returns how many."""
        now = clocks.now_micros(self._clock)
        after = self._watermark if self._watermark is not None else now - LOOKBACK
        written = 0
        for notice in NOTICES:
            written += await self._notice(notice, after, now)
        self._watermark = now
        return written

    async def _notice(self, notice: Notice, after: int, now: int) -> int:
        async with self._storage.reader() as uow:
            accounts = await uow.webhooks.subscribed_accounts(notice.type)
        if not accounts:
            return 0
        written = 0
        cursor: tuple[int, str] | None = None
        while True:
            async with self._storage.transaction() as uow:
                keys = await uow.webhooks.keys_expiring(
                    accounts, after, now, notice=notice.before, limit=BATCH, cursor=cursor
                )
                for key in keys:
                    assert key.expires_at is not None
                    if notice.label == "7d" and key.expires_at - DAY <= now:
                        continue  # the 1-day notice is due too: send that one alone
                    dedupe = f"{notice.type.value}:{key.id}:{key.expires_at}:{notice.label}"
                    event = await self._outbox.emit(uow, notice.type, key, dedupe_key=dedupe)
                    written += event is not None
            if len(keys) < BATCH:
                return written
            last = keys[-1]
            assert last.expires_at is not None
            cursor = (last.expires_at, last.id)
