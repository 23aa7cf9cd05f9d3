"""The monitor as a real process against the local openEO backend, PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from tests.conftest import Infra
from tests.infra import ServiceProcess, unique_name
from tests.monitor_support import configured, cycles, insert_task, new_tag, start_monitor
from tests.support import LocalOpenEO, wait_until
from upscaling import broker, event_wire
from upscaling.migrations import migrate
from upscaling.statuses import job_status_from_proto, task_status_from_proto
from upscaling.v1 import jobs_pb2, upscaling_pb2

PAGE_SIZE = 5


@pytest.fixture(scope="module")
def openeo_backend() -> Iterator[LocalOpenEO]:
    backend = LocalOpenEO()
    try:
        yield backend
    finally:
        backend.stop()


@pytest.fixture(scope="module")
def monitor_env(infra: Infra, service_env: dict[str, str], openeo_backend: LocalOpenEO) -> Iterator[dict[str, str]]:
    asyncio.run(migrate(infra.database_url))
    prefix = unique_name("monitor")
    yield {**service_env, "BROKER_PREFIX": prefix, "OPENEO_BACKENDS": openeo_backend.backends_env(),
           "MONITOR_INTERVAL_MIN_S": "0.2", "MONITOR_INTERVAL_MAX_S": "1", "MONITOR_PAGE_SIZE": str(PAGE_SIZE),
           "OPENEO_TIMEOUT_S": "10", "MIGRATE_ON_START": "false", "GRPC_GRACE_S": "1"}

    async def cleanup() -> None:
        connection = await aio_pika.connect(infra.rabbitmq_url)
        await broker.delete(await connection.channel(), broker.Topology(prefix))
        await connection.close()

    asyncio.run(cleanup())


@pytest.fixture(scope="module")
def monitor(monitor_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    proc = start_monitor(monitor_env, tmp_path_factory.mktemp("monitor") / "monitor-a.log")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def events_channel(infra: Infra, monitor_env: dict[str, str]) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(infra.rabbitmq_url)
    channel = await connection.channel()
    yield channel
    await connection.close()


async def _create_jobs(backend: LocalOpenEO, n: int) -> list[tuple[str, str]]:
    tags = [new_tag() for _ in range(n)]
    return [(tag, await asyncio.to_thread(backend.create_started_job, tag)) for tag in tags]


async def _task_status(conn: asyncpg.Connection, task_id: int, wanted: set[str]) -> str | None:
    status = await conn.fetchval("SELECT status FROM upscale_tasks WHERE id = $1", task_id)
    return status if status in wanted else None


async def _job_counts(conn: asyncpg.Connection, task_id: int) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM unit_jobs WHERE task_id = $1 GROUP BY status", task_id)
    return {r["status"]: r["n"] for r in rows}


async def test_jobs_finish_with_results_events_and_task_status(
        monitor: ServiceProcess, openeo_backend: LocalOpenEO, conn: asyncpg.Connection,
        events_channel: aio_pika.abc.AbstractChannel, monitor_env: dict[str, str]) -> None:
    topology = await broker.declare(events_channel, broker.Topology(monitor_env["BROKER_PREFIX"]))
    queue = await events_channel.declare_queue(exclusive=True)
    jobs = await _create_jobs(openeo_backend, 3)
    task_id, job_ids = await insert_task(conn, openeo_backend.endpoint, jobs)
    await queue.bind(topology.events_exchange, routing_key=f"task.{task_id}.#")

    await wait_until(lambda: _task_status(conn, task_id, {"finished", "failed", "canceled"}), limit_s=20,
                     what="task finished")
    assert await conn.fetchval("SELECT status FROM upscale_tasks WHERE id = $1", task_id) == "finished"
    for row in await conn.fetch("SELECT * FROM unit_jobs WHERE task_id = $1", task_id):
        assert row["status"] == "finished", dict(row)
        assert row["progress"] in (100.0, None)
        assert row["usage"] and "cpu" in row["usage"] and row["costs"] is not None
        assert row["results"]["assets"]["openEO.tif"]["href"].startswith("http")
        assert row["finished_at"] is not None and row["checked_at"] is not None

    stored = await conn.fetch("SELECT sequence, payload FROM task_events WHERE task_id = $1 ORDER BY sequence",
                              task_id)
    sequences = [r["sequence"] for r in stored]
    assert sequences == list(range(1, len(stored) + 1))
    last = upscaling_pb2.WatchTaskResponse.FromString(stored[-1]["payload"])
    assert last.WhichOneof("update") == "task_event"
    assert task_status_from_proto(last.task_event.status) == "finished"
    assert dict(last.task_event.job_counts) == {"finished": 3}
    finished_jobs = set()
    for r in stored:
        event = upscaling_pb2.WatchTaskResponse.FromString(r["payload"])
        if event.WhichOneof("update") == "job_event" and job_status_from_proto(event.job_event.status) == "finished":
            finished_jobs.add(event.job_event.job_id)
    assert finished_jobs == set(job_ids)

    published: list[int] = []
    async with queue.iterator(timeout=5) as messages:
        async for message in messages:
            async with message.process():
                published.extend(e.sequence for e in event_wire.decode(message.body, message.type))
            if len(published) >= len(stored):
                break
    assert published == sequences


async def test_partial_failure_keeps_backend_message(
        monitor: ServiceProcess, openeo_backend: LocalOpenEO, conn: asyncpg.Connection) -> None:
    with configured(openeo_backend, job_error_fraction=1.0):
        failing = await _create_jobs(openeo_backend, 2)
    succeeding = await _create_jobs(openeo_backend, 2)
    task_id, _ = await insert_task(conn, openeo_backend.endpoint, failing + succeeding)

    await wait_until(lambda: _task_status(conn, task_id, {"finished", "failed", "canceled"}), limit_s=20,
                     what="task terminal")
    assert await conn.fetchval("SELECT status FROM upscale_tasks WHERE id = $1", task_id) == "finished"
    assert await _job_counts(conn, task_id) == {"finished": 2, "failed": 2}
    for _, backend_job_id in failing:
        row = await conn.fetchrow("SELECT status, message, usage FROM unit_jobs WHERE backend_job_id = $1",
                                  backend_job_id)
        assert row["status"] == "failed"
        assert f"Simulated processing failure of job {backend_job_id}" in row["message"]
    payload = await conn.fetchval("SELECT payload FROM task_events WHERE task_id = $1 ORDER BY sequence DESC LIMIT 1",
                                  task_id)
    last = upscaling_pb2.WatchTaskResponse.FromString(payload)
    assert dict(last.task_event.job_counts) == {"finished": 2, "failed": 2}


async def test_errored_job_is_resubmitted_until_max_attempts(
        monitor: ServiceProcess, openeo_backend: LocalOpenEO, conn: asyncpg.Connection) -> None:
    with configured(openeo_backend, job_error_fraction=1.0):
        jobs = await _create_jobs(openeo_backend, 1)
        task_id, (job_id,) = await insert_task(conn, openeo_backend.endpoint, jobs, max_attempts=2)
        old_tag, old_backend_id = jobs[0]

        outbox = await wait_until(lambda: conn.fetchrow("SELECT * FROM outbox WHERE job_id = $1", job_id),
                                  limit_s=20, what="outbox row")
        job = await conn.fetchrow("SELECT * FROM unit_jobs WHERE id = $1", job_id)
        assert job["status"] == "created" and job["backend_job_id"] is None and job["submitted_at"] is None
        assert job["tag"] != old_tag and job["tag"].startswith("uj-")
        assert f"Simulated processing failure of job {old_backend_id}" in job["message"]
        assert outbox["routing_key"] == "submit" and outbox["exchange"] == "jobs"
        # No gateway runs here: the monitor's own outbox relay publishes the resubmission.
        await wait_until(lambda: conn.fetchval("SELECT sent_at IS NOT NULL FROM outbox WHERE job_id = $1", job_id),
                         limit_s=20, what="outbox row published by the monitor")
        message = jobs_pb2.SubmitJobMessage.FromString(outbox["payload"])
        assert (message.job_id, message.task_id, message.tag, message.attempt) == (job_id, task_id, job["tag"], 2)
        assert json.loads(message.parameters_json) == job["submit_arguments"]
        assert message.process_id == "wind_turbine_detection" and message.format == "gtiff"
        assert message.service.endpoint == openeo_backend.endpoint
        assert await conn.fetchval("SELECT status FROM upscale_tasks WHERE id = $1", task_id) == "created"

        # The second attempt (as the dispatcher would submit it) fails too: now the job fails for good.
        backend_job_id = await asyncio.to_thread(openeo_backend.create_started_job, job["tag"])
        await conn.execute("UPDATE unit_jobs SET status = 'queued', backend_job_id = $2, attempts = 2,"
                           " submitted_at = now() WHERE id = $1", job_id, backend_job_id)
        await wait_until(lambda: _task_status(conn, task_id, {"failed", "finished"}), limit_s=20, what="task failed")
    job = await conn.fetchrow("SELECT * FROM unit_jobs WHERE id = $1", job_id)
    assert job["status"] == "failed" and backend_job_id in job["message"]
    assert await conn.fetchval("SELECT count(*) FROM outbox WHERE job_id = $1", job_id) == 1


async def test_cancel_requested_stops_backend_jobs(
        monitor: ServiceProcess, openeo_backend: LocalOpenEO, conn: asyncpg.Connection) -> None:
    with configured(openeo_backend, run_seconds=30):
        jobs = await _create_jobs(openeo_backend, 2)
    task_id, _ = await insert_task(conn, openeo_backend.endpoint, [*jobs, (new_tag(), None)])
    await wait_until(lambda: _task_status(conn, task_id, {"running"}), limit_s=20, what="task running")

    async with conn.transaction():
        await conn.execute("UPDATE upscale_tasks SET cancel_requested = true WHERE id = $1", task_id)
        await conn.execute("UPDATE unit_jobs SET cancel_requested = true WHERE task_id = $1", task_id)
    await wait_until(lambda: _task_status(conn, task_id, {"canceled"}), limit_s=15, what="task canceled")
    assert await _job_counts(conn, task_id) == {"canceled": 3}
    backend_jobs = openeo_backend.jobs()
    assert [backend_jobs[backend_job_id]["status"] for _, backend_job_id in jobs] == ["canceled", "canceled"]


async def test_one_listing_per_cycle_and_vanished_jobs(
        monitor: ServiceProcess, openeo_backend: LocalOpenEO, conn: asyncpg.Connection) -> None:
    with configured(openeo_backend, run_seconds=30):
        jobs = await _create_jobs(openeo_backend, 12)
    task_id, _ = await insert_task(conn, openeo_backend.endpoint, jobs)
    await wait_until(lambda: _all_running(conn, task_id, 12), limit_s=20, what="12 jobs running")

    seen = len(cycles(monitor, openeo_backend.endpoint))
    before = openeo_backend.report()["requests"]
    await wait_until(lambda: _cycles_after(monitor, openeo_backend.endpoint, seen, 3), limit_s=20, what="3 more cycles")
    after = openeo_backend.report()["requests"]
    new_cycles = [c for c in cycles(monitor, openeo_backend.endpoint)[seen:] if c["active_jobs"] == 12]
    assert len(new_cycles) >= 3
    limit = math.ceil(12 / PAGE_SIZE) + 1
    for entry in new_cycles:
        assert entry["listing_calls"] <= limit and entry["job_gets"] == 0, entry
        assert entry["backend_calls"] == entry["listing_calls"], entry
    assert after.get("get_job", 0) == before.get("get_job", 0)
    listings = after.get("list_jobs", 0) - before.get("list_jobs", 0)
    assert listings <= (len(cycles(monitor, openeo_backend.endpoint)) - seen + 1) * limit

    # The backend forgets every job: each one is looked up once, then failed as vanished.
    openeo_backend.admin("POST", "reset", {"jobs": True, "counters": False})
    await wait_until(lambda: _task_status(conn, task_id, {"failed"}), limit_s=20, what="vanished jobs failed")
    messages = await conn.fetch("SELECT message FROM unit_jobs WHERE task_id = $1", task_id)
    assert all("vanished" in r["message"] for r in messages)


async def _all_running(conn: asyncpg.Connection, task_id: int, n: int) -> bool:
    return (await _job_counts(conn, task_id)).get("running", 0) == n


async def _cycles_after(proc: ServiceProcess, backend: str, seen: int, n: int) -> bool:
    return len(cycles(proc, backend)) >= seen + n


async def test_replicas_never_poll_one_backend_together(
        monitor: ServiceProcess, monitor_env: dict[str, str], openeo_backend: LocalOpenEO,
        conn: asyncpg.Connection, tmp_path: Path) -> None:
    second = start_monitor(monitor_env, tmp_path / "monitor-b.log")
    try:
        with configured(openeo_backend, run_seconds=3):
            jobs = await _create_jobs(openeo_backend, 3)
        seen = len(cycles(monitor, openeo_backend.endpoint))
        task_id, _ = await insert_task(conn, openeo_backend.endpoint, jobs)
        await wait_until(lambda: _cycles_after(monitor, openeo_backend.endpoint, seen, 3), limit_s=20,
                         what="cycles of A")
        assert cycles(second, openeo_backend.endpoint) == []

        assert await asyncio.to_thread(monitor.stop) == 0  # SIGTERM: finishes its cycle, exits 0
        await wait_until(lambda: _task_status(conn, task_id, {"finished"}), limit_s=20, what="task finished by B")
        assert cycles(second, openeo_backend.endpoint), "the second replica did not take over"
        assert "monitor lock acquired" in second.log()
    finally:
        assert second.stop() == 0
