"""Deciding the tokens of a leak report, and revoking the live keys among
them (contract §14).

A reported token is a ``true_positive`` when it is a live key of this
deployment (neither revoked nor expired): it is revoked at once, as the
actor ``system`` with the reason ``leaked``, through
:meth:`KeyService.revoke`, the path every revocation takes, so the audit
event, ``api_key.revoked`` and ``api_key.leaked`` commit with it and every
worker and instance drops its cached copy. Anything else is a
``false_positive``: a token without this deployment's ``{prefix}_live_``
shape and checksum (decided without touching storage, and never stored), an
unknown digest, a key already revoked or expired.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from keystile.audit.models import Origin
from keystile.keys import tokens
from keystile.keys.service import LEAKED, KeyService
from keystile.storage.base import Storage

log = logging.getLogger("keystile.leaks")

MAX_TOKENS = 1000  # per report (contract §14)


class Label(StrEnum):
    """GitHub's partner response labels."""

    TRUE_POSITIVE = "true_positive"
    FALSE_POSITIVE = "false_positive"


@dataclass(frozen=True, slots=True)
class ReportedToken:
    """One item of a report: the string found, the partner's ``type`` for
    the pattern that matched, where it was found (``url``) and in what
    (``source``, e.g. ``content``, ``commit``, ``issue``)."""

    token: str
    type: str
    url: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer for one reported token; ``key_id`` names the key revoked."""

    token: str
    type: str
    label: Label
    key_id: str | None = None


class LeakService:
    """Decides reports. At most ``concurrency`` reports of one process are
    worked on at once: a signed report may be replayed by whoever captured
    it, and each costs up to :data:`MAX_TOKENS` storage lookups."""

    def __init__(
        self, storage: Storage, keys: KeyService, *, prefix: str, concurrency: int = 2
    ) -> None:
        self._storage = storage
        self._keys = keys
        self._prefix = prefix
        self._slots = asyncio.Semaphore(concurrency)

    async def decide(self, report: Sequence[ReportedToken], origin: Origin) -> list[Verdict]:
        """One :class:`Verdict` per item of ``report``, in its order.

        A token given several times is looked up and revoked once, and
        answered alike each time. Each revocation commits on its own (its
        audit event and webhook events with it), before the next token is
        looked at: a leaked key is revoked as soon as possible, whatever
        happens to the rest of the report. A failure (the database is
        unreachable) raises after the revocations made so far; a retried
        report answers ``false_positive`` for those (they are revoked now),
        and decides the rest. Raises ``StorageUnavailable``.
        """
        async with self._slots:
            decided: dict[str, tuple[Label, str | None]] = {}
            for item in report:
                if item.token not in decided:
                    decided[item.token] = await self._decide(item.token, origin)
        verdicts = [Verdict(i.token, i.type, *decided[i.token]) for i in report]
        revoked = sorted({v.key_id for v in verdicts if v.key_id is not None})
        # Revocations are worth an operator's attention; a report of nothing live is not.
        log.log(
            logging.WARNING if revoked else logging.INFO,
            "leak report: %d token(s), %d key(s) revoked as leaked%s",
            len(report),
            len(revoked),
            f": {', '.join(revoked)}" if revoked else "",
            extra={"request_id": origin.request_id},
        )
        return verdicts

    async def _decide(self, token: str, origin: Origin) -> tuple[Label, str | None]:
        # The checksum rejects look-alikes (test strings, other vendors'
        # tokens, typos) without a storage round trip.
        if not tokens.is_well_formed(token, self._prefix):
            return Label.FALSE_POSITIVE, None
        digest = tokens.digest(token)
        async with self._storage.reader() as uow:
            found = await uow.keys.find_by_digest(digest)
        if found is None:
            return Label.FALSE_POSITIVE, None
        key, stored = found
        # Like the verifier: the index found the row; compare in constant time anyway.
        if not hmac.compare_digest(stored, digest) or key.is_inactive(self._keys.now()):
            return Label.FALSE_POSITIVE, None
        async with self._storage.transaction() as uow:
            await self._keys.revoke(uow, key.account_id, key.id, origin, reason=LEAKED)
        return Label.TRUE_POSITIVE, key.id
