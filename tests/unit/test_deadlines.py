"""``keystile.http.deadlines``: one timer per event loop in place of
``asyncio.timeout`` per request body. Every wait here is bounded by the test's
own ``asyncio.timeout`` far above the deadlines, so a busy machine is slower,
never red."""

from __future__ import annotations

import asyncio

import pytest

from keystile.http.deadlines import within

pytestmark = pytest.mark.anyio
BOUND = 30.0


async def overrun(seconds: float) -> None:
    with within(seconds):
        await asyncio.Event().wait()  # never set


async def outcome_of(seconds: float) -> BaseException | None:
    """What ``overrun(seconds)`` ends with, in a task of its own; a test
    failure (not a TimeoutError of its own) if it is still running after
    :data:`BOUND`."""
    task = asyncio.create_task(overrun(seconds))
    done, _ = await asyncio.wait({task}, timeout=BOUND)
    if not done:
        task.cancel()
        pytest.fail("the deadline never fired")
    try:
        await task
    except BaseException as error:  # the outcome is the point
        return error
    return None


async def test_a_block_past_its_deadline_raises_timeout_error() -> None:
    assert isinstance(await outcome_of(0.05), TimeoutError)


async def test_a_block_in_time_leaves_no_cancellation_behind() -> None:
    async with asyncio.timeout(BOUND):
        with within(0.2):
            await asyncio.sleep(0)
        await asyncio.sleep(0.5)  # past the deadline: a leftover cancel would land here
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0


async def test_another_cancellation_is_not_turned_into_a_timeout() -> None:
    async with asyncio.timeout(BOUND):
        task = asyncio.create_task(overrun(BOUND))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_cancellation_at_the_deadline_itself_stays_a_cancellation() -> None:
    """Cancelled by its deadline and by someone else in the same tick: the
    other cancellation wins (asyncio.timeout's rule)."""
    started = asyncio.Event()

    async def body() -> None:
        with within(0.05):
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                asyncio.current_task().cancel()  # type: ignore[union-attr]
                raise

    async with asyncio.timeout(BOUND):
        task = asyncio.create_task(body())
        await started.wait()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("count", [1, 7, 64])
async def test_only_the_overrunning_tasks_time_out(count: int) -> None:
    """Of ``count`` concurrent blocks, the odd ones wait forever, the even
    ones end within their deadline; each gets its own outcome (a deadline
    that never fired would fail on the test's bound, not as "timeout")."""

    async def one(i: int) -> str:
        try:
            with within(0.3):
                if i % 2:
                    await asyncio.Event().wait()
                await asyncio.sleep(0.01)
        except TimeoutError:
            return "timeout"
        return "done"

    try:
        async with asyncio.timeout(BOUND):
            outcomes = await asyncio.gather(*(one(i) for i in range(count)))
    except TimeoutError:
        pytest.fail("a deadline never fired")
    assert outcomes == ["timeout" if i % 2 else "done" for i in range(count)]


async def test_deadlines_work_again_after_a_quiet_spell() -> None:
    """The timer stops when nothing is pending and starts again on use."""
    assert isinstance(await outcome_of(0.05), TimeoutError)
    await asyncio.sleep(0.3)
    assert isinstance(await outcome_of(0.05), TimeoutError)
