"""The queue topology on the real RabbitMQ: confirms, manual acks, quorum delivery limit, dead-lettering."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from tests.conftest import Infra
from tests.infra import unique_name
from upscaling import broker, event_wire
from upscaling import jobs as jobstore
from upscaling.v1 import jobs_pb2, upscaling_pb2


@pytest.fixture
async def topology(infra: Infra):
    """A declared topology with names of its own, deleted afterwards."""
    topo = broker.Topology(prefix=unique_name("brokertest"), delivery_limit=2)
    connection = await broker.connect(infra.rabbitmq_url, "tests")
    channel = await broker.open_channel(connection, prefetch=10)
    declared = await broker.declare(channel, topo)
    try:
        yield topo, channel, declared
    finally:
        await broker.delete(channel, topo)
        await connection.close()


async def _assert_next_is_sentinel(queue: aio_pika.abc.AbstractQueue, exchange: aio_pika.abc.AbstractExchange,
                                   routing_key: str) -> None:
    """Publish a sentinel after everything else (same channel: the queue keeps the order) and assert it is the
    next message: no stray message came before it, whatever the machine's speed."""
    await exchange.publish(aio_pika.Message(b"sentinel"), routing_key=routing_key)
    message = await _get(queue)
    assert (message.routing_key, message.body) == (routing_key, b"sentinel")
    await message.ack()


async def _get(queue: aio_pika.abc.AbstractQueue, wait_s: float = 10) -> aio_pika.abc.AbstractIncomingMessage:
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        message = await queue.get(no_ack=False, fail=False)
        if message is not None:
            return message
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"no message on {queue.name}")
        await asyncio.sleep(0.05)


async def test_job_message_round_trip_with_confirm_and_ack(topology) -> None:
    topo, _channel, declared = topology
    sent = jobs_pb2.SubmitJobMessage(job_id=7, task_id=3, title="t - Processing Job 1", tag="job-7", attempt=1)
    confirmation = await declared.jobs_exchange.publish(
        aio_pika.Message(sent.SerializeToString(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                         content_type="application/x-protobuf"),
        routing_key=topo.jobs_routing_key,
    )
    assert confirmation is not None  # publisher confirm received
    message = await _get(declared.jobs_queue)
    got = jobs_pb2.SubmitJobMessage.FromString(message.body)
    assert got == sent
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    await message.ack()
    assert await declared.jobs_queue.get(fail=False) is None


async def test_rejected_message_is_dead_lettered(topology) -> None:
    topo, _channel, declared = topology
    await declared.jobs_exchange.publish(aio_pika.Message(b"not a protobuf"), routing_key=topo.jobs_routing_key)
    message = await _get(declared.jobs_queue)
    await message.reject(requeue=False)
    dead = await _get(declared.dead_letter_queue)
    assert dead.body == b"not a protobuf"
    assert dead.headers["x-death"][0]["reason"] == "rejected"
    await dead.ack()


async def test_poison_message_stops_looping_after_delivery_limit(topology) -> None:
    topo, _channel, declared = topology
    await declared.jobs_exchange.publish(aio_pika.Message(b"poison"), routing_key=topo.jobs_routing_key)
    deliveries = 0
    while True:
        message = await declared.jobs_queue.get(no_ack=False, fail=False)
        if message is None:
            break
        deliveries += 1
        await message.nack(requeue=True)
        await asyncio.sleep(0.05)
        assert deliveries <= topo.delivery_limit + 2, "quorum delivery limit not enforced"
    assert deliveries == topo.delivery_limit + 1
    dead = await _get(declared.dead_letter_queue)
    assert dead.body == b"poison"
    await dead.ack()


async def test_status_events_route_by_task_and_job(topology) -> None:
    _topo, channel, declared = topology
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(declared.events_exchange, routing_key="task.42.#")
    event = jobs_pb2.JobStatusEvent(job_id=1, task_id=42, sequence=5)
    for task_id in (41, 42):
        await declared.events_exchange.publish(aio_pika.Message(event.SerializeToString()),
                                               routing_key=broker.event_routing_key(task_id, 1))
    message = await _get(queue)
    assert message.routing_key == "task.42.job.1"
    await message.ack()
    # Task 41's event was not routed here: a later event of task 42 is the very next message.
    await _assert_next_is_sentinel(queue, declared.events_exchange, "task.42.job.2")


async def test_events_of_a_task_recorded_together_travel_as_one_batch_message(topology) -> None:
    _topo, channel, declared = topology
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(declared.events_exchange, routing_key="task.#")

    def pending(task_id: int, job_id: int | None, sequence: int) -> jobstore.PendingEvent:
        job_event = jobs_pb2.JobStatusEvent(job_id=job_id or 0, task_id=task_id, sequence=sequence)
        response = upscaling_pb2.WatchTaskResponse(sequence=sequence, job_event=job_event)
        return jobstore.PendingEvent(broker.event_routing_key(task_id, job_id), response.SerializeToString(), sequence)

    events = [pending(7, 1, 1), pending(7, 2, 2), pending(7, None, 3), pending(8, 5, 1)]
    events += [pending(9, j, j) for j in range(1, event_wire.MAX_BATCH + 2)]  # one more than a batch holds
    await jobstore.publish_many(declared.events_exchange, events)

    received: list[tuple[str, str | None, list[tuple[int, int]]]] = []
    for _ in range(4):
        message = await _get(queue)
        decoded = event_wire.decode(message.body, message.type)
        received.append((message.routing_key, message.type,
                         [(e.job_event.task_id, e.sequence) for e in decoded]))
        await message.ack()
    assert received[0] == ("task.7.batch", event_wire.BATCH_TYPE, [(7, 1), (7, 2), (7, 3)])
    assert received[1] == ("task.8.job.5", event_wire.EVENT_TYPE, [(8, 1)])
    assert received[2][:2] == ("task.9.batch", event_wire.BATCH_TYPE)
    assert [s for _, s in received[2][2]] == list(range(1, event_wire.MAX_BATCH + 1))
    assert received[3] == ("task.9.job.501", event_wire.EVENT_TYPE, [(9, event_wire.MAX_BATCH + 1)])
    await _assert_next_is_sentinel(queue, declared.events_exchange, "task.10")  # nothing else was published


async def test_consuming_follows_the_consumer_registration(topology) -> None:
    """The readiness check of a consumer: it fails until the consumer is registered on the broker channel and
    again once it is gone (a consumer lost in a broker restart must not look healthy)."""
    _, _, declared = topology
    queue = declared.jobs_queue
    with pytest.raises(ConnectionError):
        await broker.consuming(queue, None)

    async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.nack(requeue=True)

    tag = await queue.consume(ignore)
    await broker.consuming(queue, tag)
    await queue.cancel(tag)
    with pytest.raises(ConnectionError, match="not consuming"):
        await broker.consuming(queue, tag)
