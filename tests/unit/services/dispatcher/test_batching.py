"""services.dispatcher.batching.MicroBatcher: batches form while one is handled, results go to their callers."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from services.dispatcher.batching import MicroBatcher


class Recorder:
    """A batch handler that records its batches and holds each until released."""

    def __init__(self, *, hold: bool = False, fail_on: object = None) -> None:
        self.batches: list[list[int]] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.fail_on = fail_on

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.started.set()
        await self.release.wait()
        if self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [i * 10 for i in items]


async def test_a_lone_caller_is_served_at_once() -> None:
    handler = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(handler)
    assert await asyncio.wait_for(batcher(7), 5) == 70
    assert handler.batches == [[7]]


async def test_items_arriving_during_a_batch_make_the_next_batch_of_at_most_max_batch() -> None:
    handler = Recorder(hold=True)
    batcher: MicroBatcher[int, int] = MicroBatcher(handler, max_batch=3)
    first = asyncio.ensure_future(batcher(0))
    await asyncio.wait_for(handler.started.wait(), 5)  # batch [0] is being handled
    rest = [asyncio.ensure_future(batcher(i)) for i in range(1, 6)]
    await asyncio.sleep(0)  # the callers have queued their items
    handler.release.set()
    assert await asyncio.wait_for(asyncio.gather(first, *rest), 5) == [0, 10, 20, 30, 40, 50]
    assert handler.batches == [[0], [1, 2, 3], [4, 5]]


async def test_a_failed_batch_fails_its_callers_only() -> None:
    handler = Recorder(hold=True, fail_on=2)
    batcher: MicroBatcher[int, int] = MicroBatcher(handler)
    first = asyncio.ensure_future(batcher(1))
    await asyncio.wait_for(handler.started.wait(), 5)
    second, third = asyncio.ensure_future(batcher(2)), asyncio.ensure_future(batcher(3))
    await asyncio.sleep(0)
    handler.release.set()
    assert await asyncio.wait_for(first, 5) == 10
    for caller in (second, third):  # same batch [2, 3]
        with pytest.raises(ValueError, match="bad item 2"):
            await asyncio.wait_for(caller, 5)
    assert await asyncio.wait_for(batcher(4), 5) == 40  # the batcher still serves later callers


async def test_a_wrong_number_of_results_fails_the_batch_instead_of_hanging() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    batcher: MicroBatcher[int, int] = MicroBatcher(short)
    for item in (1, 2):  # the runner survives: the next caller is answered too
        with pytest.raises(RuntimeError, match="0 results for 1 items"):
            await asyncio.wait_for(batcher(item), 5)


async def test_a_canceled_caller_does_not_abort_the_batch_of_others() -> None:
    handler = Recorder(hold=True)
    batcher: MicroBatcher[int, int] = MicroBatcher(handler)
    first = asyncio.ensure_future(batcher(0))
    await asyncio.wait_for(handler.started.wait(), 5)
    leaving, staying = asyncio.ensure_future(batcher(1)), asyncio.ensure_future(batcher(2))
    await asyncio.sleep(0)
    leaving.cancel()
    handler.release.set()
    assert await asyncio.wait_for(asyncio.gather(first, staying), 5) == [0, 20]
    assert leaving.cancelled() and handler.batches == [[0], [1, 2]]


async def test_the_handler_runs_outside_the_callers_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="none")
    seen: list[str] = []

    async def handle(items: list[int]) -> list[int]:
        seen.append(var.get())
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(handle)
    var.set("caller")
    assert await asyncio.wait_for(batcher(1), 5) == 1
    assert seen == ["none"]
