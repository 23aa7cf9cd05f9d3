"""RabbitMQ through aio-pika: robust connection and the queue/exchange topology every service shares.

Topology (names carry BROKER_PREFIX, so test runs and deployments can share one broker):
- `<p>.jobs` direct exchange → `<p>.jobs.submit` durable quorum queue (job messages for the dispatcher),
  dead-lettered to `<p>.dlx` → `<p>.jobs.dead` after `delivery_limit` redeliveries or a reject;
- `<p>.events` topic exchange for status events (routing keys `task.<task_id>.job.<job_id>`), consumed by each
  gateway process through an exclusive auto-delete queue `<p>.gateway.<uuid hex>` bound to `task.#`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, AbstractRobustConnection
from aiormq.exceptions import ChannelAccessRefused

# The routing key of job messages (the job queue's binding on the jobs exchange).
JOBS_ROUTING_KEY = "submit"


@dataclass(frozen=True)
class Topology:
    """Names of the exchanges and queues, derived from a prefix."""

    prefix: str = "upscaling"
    delivery_limit: int = 5

    @property
    def jobs_exchange(self) -> str:
        return f"{self.prefix}.jobs"

    @property
    def jobs_queue(self) -> str:
        return f"{self.prefix}.jobs.submit"

    @property
    def jobs_routing_key(self) -> str:
        return JOBS_ROUTING_KEY

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}.jobs.dead"

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}.events"

    @property
    def gateway_queue_prefix(self) -> str:
        """Start of the name of each gateway process's exclusive events queue (`<p>.gateway.<uuid hex>`)."""
        return f"{self.prefix}.gateway."


@dataclass
class DeclaredExchanges:
    """The declared exchanges a publisher needs (what a service declares that owns no queue)."""

    jobs_exchange: AbstractExchange
    events_exchange: AbstractExchange


@dataclass
class DeclaredTopology(DeclaredExchanges):
    """The declared exchanges and queues of one channel."""

    jobs_queue: AbstractQueue
    dead_letter_queue: AbstractQueue


def event_routing_key(task_id: int, job_id: int | None = None) -> str:
    """Routing key of a status event: `task.<id>` for task events, `task.<id>.job.<id>` for job events."""
    return f"task.{task_id}" if job_id is None else f"task.{task_id}.job.{job_id}"


def event_batch_routing_key(task_id: int) -> str:
    """Routing key of a message carrying several status events of a task: `task.<id>.batch`."""
    return f"task.{task_id}.batch"


# Seconds between reconnection attempts of a robust connection (aio-pika's default is 5).
RECONNECT_INTERVAL_S = 1.0


async def connect(url: str, name: str) -> AbstractRobustConnection:
    """A robust (auto-reconnecting) connection, named after the service in the broker's UI; it tries again every
    RECONNECT_INTERVAL_S while the broker is away."""
    return await aio_pika.connect_robust(url, client_properties={"connection_name": name},
                                         reconnect_interval=RECONNECT_INTERVAL_S)


async def open_channel(connection: AbstractRobustConnection, prefetch: int = 0) -> AbstractChannel:
    """A channel with publisher confirms on and an optional prefetch limit."""
    channel = await connection.channel(publisher_confirms=True)
    if prefetch:
        await channel.set_qos(prefetch_count=prefetch)
    return channel


async def consumer_queue(connection: AbstractRobustConnection, name: str, prefetch: int) -> AbstractQueue:
    """An existing queue to consume from, on a channel of its own with `prefetch`. Declared (passively) through the
    robust channel so that, after a broker restart, the channel declares it again and re-registers its consumers
    (a queue object made without a declaration is unknown to the channel: its consumer would silently be lost)."""
    channel = await open_channel(connection, prefetch=prefetch)
    return await channel.declare_queue(name, passive=True)


