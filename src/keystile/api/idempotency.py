"""The idempotency layer: every POST to a keystile endpoint passes through it
(after authentication, the rate limit and authorization; see the pipeline).

With an ``Idempotency-Key`` header it runs the handler inside one write
transaction, stores the encrypted response in that same transaction and
commits before anything reaches the client. So the work and its record are
committed together or not at all, whatever crashes when: a retry either
replays the committed response or runs on a clean slate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keystile.api.body import read_body, read_json
from keystile.errors import FieldProblem, IdempotencyKeyInUse, ValidationFailed
from keystile.faults import Faults
from keystile.http.context import RequestContext
from keystile.idempotency.service import (
    HEADER,
    IdempotencyService,
    Identity,
    Replay,
    canonical_json,
    check_key,
    fingerprint,
    is_recorded,
)

_HEADER = HEADER.lower().encode()


class _Discard(Exception):
    """Roll the transaction back: the response is not one that is recorded."""


class _LostRace(Exception):
    """Another transaction recorded this identity first."""


@dataclass
class _Captured:
    messages: list[Message] = field(default_factory=list)
    status: int = 500
    body: bytes = b""

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")
        self.messages.append(message)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body to the handler again."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_replay(send: Send, replay: Replay) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": replay.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(replay.body)).encode()),
                (b"idempotent-replayed", b"true"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": replay.body})


class IdempotencyLayer:
    def __init__(self, service: IdempotencyService, faults: Faults) -> None:
        self._service = service
        self._faults = faults

    async def __call__(
        self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        values = [value for name, value in scope["headers"] if name == _HEADER]
        if not values:
            await app(scope, receive, send)
            return
        if len(values) > 1:
            raise ValidationFailed(
                "The Idempotency-Key header is invalid.",
                [FieldProblem(HEADER, "must be given once")],
            )
        caller = ctx.caller
        assert caller is not None, "the idempotency layer runs after authentication"
        caller_key = caller.operator or caller.key
        assert caller_key is not None
        # Scoped to the calling key and the account it acts for ("" for an
        # operator key acting for none, on the operator's own endpoints).
        identity = Identity(caller.account_id or "", caller_key.id, check_key(values[0]))
        body = await read_body(scope, receive)
        # The endpoint's own parser decides what the body is: a body it would
        # refuse is refused here the same way, before any record is looked
        # up, so it can never replay a stored response.
        canonical = canonical_json(await read_json(scope, receive)) if body else b""
        request_print = fingerprint(
            scope["method"], scope["path"], scope.get("query_string", b""), canonical
        )

        async with self._service.storage.reader() as uow:
            record = await uow.idempotency.get(
                identity.account_id, identity.caller_key_id, identity.stored_key
            )
        if record is not None and self._service.is_live(record):
            await _send_replay(send, self._service.replay(identity, record, request_print))
            return

        if not await self._service.in_flight.acquire(identity.lock_name):
            raise IdempotencyKeyInUse()
        try:
            outcome = await self._run_once(
                app, scope, _replaying(body, receive), ctx, identity, request_print
            )
        finally:
            await self._service.in_flight.release(identity.lock_name)
        if isinstance(outcome, Replay):
            await _send_replay(send, outcome)
            return
        for message in outcome.messages:
            await send(message)

    async def _run_once(
        self,
        app: ASGIApp,
        scope: Scope,
        receive: Receive,
        ctx: RequestContext,
        identity: Identity,
        request_print: str,
    ) -> _Captured | Replay:
        service = self._service
        captured = _Captured()
        try:
            async with service.storage.transaction() as uow:
                # Checked again under the write lock: another process may have
                # committed since the optimistic read above.
                record = await uow.idempotency.get(
                    identity.account_id, identity.caller_key_id, identity.stored_key
                )
                if record is not None:
                    if service.is_live(record):
                        return service.replay(identity, record, request_print)
                    # Past its 24 hours but not purged yet: gone, run fresh.
                    await uow.idempotency.delete(
                        identity.account_id, identity.caller_key_id, identity.stored_key
                    )
                self._faults.hit("idempotency.before_handler")
                ctx.transaction = uow
                try:
                    await app(scope, receive, captured.send)
                finally:
                    ctx.transaction = None
                if not is_recorded(captured.status):
                    raise _Discard()
                self._faults.hit("idempotency.after_handler")
                sealed = service.seal(identity, request_print, captured.status, captured.body)
                if not await uow.idempotency.insert(sealed):
                    raise _LostRace()
                self._faults.hit("idempotency.after_record")
        except _Discard:
            return captured
        except _LostRace:
            async with service.storage.reader() as uow:
                record = await uow.idempotency.get(
                    identity.account_id, identity.caller_key_id, identity.stored_key
                )
            if record is None:  # recorded and purged in between: vanishingly unlikely
                raise IdempotencyKeyInUse() from None
            return service.replay(identity, record, request_print)
        self._faults.hit("idempotency.after_commit")
        return captured
