"""The whole pipeline end to end: gateway -> outbox -> queue -> dispatchers -> local openEO -> monitor -> events,
driven through gRPC and HTTP. Two local openEO backends: `fast` (generous limit) and `tight` (running-job
limit 2, and faults switched on per test)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.infra import ServiceProcess, free_port, unique_name, wait_grpc_serving, with_database
from tests.support import LocalOpenEO, admin_sql, drop_private_resources, tiles
from upscaling.migrations import migrate
from upscaling.statuses import task_status_from_proto
from upscaling.v1 import common_pb2, upscaling_pb2, upscaling_pb2_grpc

TIGHT_LIMIT = 2


@dataclass
class Pipeline:
    http: str
    stub: upscaling_pb2_grpc.UpscalingServiceStub
    fast: LocalOpenEO
    tight: LocalOpenEO
    env: dict[str, str]
    dispatchers: list[ServiceProcess]
    logs: Any

    def start_dispatcher(self, name: str) -> ServiceProcess:
        port = free_port()
        proc = ServiceProcess(name, "services.dispatcher", {**self.env, "DISPATCHER_HEALTH_PORT": str(port)},
                              self.logs / f"{name}.log")
        proc.start()
        wait_grpc_serving(f"127.0.0.1:{port}", proc)
        proc.ports["health"] = port
        self.dispatchers.append(proc)
        return proc


@pytest.fixture(scope="module")
def pipeline(infra, service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    logs = tmp_path_factory.mktemp("pipeline")
    fast = LocalOpenEO("--queue-seconds", "0.1", "--run-seconds", "0.3")
    tight = LocalOpenEO("--queue-seconds", "0.1", "--run-seconds", "0.3")
    db_name = unique_name("upscaling_e2e")
    asyncio.run(admin_sql(infra.admin_database_url, f'CREATE DATABASE "{db_name}"'))
    db_url = with_database(infra.admin_database_url, db_name)
    asyncio.run(migrate(db_url))
    http_port, grpc_port = free_port(), free_port()
    backends = [
        {"endpoint": fast.endpoint, "auth": {"method": "basic", "username": "demo", "password": "demo"},
         "max_running_jobs": 50},
        {"endpoint": tight.endpoint, "auth": {"method": "basic", "username": "demo", "password": "demo"},
         "max_running_jobs": TIGHT_LIMIT},
    ]
    env = {**service_env, "DATABASE_URL": db_url, "BROKER_PREFIX": unique_name("e2e"),
           "OPENEO_BACKENDS": json.dumps(backends), "UDP_ALLOWED_URLS": f"{fast.udp_catalogue} {tight.udp_catalogue}",
           "MIGRATE_ON_START": "false", "HEALTH_HOST": "127.0.0.1",
           "GATEWAY_HTTP_PORT": str(http_port), "GATEWAY_GRPC_PORT": str(grpc_port),
           "TILER_ADDRESS": f"127.0.0.1:{free_port()}", "MONITOR_HEALTH_PORT": str(free_port()),
           "MONITOR_INTERVAL_MIN_S": "0.2", "MONITOR_INTERVAL_MAX_S": "1", "MONITOR_PAGE_SIZE": "50",
           "OPENEO_TIMEOUT_S": "3", "SUBMIT_BACKOFF_BASE_S": "0.05", "SUBMIT_BACKOFF_MAX_S": "0.5",
           "GRPC_GRACE_S": "5", "OUTBOX_POLL_S": "0.5"}
    gateway = ServiceProcess("gateway", "gateway", env, logs / "gateway.log")
    monitor = ServiceProcess("monitor", "services.monitor", env, logs / "monitor.log")
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    p = Pipeline(f"http://127.0.0.1:{http_port}", upscaling_pb2_grpc.UpscalingServiceStub(channel), fast, tight, env,
                 [], logs)
    try:
        gateway.start()
        wait_grpc_serving(f"127.0.0.1:{grpc_port}", gateway)
        monitor.start()
        p.start_dispatcher("dispatcher-1")
        p.start_dispatcher("dispatcher-2")
        yield p
    finally:
        channel.close()
        for proc in [*p.dispatchers, monitor, gateway]:
            proc.stop()
        fast.stop()
        tight.stop()
        asyncio.run(drop_private_resources(infra.admin_database_url, db_name, infra.rabbitmq_url,
                                           env["BROKER_PREFIX"]))


def create(p: Pipeline, backend: LocalOpenEO, n: int, title: str, **extra: Any) -> int:
    reply = p.stub.CreateTask(upscaling_pb2.CreateTaskRequest(
        title=title, label="openeo",
        service=common_pb2.ServiceRef(endpoint=backend.endpoint, application=backend.application),
        parameters_json=json.dumps({"year": 2024}),
        dimension=upscaling_pb2.Dimension(name="spatial_extent", values_json=[json.dumps(t) for t in tiles(n)]),
        **extra), timeout=60)
    return reply.task.id


def watch(p: Pipeline, task_id: int, after: int = 0, timeout: float = 120) -> list[upscaling_pb2.WatchTaskResponse]:
    return list(p.stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id, after_sequence=after),
                                 timeout=timeout))


def task_body(p: Pipeline, task_id: int) -> dict[str, Any]:
    reply = requests.get(f"{p.http}/upscale_tasks/{task_id}", timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.json()


def wait_task(p: Pipeline, task_id: int, statuses: set[str], limit_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while True:
        body = task_body(p, task_id)
        if body["status"] in statuses:
            return body
        assert time.monotonic() < deadline, f"task {task_id} still {body['status']}: {body.get('job_counts')}"
        time.sleep(0.3)


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    """Job counts without the statuses no job has."""
    return {status: n for status, n in counts.items() if n}


def one_backend_job_per_unit_job(backend: LocalOpenEO) -> None:
    report = backend.report()
    assert report["duplicates"]["tags"] == {}, report["duplicates"]
    assert all(count == 1 for count in report["tags"].values())


def test_workers_answer_health_and_reflection(pipeline: Pipeline) -> None:
    ports = [int(pipeline.env["MONITOR_HEALTH_PORT"]), *(d.ports["health"] for d in pipeline.dispatchers)]
    for port in ports:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            listing = next(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
            assert "grpc.health.v1.Health" in {s.name for s in listing.list_services_response.service}


def test_200_tile_task_finishes_watched_over_grpc(pipeline: Pipeline) -> None:
    task_id = create(pipeline, pipeline.fast, 200, "two hundred tiles")
    updates = watch(pipeline, task_id)
    assert updates[0].WhichOneof("update") == "snapshot"
    events = updates[1:]
    sequences = [u.sequence for u in events]
    assert sequences == list(range(updates[0].sequence + 1, updates[0].sequence + 1 + len(events)))
    last = events[-1]
    assert last.WhichOneof("update") == "task_event"
    assert task_status_from_proto(last.task_event.status) == "finished"
    assert dict(last.task_event.job_counts) == {"finished": 200}
    body = task_body(pipeline, task_id)
    assert body["status"] == "finished" and len(body["jobs"]) == 200
    assert {job["status"] for job in body["jobs"]} == {"finished"}
    first_job = body["jobs"][0]["id"]
    stac = requests.get(f"{pipeline.http}/unit_jobs/{first_job}/results", timeout=10).json()
    assert stac["assets"]["openEO.tif"]["href"].startswith(pipeline.fast.url)
    one_backend_job_per_unit_job(pipeline.fast)

    # Resume after sequence N: exactly the events N+1.. again, then the stream ends.
    n = sequences[len(sequences) // 2]
    resumed = watch(pipeline, task_id, after=n)
    assert [u.sequence for u in resumed] == [s for s in sequences if s > n]
    assert resumed[-1].SerializeToString() == last.SerializeToString()


def test_partial_failure_then_retry_over_http(pipeline: Pipeline) -> None:
    pipeline.fast.configure(job_error_fraction=0.5, seed=3)
    try:
        task_id = create(pipeline, pipeline.fast, 12, "partial failure")
        body = wait_task(pipeline, task_id, {"finished", "failed"})
    finally:
        pipeline.fast.configure(job_error_fraction=0)
    counts = body["job_counts"]
    assert counts.get("failed", 0) > 0 and counts.get("finished", 0) > 0, counts
    assert body["status"] == "finished"
    failed = [job for job in body["jobs"] if job["status"] == "failed"]
    assert all(requests.get(f"{pipeline.http}/unit_jobs/{job['id']}", timeout=10).json()["status"] == "failed"
               for job in failed)
    reply = requests.post(f"{pipeline.http}/upscale_tasks/{task_id}/retry", timeout=30)
    assert reply.status_code == 200, reply.text
    body = wait_task(pipeline, task_id, {"finished"}, limit_s=60)
    deadline = time.monotonic() + 60
    while nonzero(body["job_counts"]) != {"finished": 12}:
        assert time.monotonic() < deadline, body["job_counts"]
        time.sleep(0.3)
        body = task_body(pipeline, task_id)


def test_cancel_mid_run_stops_backend_jobs(pipeline: Pipeline) -> None:
    pipeline.tight.reset()
    pipeline.tight.configure(run_seconds=60)
    try:
        task_id = create(pipeline, pipeline.tight, 6, "cancel me")
        deadline = time.monotonic() + 30
        while task_body(pipeline, task_id)["job_counts"].get("running", 0) < TIGHT_LIMIT:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        pipeline.stub.CancelTask(upscaling_pb2.CancelTaskRequest(task_id=task_id), timeout=30)
        body = wait_task(pipeline, task_id, {"canceled"}, limit_s=30)
    finally:
        pipeline.tight.configure(run_seconds=0.3)
    assert nonzero(body["job_counts"]) == {"canceled": 6}
    backend_jobs = pipeline.tight.jobs()
    assert len(backend_jobs) == TIGHT_LIMIT, "jobs not yet submitted must never be submitted"
    assert {job["status"] for job in backend_jobs.values()} == {"canceled"}
    assert pipeline.tight.report()["users"]["demo"]["max_active"] <= TIGHT_LIMIT


def test_faults_and_limits_exactly_one_backend_job_per_unit_job(pipeline: Pipeline) -> None:
    pipeline.tight.reset()
    pipeline.tight.configure(faults={"create_job": {"lost": 0.3}, "start_job": {"503": 0.2}, "list_jobs": {"502": 0.1}},
                             seed=11)
    try:
        task_id = create(pipeline, pipeline.tight, 10, "flaky backend")
        body = wait_task(pipeline, task_id, {"finished", "failed"}, limit_s=120)
    finally:
        pipeline.tight.configure(faults={})
    assert nonzero(body["job_counts"]) == {"finished": 10}, body["job_counts"]
    report = pipeline.tight.report()
    assert report["totals"]["lost_responses"] > 0, report["faults"]
    assert report["users"]["demo"]["max_active"] <= TIGHT_LIMIT
    assert len(report["tags"]) == 10
    one_backend_job_per_unit_job(pipeline.tight)


def test_dispatchers_killed_mid_task_then_restarted(pipeline: Pipeline) -> None:
    pipeline.tight.reset()
    task_id = create(pipeline, pipeline.tight, 10, "kill the dispatchers")
    deadline = time.monotonic() + 30
    while task_body(pipeline, task_id)["job_counts"].get("created", 10) == 10:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for proc in list(pipeline.dispatchers):
        proc.process.send_signal(signal.SIGKILL)
        proc.stop()
        pipeline.dispatchers.remove(proc)
    assert task_body(pipeline, task_id)["job_counts"].get("created", 0) > 0, "killed too late to prove anything"
    pipeline.start_dispatcher("dispatcher-3")
    body = wait_task(pipeline, task_id, {"finished", "failed"}, limit_s=120)
    assert nonzero(body["job_counts"]) == {"finished": 10}
    one_backend_job_per_unit_job(pipeline.tight)
    assert len(pipeline.tight.report()["tags"]) == 10
