"""Costs, usage, max_costs and error logs through the real interfaces: a whole stack (gateway, dispatcher,
monitor) on a local openEO backend whose jobs report known costs, one job running at a time."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import requests
import websockets
from upscaling_client import Client

from tests.full_stack import FullStack, full_stack
from tests.support import tiles
from upscaling.v1 import common_pb2, upscaling_pb2, upscaling_pb2_grpc

JOB_COSTS = 4.0


@pytest.fixture(scope="module")
def cstack(infra: Any, service_env: dict[str, str], stack: Any,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullStack]:
    with full_stack(infra, service_env, stack.tiler_address, tmp_path_factory.mktemp("costs-stack"),
                    queue_seconds=0.1, run_seconds=0.3, max_running_jobs=1) as s:
        yield s


@pytest.fixture
def backend(cstack: FullStack) -> Iterator[FullStack]:
    cstack.backend.reset()
    cstack.backend.configure(queue_seconds=0.1, run_seconds=0.3, job_costs=JOB_COSTS)
    yield cstack


@pytest.fixture(scope="module")
def stub(cstack: FullStack) -> Iterator[upscaling_pb2_grpc.UpscalingServiceStub]:
    with grpc.insecure_channel(cstack.grpc) as channel:
        yield upscaling_pb2_grpc.UpscalingServiceStub(channel)


def create(s: FullStack, n: int, **extra: Any) -> requests.Response:
    body = {"title": "costs", "label": "openeo",
            "service": {"endpoint": s.backend.endpoint, "application": s.backend.application},
            "parameters": {"year": 2024}, "dimension": {"name": "spatial_extent", "values": tiles(n)}, **extra}
    return requests.post(f"{s.http}/upscale_tasks", json=body, timeout=60)


def wait_terminal(s: FullStack, task_id: int, limit_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while True:
        body = s.task(task_id)
        if body["status"] in ("finished", "failed", "canceled"):
            return body
        assert time.monotonic() < deadline, f"task {task_id} still {body['status']}\n{s.logs()}"
        time.sleep(0.2)


async def ws_final(s: FullStack, task_id: int) -> dict[str, Any]:
    """The task body of the WebSocket's terminal snapshot."""
    url = s.http.replace("http://", "ws://") + f"/ws/upscale_tasks/{task_id}?interval=1"
    async with websockets.connect(url) as ws:
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 90))
            if message["type"] == "status" and message["data"]["status"] in ("finished", "failed", "canceled"):
                return message["data"]


def test_costs_and_usage_per_job_summed_on_the_task(backend: FullStack,
                                                     stub: upscaling_pb2_grpc.UpscalingServiceStub) -> None:
    reply = create(backend, 3)
    assert reply.status_code == 201, reply.text
    task_id = reply.json()["id"]
    snapshot = asyncio.run(ws_final(backend, task_id))
    body = wait_terminal(backend, task_id)
    assert body["status"] == "finished" and body["costs"] == 3 * JOB_COSTS
    assert body["max_costs"] is None and body["stop_reason"] is None
    assert [j["costs"] for j in body["jobs"]] == [JOB_COSTS] * 3
    # the local backend reports cpu = 4 x run seconds (0.3 s), memory = 2048 MB per cpu-second
    assert body["usage"]["cpu"] == {"value": pytest.approx(3 * 1.2), "unit": "cpu-seconds"}
    assert body["usage"]["duration"] == {"value": pytest.approx(0.9), "unit": "seconds"}
    assert body["usage"]["memory"]["unit"] == "mb-seconds"
    # the WebSocket's terminal snapshot (fed by status events, not read from the database) carries the same
    assert snapshot["costs"] == body["costs"] and snapshot["usage"] == body["usage"]
    assert [j["costs"] for j in snapshot["jobs"]] == [JOB_COSTS] * 3
    job = requests.get(f"{backend.http}/unit_jobs/{body['jobs'][0]['id']}", timeout=10).json()
    assert job["costs"] == JOB_COSTS and job["usage"]["cpu"] == {"value": 1.2, "unit": "cpu-seconds"}
    listed = requests.get(f"{backend.http}/upscale_tasks", timeout=10).json()["tasks"]
    assert next(t for t in listed if t["id"] == task_id)["costs"] == 3 * JOB_COSTS
    task = stub.GetTask(upscaling_pb2.GetTaskRequest(task_id=task_id), timeout=10).task
    assert task.costs == 3 * JOB_COSTS and not task.HasField("max_costs") and task.stop_reason == ""
    assert task.usage["cpu"].value == pytest.approx(3.6) and task.usage["cpu"].unit == "cpu-seconds"
    assert [j.costs for j in task.jobs] == [JOB_COSTS] * 3 and all(j.HasField("costs") for j in task.jobs)
    assert task.jobs[0].usage["duration"].value == pytest.approx(0.3)
    # the gRPC watch's snapshot of the ended task too
    first = next(iter(stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id), timeout=30)))
    assert first.snapshot.costs == 3 * JOB_COSTS and first.snapshot.usage["cpu"].value == pytest.approx(3.6)


