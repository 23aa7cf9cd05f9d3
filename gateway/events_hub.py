"""Status events fanned out in memory: ONE exclusive auto-delete queue per gateway process (per worker, with
GATEWAY_WORKERS > 1), bound to `task.#` on the events exchange, feeding one `TaskFeed` per watched task.

Each event is parsed once per process and its broker bytes are what every gRPC watcher is sent; snapshots are
built once per task version by the feed (see `gateway.task_feed`). A feed exists while its task has watchers
(and `LINGER_S` after the last one left, so reconnecting watchers find it warm); then its memory is returned.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from gateway import workers, ws_deflate
from gateway.task_feed import TaskFeed
from upscaling import broker, event_wire, metrics
from upscaling.v1 import upscaling_pb2

log = logging.getLogger(__name__)

LINGER_S = 10.0
Loader = Callable[[int], Awaitable[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]]]


def event_task_id(event: upscaling_pb2.WatchTaskResponse) -> int:
    """The task id an event belongs to."""
    kind = event.WhichOneof("update")
    if kind == "job_event":
        return event.job_event.task_id
    if kind == "task_event":
        return event.task_event.task_id
    return event.snapshot.id


async def _no_loader(task_id: int) -> tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]:
    raise RuntimeError("the events hub has no task loader")


class EventsHub:
    """The process's events subscription and its task feeds."""

    def __init__(self, amqp: AbstractRobustConnection | None, topology: broker.Topology | None,
                 pool: asyncpg.Pool | None = None, load: Loader = _no_loader, linger_s: float = LINGER_S) -> None:
        self.amqp = amqp
        self.topology = topology
        self.pool = pool
        self.load = load
        self.linger_s = linger_s
        self._feeds: dict[int, TaskFeed] = {}
        self._expiry: dict[int, asyncio.TimerHandle] = {}
        self._any = asyncio.Event()  # set on every event of any task (the /ws/jobs_status wake-up)
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._releasing = False
        self._all_watchers = 0  # watch_all's (/ws/jobs_status sockets)
        self.received = 0

    async def start(self) -> None:
        assert self.amqp is not None and self.topology is not None
        self._channel = await self.amqp.channel()
        exchange = await self._channel.declare_exchange(self.topology.events_exchange, aio_pika.ExchangeType.TOPIC,
                                                        durable=True)
        # named under the broker prefix (Topology.gateway_queue_prefix): the gateway's broker user may configure
        # no other queue (upscaling/accounts.py)
        queue = await self._channel.declare_queue(f"{self.topology.gateway_queue_prefix}{uuid.uuid4().hex}",
                                                  exclusive=True, auto_delete=True,
                                                  arguments={"x-max-length": 100_000})
        await queue.bind(exchange, routing_key="task.#")
        await queue.consume(self._on_message, no_ack=True)
        self.amqp.reconnect_callbacks.add(self._on_reconnect)

    async def stop(self) -> None:
        if self.amqp is not None:
            self.amqp.reconnect_callbacks.discard(self._on_reconnect)
        for handle in self._expiry.values():
            handle.cancel()
        for feed in self._feeds.values():
            feed.close()
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    def _on_reconnect(self, *_: object) -> None:
        # events published while disconnected were lost for this queue: read them from the database
        for feed in self._feeds.values():
            feed.fill()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            events = event_wire.decode_raw(message.body, message.type)
        except Exception:
            log.warning("unparseable status event dropped", extra={"routing_key": message.routing_key})
            return
        key = message.routing_key or ""
        matching = [(body, e) for body, e in events if (task_id := event_task_id(e)) > 0
                    and (key == f"task.{task_id}" or key.startswith(f"task.{task_id}."))]
        if len(matching) < len(events):
            # garbage that happens to parse: an event's task id must be the one its routing key names
            log.warning("status event not matching its routing key dropped",
                        extra={"routing_key": key, "dropped": len(events) - len(matching)})
        self.received += len(matching)
        metrics.EVENTS_RECEIVED.inc(len(matching))
        self.dispatch(matching)

    def dispatch(self, events: Sequence[tuple[bytes, upscaling_pb2.WatchTaskResponse]]) -> int:
        """Hand events (serialized bytes and parsed event) to their tasks' feeds; returns the watchers reached."""
        touched: dict[int, TaskFeed] = {}
        for body, event in events:
            feed = self._feeds.get(event_task_id(event))
            if feed is not None:
                feed.push(body, event)
                touched[feed.task_id] = feed
        handed = 0
        for feed in touched.values():
            before = feed.last
            feed.flush()
            handed += max(0, feed.last - before) * feed.watchers
        if events:
            tick, self._any = self._any, asyncio.Event()
            tick.set()
        if handed:
            metrics.EVENTS_FANNED_OUT.inc(handed)
        return handed

    def feed_of(self, task_id: int) -> TaskFeed | None:
        """The feed of a task while it has watchers (or lingers)."""
        return self._feeds.get(task_id)

    @asynccontextmanager
    async def watch(self, task_id: int, kind: str = "grpc") -> AsyncIterator[TaskFeed]:
        """The loaded feed of a task for one watcher (`kind`: grpc, websocket, labels the watchers gauge)."""
        feed = self._feeds.get(task_id)
        if feed is None:
            feed = self._feeds[task_id] = TaskFeed(task_id, self.load, self.pool)
        handle = self._expiry.pop(task_id, None)
        if handle is not None:
            handle.cancel()
        feed.watchers += 1
        watchers = metrics.WATCHERS.labels(kind)
        watchers.inc()
        try:
            await feed.ready()
            yield feed
        finally:
            watchers.dec()
            feed.watchers -= 1
            if feed.watchers == 0 and self._feeds.get(task_id) is feed:
                if self.linger_s > 0 and feed.state is not None:
                    self._expiry[task_id] = asyncio.get_running_loop().call_later(self.linger_s, self._expire,
                                                                                  task_id, feed)
                else:
                    self._expire(task_id, feed)

    def _expire(self, task_id: int, feed: TaskFeed) -> None:
        self._expiry.pop(task_id, None)
        if feed.watchers == 0 and self._feeds.get(task_id) is feed:
            del self._feeds[task_id]
            feed.close()
            if self.linger_s > 0 and not self._releasing:
                # the watchers of a task are gone: return their memory (once for the feeds expiring together)
                self._releasing = True
                asyncio.get_running_loop().call_later(1.0, self._release)

    def _release(self) -> None:
        self._releasing = False
        ws_deflate.forget()
        workers.release_memory()
        workers.check_memory(self.connected())  # (may ask the supervisor for a fresh worker)

    @asynccontextmanager
    async def watch_all(self, kind: str = "websocket") -> AsyncIterator[Callable[[float], Awaitable[None]]]:
        """A watcher of every task's events (wakes /ws/jobs_status): yields `wait(timeout_s)`, which returns at
        the next event of any task or after the timeout."""
        watchers = metrics.WATCHERS.labels(kind)
        watchers.inc()
        self._all_watchers += 1

        async def wait(timeout_s: float) -> None:
            tick = self._any
            try:
                await asyncio.wait_for(tick.wait(), timeout_s)
            except TimeoutError:
                pass

        try:
            yield wait
        finally:
            watchers.dec()
            self._all_watchers -= 1
            workers.retire_if_idle(self.connected())

    def watcher_count(self) -> int:
        return sum(f.watchers for f in self._feeds.values())

    def connected(self) -> int:
        """Every watcher of this process: of a task, and of every task (/ws/jobs_status)."""
        return self.watcher_count() + self._all_watchers

    def feed_count(self) -> int:
        return len(self._feeds)
