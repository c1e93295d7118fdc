"""``keystile.server.output.CoalescedOutput``: a response's writes of one
event-loop turn leave in one send, in order, and nothing waits past its turn.

The front end's behaviour over real sockets (pipelining, 100-continue,
errors written by the front end, streamed gateway responses) is covered by
tests/e2e/test_front_end.py and tests/e2e/test_gateway.py."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from keystile.server.output import CoalescedOutput

pytestmark = pytest.mark.anyio


class RecordingTransport:
    """The part of an asyncio transport the output uses, recording each send."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False
        self.eof = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        assert not self.eof, "written after write_eof"  # asyncio raises RuntimeError
        self.sent.append(data)

    def write_eof(self) -> None:
        self.eof = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def output() -> tuple[CoalescedOutput, RecordingTransport]:
    transport = RecordingTransport()
    coalesced = CoalescedOutput(cast(asyncio.Transport, transport), asyncio.get_running_loop())
    return coalesced, transport


async def next_turn() -> None:
    await asyncio.sleep(0)


async def test_a_head_and_a_body_written_in_one_turn_are_one_send() -> None:
    out, transport = output()
    out.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    out.write(b"ok")
    assert transport.sent == []
    out.flush()
    assert transport.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    await next_turn()
    assert len(transport.sent) == 1  # the end of the turn finds nothing left


async def test_what_is_not_flushed_leaves_at_the_end_of_its_turn() -> None:
    out, transport = output()
    out.write(b"head")
    await next_turn()
    assert transport.sent == [b"head"]
    out.write(b"chunk 1")
    out.write(b"chunk 2")
    await next_turn()
    assert transport.sent == [b"head", b"chunk 1chunk 2"]


async def test_close_sends_what_is_queued_first() -> None:
    out, transport = output()
    out.write(b"last words")
    out.close()
    assert transport.sent == [b"last words"]
    assert transport.closed
    await next_turn()
    assert transport.sent == [b"last words"]


async def test_write_eof_sends_what_is_queued_first() -> None:
    out, transport = output()
    out.writelines([b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 400 "])
    out.write_eof()
    assert transport.sent == [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 "]
    assert transport.eof
    await next_turn()  # the queued flush finds nothing, and writes nothing after the EOF
    assert len(transport.sent) == 1


async def test_abort_drops_what_is_queued() -> None:
    out, transport = output()
    out.write(b"never sent")
    out.abort()
    assert transport.aborted
    await next_turn()
    assert transport.sent == []


async def test_a_closing_transport_drops_what_is_queued_as_a_write_would() -> None:
    out, transport = output()
    out.write(b"too late")
    transport.close()
    await next_turn()
    assert transport.sent == []
    assert out.is_closing()


async def test_other_attributes_are_the_transports() -> None:
    out, _ = output()
    assert out.get_extra_info("peername") == "info:peername"