def test_costs_from_the_job_itself_when_the_listing_lacks_them(backend: FullStack) -> None:
    backend.backend.configure(costs_in_listing=False)
    task_id = create(backend, 1).json()["id"]
    body = wait_terminal(backend, task_id)
    assert body["status"] == "finished" and body["costs"] == JOB_COSTS and body["jobs"][0]["costs"] == JOB_COSTS
    listed = backend.backend.client().get("/jobs").json()["jobs"]
    assert listed and all("costs" not in j and "usage" not in j for j in listed)
    assert backend.backend.report()["requests"].get("get_job", 0) >= 1  # the monitor asked the ended job itself


def test_max_costs_stops_new_submissions(backend: FullStack, stub: upscaling_pb2_grpc.UpscalingServiceStub) -> None:
    # one job runs at a time: the first two jobs spend 8, the limit; the other four never reach the backend
    reply = create(backend, 6, max_costs=8)
    assert reply.status_code == 201, reply.text
    task_id = reply.json()["id"]
    body = wait_terminal(backend, task_id)
    assert body["status"] == "finished", body
    assert body["max_costs"] == 8 and body["costs"] == 8
    assert body["stop_reason"] == "max_costs 8 reached (spent 8)"
    statuses = sorted(j["status"] for j in body["jobs"])
    assert statuses == ["canceled"] * 4 + ["finished"] * 2, statuses
    stopped = [j for j in body["jobs"] if j["status"] == "canceled"]
    assert {j["message"] for j in stopped} == {"max_costs 8 reached (spent 8)"}
    assert all(requests.get(f"{backend.http}/unit_jobs/{j['id']}", timeout=10).json()["backend_job_id"] is None
               for j in stopped)
    backend_jobs = backend.backend.jobs()
    assert len(backend_jobs) == 2 and backend.backend.report()["totals"]["created"] == 2
    task = stub.GetTask(upscaling_pb2.GetTaskRequest(task_id=task_id), timeout=10).task
    assert task.max_costs == 8 and task.costs == 8 and task.stop_reason == body["stop_reason"]
    # over gRPC as well: a limit below one job's costs lets one job run
    created = stub.CreateTask(upscaling_pb2.CreateTaskRequest(
        title="costs grpc", label="openeo",
        service=common_pb2.ServiceRef(endpoint=backend.backend.endpoint, application=backend.backend.application),
        parameters_json=json.dumps({"year": 2024}), max_costs=1.5,
        dimension=upscaling_pb2.Dimension(name="spatial_extent", values_json=[json.dumps(t) for t in tiles(3)])),
        timeout=60).task
    assert created.max_costs == 1.5
    ended = wait_terminal(backend, created.id)
    assert sorted(j["status"] for j in ended["jobs"]) == ["canceled", "canceled", "finished"]
    assert ended["stop_reason"] == "max_costs 1.5 reached (spent 4)" and ended["costs"] == JOB_COSTS
    assert backend.backend.report()["totals"]["created"] == 3
    # and through the Python client
    with Client(backend.grpc) as client:
        task_c = client.submit(backend.backend.application, backend=backend.backend.endpoint, tiles=tiles(2),
                               parameters={"year": 2024}, max_costs=2)
        assert task_c.info.max_costs == 2
        info = wait_terminal(backend, task_c.id) and task_c.refresh()
        assert info.costs == JOB_COSTS and info.stop_reason == "max_costs 2 reached (spent 4)"
        assert sorted(j.costs for j in info.jobs if j.costs is not None) == [JOB_COSTS]
        assert info.usage["cpu"]["unit"] == "cpu-seconds"


