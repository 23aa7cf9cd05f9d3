"""Micro-batching: concurrent callers' items that arrive while a batch is being handled make the next batch.

Under load one database statement (or broker round trip) serves many callers; a lone caller is served at once,
so there is no added latency when idle.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

K = TypeVar("K")
R = TypeVar("R")


class MicroBatcher(Generic[K, R]):
    """Calls `handle(items)` -> one result per item, for batches of at most `max_batch` items."""

    def __init__(self, handle: Callable[[list[K]], Awaitable[Sequence[R]]], max_batch: int = 256) -> None:
        self.handle = handle
        self.max_batch = max_batch
        self._pending: list[tuple[K, asyncio.Future[R]]] = []
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    async def __call__(self, item: K) -> R:
        """The result of `item`, once its batch was handled (its exception if the batch failed)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)  # a canceled caller's failed item is not reported as unretrieved
        self._pending.append((item, future))
        self._wake.set()
        if self._runner is None or self._runner.done():
            # An empty context: the runner serves many callers, none of whose context variables apply.
            self._runner = asyncio.create_task(self._run(), context=contextvars.Context())
        return await asyncio.shield(future)  # a canceled caller does not abort the batch of others

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
                await self._handle([item for item, _ in batch], [future for _, future in batch])

    async def _handle(self, items: list[K], futures: list[asyncio.Future[R]]) -> None:
        try:
            results = await self.handle(items)
            if len(results) != len(items):
                raise RuntimeError(f"batch handler returned {len(results)} results for {len(items)} items")
        except Exception as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in zip(futures, results, strict=True):
            if not future.done():
                future.set_result(result)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
