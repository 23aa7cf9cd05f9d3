"""Pipeline benchmark: a 10,000-job task end to end, and backend calls per monitor cycle.

Starts, on free loopback ports against the machine's PostgreSQL (a fresh database) and RabbitMQ (private
names): the local openEO backend with zero queue/run durations, the gateway, one dispatcher and one monitor.

1. Throughput: `CreateTask` (gRPC) with N jobs (default 10,000) of the wind-turbine UDP; prints the time from
   the call to all jobs submitted and to all finished, and jobs/s. Baseline, same run, same backend: the
   naive client loop (`create_job` + `start` one after the other with the `openeo` client, as a script or the
   APEx dispatcher does) over a sample of jobs; the ratio is submitted jobs/s over the loop's jobs/s.
2. Monitor cost: 1,000 active (long-running) jobs watched by 10 `WatchTask` streams; prints the backend HTTP
   calls per monitor cycle (listing pages + per-job GETs) against the target ceil(1000 / page size) + 1 and
   against the baseline of APEx-style watching (every watcher polls every job each interval: 10 x 1000).

    .venv/bin/python bench/bench_pipeline.py [--jobs 10000] [--sample 300] [--active 1000] [--watchers 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import asyncpg
import grpc
import openeo
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.infra import (  # noqa: E402
    DEFAULT_DATABASE_URL,
    DEFAULT_RABBITMQ_URL,
    ServiceProcess,
    free_port,
    wait_grpc_serving,
    with_database,
)
from tests.support import drop_private_resources  # noqa: E402
from upscaling.v1 import common_pb2, upscaling_pb2, upscaling_pb2_grpc  # noqa: E402

ADMIN = "bench-admin"
PAGE_SIZE = 100


def start_local_openeo() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "local_openeo", "--port", "0", "--admin-token", ADMIN, "--queue-seconds", "0",
         "--run-seconds", "0"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    match = re.search(r"listening on (http://\S+)", process.stdout.readline())
    assert match, "local openEO backend did not start"
    return process, match.group(1)


def admin(url: str, method: str, path: str, body: object = None) -> dict:
    reply = requests.request(method, f"{url}/admin/{path}", json=body, timeout=30,
                             headers={"Authorization": f"Bearer {ADMIN}"})
    reply.raise_for_status()
    return reply.json() if reply.content else {}


def tiles(n: int) -> list[str]:
    """n small distinct polygons (1 km boxes on a regular lattice over central Europe), as GeoJSON texts."""
    side = math.ceil(math.sqrt(n))
    out = []
    for i in range(n):
        x, y = 5.0 + (i % side) * 0.02, 45.0 + (i // side) * 0.02
        ring = [[x, y], [x + 0.01, y], [x + 0.01, y + 0.01], [x, y + 0.01], [x, y]]
        out.append(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    return out


def create_task(stub: upscaling_pb2_grpc.UpscalingServiceStub, openeo_url: str, n: int, title: str) -> int:
    reply = stub.CreateTask(upscaling_pb2.CreateTaskRequest(
        title=title, label="openeo",
        service=common_pb2.ServiceRef(endpoint=f"{openeo_url}/openeo/1.2",
                                      application=f"{openeo_url}/udp/wind_turbine_detection.json"),
        parameters_json=json.dumps({"year": "2024"}),
        dimension=upscaling_pb2.Dimension(name="spatial_extent", values_json=tiles(n)),
    ), timeout=600)
    return reply.task.id


async def progress(db_url: str, task_id: int, n: int, t0: float, want_finished: bool) -> tuple[float, float | None]:
    """Seconds from t0 until every job was submitted, and until every job finished (if asked)."""
    conn = await asyncpg.connect(db_url)
    submitted_at = finished_at = None
    try:
        while True:
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE status <> 'created') AS submitted, "
                "count(*) FILTER (WHERE status IN ('finished', 'failed', 'canceled')) AS done "
                "FROM unit_jobs WHERE task_id = $1", task_id)
            now = time.monotonic() - t0
            if submitted_at is None and row["submitted"] >= n:
                submitted_at = now
            if want_finished and finished_at is None and row["done"] >= n:
                finished_at = now
            if submitted_at is not None and (finished_at is not None or not want_finished):
                return submitted_at, finished_at
            if now > 1800:
                raise TimeoutError(f"after {now:.0f}s: {dict(row)}")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by a process and its reaped children (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def named_pids(*names: str) -> list[int]:
    """Pids of the machine's processes whose command name is one of `names` (PostgreSQL, RabbitMQ)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in names:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def cpu_snapshot(processes: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds per named group of pids."""
    return {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in processes.items()}


