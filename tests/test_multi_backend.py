"""Several backends per task, end to end: gateway -> outbox -> queue -> two dispatcher replicas -> two (three) real
local openEO backends -> monitor, driven over HTTP and gRPC. Jobs are spread by free capacity (each backend's
running-job limit checked on the backend itself), a backend that starts answering 5xx to everything mid-task is
drained and the remaining jobs finish on the other, a stopped backend gets nothing, a job whose create may have
reached one backend is looked for there, groups work, bad lists are refused, and every job exists exactly once
over all backends (its tag on exactly one of them)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import requests
import websockets

from tests.full_stack import services
from tests.support import EXTENT, POLYGON, LocalOpenEO, db_connect, tiles
from upscaling import jobs as jobstore
from upscaling.v1 import common_pb2, upscaling_pb2, upscaling_pb2_grpc

pytestmark = pytest.mark.timeout(240)

LIMIT = 2  # max_running_jobs of each backend, and each local backend's own max_concurrent
AUTH = {"method": "basic", "username": "demo", "password": "demo"}


@dataclass
class Stack:
    http: str
    stub: upscaling_pb2_grpc.UpscalingServiceStub
    a: LocalOpenEO
    b: LocalOpenEO
    c: LocalOpenEO  # stopped by the test that needs a backend that is down
    db_url: str


@pytest.fixture(scope="module")
def stack(infra: Any, service_env: dict[str, str], stack: Any, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    tiler_address = stack.tiler_address  # the session's stack (this fixture overrides its name)
    logs = tmp_path_factory.mktemp("multi_backend")
    a, b, c = (LocalOpenEO("--queue-seconds", "0.1", "--run-seconds", "1.0") for _ in range(3))
    for backend in (a, b, c):
        backend.configure(max_concurrent=LIMIT)  # the backend refuses a start over the limit: a breach would show
    backends = [{"endpoint": x.endpoint, "auth": AUTH, "max_running_jobs": LIMIT, "groups": groups}
                for x, groups in ((a, ["eu", "all"]), (b, ["eu", "all"]), (c, ["all"]))]
    env = {"OPENEO_BACKENDS": json.dumps(backends), "UDP_ALLOWED_URLS": a.udp_catalogue, "DB_POOL_MAX": "10",
           "OPENEO_TIMEOUT_S": "3", "SUBMIT_BACKOFF_BASE_S": "0.05", "SUBMIT_BACKOFF_MAX_S": "0.5",
           "GRPC_GRACE_S": "5", "BACKEND_HEALTH_INTERVAL_S": "0.5", "BACKEND_DRAIN_FAILURES": "3",
           "BACKEND_DRAIN_COOLDOWN_S": "1"}
    try:
        # Two dispatcher replicas: the running-job limits must hold across them.
        with services(infra, service_env, tiler_address, logs, env, name="multi",
                      dispatchers=2) as running, grpc.insecure_channel(running.grpc) as channel:
            yield Stack(running.http, upscaling_pb2_grpc.UpscalingServiceStub(channel), a, b, c, running.database_url)
    finally:
        for backend in (a, b, c):
            backend.stop()


def body(s: Stack, endpoint: Any, n: int) -> dict[str, Any]:
    return {"title": "multi", "label": "openeo", "service": {"endpoint": endpoint, "application": s.a.application},
            "parameters": {"year": 2024}, "dimension": {"name": "spatial_extent", "values": tiles(n)}}


def create(s: Stack, endpoint: Any, n: int) -> int:
    reply = requests.post(f"{s.http}/upscale_tasks", json=body(s, endpoint, n), timeout=30)
    assert reply.status_code == 201, reply.text
    return int(reply.json()["id"])


def task(s: Stack, task_id: int) -> dict[str, Any]:
    reply = requests.get(f"{s.http}/upscale_tasks/{task_id}", timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.json()


def wait_for(check: Callable[[], Any], limit_s: float, what: str) -> Any:
    deadline = time.monotonic() + limit_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s}s waiting for {what}")
        time.sleep(0.2)


def jobs_of(s: Stack, task_id: int) -> list[dict[str, Any]]:
    """The task's jobs with their tags and backends (from the database: the tag is not public)."""
    async def read() -> list[dict[str, Any]]:
        conn = await db_connect(s.db_url)
        try:
            rows = await conn.fetch("SELECT id, status, tag, backend, backend_job_id FROM unit_jobs"
                                    " WHERE task_id = $1 ORDER BY id", task_id)
            return [dict(r) for r in rows]
        finally:
            await conn.close()
    return asyncio.run(read())


def ws_snapshot(s: Stack, task_id: int) -> dict[str, Any]:
    """The first `status` snapshot of the task's WebSocket."""
    async def read() -> dict[str, Any]:
        url = s.http.replace("http://", "ws://") + f"/ws/upscale_tasks/{task_id}"
        async with websockets.connect(url) as ws:
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if message["type"] == "status":
                    return dict(message["data"])
    return asyncio.run(read())


