"""A response's writes, sent to the socket as one.

uvicorn writes a response in two calls, the head when the app sends
``http.response.start`` and the body when it sends ``http.response.body``,
and each call is a ``send()`` system call at once (uvloop writes
immediately when nothing is queued). On loopback a send costs the kernel's
whole TCP path, both ends of it, in the sending thread: profiled on
``POST /v1/keys/verify`` the two sends were 30 % of the worker's CPU.

:class:`CoalescedOutput` stands in for the transport of a request's cycle
and collects what is written within one turn of the event loop: the
protocol sends it with one call when the response completes, and a
streamed response's pieces go out in the loop's next round of callbacks
(``call_soon``), before it waits for anything. No response waits on a
timer or on input, only the number of system calls changes. The loop may
run the socket's own input callbacks first (uvloop does), so everything
the protocol writes itself, and every closing call (``close``,
``write_eof``, ``abort``), sends what is collected first; a transport
already closing drops it, as it would have dropped the write itself.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescedOutput:
    """The write side of a transport, batched per loop turn.

    ``write(data)`` appends ``data`` (bytes); the batch is sent by
    :meth:`flush`: called by the protocol when a response completes and
    before it writes on its own, by :meth:`close`, :meth:`write_eof` and
    :meth:`abort`, and by the event loop in the round of callbacks after
    the batch's first write. Every other attribute is the transport's own.
    """

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        """Queue ``data`` for this turn's send."""
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        """Send what is queued, in one call (nothing, if already sent)."""
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def writelines(self, list_of_data: list[bytes]) -> None:
        """Queue each of ``list_of_data`` for this turn's send."""
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        """Send what is queued, then close the transport."""
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        """Send what is queued, then close the write side."""
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        """Drop what is queued and reset the connection, as the transport's
        own ``abort`` drops its buffer."""
        self._pending.clear()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
