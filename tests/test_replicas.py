"""Several replicas on one machine and graceful shutdown, through the real stack: SIGTERM on a busy dispatcher
loses nothing; two monitors never poll one backend together (and one takes over when the other dies); three
dispatchers share the per-backend running-jobs limit; every service exits 0 on SIGTERM within the grace period."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import asyncpg
import pytest

from tests.dispatcher_support import one_backend_job_per_tag
from tests.ops_support import OpsStack, Service, StackConfig, dead_letters, json_lines, ops_stack, service_procs, value

pytestmark = pytest.mark.timeout(300)
GRACE_S = 5.0
LIMIT = 3


@pytest.fixture(scope="module")
def ops(infra, service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsStack]:
    logs = tmp_path_factory.mktemp("replicas")
    config = StackConfig("replicas", env={"GRPC_GRACE_S": str(GRACE_S), "SUBMIT_MAX_ATTEMPTS": "30"})
    with ops_stack(infra, service_env, logs, config) as stack:
        stack.start("monitor", "monitor-a")
        yield stack


def _tags(ops: OpsStack, *task_ids: int) -> list[str]:
    """The tags of the unit jobs of the tasks (from the database)."""

    async def read() -> list[str]:
        conn = await asyncpg.connect(ops.env["DATABASE_URL"])
        try:
            rows = await conn.fetch("SELECT tag FROM unit_jobs WHERE task_id = ANY($1::bigint[])", list(task_ids))
            return [r["tag"] for r in rows]
        finally:
            await conn.close()

    return asyncio.run(read())


def _cycles(service: Service, backend: str) -> list[tuple[datetime, datetime]]:
    """(start, end) of every logged monitor cycle of `backend`."""
    spans = []
    for entry in json_lines(service.proc):
        if entry.get("message") == "monitor cycle" and entry.get("backend") == backend:
            end = datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
            spans.append((end - timedelta(seconds=entry["duration_s"]), end))
    return spans


def _never_overlap(a: list[tuple[datetime, datetime]], b: list[tuple[datetime, datetime]]) -> None:
    tolerance = timedelta(milliseconds=2)  # log timestamps have millisecond resolution
    for start_a, end_a in a:
        for start_b, end_b in b:
            assert end_a <= start_b + tolerance or end_b <= start_a + tolerance, ((start_a, end_a), (start_b, end_b))


def test_sigterm_on_a_busy_dispatcher_requeues_in_flight_messages_and_loses_nothing(ops: OpsStack) -> None:
    ops.backend.reset()
    ops.backend.configure(faults={"create_job": {"delay": 1.0}}, fault_delay=0.5)  # every create takes 0.5 s
    busy = ops.start("dispatcher", "dispatcher-busy", GRPC_GRACE_S="1", DISPATCHER_PREFETCH="32",
                     DISPATCHER_THREADS="8")
    task_id = ops.create(60)
    deadline = time.monotonic() + 60
    while sum(n for status, n in ops.task(task_id)["job_counts"].items() if status != "created") < 10:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    code, took = busy.sigterm()
    ops.dispatchers.remove(busy)
    assert code == 0, busy.proc.log()[-3000:]
    assert took < 1 + 3 + 5, took  # grace, then the worker threads' last requests (client timeout 3 s)
    left = ops.task(task_id)["job_counts"].get("created", 0)
    assert left > 0, "stopped too late to prove anything"
    log = json_lines(busy.proc)
    stopping = [e for e in log if e["message"] == "stopping: waiting for in-flight messages"]
    assert stopping and stopping[0]["in_flight"] > 0
    returned = sum(e["count"] for e in log if e["message"] == "in-flight messages returned to the queue")

    ops.backend.configure(faults={})
    following = ops.start("dispatcher", "dispatcher-next")
    ops.wait_jobs(task_id, {"finished": 60}, limit_s=180)
    report = ops.backend.report()
    one_backend_job_per_tag(report, _tags(ops, task_id))
    assert report["totals"]["created"] == 60 and len(report["tags"]) == 60
    assert asyncio.run(dead_letters(ops.env["RABBITMQ_URL"], ops.env["BROKER_PREFIX"])) == 0
    assert value(ops.gateway.metrics(), "upscaling_queue_messages", queue="dead") == 0
    print(f"SIGTERM: exit 0 after {took:.2f} s, {left} jobs left unsubmitted, {returned} in-flight messages "
          "returned to the queue; all 60 finished with one backend job each")
    assert following.sigterm()[0] == 0
    ops.dispatchers.remove(following)


def test_two_monitors_and_three_dispatchers_share_the_backend(ops: OpsStack) -> None:
    endpoint = ops.backend.endpoint
    ops.backend.reset()
    ops.backend.configure(run_seconds=0.5)
    first = ops.monitors[0]
    second = ops.start("monitor", "monitor-b")
    limited = ops.backend.backends_env(max_running_jobs=LIMIT)
    for name in ("d1", "d2", "d3"):
        ops.start("dispatcher", f"dispatcher-{name}", OPENEO_BACKENDS=limited)
    before = [m.metrics() for m in ops.monitors]

    first_task = ops.create(24)
    ops.wait_jobs(first_task, {"finished": 24}, limit_s=180)
    report = ops.backend.report()
    assert report["users"]["demo"]["max_active"] <= LIMIT, report["users"]
    assert report["totals"]["created"] == 24
    one_backend_job_per_tag(report, _tags(ops, first_task))
    submitted = [value(d.metrics(), "upscaling_submissions_total", backend=endpoint, outcome="submitted")
                 for d in ops.dispatchers]
    assert sum(submitted) == 24 and sum(1 for n in submitted if n) >= 2, submitted

    # One replica polls the backend: it holds the lock, logs the cycles, and made every listing call the backend
    # counted.
    held = [value(m.metrics(), "upscaling_monitor_lock_held", backend=endpoint) for m in (first, second)]
    assert held == [1, 0], held
    assert _cycles(first, endpoint) and not _cycles(second, endpoint)
    deadline = time.monotonic() + 10
    while True:
        listings = sum(value(m.metrics(), "upscaling_monitor_backend_calls_total", backend=endpoint, kind="listing")
                       - value(b, "upscaling_monitor_backend_calls_total", backend=endpoint, kind="listing")
                       for m, b in zip(ops.monitors, before, strict=True))
        if listings == ops.backend.report()["requests"].get("list_jobs", 0):
            break
        assert time.monotonic() < deadline, (listings, ops.backend.report()["requests"])
        time.sleep(0.2)
    assert listings > 0

    # The replica holding the lock dies: the other takes the backend over and a second task finishes.
    assert first.proc.process is not None
    first.proc.process.send_signal(signal.SIGKILL)
    first.proc.process.wait(timeout=10)
    ops.monitors.remove(first)
    task_id = ops.create(6)
    ops.wait_jobs(task_id, {"finished": 6}, limit_s=120)
    assert any(e["message"] == "monitor lock acquired" and e["backend"] == endpoint for e in json_lines(second.proc))
    assert _cycles(second, endpoint)
    assert value(second.metrics(), "upscaling_monitor_lock_held", backend=endpoint) == 1
    _never_overlap(_cycles(first, endpoint), _cycles(second, endpoint))
    report = ops.backend.report()
    one_backend_job_per_tag(report, _tags(ops, first_task, task_id))
    assert report["totals"]["created"] == 30 and report["users"]["demo"]["max_active"] <= LIMIT


def test_every_service_exits_0_on_sigterm_within_the_grace_period(ops: OpsStack) -> None:
    services = service_procs(ops)
    assert {s.proc.module for s in services} >= {"services.monitor", "gateway", "services.tiler"}
    with ThreadPoolExecutor(len(services)) as pool:
        outcomes = list(pool.map(lambda s: s.sigterm(), services))
    print("SIGTERM exit codes and seconds:", {s.proc.name: (code, round(took, 2))
                                               for s, (code, took) in zip(services, outcomes, strict=True)})
    for service, (code, took) in zip(services, outcomes, strict=True):
        assert code == 0, f"{service.proc.name} exited with {code}:\n{service.proc.log()[-3000:]}"
        assert took < GRACE_S + 5, f"{service.proc.name} took {took:.1f} s"
