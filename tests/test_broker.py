"""The queue topology on the real RabbitMQ: confirms, manual acks, quorum delivery limit, dead-lettering."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from tests.conftest import Infra
from tests.infra import unique_name
from upscaling import broker
from upscaling.v1 import jobs_pb2


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
    await asyncio.sleep(0.2)
    assert await queue.get(fail=False) is None
