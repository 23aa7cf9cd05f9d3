"""Recovery of job messages through the real stack (gateway, monitor with its reconciler, dispatcher with its
dead-letter handler, local openEO backend): a message dead-lettered by repeated consumer deaths is published again
and its job finishes; a poison message fails its job visibly (GET /unit_jobs, WatchTask) and `retry` then
succeeds; a job whose message was lost is found by the reconciler and finishes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import aio_pika
import asyncpg
import grpc
import pytest
import requests

from tests.dispatcher_support import job_message, one_backend_job_per_tag
from tests.infra import ServiceProcess
from tests.ops_support import OpsStack, Service, StackConfig, json_lines, ops_stack, value
from tests.support import db_connect
from upscaling import broker
from upscaling.statuses import job_status_from_proto
from upscaling.v1 import upscaling_pb2

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def ops(infra, service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsStack]:
    logs = tmp_path_factory.mktemp("recovery")
    config = StackConfig("recovery", env={"RECONCILE_INTERVAL_S": "1", "RECONCILE_AFTER_S": "3",
                                          "DEAD_LETTER_BACKOFF_BASE_S": "0.2", "DEAD_LETTER_BACKOFF_MAX_S": "1",
                                          "DISPATCHER_HEARTBEAT_S": "1", "POISON_FAILURES": "3"})
    with ops_stack(infra, service_env, logs, config) as stack:
        yield stack


def _monitor(ops: OpsStack) -> Service:
    """The stack's monitor (started on first use: the first test must dead-letter before any reconciler runs)."""
    return ops.monitors[0] if ops.monitors else ops.start("monitor", "monitor")


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _db(ops: OpsStack) -> asyncpg.Connection:
    return await db_connect(ops.env["DATABASE_URL"])


async def _job_ids(ops: OpsStack, task_id: int) -> list[int]:
    conn = await _db(ops)
    try:
        return [r["id"] for r in await conn.fetch("SELECT id FROM unit_jobs WHERE task_id = $1 ORDER BY id", task_id)]
    finally:
        await conn.close()


async def _queue_ready(ops: OpsStack, name: str) -> int:
    connection = await aio_pika.connect(ops.env["RABBITMQ_URL"])
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(name, passive=True)
        return declared.declaration_result.message_count or 0
    finally:
        await connection.close()


def _wait(check: Any, what: str, limit_s: float = 60) -> Any:
    deadline = time.monotonic() + limit_s
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


async def _die_holding_messages(ops: OpsStack, expected_dead: int) -> int:
    """Consume the job queue and close the channel without acknowledging, like a dispatcher SIGKILLed with its
    prefetched messages, until the broker dead-lettered `expected_dead` messages; returns the consumer deaths."""
    topology = broker.Topology(ops.env["BROKER_PREFIX"])
    connection = await aio_pika.connect(ops.env["RABBITMQ_URL"])
    deaths = 0
    try:
        while True:
            probe = await connection.channel()
            dead = (await probe.declare_queue(topology.dead_letter_queue, passive=True)).declaration_result
            await probe.close()
            if (dead.message_count or 0) >= expected_dead:
                return deaths
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=256)
            queue = await channel.get_queue(topology.jobs_queue, ensure=False)
            got = asyncio.Event()

            async def on_message(_message: aio_pika.abc.AbstractIncomingMessage, got: asyncio.Event = got) -> None:
                got.set()

            await queue.consume(on_message, no_ack=False)
            with_messages = True
            try:
                await asyncio.wait_for(got.wait(), timeout=5)
                await asyncio.sleep(0.3)  # let the whole prefetch arrive
            except TimeoutError:
                with_messages = False
            await channel.close()  # dies holding them: each goes back with one more delivery
            deaths += with_messages
            assert deaths < 50, "the broker never dead-lettered the messages"
    finally:
        await connection.close()