async def consuming(queue: AbstractQueue, consumer_tag: str | None) -> None:
    """Raise unless `consumer_tag` is registered right now on the broker channel `queue` is consumed on."""
    try:  # a reconnecting channel would make this wait until it is back: answer now instead
        channel = await asyncio.wait_for(queue.channel.get_underlay_channel(), 0.5)
    except TimeoutError as exc:
        raise ConnectionError(f"not consuming {queue.name} (channel reconnecting)") from exc
    if consumer_tag is None or not isinstance(channel, aiormq.Channel) or consumer_tag not in channel.consumers:
        raise ConnectionError(f"not consuming {queue.name} (consumer not registered)")


async def declare(channel: AbstractChannel, topology: Topology) -> DeclaredTopology:
    """Declare (idempotently) every exchange and queue, with dead-lettering on the job queue."""
    dlx = await channel.declare_exchange(topology.dead_letter_exchange, aio_pika.ExchangeType.FANOUT,
                                         durable=True)
    dead = await channel.declare_queue(topology.dead_letter_queue, durable=True,
                                       arguments={"x-queue-type": "quorum"})
    await dead.bind(dlx, routing_key="#")
    exchanges = await declare_exchanges(channel, topology)
    jobs_queue = await channel.declare_queue(
        topology.jobs_queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": topology.dead_letter_exchange,
            "x-delivery-limit": topology.delivery_limit,
        },
    )
    await jobs_queue.bind(exchanges.jobs_exchange, routing_key=topology.jobs_routing_key)
    return DeclaredTopology(jobs_exchange=exchanges.jobs_exchange, events_exchange=exchanges.events_exchange,
                            jobs_queue=jobs_queue, dead_letter_queue=dead)


async def declare_exchanges(channel: AbstractChannel, topology: Topology) -> DeclaredExchanges:
    """Declare (idempotently) the job and events exchanges only: for publishers that may not configure the queues
    (least privilege, upscaling/accounts.py); the queues are declared by the dispatcher and by provisioning."""
    jobs_exchange = await channel.declare_exchange(topology.jobs_exchange, aio_pika.ExchangeType.DIRECT,
                                                   durable=True)
    events = await channel.declare_exchange(topology.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    return DeclaredExchanges(jobs_exchange, events)


async def declare_permitted(connection: AbstractRobustConnection, topology: Topology) -> DeclaredExchanges:
    """The whole topology if this broker user may configure it (so nothing published is lost for want of a queue),
    else the exchanges (the monitor), else the exchanges looked up passively (the gateway); under least privilege
    (upscaling/accounts.py) provisioning and the dispatcher declare the rest."""
    for how in (declare, declare_exchanges):
        channel = await open_channel(connection)
        try:
            return await how(channel, topology)
        except ChannelAccessRefused:
            with contextlib.suppress(Exception):
                await channel.close()
    # may declare neither (the gateway): look them up; the broker refuses what this user may not publish
    channel = await open_channel(connection)
    return DeclaredExchanges(await channel.get_exchange(topology.jobs_exchange),
                             await channel.get_exchange(topology.events_exchange))


async def queue_counts(channel: AbstractChannel, name: str) -> tuple[int, int]:
    """(messages ready, consumers) of a queue right now. (A robust channel answers a passive declaration of a queue
    it declared before from its cache, with the counts of back then: `robust=False` asks the broker.)"""
    declared: AbstractQueue
    if isinstance(channel, aio_pika.RobustChannel):
        declared = await channel.declare_queue(name, passive=True, robust=False)
    else:
        declared = await channel.declare_queue(name, passive=True)
    ok = declared.declaration_result
    return ok.message_count or 0, ok.consumer_count or 0


async def delete(channel: AbstractChannel, topology: Topology) -> None:
    """Remove every exchange and queue of a topology (used by tests to clean up their own names)."""
    for queue in (topology.jobs_queue, topology.dead_letter_queue):
        await channel.queue_delete(queue)
    for exchange in (topology.jobs_exchange, topology.dead_letter_exchange, topology.events_exchange):
        await channel.exchange_delete(exchange)
