"""The gRPC WatchTask stream of one task: serialized `WatchTaskResponse` messages handed to `send` (the call's
`context.write`, whose serializer passes bytes through; no generator per message between the feed and gRPC).

Full watch: a snapshot (or, with `after_sequence`, the events after it), then every event exactly once and in
order, from the task's feed (the same bytes for every watcher of the process); a watcher behind the feed's kept
events reads them from the database from its last sequence. Task-level watch: a snapshot without jobs, then a
`TaskStatusEvent` (status and counts, numbered with the latest sequence it covers) whenever they changed; a
watcher that falls behind gets the latest one. Both end after the task's terminal state was sent.

Batched (`WatchTaskBatches`): the same messages, as `WatchTaskBatchesResponse`s of several events: everything a
stream has not yet received, in one message (at most `BATCH_BYTES`), built once per position and version of the
feed and shared by the streams at that position — events applied together go to every stream as one message,
and a stream that fell behind catches up with one (behind the kept events: from `STORED_READ` events read from
the database at a time).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gateway.auth import Principal
from gateway.events_hub import EventsHub
from gateway.task_feed import Entry, TaskFeed, is_terminal_event
from gateway.tasks import TaskService
from upscaling.errors import InvalidArgument

__all__ = ["is_terminal_event", "watch_task"]


Send = Callable[[bytes], Awaitable[None]]
STORED_READ = 250  # events a batched stream behind the kept ones reads from the database at a time


async def watch_task(tasks: TaskService, hub: EventsHub, task_id: int, caller: Principal, send: Send,
                     after_sequence: int = 0, task_level: bool = False, batched: bool = False) -> None:
    """Stream one of the caller's tasks to `send` until its terminal state was sent (NotFound for another user's
    task, raised before anything is sent); `batched`: as `WatchTaskBatchesResponse`s."""
    if after_sequence < 0:
        raise InvalidArgument("after_sequence must not be negative")
    await tasks.task_exists(task_id, caller)
    async with hub.watch(task_id, "grpc") as feed:
        if task_level:
            await _task_level(feed, send, after_sequence, batched)
        elif batched:
            await _full_batches(feed, send, after_sequence)
        else:
            await _full(feed, send, after_sequence)


async def _full(feed: TaskFeed, send: Send, after_sequence: int) -> None:
    if after_sequence == 0:
        last, terminal = feed.last, feed.terminal  # (the feed may move on while the snapshot is sent)
        await send(feed.snapshot_bytes())
        if terminal:
            return
    else:
        last = after_sequence
    while not feed.closed:
        entries = feed.entries_after(last)
        if entries is None:
            entries = await feed.stored_after(last)
        for entry in entries:
            if entry.terminal and entry.sequence >= feed.last:
                await feed.after_sockets()
            await send(entry.body)
            last = entry.sequence
            if entry.terminal and last >= feed.last:
                await feed.before_end()
                return
        if not entries:
            if feed.terminal and last >= feed.last:
                return
            await feed.wait(last)


async def _full_batches(feed: TaskFeed, send: Send, after_sequence: int) -> None:
    if after_sequence == 0:
        last, terminal = feed.last, feed.terminal
        await send(feed.framed(feed.snapshot_bytes, "snapshot"))
        if terminal:
            return
    else:
        last = after_sequence
    stored: list[Entry] = []  # read from the database (behind the kept events), not yet sent
    while not feed.closed:
        kept = None if stored else feed.entries_after(last)
        if kept is None and not stored:
            stored = await feed.stored_after(last, STORED_READ)
        entries = kept if kept is not None else stored
        if entries:
            body, end = feed.batch_after(last, entries, kept is not None)
            if end.terminal and end.sequence >= feed.last:
                await feed.after_sockets()
            await send(body)
            if kept is None:
                del stored[:end.sequence - stored[0].sequence + 1]  # (stored sequences are consecutive)
            last = end.sequence
            if end.terminal and last >= feed.last:
                await feed.before_end()
                return
        elif feed.terminal and last >= feed.last:
            return
        else:
            await feed.wait(last)


async def _task_level(feed: TaskFeed, send: Send, after_sequence: int, batched: bool = False) -> None:
    def snapshot() -> bytes:
        return feed.framed(feed.task_snapshot_bytes, "task_snapshot") if batched else feed.task_snapshot_bytes()

    def summary() -> bytes:
        return feed.framed(feed.summary_bytes, "summary") if batched else feed.summary_bytes()

    sent: tuple[object, ...] | None = None
    if after_sequence == 0:
        last, terminal, sent = feed.last, feed.terminal, feed.summary_key()
        await send(snapshot())
        if terminal:
            return
    else:
        last = after_sequence
    while not feed.closed:
        if feed.last > last:
            last, terminal, key = feed.last, feed.terminal, feed.summary_key()
            if key != sent:
                sent = key
                if terminal:
                    await feed.after_sockets()
                await send(summary())
            if terminal:
                await feed.before_end()
                return
        elif feed.terminal:
            return
        else:
            await feed.wait(last)
