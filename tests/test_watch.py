"""Watching tasks: gRPC WatchTask (snapshot, live events in order, resume after N, end at terminal) and the
APEx WebSocket (init, snapshot, prompt changes despite interval, final snapshot, errors)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
import websockets

from tests import tasks_support
from tests.tasks_support import Gateway, change_job, create
from upscaling import jobs as jobstore
from upscaling.v1 import common_pb2, upscaling_pb2, upscaling_pb2_grpc

# fixtures of the support module
tasks_gateway = tasks_support.tasks_gateway
tdb = tasks_support.tdb
events_exchange = tasks_support.events_exchange


async def job_ids(conn: Any, task_id: int) -> list[int]:
    return [r["id"] for r in await conn.fetch("SELECT id FROM unit_jobs WHERE task_id = $1 ORDER BY seq", task_id)]


async def next_item(stream: Any, limit_s: float = 10.0) -> upscaling_pb2.WatchTaskResponse:
    return await asyncio.wait_for(stream.read(), limit_s)


async def test_watch_task_snapshot_events_resume_and_end(tasks_gateway: Gateway, tdb, events_exchange) -> None:
    gw = tasks_gateway
    task_id = create(gw, 2)
    jobs = await job_ids(tdb, task_id)
    async with grpc.aio.insecure_channel(gw.grpc) as channel:
        stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
        stream = stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id), timeout=60)
        first = await next_item(stream)
        assert first.WhichOneof("update") == "snapshot" and first.sequence == 0
        assert first.snapshot.id == task_id and len(first.snapshot.jobs) == 2

        await change_job(tdb, events_exchange, jobs[0], status="queued", backend_job_id="b-1")   # job 1, task 2
        await change_job(tdb, events_exchange, jobs[0], status="running", progress=10.0)         # job 3, task 4
        await change_job(tdb, events_exchange, jobs[1], status="queued", backend_job_id="b-2")   # job 5
        received = [await next_item(stream) for _ in range(5)]
        assert [r.sequence for r in received] == [1, 2, 3, 4, 5]
        kinds = [r.WhichOneof("update") for r in received]
        assert kinds == ["job_event", "task_event", "job_event", "task_event", "job_event"]
        assert received[0].job_event.status == common_pb2.JOB_STATUS_QUEUED
        assert received[1].task_event.status == common_pb2.TASK_STATUS_QUEUED
        assert received[3].task_event.status == common_pb2.TASK_STATUS_RUNNING
        assert received[2].job_event.progress == 10.0

        # a second watcher resuming after sequence 2 gets exactly 3, 4, 5, then the live ones
        resumed = stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id, after_sequence=2), timeout=60)
        assert [(await next_item(resumed)).sequence for _ in range(3)] == [3, 4, 5]

        await change_job(tdb, events_exchange, jobs[0], status="finished")   # job 6, task 7 (queued)
        await change_job(tdb, events_exchange, jobs[1], status="failed", message="boom")  # job 8, task 9: finished
        for watcher in (stream, resumed):
            tail = [await next_item(watcher) for _ in range(4)]
            assert [t.sequence for t in tail] == [6, 7, 8, 9]
            assert tail[1].task_event.status == common_pb2.TASK_STATUS_QUEUED
            assert tail[2].job_event.message == "boom"
            assert tail[3].task_event.status == common_pb2.TASK_STATUS_FINISHED
            assert tail[3].task_event.job_counts == {"finished": 1, "failed": 1}
            assert await asyncio.wait_for(watcher.read(), 10) == grpc.aio.EOF

        # resuming a terminal task after its last event ends at once; after N replays N+1.. and ends
        done = stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id, after_sequence=9), timeout=30)
        assert await asyncio.wait_for(done.read(), 10) == grpc.aio.EOF
        replay = stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id, after_sequence=5), timeout=30)
        assert [r.sequence async for r in replay] == [6, 7, 8, 9]
        snap = stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id), timeout=30)
        items = [r async for r in snap]
        assert len(items) == 1 and items[0].sequence == 9
        assert items[0].snapshot.status == common_pb2.TASK_STATUS_FINISHED


async def test_watch_fills_gaps_from_the_database(tasks_gateway: Gateway, tdb, events_exchange) -> None:
    gw = tasks_gateway
    task_id = create(gw, 2)
    jobs = await job_ids(tdb, task_id)
    async with grpc.aio.insecure_channel(gw.grpc) as channel:
        stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
        stream = stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id), timeout=60)
        assert (await next_item(stream)).sequence == 0
        # a change stored but never published (a lost publish), then a published one: the gap is filled
        async with tdb.transaction():
            await jobstore.update_job(tdb, jobs[0], status="queued", backend_job_id="g-1")
        await change_job(tdb, events_exchange, jobs[1], status="canceled")
        got = [(await next_item(stream)).sequence for _ in range(3)]  # job 1, task 2 (unpublished), job 3
        assert got == [1, 2, 3]


async def test_websocket_snapshots_on_events(tasks_gateway: Gateway, tdb, events_exchange) -> None:
    gw = tasks_gateway
    task_id = create(gw, 2)
    jobs = await job_ids(tdb, task_id)
    url = gw.http.replace("http://", "ws://") + f"/ws/upscale_tasks/{task_id}?interval=15"
    async with websockets.connect(url) as ws:
        init = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert init["type"] == "init" and init["task_id"] == task_id and set(init) == {"type", "data", "message",
                                                                                       "task_id"}
        snapshot = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert snapshot["type"] == "status" and snapshot["data"]["status"] == "created"
        assert snapshot["data"]["jobs"][0]["parameters"]["spatial_extent"]["type"] == "Polygon"
        assert snapshot["data"]["job_counts"]["created"] == 2

        start = time.monotonic()
        await change_job(tdb, events_exchange, jobs[0], status="running", backend_job_id="w-1")
        changed = json.loads(await asyncio.wait_for(ws.recv(), 15))
        assert time.monotonic() - start < 14  # prompt: throttled by interval, not delayed by it at first
        assert changed["type"] == "status" and changed["data"]["status"] == "running"

        # within the 15 s window further changes wait, but the terminal one is sent at once
        await change_job(tdb, events_exchange, jobs[0], progress=50.0)
        try:
            early = await asyncio.wait_for(ws.recv(), 1.0)
            raise AssertionError(f"throttled change sent early: {early[:200]}")
        except TimeoutError:
            pass
        start = time.monotonic()
        await change_job(tdb, events_exchange, jobs[0], status="finished")
        await change_job(tdb, events_exchange, jobs[1], status="failed")
        final = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert time.monotonic() - start < 5
        assert final["data"]["status"] == "finished"
        assert final["data"]["job_counts"]["finished"] == 1 and final["data"]["job_counts"]["failed"] == 1
        assert [j["status"] for j in final["data"]["jobs"]] == ["finished", "failed"]
        try:
            await asyncio.wait_for(ws.recv(), 5)
            raise AssertionError("the socket should close after the terminal snapshot")
        except websockets.ConnectionClosedOK:
            pass


async def test_websocket_seed_notebook_loop(tasks_gateway: Gateway, tdb, events_exchange) -> None:
    gw = tasks_gateway
    upscaling_task_id = create(gw, 2)
    jobs = await job_ids(tdb, upscaling_task_id)
    dispatch_api = gw.http.removeprefix("http://")
    printed: list[str] = []
    seen_extents: list[Any] = []

    async def listen_for_updates() -> None:  # the notebook's loop (map drawing and results replaced)
        ws_url = f"ws://{dispatch_api}/ws/upscale_tasks/{upscaling_task_id}?interval=15"
        async with websockets.connect(ws_url) as websocket:
            while True:
                message = await websocket.recv()
                message = json.loads(message)
                if message.get("data"):
                    for job in message["data"]["jobs"]:
                        if job["status"] != "finished":
                            seen_extents.append(job["parameters"]["spatial_extent"])
                    if message["data"]["status"] in ["finished", "canceled", "failed"]:
                        printed.append(f"Job finished with status {message['data']['status']}")
                        break

    listener = asyncio.create_task(listen_for_updates())
    await asyncio.sleep(0.5)
    for job_id in jobs:
        await change_job(tdb, events_exchange, job_id, status="queued", backend_job_id=f"n-{job_id}")
    for job_id in jobs:
        await change_job(tdb, events_exchange, job_id, status="finished")
    await asyncio.wait_for(listener, 20)
    assert printed == ["Job finished with status finished"]
    assert seen_extents and all(e["type"] == "Polygon" for e in seen_extents)


async def test_websocket_errors(tasks_gateway: Gateway) -> None:
    base = tasks_gateway.http.replace("http://", "ws://")
    for path, code in (("/ws/upscale_tasks/987654321?interval=5", "TASK_NOT_FOUND"),
                       ("/ws/upscale_tasks/1?interval=-1", "VALIDATION_ERROR"),
                       ("/ws/upscale_tasks/1?interval=abc", "VALIDATION_ERROR")):
        async with websockets.connect(base + path) as ws:
            error = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert error["type"] == "error" and error["message"]
            try:
                await asyncio.wait_for(ws.recv(), 10)
                raise AssertionError("expected a close")
            except websockets.ConnectionClosedError as exc:
                assert exc.rcvd is not None and exc.rcvd.code == 1011 and exc.rcvd.reason == code


async def test_websocket_jobs_status(tasks_gateway: Gateway) -> None:
    base = tasks_gateway.http.replace("http://", "ws://")
    async with websockets.connect(base + "/ws/jobs_status?interval=1&filter=upscaling") as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "init"
        status = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert status["type"] == "status" and set(status["data"]) == {"upscaling_tasks"}
        task_id = create(tasks_gateway, 1)
        update = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert task_id in {t["id"] for t in update["data"]["upscaling_tasks"]}