def assert_each_job_once(jobs: list[dict[str, Any]], *backends: LocalOpenEO) -> None:
    """Every job's tag is on exactly one backend — the one the job records — and no backend repeats a tag."""
    reports = {x.endpoint: x.report() for x in backends}
    for report in reports.values():
        assert report["duplicates"]["tags"] == {}, report["duplicates"]
    for job in jobs:
        holders = [e for e, r in reports.items() if r["tags"].get(job["tag"], 0)]
        assert holders == [job["backend"]], (job, holders)


def assert_limit_held(backend: LocalOpenEO) -> None:
    """The backend never had more than LIMIT jobs active, and never refused a start over its limit."""
    user = backend.report()["users"].get("demo", {})
    assert user.get("max_active", 0) <= LIMIT, user
    assert not user.get("rejections"), user


def test_spread_by_capacity_then_one_backend_fails_mid_task(stack: Stack) -> None:
    s = stack
    n = 16
    task_id = create(s, [s.a.endpoint, s.b.endpoint], n)
    # Both backends take jobs while the task runs.
    wait_for(lambda: {j["backend"] for j in jobs_of(s, task_id) if j["backend_job_id"]} == {s.a.endpoint, s.b.endpoint}
             and sum(j["status"] == "finished" for j in jobs_of(s, task_id)) >= 3, 60, "jobs on both backends")

    # B starts answering 503 to everything (the admin API still answers).
    s.b.configure(faults={"*": {"503": 1.0}})
    b_jobs_at_fault = len(s.b.jobs())
    finished_on_a_at_fault = sum(j["status"] == "finished" and j["backend"] == s.a.endpoint
                                 for j in jobs_of(s, task_id))

    def rest_done_elsewhere() -> bool:
        jobs = jobs_of(s, task_id)
        return all(j["status"] == "finished" or j["backend"] == s.b.endpoint for j in jobs)

    # Every job that is not held by B (running there, or possibly created there) finishes on A while B fails.
    wait_for(rest_done_elsewhere, 120, "the remaining jobs to finish on the healthy backend")
    jobs = jobs_of(s, task_id)
    assert sum(j["status"] == "finished" and j["backend"] == s.a.endpoint for j in jobs) > finished_on_a_at_fault
    assert len(s.b.jobs()) == b_jobs_at_fault  # nothing was created on the failing backend
    assert s.b.report()["faults"], "the fault was injected"

    # B recovers: the jobs it holds finish; nothing is lost or duplicated.
    s.b.configure(faults={})
    final = wait_for(lambda: (t := task(s, task_id))["status"] == "finished" and t, 120, "the task to finish")
    assert final["job_counts"]["finished"] == n
    jobs = jobs_of(s, task_id)
    assert_each_job_once(jobs, s.a, s.b)
    used = Counter(j["backend"] for j in jobs)
    assert set(used) == {s.a.endpoint, s.b.endpoint} and used[s.a.endpoint] > used[s.b.endpoint], used
    for backend in (s.a, s.b):
        assert_limit_held(backend)

    # Where each job ran: HTTP task body and job JSON, gRPC Task/UnitJob; the service as the client sent it.
    assert final["service"]["endpoint"] == [s.a.endpoint, s.b.endpoint]
    by_id = {j["id"]: j["backend"] for j in jobs}
    assert {j["id"]: j["backend"] for j in final["jobs"]} == by_id
    one = requests.get(f"{s.http}/unit_jobs/{jobs[0]['id']}", timeout=10).json()
    assert one["backend"] == by_id[jobs[0]["id"]]
    reply = s.stub.GetTask(upscaling_pb2.GetTaskRequest(task_id=task_id), timeout=10)
    assert {j.id: j.backend for j in reply.task.jobs} == by_id
    assert list(reply.task.service.endpoints) == [s.a.endpoint, s.b.endpoint] and reply.task.service.endpoint == ""
    items = requests.get(f"{s.http}/upscale_tasks/{task_id}/results/items", timeout=10).json()["features"]
    assert {i["properties"]["upscaling:job_id"]: i["properties"]["upscaling:backend"] for i in items} == by_id


