"""Operations through the real stack: every service's `/metrics` after real tasks, and a correlation id that
travels from the HTTP/gRPC request through the job queue to the dispatcher's, the monitor's and the backend's
records."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import requests
from websockets.sync.client import connect as ws_connect

from tests.aois import SEED_AOI
from tests.ops_support import OpsStack, Samples, StackConfig, has, json_lines, ops_stack, value
from upscaling.statuses import task_status_from_proto
from upscaling.v1 import common_pb2, upscaling_pb2

pytestmark = pytest.mark.timeout(240)
N = 6


@pytest.fixture(scope="module")
def ops(infra, service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsStack]:
    logs = tmp_path_factory.mktemp("metrics")
    config = StackConfig("metrics", env={"SUBMIT_MAX_ATTEMPTS": "30"})
    with ops_stack(infra, service_env, logs, config) as stack:
        stack.start("monitor", "monitor")
        stack.start("dispatcher", "dispatcher")
        yield stack


def scrape_all(ops: OpsStack) -> dict[str, Samples]:
    return {"gateway": ops.gateway.metrics(), "tiler": ops.tiler.metrics(),
            "monitor": ops.monitors[0].metrics(), "dispatcher": ops.dispatchers[0].metrics()}


def delta(after: dict[str, Samples], before: dict[str, Samples], service: str, name: str, **labels: str) -> float:
    return value(after[service], name, **labels) - value(before[service], name, **labels)


def wait_metric(ops_service: Any, name: str, expected: float, limit_s: float = 20, **labels: str) -> Samples:
    """Scrape until the metric has the expected value (gauges read from the database lag a little)."""
    deadline = time.monotonic() + limit_s
    while True:
        samples = ops_service.metrics()
        if value(samples, name, **labels) == expected:
            return samples
        assert time.monotonic() < deadline, f"{name}{labels} = {value(samples, name, **labels)}, not {expected}"
        time.sleep(0.3)


def test_every_service_exposes_its_series_with_real_values(ops: OpsStack) -> None:
    endpoint = ops.backend.endpoint
    ops.backend.reset()
    ops.backend.configure(run_seconds=2.0)
    before = scrape_all(ops)
    reply = requests.post(f"{ops.http}/tiles", json={"aoi": SEED_AOI, "grid": "20x20km"}, timeout=60)
    assert reply.status_code == 201
    tile_count = int(reply.headers["X-Tile-Count"])

    task_id = ops.create(N)
    with ops.channel() as channel:
        stream = ops.stub(channel).WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id), timeout=120)
        first = next(stream)
        assert first.WhichOneof("update") == "snapshot"
        with ws_connect(f"{ops.http.replace('http', 'ws')}/ws/upscale_tasks/{task_id}?interval=0.5") as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "init"
            watching = ops.gateway.metrics()
            assert value(watching, "upscaling_watchers", kind="grpc") == 1
            assert value(watching, "upscaling_watchers", kind="websocket") == 1
        updates = [first, *stream]
    last = updates[-1]
    assert task_status_from_proto(last.task_event.status) == "finished"
    assert dict(last.task_event.job_counts) == {"finished": N}
    ops.backend.configure(run_seconds=0.3)

    wait_metric(ops.gateway, "upscaling_watchers", 0, kind="websocket")
    after = scrape_all(ops)
    after["monitor"] = wait_metric(ops.monitors[0], "upscaling_jobs",
                                   value(before["monitor"], "upscaling_jobs", status="finished") + N, status="finished")
    # Tasks and jobs by status, outbox backlog (PostgreSQL, read when scraped; gateway and monitor alike)
    for service in ("gateway", "monitor"):
        samples = after[service]
        assert value(samples, "upscaling_jobs", status="finished") == value(before[service], "upscaling_jobs",
                                                                            status="finished") + N
        assert value(samples, "upscaling_jobs", status="created") == 0
        assert value(samples, "upscaling_tasks", status="finished") >= 1
        assert has(samples, "upscaling_outbox_backlog") and value(samples, "upscaling_outbox_backlog") == 0
    # Submissions, their latency and the backend calls behind them (dispatcher)
    assert delta(after, before, "dispatcher", "upscaling_submissions_total", backend=endpoint,
                 outcome="submitted") == N
    assert delta(after, before, "dispatcher", "upscaling_submission_seconds_count", backend=endpoint) == N
    assert value(after["dispatcher"], "upscaling_submission_seconds_sum", backend=endpoint) > 0
    assert delta(after, before, "dispatcher", "upscaling_backend_request_seconds_count", backend=endpoint,
                 call="create_and_start") == N
    # Queue lag (job queue and dead letters) from RabbitMQ: nothing waiting, one consumer (the dispatcher)
    for service in ("dispatcher", "gateway"):
        assert value(after[service], "upscaling_queue_messages", queue="jobs") == 0
        assert value(after[service], "upscaling_queue_messages", queue="dead") == 0
        assert value(after[service], "upscaling_queue_consumers", queue="jobs") == 1
    # Monitor: cycles, their duration and backend calls; the lock; the changes it recorded
    assert value(after["monitor"], "upscaling_monitor_cycle_seconds_count", backend=endpoint) > 0
    assert delta(after, before, "monitor", "upscaling_monitor_cycle_backend_calls_sum", backend=endpoint) > 0
    assert delta(after, before, "monitor", "upscaling_monitor_backend_calls_total", backend=endpoint,
                 kind="listing") > 0
    assert delta(after, before, "monitor", "upscaling_monitor_backend_calls_total", backend=endpoint,
                 kind="results") == N
    assert value(after["monitor"], "upscaling_monitor_lock_held", backend=endpoint) == 1
    assert delta(after, before, "monitor", "upscaling_monitor_job_changes_total", status="finished") == N
    # Outbox relays (dispatcher and monitor; the gateway publishes nothing): each job message once
    assert sum(delta(after, before, service, "upscaling_outbox_published_total")
               for service in ("dispatcher", "monitor")) == N
    assert not has(after["gateway"], "upscaling_outbox_published_total")
    # Gateway: events received and fanned out to the two watchers
    received = delta(after, before, "gateway", "upscaling_events_received_total")
    assert received >= 2 * N + 1  # queued and finished per job, at least one task event
    assert delta(after, before, "gateway", "upscaling_events_fanned_out_total") >= len(updates) - 1
    # Tiler
    assert delta(after, before, "tiler", "upscaling_tiler_requests_total", outcome="ok") >= 1
    assert delta(after, before, "tiler", "upscaling_tiles_total") >= tile_count
    assert value(after["tiler"], "upscaling_tiler_seconds_count") >= 1
    # The client's process metrics come along on every service
    assert all(has(samples, "process_cpu_seconds_total") for samples in after.values())


def test_backend_errors_and_retries_are_counted(ops: OpsStack) -> None:
    endpoint = ops.backend.endpoint
    ops.backend.reset()
    ops.backend.configure(faults={"start_job": {"503": 0.4}}, job_error_fraction=0.4, seed=7)
    before = scrape_all(ops)
    try:
        task_id = ops.create(8, max_attempts=3)
        ops.wait_task(task_id, {"finished", "failed"})
    finally:
        ops.backend.configure(faults={}, job_error_fraction=0)
    after = scrape_all(ops)
    report = ops.backend.report()
    injected = report["faults"]["start_job"]["503"]
    assert injected > 0
    assert delta(after, before, "dispatcher", "upscaling_backend_errors_total", backend=endpoint,
                 kind="transient", code="ServiceUnavailable") == injected
    assert delta(after, before, "dispatcher", "upscaling_retries_total", backend=endpoint,
                 reason="transient") == injected
    resubmitted = _resubmissions(ops, task_id)
    assert resubmitted > 0
    assert delta(after, before, "monitor", "upscaling_retries_total", backend=endpoint,
                 reason="resubmit") == resubmitted
    assert delta(after, before, "dispatcher", "upscaling_submissions_total", backend=endpoint,
                 outcome="submitted") == 8 + resubmitted


def _resubmissions(ops: OpsStack, task_id: int) -> int:
    """Submissions beyond the first of the task's jobs (each attempt after the first is a resubmission)."""

    async def read() -> int:
        conn = await asyncpg.connect(ops.env["DATABASE_URL"])
        try:
            return await conn.fetchval("SELECT sum(attempts - 1) FROM unit_jobs WHERE task_id = $1", task_id)
        finally:
            await conn.close()

    return asyncio.run(read())


