"""The outbox relay runs in the dispatchers and monitors, never in the gateway (which publishes nothing to the
broker): a cancel's status events reach a watcher through a monitor's relay, in order and exactly once, and a task
created just before its gateway stops is submitted and finishes without it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import requests

from tests.ops_support import OpsStack, StackConfig, ops_stack
from tests.support import db_connect, wait_until
from upscaling.v1 import common_pb2, upscaling_pb2

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def ops(infra, service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsStack]:
    with ops_stack(infra, service_env, tmp_path_factory.mktemp("relay"), StackConfig("relay")) as stack:
        stack.start("monitor", "monitor")  # the only relay until a dispatcher starts
        yield stack


async def _outbox(ops: OpsStack, task_id: int) -> list[tuple[str, bool]]:
    """(exchange, sent) of the outbox rows of a task's status events and job messages, in order."""
    conn = await db_connect(ops.env["DATABASE_URL"])
    try:
        rows = await conn.fetch(
            "SELECT exchange, sent_at IS NOT NULL AS sent FROM outbox WHERE routing_key LIKE $2"
            " OR job_id IN (SELECT id FROM unit_jobs WHERE task_id = $1) ORDER BY id", task_id, f"task.{task_id}%")
        return [(r["exchange"], r["sent"]) for r in rows]
    finally:
        await conn.close()


def test_cancel_events_reach_watchers_through_a_monitor_relay(ops: OpsStack) -> None:
    task_id = ops.create(3)  # no dispatcher runs: the jobs stay `created`
    with ops.channel() as channel:
        stream = ops.stub(channel).WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id), timeout=60)
        first = next(stream)
        assert first.WhichOneof("update") == "snapshot" and first.sequence == 0
        reply = requests.post(f"{ops.http}/upscale_tasks/{task_id}/cancel", timeout=10)
        assert reply.status_code in (200, 202), reply.text
        rest = list(stream)  # ends at the terminal task event
    assert [r.sequence for r in rest] == [1, 2, 3, 4]
    assert [r.WhichOneof("update") for r in rest] == ["job_event"] * 3 + ["task_event"]
    assert all(r.job_event.status == common_pb2.JOB_STATUS_CANCELED for r in rest[:3])
    assert rest[-1].task_event.status == common_pb2.TASK_STATUS_CANCELED
    # The gateway wrote the events to the outbox; the monitor's relay published them.
    rows = asyncio.run(_outbox(ops, task_id))
    assert ("events", True) in rows and all(sent for _, sent in rows), rows


def test_a_watch_right_after_a_retry_follows_the_task_though_its_events_are_not_relayed_yet(ops: OpsStack) -> None:
    """A retried task's events reach the gateway through a relay, later than the retry's answer: a watch opened
    in between, on the gateway's kept feed of the failed task, must follow the task again, not end at the old
    terminal status."""
    ops.backend.configure(job_error_fraction=1.0)
    dispatcher = ops.start("dispatcher", "dispatcher-retry")
    try:
        task_id = ops.create(2)
        with ops.channel() as channel:  # watched to its end: the gateway keeps the feed of the failed task
            events = list(ops.stub(channel).WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id), timeout=120))
        assert events[-1].task_event.status == common_pb2.TASK_STATUS_FAILED
    finally:
        ops.backend.configure(job_error_fraction=0.0)
    for service in (dispatcher, *ops.monitors):  # no relay runs: the retry's events stay in the outbox
        assert service.sigterm()[0] == 0
    ops.dispatchers.remove(dispatcher)
    ops.monitors.clear()
    reply = requests.post(f"{ops.http}/upscale_tasks/{task_id}/retry", timeout=10)
    assert reply.status_code in (200, 202), reply.text
    assert ("events", False) in asyncio.run(_outbox(ops, task_id))
    with ops.channel() as channel:
        stream = ops.stub(channel).WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id), timeout=120)
        snapshot = next(stream)
        assert snapshot.snapshot.status == common_pb2.TASK_STATUS_CREATED, snapshot.snapshot.status
        ops.start("monitor", "monitor-retry")  # its relay publishes the job messages
        ops.start("dispatcher", "dispatcher-retry-2")
        rest = list(stream)
    assert rest[-1].task_event.status == common_pb2.TASK_STATUS_FINISHED
    sequences = [snapshot.sequence] + [r.sequence for r in rest]
    assert sequences == list(range(sequences[0], sequences[-1] + 1))


def test_task_finishes_when_its_gateway_stopped_after_creating_it(ops: OpsStack) -> None:
    ops.start("dispatcher", "dispatcher")
    task_id = ops.create(4)
    code, _ = ops.gateway.sigterm()
    assert code == 0

    async def finished() -> None:
        conn = await db_connect(ops.env["DATABASE_URL"])
        try:
            await wait_until(lambda: conn.fetchval(
                "SELECT status = 'finished' FROM upscale_tasks WHERE id = $1", task_id), limit_s=120,
                what="the task finished without a gateway")
            counts = await conn.fetchval("SELECT job_counts FROM upscale_tasks WHERE id = $1", task_id)
            assert counts == {"finished": 4}
        finally:
            await conn.close()

    asyncio.run(finished())
    assert all(sent for _, sent in asyncio.run(_outbox(ops, task_id)))