def test_group_name_over_grpc_and_websocket_backends(stack: Stack) -> None:
    s = stack
    reply = s.stub.CreateTask(upscaling_pb2.CreateTaskRequest(
        title="group", label="openeo", service=common_pb2.ServiceRef(endpoint="eu", application=s.a.application),
        parameters_json=json.dumps({"year": 2024}),
        dimension=upscaling_pb2.Dimension(name="spatial_extent", values_json=[json.dumps(t) for t in tiles(6)])),
        timeout=60)
    task_id = reply.task.id
    events = list(s.stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id), timeout=120))
    assert events[-1].task_event.status == common_pb2.TASK_STATUS_FINISHED
    queued = {e.job_event.job_id: e.job_event.backend for e in events
              if e.WhichOneof("update") == "job_event" and e.job_event.status == common_pb2.JOB_STATUS_QUEUED}
    jobs = jobs_of(s, task_id)
    assert queued == {j["id"]: j["backend"] for j in jobs}  # the events say where each job went
    assert {j["backend"] for j in jobs} == {s.a.endpoint, s.b.endpoint}  # ties spread over the group
    assert task(s, task_id)["service"]["endpoint"] == "eu"
    snapshot = ws_snapshot(s, task_id)
    assert {j["id"]: j["backend"] for j in snapshot["jobs"]} == queued
    assert_each_job_once(jobs, s.a, s.b)
    for backend in (s.a, s.b):
        assert_limit_held(backend)


def test_a_backend_failing_from_the_start_is_drained(stack: Stack) -> None:
    """B answers 503 to everything while it has free capacity: the jobs that tried it wait for it (a create may
    have reached it), every other job goes to A — none fails, none is duplicated."""
    s = stack
    s.b.configure(faults={"*": {"503": 1.0}})
    b_jobs = len(s.b.jobs())
    task_id = create(s, [s.b.endpoint, s.a.endpoint], 8)

    def rest_done_elsewhere() -> bool:
        jobs = jobs_of(s, task_id)
        return all(j["status"] == "finished" or j["backend"] == s.b.endpoint for j in jobs)

    wait_for(rest_done_elsewhere, 120, "the jobs to finish on the healthy backend")
    jobs = jobs_of(s, task_id)
    held = [j for j in jobs if j["status"] != "finished"]
    assert all(j["status"] == "created" for j in held), held  # waiting for B, not failed
    assert len(held) <= LIMIT and sum(j["status"] == "finished" for j in jobs) >= 8 - LIMIT
    assert len(s.b.jobs()) == b_jobs
    s.b.configure(faults={})
    final = wait_for(lambda: (t := task(s, task_id))["status"] == "finished" and t, 120, "the task to finish")
    assert final["job_counts"]["finished"] == 8
    assert_each_job_once(jobs_of(s, task_id), s.a, s.b)
    for backend in (s.a, s.b):
        assert_limit_held(backend)


def test_a_stopped_backend_gets_nothing(stack: Stack) -> None:
    s = stack
    s.c.stop()  # connection refused from now on
    task_id = create(s, [s.c.endpoint, s.a.endpoint], 5)
    final = wait_for(lambda: (t := task(s, task_id))["status"] == "finished" and t, 120, "the task to finish")
    assert final["job_counts"]["finished"] == 5
    jobs = jobs_of(s, task_id)
    assert {j["backend"] for j in jobs} == {s.a.endpoint}
    assert_each_job_once(jobs, s.a)


def test_a_job_that_may_exist_on_a_backend_is_looked_for_there(stack: Stack) -> None:
    """An earlier try leased the job on B and its create reached B but the answer was lost (the backend job carries
    the tag); the lease expired. Although A ranks first, the job is looked for on B by its tag and adopted there:
    it is never created on A."""
    s = stack
    tag = f"uj-{uuid.uuid4()}"
    backend_job_id = s.b.create_started_job(tag)
    job_id = lost_create(s, tag)
    task_id = asyncio.run(_task_of(s, job_id))
    job = wait_for(lambda: next((j for j in jobs_of(s, task_id) if j["backend_job_id"]), None), 60,
                   "the job to be adopted")
    assert job["backend_job_id"] == backend_job_id and job["backend"] == s.b.endpoint
    assert s.a.report()["tags"].get(tag) is None
    assert s.b.report()["tags"].get(tag) == 1


def test_a_job_waiting_for_a_drained_backend_can_be_canceled(stack: Stack) -> None:
    """The job may exist on B (an earlier create's answer was lost) and B answers 503 to everything: the job waits
    for B and is never created on A; cancelling the task ends it."""
    s = stack
    s.b.configure(faults={"*": {"503": 1.0}})
    try:
        tag = f"uj-{uuid.uuid4()}"
        job_id = lost_create(s, tag)
        task_id = asyncio.run(_task_of(s, job_id))
        wait_for(lambda: s.b.report()["faults"].get("list_jobs"), 30, "the tag search on B")
        assert jobs_of(s, task_id)[0]["status"] == "created"
        reply = requests.post(f"{s.http}/upscale_tasks/{task_id}/cancel", timeout=10)
        assert reply.status_code in (200, 202, 204), reply.text
        final = wait_for(lambda: (t := task(s, task_id))["status"] == "canceled" and t, 60, "the task to be canceled")
        assert final["jobs"][0]["status"] == "canceled" and "did not answer" in final["jobs"][0]["message"]
        assert s.a.report()["tags"].get(tag) is None and s.b.report()["tags"].get(tag) is None
    finally:
        s.b.configure(faults={})