def _lines_with(ops: OpsStack, cid: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    dispatcher = [e for e in json_lines(ops.dispatchers[0].proc) if e.get("correlation_id") == cid]
    monitor = [e for e in json_lines(ops.monitors[0].proc) if e.get("correlation_id") == cid]
    return dispatcher, monitor


def _assert_correlated(ops: OpsStack, cid: str, task_id: int, n: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        dispatcher, monitor = _lines_with(ops, cid)
        submitted = [e for e in dispatcher if e["message"] == "unit jobs submitted"]
        recorded = [e for e in monitor if e["message"] == "jobs recorded"]
        finished = sum(e["statuses"].get("finished", 0) for e in recorded)
        if sum(e["count"] for e in submitted) == n and finished == n:
            break
        assert time.monotonic() < deadline, (dispatcher, monitor)
        time.sleep(0.2)
    assert all(e["task_id"] == task_id and e["service"] == "dispatcher" for e in submitted)
    assert all(e["task_id"] == task_id and e["service"] == "monitor" for e in recorded)
    # The backend received the id with each create and start request of the task.
    calls = ops.backend.report()["correlation_ids"].get(cid, {})
    assert calls.get("create_job") == n and calls.get("start_job") == n, calls


def test_correlation_id_from_http_reaches_dispatcher_monitor_and_backend(ops: OpsStack) -> None:
    ops.backend.reset()
    cid = f"ops-http-{time.time_ns()}"
    reply = requests.post(f"{ops.http}/upscale_tasks", json=ops.task_body(3), headers={"X-Correlation-ID": cid},
                          timeout=30)
    assert reply.status_code == 201 and reply.headers["X-Correlation-ID"] == cid
    task_id = reply.json()["id"]
    ops.wait_jobs(task_id, {"finished": 3})
    _assert_correlated(ops, cid, task_id, 3)


def test_correlation_id_from_grpc_metadata_reaches_dispatcher_monitor_and_backend(ops: OpsStack) -> None:
    ops.backend.reset()
    cid = f"ops-grpc-{time.time_ns()}"
    with ops.channel() as channel:
        reply = ops.stub(channel).CreateTask(upscaling_pb2.CreateTaskRequest(
            title="correlated", label="openeo",
            service=common_pb2.ServiceRef(endpoint=ops.backend.endpoint, application=ops.backend.application),
            parameters_json=json.dumps({"year": 2024}),
            dimension=upscaling_pb2.Dimension(name="spatial_extent",
                                              values_json=[json.dumps(t) for t in ops.task_body(2)["dimension"]
                                                           ["values"]])),
            metadata=[("x-correlation-id", cid)], timeout=60)
    ops.wait_jobs(reply.task.id, {"finished": 2})
    _assert_correlated(ops, cid, reply.task.id, 2)
