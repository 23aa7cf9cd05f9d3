"""`upscaling.jobs` on PostgreSQL: any sequence of job changes leaves the same jobs, task status, stored counts and
job events whether recorded one by one (`update_job`) or in batches (`update_jobs`)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import db_connect
from upscaling import jobs
from upscaling.migrations import migrate
from upscaling.statuses import JOB_STATUSES
from upscaling.v1 import upscaling_pb2

N_JOBS = 3
changes = st.fixed_dictionaries({}, optional={
    "status": st.sampled_from(JOB_STATUSES),
    "backend_job_id": st.sampled_from([None, "b-1"]),
    "progress": st.sampled_from([None, 25.0]),
    "message": st.sampled_from([None, "boom"]),
    "results": st.sampled_from([None, {"assets": {"a": {"href": "x"}}}]),
    "allow_from_terminal": st.booleans(),
})
scenarios = st.tuples(st.lists(st.tuples(st.integers(0, N_JOBS - 1), changes), min_size=1, max_size=12),
                      st.lists(st.integers(1, 5), max_size=6))


@pytest.fixture(scope="module")
def database_url(infra: Any) -> str:
    asyncio.run(migrate(infra.database_url))
    return infra.database_url


async def _task(conn: asyncpg.Connection) -> tuple[int, list[int]]:
    task_id = await conn.fetchval(
        "INSERT INTO upscale_tasks (title, label, service, dimension_name, job_count, job_counts)"
        " VALUES ('jobs store test', 'openeo', '{}', 'x', $1, $2) RETURNING id", N_JOBS, {"created": N_JOBS})
    ids = [await conn.fetchval("INSERT INTO unit_jobs (task_id, seq, title, label, service, tag)"
                               " VALUES ($1, $2, 't', 'openeo', '{}', $3) RETURNING id", task_id, n,
                               f"uj-{uuid.uuid4()}") for n in range(1, N_JOBS + 1)]
    return task_id, ids


async def _state(conn: asyncpg.Connection, task_id: int) -> tuple[Any, ...]:
    task = await conn.fetchrow("SELECT status, job_counts FROM upscale_tasks WHERE id = $1", task_id)
    rows = await conn.fetch("SELECT seq, status, backend_job_id, progress, message, results, finished_at IS NOT NULL"
                            " AS finished FROM unit_jobs WHERE task_id = $1 ORDER BY seq", task_id)
    counted = {r["status"]: r["n"] for r in await conn.fetch(
        "SELECT status, count(*) AS n FROM unit_jobs WHERE task_id = $1 GROUP BY status", task_id)}
    job_events = []
    for payload in await conn.fetch("SELECT payload FROM task_events WHERE task_id = $1 AND job_id IS NOT NULL"
                                    " ORDER BY sequence", task_id):
        event = upscaling_pb2.WatchTaskResponse.FromString(payload["payload"]).job_event
        job_events.append((event.status, event.backend_job_id, event.progress, event.message))
    assert task["job_counts"] == counted  # the stored counts are the true ones
    return task["status"], counted, [tuple(r) for r in rows], job_events


async def _scenario(url: str, steps: list[tuple[int, dict[str, Any]]], sizes: list[int]) -> None:
    conn = await db_connect(url)
    try:
        single_task, single_ids = await _task(conn)
        batch_task, batch_ids = await _task(conn)
        for index, change in steps:
            async with conn.transaction():
                await jobs.update_job(conn, single_ids[index], **change)
        i = 0
        for size in [*sizes, len(steps)]:
            batch = steps[i:i + size]
            i += len(batch)
            if batch:
                async with conn.transaction():
                    await jobs.update_jobs(conn, [(batch_ids[index], change) for index, change in batch],
                                           task_id=batch_task)
        assert await _state(conn, single_task) == await _state(conn, batch_task)
    finally:
        await conn.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenarios)
def test_one_by_one_and_batches_agree(database_url: str, scenario: tuple[list[tuple[int, dict[str, Any]]], list[int]]
                                      ) -> None:
    asyncio.run(_scenario(database_url, *scenario))


async def test_task_totals_survive_resubmission_and_the_limit_stops_unsubmitted_jobs(database_url: str) -> None:
    conn = await db_connect(database_url)
    try:
        task_id, ids = await _task(conn)
        await conn.execute("UPDATE upscale_tasks SET max_costs = 5 WHERE id = $1", task_id)
        await conn.execute("UPDATE unit_jobs SET submitted_at = now() WHERE id = $1", ids[1])  # leased
        usage = {"cpu": {"value": 2.0, "unit": "cpu-seconds"}}
        async with conn.transaction():
            await jobs.update_job(conn, ids[0], status="queued", backend_job_id="b-1")
            events = await jobs.update_job(conn, ids[0], costs=2.0, usage=usage)
        task = upscaling_pb2.WatchTaskResponse.FromString(events[-1].body).task_event
        assert task.costs == 2.0 and task.usage["cpu"].value == 2.0 and task.stop_reason == ""
        async with conn.transaction():  # a resubmission forgets the job's report, not what it cost
            await jobs.resubmit(conn, [(ids[0], "again", None)], task_id=task_id)
            await jobs.update_job(conn, ids[0], status="queued", backend_job_id="b-2")
        row = await conn.fetchrow("SELECT costs, usage, stop_reason FROM upscale_tasks WHERE id = $1", task_id)
        assert (row["costs"], row["usage"], row["stop_reason"]) == (2.0, usage, None)
        async with conn.transaction():  # the second attempt's report reaches the limit
            events = await jobs.update_job(conn, ids[0], status="finished", costs=3.5, usage=usage)
        rows = await conn.fetch("SELECT status, message FROM unit_jobs WHERE task_id = $1 ORDER BY seq", task_id)
        assert [tuple(r) for r in rows] == [("finished", "again"), ("created", None),
                                            ("canceled", "max_costs 5 reached (spent 5.5)")]
        row = await conn.fetchrow("SELECT costs, usage, stop_reason FROM upscale_tasks WHERE id = $1", task_id)
        assert row["costs"] == 5.5 and row["usage"] == {"cpu": {"value": 4.0, "unit": "cpu-seconds"}}
        assert row["stop_reason"] == "max_costs 5 reached (spent 5.5)"
        decoded = [upscaling_pb2.WatchTaskResponse.FromString(e.body) for e in events]
        assert decoded[-1].WhichOneof("update") == "task_event"
        assert decoded[-1].task_event.stop_reason == row["stop_reason"] and decoded[-1].task_event.costs == 5.5
        async with conn.transaction():  # already stopped: nothing more to do
            assert await jobs.stop_for_costs(conn, task_id) == []
    finally:
        await conn.close()
