"""Tenant isolation in each authenticating mode: user B cannot read, list, watch, cancel, retry or fetch results
of user A's tasks and jobs by any interface (HTTP, gRPC, WebSocket) — it gets exactly the "not found" of an id
that does not exist — events of A never reach B's watchers, and an admin sees everything."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import grpc
import pytest
import pytest_asyncio
import websockets

from tests import auth_support
from tests.auth_support import AuthGateway, ws_messages_until_close
from tests.infra import unique_name, with_database
from tests.support import admin_sql, db_connect
from tests.tasks_support import change_job
from upscaling import broker
from upscaling.migrations import MIGRATIONS_DIR, apply_migrations
from upscaling.v1 import common_pb2, upscaling_pb2, upscaling_pb2_grpc

token_gateway = auth_support.token_gateway
oidc_gateway = auth_support.oidc_gateway
oidc_issuer = auth_support.oidc_issuer
gw = auth_support.gw
MISSING = 9_000_000_001
RESULTS = {"stac_version": "1.0.0", "assets": {"openEO.tif": {"href": "http://example.org/a.tif"}}}


@dataclass
class World:
    """Alice's task (one finished job with results, one failed job), her standalone job, and Bob's task."""

    gw: AuthGateway
    conn: Any
    exchange: aio_pika.abc.AbstractExchange
    task: int
    jobs: list[int]
    unit_job: int
    bob_task: int


@pytest_asyncio.fixture
async def world(gw: AuthGateway) -> AsyncIterator[World]:
    task = await asyncio.to_thread(gw.create, "alice", 2)
    bob_task = await asyncio.to_thread(gw.create, "bob", 1)
    body = {k: v for k, v in gw.task_body().items() if k != "dimension"}
    body["parameters"] = {**body["parameters"], "spatial_extent": gw.task_body(1)["dimension"]["values"][0]}
    reply = await asyncio.to_thread(gw.call, "POST", "/unit_jobs", "alice", json=body)
    assert reply.status_code == 201, reply.text
    unit_job = reply.json()["id"]
    conn = await db_connect(gw.database_url)
    connection = await aio_pika.connect(gw.rabbitmq_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange(broker.Topology(gw.prefix).events_exchange,
                                              aio_pika.ExchangeType.TOPIC, durable=True)
    jobs = [r["id"] for r in await conn.fetch("SELECT id FROM unit_jobs WHERE task_id = $1 ORDER BY seq", task)]
    await change_job(conn, exchange, jobs[0], status="queued", backend_job_id=f"iso-{jobs[0]}")
    await change_job(conn, exchange, jobs[0], status="finished", results=RESULTS)
    await change_job(conn, exchange, jobs[1], status="queued", backend_job_id=f"iso-{jobs[1]}")
    await change_job(conn, exchange, jobs[1], status="failed", message="backend error")
    try:
        yield World(gw, conn, exchange, task, jobs, unit_job, bob_task)
    finally:
        await conn.close()
        await connection.close()


def not_found_shape(reply: Any, tid: int) -> tuple[int, str, str, Any]:
    """(status, error code, message with the id replaced, details) of an error answer."""
    body = reply.json()
    return reply.status_code, body["error_code"], body["message"].replace(str(tid), "ID"), body["details"]


async def test_http_user_b_gets_not_found_for_everything_of_user_a(world: World) -> None:
    gw, task, job = world.gw, world.task, world.jobs[0]

    def call(method: str, path: str, user: str) -> Any:
        return gw.call(method, path, user)

    task_paths = [("GET", "/upscale_tasks/{}"), ("POST", "/upscale_tasks/{}/cancel"),
                  ("POST", "/upscale_tasks/{}/retry"), ("GET", "/upscale_tasks/{}/results"),
                  ("GET", "/upscale_tasks/{}/results/items")]
    job_paths = [("GET", "/unit_jobs/{}"), ("GET", "/unit_jobs/{}/results"), ("GET", "/unit_jobs/{}/logs"),
                 ("DELETE", "/unit_jobs/{}")]
    for method, path in task_paths:
        theirs = await asyncio.to_thread(call, method, path.format(task), "bob")
        missing = await asyncio.to_thread(call, method, path.format(MISSING), "bob")
        assert theirs.status_code == 404, (method, path, theirs.text)
        assert not_found_shape(theirs, task) == (404, "TASK_NOT_FOUND", "upscale task ID not found", None)
        assert not_found_shape(missing, MISSING) == not_found_shape(theirs, task), (method, path)
    for job_id in (job, world.unit_job):
        for method, path in job_paths:
            theirs = await asyncio.to_thread(call, method, path.format(job_id), "bob")
            assert theirs.status_code == 404 and theirs.json()["error_code"] == "JOB_NOT_FOUND", (path, theirs.text)
            assert str(job_id) in theirs.json()["message"]
    listed = (await asyncio.to_thread(call, "GET", "/upscale_tasks?page_size=500", "bob")).json()["tasks"]
    assert world.bob_task in {t["id"] for t in listed} and task not in {t["id"] for t in listed}
    status = (await asyncio.to_thread(call, "GET", "/jobs_status", "bob")).json()
    assert task not in {t["id"] for t in status["upscaling_tasks"]}
    assert world.bob_task in {t["id"] for t in status["upscaling_tasks"]}
    assert world.unit_job not in {j["id"] for j in status["processing_jobs"]}

    # nothing of Alice's changed; she (and the admin) still see and use all of it
    own = (await asyncio.to_thread(call, "GET", f"/upscale_tasks/{task}", "alice")).json()
    assert own["id"] == task and not any(j["status"] == "canceled" for j in own["jobs"])
    assert (await asyncio.to_thread(call, "GET", f"/unit_jobs/{world.unit_job}", "alice")).json()["status"] == "created"
    results = (await asyncio.to_thread(call, "GET", f"/upscale_tasks/{task}/results/items", "alice")).json()
    assert results["numberMatched"] == 1
    assert (await asyncio.to_thread(call, "GET", f"/unit_jobs/{job}/results", "alice")).json() == RESULTS
    status = (await asyncio.to_thread(call, "GET", "/jobs_status", "alice")).json()
    assert task in {t["id"] for t in status["upscaling_tasks"]}
    assert world.unit_job in {j["id"] for j in status["processing_jobs"]}
    assert world.bob_task not in {t["id"] for t in status["upscaling_tasks"]}
    admin = (await asyncio.to_thread(call, "GET", "/upscale_tasks?page_size=500", "ops")).json()["tasks"]
    assert {task, world.bob_task} <= {t["id"] for t in admin}
    assert (await asyncio.to_thread(call, "GET", f"/unit_jobs/{job}/results", "ops")).status_code == 200
    retried = await asyncio.to_thread(call, "POST", f"/upscale_tasks/{task}/retry", "alice")
    assert retried.status_code == 200 and retried.json()["retried"] == 1


async def test_grpc_user_b_gets_not_found_for_everything_of_user_a(world: World) -> None:
    gw, task, job = world.gw, world.task, world.jobs[0]
    async with grpc.aio.insecure_channel(gw.grpc) as channel:
        stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
        bob = gw.md("bob")
        calls = {
            "GetTask": lambda tid: stub.GetTask(upscaling_pb2.GetTaskRequest(task_id=tid), metadata=bob),
            "CancelTask": lambda tid: stub.CancelTask(upscaling_pb2.CancelTaskRequest(task_id=tid), metadata=bob),
            "RetryFailedJobs": lambda tid: stub.RetryFailedJobs(upscaling_pb2.RetryFailedJobsRequest(task_id=tid),
                                                                metadata=bob),
            "GetTaskResults": lambda tid: stub.GetTaskResults(upscaling_pb2.GetTaskResultsRequest(task_id=tid),
                                                              metadata=bob),
        }
        for name, call in calls.items():
            for tid in (task, MISSING):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(tid)
                assert err.value.code() == grpc.StatusCode.NOT_FOUND, name
                assert err.value.details() == f"upscale task {tid} not found", (name, err.value.details())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetJobResults(upscaling_pb2.GetJobResultsRequest(job_id=job), metadata=bob)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        stream = stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task), metadata=bob, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stream.read()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        resumed = stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task, after_sequence=1), metadata=bob,
                                 timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await resumed.read()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        listed = await stub.ListTasks(upscaling_pb2.ListTasksRequest(page_size=500), metadata=bob)
        assert world.bob_task in {t.id for t in listed.tasks} and task not in {t.id for t in listed.tasks}

        alice = gw.md("alice")
        own = await stub.GetTask(upscaling_pb2.GetTaskRequest(task_id=task), metadata=alice)
        assert own.task.status != common_pb2.TASK_STATUS_CANCELED
        assert json.loads((await stub.GetJobResults(upscaling_pb2.GetJobResultsRequest(job_id=job),
                                                    metadata=alice)).stac_json) == RESULTS
        admin = await stub.ListTasks(upscaling_pb2.ListTasksRequest(page_size=500), metadata=gw.md("ops"))
        assert {task, world.bob_task} <= {t.id for t in admin.tasks}
        canceled = await stub.CancelTask(upscaling_pb2.CancelTaskRequest(task_id=world.bob_task),
                                         metadata=gw.md("ops"))
        assert canceled.task.id == world.bob_task


async def test_websocket_user_b_cannot_watch_user_a(world: World) -> None:
    gw = world.gw
    theirs = await ws_messages_until_close(gw.ws_url(f"/ws/upscale_tasks/{world.task}?interval=1"),
                                           headers=gw.headers("bob"))
    missing = await ws_messages_until_close(gw.ws_url(f"/ws/upscale_tasks/{MISSING}?interval=1"),
                                            headers=gw.headers("bob"))
    for (messages, code, reason), tid in ((theirs, world.task), (missing, MISSING)):
        assert code == 1011 and reason == "TASK_NOT_FOUND"
        assert messages == [{"type": "error", "data": None, "message": f"upscale task {tid} not found",
                             "task_id": tid}]


async def test_events_of_user_a_never_reach_user_b(world: World) -> None:
    gw, conn, exchange = world.gw, world.conn, world.exchange
    alice_task = await asyncio.to_thread(gw.create, "alice", 2)
    alice_jobs = [r["id"] for r in await conn.fetch("SELECT id FROM unit_jobs WHERE task_id = $1", alice_task)]
    bob_task = world.bob_task
    bob_job = await conn.fetchval("SELECT id FROM unit_jobs WHERE task_id = $1", bob_task)
    async with grpc.aio.insecure_channel(gw.grpc) as channel, \
            websockets.connect(gw.ws_url(f"/ws/upscale_tasks/{bob_task}?interval=0.1"),
                               additional_headers=gw.headers("bob")) as task_ws, \
            websockets.connect(gw.ws_url("/ws/jobs_status?interval=0.2"),
                               additional_headers=gw.headers("bob")) as status_ws:
        stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
        stream = stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=bob_task), metadata=gw.md("bob"), timeout=60)
        snapshot = await asyncio.wait_for(stream.read(), 10)
        assert snapshot.snapshot.id == bob_task
        for ws in (task_ws, status_ws):
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "init"
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "status"
        # Alice's jobs change first, then Bob's
        for job_id in alice_jobs:
            await change_job(conn, exchange, job_id, status="queued", backend_job_id=f"ev-{job_id}")
            await change_job(conn, exchange, job_id, status="running", progress=50.0)
        await change_job(conn, exchange, bob_job, status="queued", backend_job_id=f"ev-{bob_job}")
        event = await asyncio.wait_for(stream.read(), 10)
        assert event.WhichOneof("update") == "job_event" and event.job_event.task_id == bob_task
        assert event.job_event.job_id == bob_job
        update = json.loads(await asyncio.wait_for(task_ws.recv(), 10))
        assert update["task_id"] == bob_task and update["data"]["id"] == bob_task
        assert update["data"]["jobs"][0]["status"] == "queued"
        deadline = asyncio.get_running_loop().time() + 3
        while asyncio.get_running_loop().time() < deadline:
            try:
                message = json.loads(await asyncio.wait_for(status_ws.recv(), 1))
            except TimeoutError:
                continue
            ids = {t["id"] for t in message["data"]["upscaling_tasks"]}
            assert alice_task not in ids and world.task not in ids, message
        stream.cancel()


async def test_migration_0004_gives_every_existing_row_an_owner(infra: Any, tmp_path: Any) -> None:
    """Rows stored before owners mattered end up owned by 'anonymous' (tasks) or by their task's owner (jobs)."""
    for path in sorted(MIGRATIONS_DIR.glob("000[123]_*.sql")):
        shutil.copy(path, tmp_path / path.name)
    name = unique_name("upscaling_owner")
    await admin_sql(infra.admin_database_url, f'CREATE DATABASE "{name}"')
    try:
        conn = await db_connect(with_database(infra.admin_database_url, name))
        try:
            assert await apply_migrations(conn, tmp_path) == [1, 2, 3]
            task = await conn.fetchval("INSERT INTO upscale_tasks (title, label, service, dimension_name, owner)"
                                       " VALUES ('old', 'openeo', '{}', 'd', '') RETURNING id")
            await conn.execute("INSERT INTO upscale_tasks (title, label, service, dimension_name)"
                               " VALUES ('older', 'openeo', '{}', 'd')")
            await conn.execute("INSERT INTO unit_jobs (task_id, title, label, service, tag, owner)"
                               " VALUES ($1, 'j', 'openeo', '{}', 'uj-old', 'someone-else')", task)
            await conn.execute("INSERT INTO unit_jobs (task_id, title, label, service, tag, owner)"
                               " VALUES (NULL, 'u', 'openeo', '{}', 'uj-unit', '')")
            assert 4 in await apply_migrations(conn)
            assert {r["owner"] for r in await conn.fetch("SELECT owner FROM upscale_tasks")} == {"anonymous"}
            assert {r["owner"] for r in await conn.fetch("SELECT owner FROM unit_jobs")} == {"anonymous"}
            indexes = {r["indexname"] for r in await conn.fetch("SELECT indexname FROM pg_indexes")}
            assert {"upscale_tasks_owner_id_idx", "unit_jobs_owner_standalone_idx"} <= indexes
        finally:
            await conn.close()
    finally:
        await admin_sql(infra.admin_database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