@pytest.mark.parametrize("value", [0, -1, "10", True, None])
def test_max_costs_is_validated(backend: FullStack, value: Any) -> None:
    if value is None:  # an infinite number (1e999 in the JSON text)
        body = {"title": "costs", "label": "openeo", "max_costs": 1,
                "service": {"endpoint": backend.backend.endpoint, "application": backend.backend.application},
                "parameters": {"year": 2024}, "dimension": {"name": "spatial_extent", "values": tiles(1)}}
        reply = requests.post(f"{backend.http}/upscale_tasks", timeout=60, headers={"Content-Type": "application/json"},
                              data=json.dumps(body).replace('"max_costs": 1', '"max_costs": 1e999'))
    else:
        reply = create(backend, 1, max_costs=value)
    assert reply.status_code == 422 and reply.json()["error_code"] == "VALIDATION_ERROR", reply.text
    assert "max_costs" in reply.text


def test_max_costs_is_validated_over_grpc(backend: FullStack, stub: upscaling_pb2_grpc.UpscalingServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateTask(upscaling_pb2.CreateTaskRequest(
            title="t", label="openeo", max_costs=0,
            service=common_pb2.ServiceRef(endpoint=backend.backend.endpoint, application=backend.backend.application),
            dimension=upscaling_pb2.Dimension(name="spatial_extent", values_json=[json.dumps(tiles(1)[0])])),
            timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_costs" in (err.value.details() or "")


def test_error_logs_fetched_once_per_failure_and_returned(backend: FullStack,
                                                          stub: upscaling_pb2_grpc.UpscalingServiceStub) -> None:
    backend.backend.configure(job_error_fraction=1.0)
    reply = create(backend, 1, max_attempts=2)
    task_id = reply.json()["id"]
    body = wait_terminal(backend, task_id)
    job = body["jobs"][0]
    assert body["status"] == "failed" and job["message"].startswith("Simulated processing failure")
    # each attempt failed once: its error entries were fetched once, and both failures cost what was reported
    assert backend.backend.report()["requests"].get("get_logs") == 2
    assert body["costs"] == 2 * JOB_COSTS and job["costs"] == JOB_COSTS
    logs = requests.get(f"{backend.http}/unit_jobs/{job['id']}/logs", timeout=10)
    assert logs.status_code == 200, logs.text
    entries = logs.json()["logs"]
    assert logs.json()["id"] == job["id"] and [e["attempt"] for e in entries] == [1, 2]
    assert all(e["level"] == "error" and e["code"] == "JobFailed" and e["message"].startswith("Simulated processing")
               for e in entries)
    assert len({e["backend_job_id"] for e in entries}) == 2 and all(e["time"] for e in entries)
    reply_logs = stub.GetJobLogs(upscaling_pb2.GetJobLogsRequest(job_id=job["id"]), timeout=10)
    assert [(e.backend_job_id, e.attempt, e.message, e.code) for e in reply_logs.logs] == [
        (e["backend_job_id"], e["attempt"], e["message"], e["code"]) for e in entries]
    with Client(backend.grpc) as client:  # the Python client's view
        assert client.job_logs(job["id"]) == entries
    # a finished job has no error logs
    backend.backend.configure(job_error_fraction=0.0)
    ok = wait_terminal(backend, create(backend, 1).json()["id"])
    assert requests.get(f"{backend.http}/unit_jobs/{ok['jobs'][0]['id']}/logs", timeout=10).json()["logs"] == []


def test_logs_of_an_unknown_job(backend: FullStack, stub: upscaling_pb2_grpc.UpscalingServiceStub) -> None:
    reply = requests.get(f"{backend.http}/unit_jobs/987654321/logs", timeout=10)
    assert reply.status_code == 404 and reply.json()["error_code"] == "JOB_NOT_FOUND"
    with pytest.raises(grpc.RpcError) as err:
        stub.GetJobLogs(upscaling_pb2.GetJobLogsRequest(job_id=987654321), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