def test_messages_dead_lettered_by_consumer_deaths_are_recovered_and_their_jobs_finish(ops: OpsStack) -> None:
    ops.backend.reset()
    # No dispatcher or monitor yet (the messages wait in the queue): a relay of its own publishes them.
    relay = ServiceProcess("relay", "upscaling.jobs.relay", ops.env, ops.logs / "relay.log")
    relay.start()
    try:
        task_id = ops.create(3)
        topology = broker.Topology(ops.env["BROKER_PREFIX"])
        _wait(lambda: _run(_queue_ready(ops, topology.jobs_queue)) >= 3, "the job messages in the queue")
    finally:
        relay.stop()
    deaths = _run(_die_holding_messages(ops, 3))
    assert deaths >= 5, deaths  # the quorum queue's delivery limit: these healthy jobs were dead-lettered
    assert {k: v for k, v in ops.task(task_id)["job_counts"].items() if v} == {"created": 3}

    _monitor(ops)
    dispatcher = ops.start("dispatcher", "dispatcher-dlq")
    try:
        ops.wait_jobs(task_id, {"finished": 3}, limit_s=120)
        one_backend_job_per_tag(ops.backend.report(), [r["tag"] for r in _run(_rows(ops, task_id))])
        assert _run(_queue_ready(ops, topology.dead_letter_queue)) == 0
        decisions = _run(_decisions(ops, task_id))
        assert decisions == {"republished": 3}, decisions
        assert value(dispatcher.metrics(), "upscaling_dead_letters_total", decision="republished") == 3
        assert any(e["message"].startswith("dead-lettered job message of a healthy unit job")
                   for e in json_lines(dispatcher.proc))
        print(f"consumer deaths: {deaths}; 3 dead-lettered healthy jobs republished and finished")
    finally:
        assert dispatcher.sigterm()[0] == 0
        ops.dispatchers.remove(dispatcher)


async def _rows(ops: OpsStack, task_id: int) -> list[asyncpg.Record]:
    conn = await _db(ops)
    try:
        return await conn.fetch("SELECT id, tag, status, message FROM unit_jobs WHERE task_id = $1 ORDER BY id",
                                task_id)
    finally:
        await conn.close()


async def _decisions(ops: OpsStack, task_id: int) -> dict[str, int]:
    conn = await _db(ops)
    try:
        rows = await conn.fetch("SELECT decision, count(*) AS n FROM dead_letters WHERE job_id IN"
                                " (SELECT id FROM unit_jobs WHERE task_id = $1) GROUP BY decision", task_id)
        return {r["decision"]: r["n"] for r in rows}
    finally:
        await conn.close()


async def _replace_messages(ops: OpsStack, task_id: int, poison_job: int) -> None:
    """Purge the job queue, then publish every job's message again, the poison job's with arguments that are not
    JSON (handling it raises every time)."""
    topology = broker.Topology(ops.env["BROKER_PREFIX"])
    conn = await _db(ops)
    connection = await aio_pika.connect(ops.env["RABBITMQ_URL"])
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.get_queue(topology.jobs_queue, ensure=False)
        await queue.purge()
        exchange = await channel.get_exchange(topology.jobs_exchange, ensure=False)
        for job_id in await _job_ids(ops, task_id):
            message = await job_message(conn, job_id)
            if job_id == poison_job:
                message.parameters_json = "{not json"
            await exchange.publish(aio_pika.Message(message.SerializeToString(),
                                                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                                    content_type="application/x-protobuf"),
                                   routing_key=topology.jobs_routing_key)
    finally:
        await connection.close()
        await conn.close()


def _watch(ops: OpsStack, task_id: int, out: list[upscaling_pb2.WatchTaskResponse]) -> None:
    with grpc.insecure_channel(ops.grpc) as channel:
        for update in ops.stub(channel).WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id), timeout=180):
            out.append(update)