def naive_loop(openeo_url: str, sample: int) -> float:
    """Jobs/s of the sequential openeo-client loop (create_job + start)."""
    con = openeo.connect(f"{openeo_url}/openeo/1.2").authenticate_basic("demo", "demo")
    values = tiles(sample)
    t0 = time.monotonic()
    for i, value in enumerate(values):
        polygon = json.loads(value)["coordinates"][0]
        xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
        cube = con.datacube_from_process(
            "wind_turbine_detection", namespace=f"{openeo_url}/udp/wind_turbine_detection.json",
            spatial_extent={"west": min(xs), "south": min(ys), "east": max(xs), "north": max(ys)}, year="2024")
        cube.create_job(title=f"naive {i}", out_format="GTiff").start()
    return sample / (time.monotonic() - t0)


def cycle_calls(log_path: Path, since: float) -> list[int]:
    """listing_calls + job_gets of every monitor cycle logged after `since` (epoch seconds)."""
    calls = []
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("message") != "monitor cycle" or entry.get("active_jobs", 0) < 1:
            continue
        stamp = time.mktime(time.strptime(entry["ts"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        if stamp >= since:
            calls.append(int(entry.get("listing_calls", 0)) + int(entry.get("job_gets", 0)))
    return calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=300, help="jobs of the naive baseline loop")
    parser.add_argument("--active", type=int, default=1_000)
    parser.add_argument("--watchers", type=int, default=10)
    parser.add_argument("--dispatchers", type=int, default=2, help="dispatcher processes")
    args = parser.parse_args()

    admin_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    rabbitmq_url = os.environ.get("RABBITMQ_URL", DEFAULT_RABBITMQ_URL)
    db_name = f"upscaling_bench_{uuid.uuid4().hex[:8]}"
    prefix = f"bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_exec(admin_url, f'CREATE DATABASE "{db_name}"'))
    try:
        return _run(args, admin_url, rabbitmq_url, db_name, prefix)
    finally:
        # Every broker name and the database of this run go, also when it failed.
        asyncio.run(drop_private_resources(admin_url, db_name, rabbitmq_url, prefix))


def _run(args: argparse.Namespace, admin_url: str, rabbitmq_url: str, db_name: str, prefix: str) -> int:
    db_url = with_database(admin_url, db_name)
    logs = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    backend, openeo_url = start_local_openeo()
    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "RABBITMQ_URL": rabbitmq_url,
           "BROKER_PREFIX": prefix, "LOG_LEVEL": "INFO", "MAX_DIMENSION_VALUES": "20000",
           "GATEWAY_HOST": "127.0.0.1", "GATEWAY_HTTP_PORT": str(http_port), "GATEWAY_GRPC_PORT": str(grpc_port),
           "TILER_ADDRESS": f"127.0.0.1:{free_port()}", "DISPATCHER_HEALTH_PORT": str(free_port()),
           "MONITOR_HEALTH_PORT": str(free_port()), "MONITOR_PAGE_SIZE": str(PAGE_SIZE),
           "MONITOR_INTERVAL_MIN_S": "0.5", "MONITOR_INTERVAL_MAX_S": "2",
           "OPENEO_BACKENDS": json.dumps([{"endpoint": f"{openeo_url}/openeo/1.2", "auth": {
               "method": "basic", "username": "demo", "password": "demo"}, "max_running_jobs": 0}]),
           "UDP_ALLOWED_URLS": f"{openeo_url}/udp/"}
    services = [ServiceProcess("gateway", "gateway", env, logs / "gateway.log"),
                ServiceProcess("monitor", "services.monitor", {**env, "MIGRATE_ON_START": "false"},
                               logs / "monitor.log")]
    services += [ServiceProcess(f"dispatcher-{i}", "services.dispatcher",
                                {**env, "MIGRATE_ON_START": "false", "DISPATCHER_HEALTH_PORT": str(free_port())},
                                logs / f"dispatcher-{i}.log") for i in range(args.dispatchers)]
    try:
        services[0].start()
        wait_grpc_serving(f"127.0.0.1:{grpc_port}", services[0])
        for service in services[1:]:
            service.start()
        time.sleep(2)
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=[
            ("grpc.max_send_message_length", 1 << 28), ("grpc.max_receive_message_length", 1 << 28)])
        stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)

        print(f"Baseline: naive openeo-client loop over {args.sample} jobs ...", flush=True)
        naive_rate = naive_loop(openeo_url, args.sample)
        admin(openeo_url, "POST", "reset", {"jobs": True, "counters": True})

        print(f"Throughput: one task of {args.jobs} jobs ...", flush=True)
        groups = {service.name: [service.process.pid] for service in services if service.process}
        groups.update({"local-openeo": [backend.pid], "postgresql": named_pids("postgres"),
                       "rabbitmq": named_pids("beam.smp")})
        cpu_before = cpu_snapshot(groups)
        t0 = time.monotonic()
        task_id = create_task(stub, openeo_url, args.jobs, "bench throughput")
        created_s = time.monotonic() - t0
        submitted_s, finished_s = asyncio.run(progress(db_url, task_id, args.jobs, t0, True))
        groups["postgresql"] = named_pids("postgres")
        cpu_used = {name: seconds - cpu_before.get(name, 0.0) for name, seconds in cpu_snapshot(groups).items()}
        report = admin(openeo_url, "GET", "report")
        duplicates = report.get("duplicates", {}).get("tags", {})

        print(f"Monitor cost: {args.active} active jobs, {args.watchers} watchers ...", flush=True)
        admin(openeo_url, "PUT", "config", {"queue_seconds": 0, "run_seconds": 3600})
        task2 = create_task(stub, openeo_url, args.active, "bench monitor")
        asyncio.run(progress(db_url, task2, args.active, time.monotonic(), False))
        watchers = [threading.Thread(target=_watch, args=(stub, task2), daemon=True) for _ in range(args.watchers)]
        for watcher in watchers:
            watcher.start()
        since = time.time() + 1
        time.sleep(12)
        calls = cycle_calls(logs / "monitor.log", since)
        stub.CancelTask(upscaling_pb2.CancelTaskRequest(task_id=task2), timeout=60)
    finally:
        for service in reversed(services):
            service.stop()
        backend.terminate()
        backend.wait(timeout=10)

    rate = args.jobs / submitted_s
    target_calls = math.ceil(args.active / PAGE_SIZE) + 1
    apex_calls = args.watchers * args.active
    worst = max(calls) if calls else None
    print()
    print("| measure | value |\n|---|---|")
    print(f"| dispatcher processes | {args.dispatchers} |")
    print(f"| CreateTask({args.jobs}) call | {created_s:.2f} s |")
    print(f"| all {args.jobs} jobs submitted | {submitted_s:.1f} s = {rate:.0f} jobs/s |")
    print(f"| all {args.jobs} jobs finished | {finished_s:.1f} s = {args.jobs / finished_s:.0f} jobs/s |")
    print(f"| naive client loop (baseline) | {naive_rate:.0f} jobs/s |")
    print(f"| ratio submitted / baseline | {rate / naive_rate:.1f}x |")
    print(f"| duplicate backend jobs | {len(duplicates)} |")
    print(f"| backend calls per monitor cycle, {args.active} active, {args.watchers} watchers | "
          f"max {worst} over {len(calls)} cycles (target <= {target_calls}) |")
    fewer = apex_calls / max(1, worst or 1)
    print(f"| APEx-style watching (baseline) | {apex_calls} calls per interval; ours {fewer:.0f}x fewer |")
    print(f"\nCPU seconds from CreateTask to all {args.jobs} finished ({finished_s:.1f} s wall, 2 cores): "
          + ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu_used.items())
          + f"; total {sum(cpu_used.values()):.1f} = {1000 * sum(cpu_used.values()) / args.jobs:.2f} ms per job")
    ok = rate >= 500 and worst is not None and worst <= target_calls and not duplicates
    print(f"\nTargets (>= 500 jobs/s submitted, <= {target_calls} calls/cycle, no duplicates): "
          f"{'met' if ok else 'NOT met'}")
    return 0


def _watch(stub: upscaling_pb2_grpc.UpscalingServiceStub, task_id: int) -> None:
    try:
        for _ in stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id), timeout=60):
            pass
    except grpc.RpcError:
        pass


async def _exec(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
