"""Status events fanned out in memory: ONE exclusive auto-delete queue per gateway process, bound to `task.#`
on the events exchange, feeding every watcher (gRPC WatchTask, WebSockets) of a task.

Each watcher has a bounded buffer; a watcher that falls behind is not waited for: its buffer is dropped and
it is told to resync from the database instead.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from upscaling import broker, event_wire, metrics
from upscaling.v1 import upscaling_pb2

log = logging.getLogger(__name__)

RESYNC = object()  # returned by Subscription.get when events were dropped


def event_task_id(event: upscaling_pb2.WatchTaskResponse) -> int:
    """The task id an event belongs to."""
    kind = event.WhichOneof("update")
    if kind == "job_event":
        return event.job_event.task_id
    if kind == "task_event":
        return event.task_event.task_id
    return event.snapshot.id


class Subscription:
    """One watcher's bounded buffer of events."""

    def __init__(self, task_id: int | None, maxsize: int) -> None:
        self.task_id = task_id
        self.maxsize = maxsize
        self._items: collections.deque[upscaling_pb2.WatchTaskResponse] = collections.deque()
        self._ready = asyncio.Event()
        self._overflow = False

    def push(self, event: upscaling_pb2.WatchTaskResponse) -> None:
        if self._overflow:
            return
        if len(self._items) >= self.maxsize:
            self._items.clear()
            self._overflow = True
        else:
            self._items.append(event)
        self._ready.set()

    def resync(self) -> None:
        """Tell the watcher it may have missed events (e.g. after a broker reconnect)."""
        self._items.clear()
        self._overflow = True
        self._ready.set()

    def drain(self) -> None:
        """Forget buffered events (the watcher re-reads the state anyway)."""
        self._items.clear()
        self._overflow = False

    def pending(self) -> bool:
        return bool(self._items) or self._overflow

    async def get(self, wait_s: float | None = None) -> upscaling_pb2.WatchTaskResponse | object | None:
        """The next event, RESYNC after an overflow, or None when `wait_s` passed first."""
        if not self.pending():
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), wait_s)
            except TimeoutError:
                return None
        if self._overflow:
            self._overflow = False
            return RESYNC
        return self._items.popleft()


class EventsHub:
    """The gateway's single events subscription and its in-memory fan-out."""

    def __init__(self, amqp: AbstractRobustConnection, topology: broker.Topology, buffer: int = 1000) -> None:
        self.amqp = amqp
        self.topology = topology
        self.buffer = buffer
        self._subs: dict[int | None, set[Subscription]] = collections.defaultdict(set)
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self.received = 0

    async def start(self) -> None:
        self._channel = await self.amqp.channel()
        exchange = await self._channel.declare_exchange(self.topology.events_exchange, aio_pika.ExchangeType.TOPIC,
                                                        durable=True)
        queue = await self._channel.declare_queue(exclusive=True, auto_delete=True,
                                                  arguments={"x-max-length": 100_000})
        await queue.bind(exchange, routing_key="task.#")
        await queue.consume(self._on_message, no_ack=True)
        self.amqp.reconnect_callbacks.add(self._on_reconnect)

    async def stop(self) -> None:
        self.amqp.reconnect_callbacks.discard(self._on_reconnect)
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    def _on_reconnect(self, *_: object) -> None:
        for subs in self._subs.values():
            for sub in subs:
                sub.resync()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            events = event_wire.decode(message.body, message.type)
        except Exception:
            log.warning("unparseable status event dropped", extra={"routing_key": message.routing_key})
            return
        key = message.routing_key or ""
        matching = [e for e in events if (task_id := event_task_id(e)) > 0
                    and (key == f"task.{task_id}" or key.startswith(f"task.{task_id}."))]
        if len(matching) < len(events):
            # garbage that happens to parse: an event's task id must be the one its routing key names
            log.warning("status event not matching its routing key dropped",
                        extra={"routing_key": key, "dropped": len(events) - len(matching)})
            events = matching
        self.received += len(events)
        metrics.EVENTS_RECEIVED.inc(len(events))
        handed = 0
        for event in events:
            handed += self.dispatch(event)
        if handed:
            metrics.EVENTS_FANNED_OUT.inc(handed)

    def dispatch(self, event: upscaling_pb2.WatchTaskResponse) -> int:
        """Hand an event to every watcher of its task (and every watcher of all tasks); returns how many."""
        task_id = event_task_id(event)
        handed = 0
        for key in (task_id, None):
            subs = self._subs.get(key)
            if subs:
                for sub in tuple(subs):
                    sub.push(event)
                handed += len(subs)
        return handed

    @contextmanager
    def subscribe(self, task_id: int | None, kind: str = "grpc") -> Iterator[Subscription]:
        """A subscription to one task's events (None: every task), removed on exit; `kind` (grpc, websocket)
        labels the watchers gauge."""
        sub = Subscription(task_id, self.buffer)
        self._subs[task_id].add(sub)
        watchers = metrics.WATCHERS.labels(kind)
        watchers.inc()
        try:
            yield sub
        finally:
            watchers.dec()
            subs = self._subs.get(task_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[task_id]

    def watcher_count(self) -> int:
        return sum(len(s) for s in self._subs.values())