def test_poison_message_fails_its_job_visibly_and_retry_then_succeeds(ops: OpsStack) -> None:
    ops.backend.reset()
    topology = broker.Topology(ops.env["BROKER_PREFIX"])
    task_id = ops.create(2)
    _wait(lambda: _run(_queue_ready(ops, topology.jobs_queue)) >= 2, "the job messages in the queue")
    good, poison = _run(_job_ids(ops, task_id))
    _run(_replace_messages(ops, task_id, poison))
    events: list[upscaling_pb2.WatchTaskResponse] = []
    watcher = threading.Thread(target=_watch, args=(ops, task_id, events))
    watcher.start()
    _monitor(ops)
    dispatcher = ops.start("dispatcher", "dispatcher-poison")
    try:
        body = ops.wait_task(task_id, {"finished"}, limit_s=120)  # one finished, one failed: the task ends
        assert {k: v for k, v in body["job_counts"].items() if v} == {"finished": 1, "failed": 1}, body["job_counts"]
        watcher.join(timeout=60)
        job = requests.get(f"{ops.http}/unit_jobs/{poison}", timeout=10).json()
        assert job["status"] == "failed", job
        assert "not submitted: submitting it failed 3 times: JSONDecodeError" in job["message"], job
        failed_events = [e.job_event for e in events if e.WhichOneof("update") == "job_event"
                         and e.job_event.job_id == poison and job_status_from_proto(e.job_event.status) == "failed"]
        assert failed_events and "failed 3 times" in failed_events[0].message, events
        assert _run(_decisions(ops, task_id)) == {"failed": 1}
        assert _run(_queue_ready(ops, topology.dead_letter_queue)) == 0
        log = json_lines(dispatcher.proc)
        assert any(e["message"] == "job message failed repeatedly for the same reason; dead-lettered" for e in log)

        reply = requests.post(f"{ops.http}/upscale_tasks/{task_id}/retry", timeout=10)
        assert reply.status_code == 200, reply.text
        ops.wait_jobs(task_id, {"finished": 2}, limit_s=120)
        assert ops.task(task_id)["status"] == "finished"
        one_backend_job_per_tag(ops.backend.report(), [r["tag"] for r in _run(_rows(ops, task_id))])
        print(f"poison job {poison}: failed visibly ({job['message'][:80]}...), retried and finished; job {good} "
              "finished")
    finally:
        assert dispatcher.sigterm()[0] == 0
        ops.dispatchers.remove(dispatcher)


def test_a_job_whose_message_was_lost_is_reconciled_and_finishes(ops: OpsStack) -> None:
    ops.backend.reset()
    topology = broker.Topology(ops.env["BROKER_PREFIX"])
    monitor = _monitor(ops)
    before = value(monitor.metrics(), "upscaling_reconciled_total", reason="no_message")
    task_id = ops.create(2)
    _wait(lambda: _run(_queue_ready(ops, topology.jobs_queue)) >= 2, "the job messages in the queue")

    async def lose() -> None:
        connection = await aio_pika.connect(ops.env["RABBITMQ_URL"])
        try:
            channel = await connection.channel()
            await (await channel.get_queue(topology.jobs_queue, ensure=False)).purge()
        finally:
            await connection.close()

    _run(lose())  # the messages are gone: nothing will ever move these jobs but the reconciler
    dispatcher = ops.start("dispatcher", "dispatcher-reconciled")
    try:
        ops.wait_jobs(task_id, {"finished": 2}, limit_s=120)
        assert value(monitor.metrics(), "upscaling_reconciled_total", reason="no_message") - before == 2
        lines = [e for e in json_lines(monitor.proc) if e["message"] == "stranded unit jobs published again"]
        assert any(set(e["job_ids"]) >= set(_run(_job_ids(ops, task_id))) and e["reason"] == "no_message"
                   for e in lines), lines
        one_backend_job_per_tag(ops.backend.report(), [r["tag"] for r in _run(_rows(ops, task_id))])
    finally:
        assert dispatcher.sigterm()[0] == 0
        ops.dispatchers.remove(dispatcher)