def lost_create(s: Stack, tag: str) -> int:
    """A one-job task over [A, B] whose job an earlier try leased on B, the lease long expired, with A ranking
    first for it; its job message is queued through the outbox. Returns the job id."""

    async def insert() -> int:
        conn = await db_connect(s.db_url)
        try:
            service = {"endpoint": [s.a.endpoint, s.b.endpoint], "application": s.a.application}
            task_id = await conn.fetchval(
                "INSERT INTO upscale_tasks (title, label, service, parameters, dimension_name, process_id, job_count,"
                " job_counts) VALUES ('lost create', 'openeo', $1, '{}', 'spatial_extent', 'wind_turbine_detection',"
                " 1, '{\"created\": 1}') RETURNING id", service)
            job_id = await conn.fetchval(
                "INSERT INTO unit_jobs (task_id, seq, title, label, service, parameters, format, tag, process_id,"
                " submit_arguments, backend, submitted_at, attempts) VALUES ($1, 1, 'lost create', 'openeo', $2, $3,"
                " 'gtiff', $4, 'wind_turbine_detection', $5, $6, now() - interval '1 hour', 1) RETURNING id",
                task_id, service, {"spatial_extent": POLYGON, "year": "2024"}, tag,
                {"spatial_extent": EXTENT, "year": "2024"}, s.b.endpoint)
            # A ranks first for this job (equal capacity; equal backends take turns by job id).
            order = [s.a.endpoint, s.b.endpoint] if job_id % 2 == 0 else [s.b.endpoint, s.a.endpoint]
            await conn.execute("UPDATE unit_jobs SET candidates = $2 WHERE id = $1", job_id, order)
            async with conn.transaction():
                row = await conn.fetchrow("SELECT * FROM unit_jobs WHERE id = $1", job_id)
                await jobstore.submit_new(conn, [row], None)
            return int(job_id)
        finally:
            await conn.close()

    return asyncio.run(insert())


async def _task_of(s: Stack, job_id: int) -> int:
    conn = await db_connect(s.db_url)
    try:
        return int(await conn.fetchval("SELECT task_id FROM unit_jobs WHERE id = $1", job_id))
    finally:
        await conn.close()


def test_a_standalone_job_over_a_group(stack: Stack) -> None:
    s = stack
    reply = requests.post(f"{s.http}/unit_jobs", timeout=30, json={
        "title": "standalone", "label": "openeo", "service": {"endpoint": "eu", "application": s.a.application},
        "parameters": {"year": 2024, "spatial_extent": tiles(1)[0]}})
    assert reply.status_code == 201, reply.text
    job_id = reply.json()["id"]

    def finished() -> dict[str, Any] | None:
        job = requests.get(f"{s.http}/unit_jobs/{job_id}", timeout=10).json()
        return job if job["status"] == "finished" else None

    job = wait_for(finished, 60, "the job to finish")
    assert job["backend"] in (s.a.endpoint, s.b.endpoint) and job["service"]["endpoint"] == "eu"
    holder = s.a if job["backend"] == s.a.endpoint else s.b
    assert job["backend_job_id"] in holder.jobs()


@pytest.mark.parametrize(("endpoint", "message"), [
    ([], "service.endpoint"),
    (["https://nowhere.example/openeo/1.2"], "is not a configured backend or group"),
    ("asia", "is not a configured backend or group"),
    ("__A__ __A__", "a second time"),
    ("eu __B__", "a second time"),
    ([""], "must be a non-empty string"),
])
def test_bad_lists_are_refused(stack: Stack, endpoint: Any, message: str) -> None:
    s = stack
    if isinstance(endpoint, str) and "__" in endpoint:
        names = {"__A__": s.a.endpoint, "__B__": s.b.endpoint}
        endpoint = [names.get(part, part) for part in endpoint.split()]
    reply = requests.post(f"{s.http}/upscale_tasks", json=body(s, endpoint, 1), timeout=30)
    assert reply.status_code == 422, reply.text
    assert message in reply.json()["message"], reply.json()


def test_grpc_endpoint_and_endpoints_together_are_refused(stack: Stack) -> None:
    s = stack
    with pytest.raises(grpc.RpcError) as caught:
        s.stub.CreateTask(upscaling_pb2.CreateTaskRequest(
            title="both", label="openeo",
            service=common_pb2.ServiceRef(endpoint=s.a.endpoint, endpoints=[s.b.endpoint], application=s.a.application),
            parameters_json=json.dumps({"year": 2024}),
            dimension=upscaling_pb2.Dimension(name="spatial_extent", values_json=[json.dumps(tiles(1)[0])])),
            timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not both" in (caught.value.details() or "")
