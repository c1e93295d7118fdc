"""The outbox: webhook events written in the same transaction as their cause.

A key change and its event commit together or not at all (contract §13),
because the event is a row written in the change's own unit of work; the
dispatcher (``webhooks.dispatcher``) sends it after the commit, however
long after, from whichever instance claims it. An event goes to the
account's endpoints that are enabled and subscribed when it is written; when
there are none, nothing is written at all.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from keystile import clock as clocks
from keystile.keys.ids import new_event_id
from keystile.keys.models import ApiKey
from keystile.storage.base import UnitOfWork
from keystile.webhooks.models import WebhookEvent

KeyRenderer = Callable[[ApiKey, int], dict[str, Any]]
"""The key object as the API shows it (no secret), at a time (Unix µs)."""


def event_body(
    event_id: str,
    event_type: str,
    account_id: str,
    created_at: int,
    obj: dict[str, Any],
    context: dict[str, Any] | None = None,
) -> bytes:
    """The JSON every receiver gets (contract §13): ``{"id", "type",
    "created_at", "account_id", "data": {"object"}}``, compact UTF-8.
    ``context`` adds members to ``data`` beside ``object`` (the window of a
    ``rate_limited``, the threshold of a ``quota_threshold``: docs/webhooks.md)."""
    body = {
        "id": event_id,
        "type": event_type,
        "created_at": clocks.rfc3339(created_at),
        "account_id": account_id,
        "data": {"object": obj, **(context or {})},
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class Outbox:
    """Writes events for keys (the ``KeyEvents`` the key service calls)."""

    def __init__(self, render: KeyRenderer, *, clock: clocks.Clock = clocks.system_clock) -> None:
        self._render = render
        self._clock = clock
        self.written = asyncio.Event()  # a hint for this process's dispatcher

    async def emit(
        self,
        uow: UnitOfWork,
        event_type: str,
        key: ApiKey,
        *,
        dedupe_key: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> WebhookEvent | None:
        """Write ``event_type`` about ``key`` and one delivery per subscribed
        endpoint, in ``uow``. Returns the event, or None when no endpoint
        wants it or (with ``dedupe_key``) it was written before."""
        endpoints = await uow.webhooks.subscribers(key.account_id, event_type)
        if not endpoints:
            return None
        now = clocks.now_micros(self._clock)
        event_id = new_event_id()
        obj = self._render(key, now)
        event = WebhookEvent(
            id=event_id,
            type=event_type,
            account_id=key.account_id,
            created_at=now,
            body=event_body(event_id, event_type, key.account_id, now, obj, context),
            dedupe_key=dedupe_key,
        )
        if not await uow.webhooks.insert_event(event):
            return None
        await uow.webhooks.insert_deliveries(event, endpoints, now)
        self.written.set()
        return event
