"""Pipeline benchmark: tasks end to end against zero-latency and slow backends, and backend calls per monitor cycle.

Starts, on free loopback ports against the machine's PostgreSQL (a fresh database) and RabbitMQ (private
names): local openEO backends, the gateway, the dispatcher(s) and one monitor. Parts (`--parts`):

- `throughput`: a backend with zero queue/run durations and no latency; `CreateTask` (gRPC) with N jobs
  (default 10,000) of the wind-turbine UDP; the time from the call to all jobs submitted and to all finished,
  jobs/s, and the CPU seconds of every process (per job). Baseline, same run, same backend: the naive client
  loop (`create_job` + `start` one after the other with the `openeo` client, as a script or the APEx dispatcher
  does) over a sample of jobs.
- `monitor`: 1,000 active (long-running) jobs watched by 10 `WatchTask` streams; the backend HTTP calls per
  monitor cycle (listing pages + per-job GETs) against ceil(1000 / page size) + 1 and against APEx-style
  watching (every watcher polls every job each interval: 10 x 1000).
- `latency`: a backend that holds every create and every start for 200 ms (the local backend's `delay` fault on
  `create_job` and `start_job`, nothing else), one dispatcher, 2,000 jobs; baselines on the same backend in the
  same run: the naive loop and openEO's own `MultiBackendJobManager` (its `parallel_jobs` and its job-start
  thread pool set to our dispatcher's parallelism), each over a sample whose rate is reported.
- `limit`: the same slow backend with a `starts_per_second` limit in OPENEO_BACKENDS; the start times the
  backend recorded, and the most starts in any 1 s window (must not exceed the limit).

`--profile DIR` also records, for the throughput part, per-job counts of the dispatcher's and the monitor's SQL
statements, broker publishes/acks, backend HTTP requests and json calls (bench/profile_hook), and py-spy
profiles of both when py-spy is installed.

    .venv/bin/python bench/bench_pipeline.py [--parts throughput,monitor,latency,limit] [--jobs 10000] ...

Every broker name and the database of the run are removed at the end, also when it fails or is interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import dataclasses
import functools
import itertools
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

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
    stop_process,
    wait_grpc_serving,
    with_database,
)
from tests.support import drop_private_resources  # noqa: E402
from upscaling import config as upscaling_config  # noqa: E402
from upscaling.v1 import common_pb2, upscaling_pb2, upscaling_pb2_grpc  # noqa: E402

ADMIN = "bench-admin"
PAGE_SIZE = 100
PARTS = ("throughput", "monitor", "latency", "limit")
PYSPY_RATE = 100
PROFILE_HOOK = Path(__file__).resolve().parent / "profile_hook"
# The dispatcher setting that bounds its backend requests in flight, most specific first (the first that exists).
CONCURRENCY_SETTINGS = ("dispatcher_concurrency", "dispatcher_max_in_flight", "dispatcher_in_flight",
                        "dispatcher_threads")


@dataclasses.dataclass
class Backend:
    """A local openEO backend process and its base URL."""

    name: str
    process: subprocess.Popen[str]
    url: str

    @property
    def endpoint(self) -> str:
        return f"{self.url}/openeo/1.2"

    @property
    def application(self) -> str:
        return f"{self.url}/udp/wind_turbine_detection.json"

    def admin(self, method: str, path: str, body: object = None) -> dict[str, Any]:
        reply = requests.request(method, f"{self.url}/admin/{path}", json=body, timeout=30,
                                 headers={"Authorization": f"Bearer {ADMIN}"})
        reply.raise_for_status()
        return reply.json() if reply.content else {}

    def stop(self) -> None:
        stop_process(self.process)


def start_local_openeo(name: str, *flags: str) -> Backend:
    process = subprocess.Popen(
        [sys.executable, "-m", "local_openeo", "--port", "0", "--admin-token", ADMIN, "--queue-seconds", "0",
         "--run-seconds", "0", *flags], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    match = re.search(r"listening on (http://\S+)", process.stdout.readline())
    if not match:
        process.kill()
        process.wait()
        raise RuntimeError(f"local openEO backend {name} did not start")
    return Backend(name, process, match.group(1))


def latency_flags(latency_s: float) -> list[str]:
    """The local backend's flags for `latency_s` on every create and every start, and no other fault."""
    return ["--faults", json.dumps({"create_job": {"delay": 1.0}, "start_job": {"delay": 1.0}}),
            "--fault-delay", str(latency_s)]


def tiles(n: int) -> list[str]:
    """n small distinct polygons (1 km boxes on a regular lattice over central Europe), as GeoJSON texts."""
    side = math.ceil(math.sqrt(n))
    out = []
    for i in range(n):
        x, y = 5.0 + (i % side) * 0.02, 45.0 + (i // side) * 0.02
        ring = [[x, y], [x + 0.01, y], [x + 0.01, y + 0.01], [x, y + 0.01], [x, y]]
        out.append(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    return out


def bbox(value: str) -> dict[str, float]:
    polygon = json.loads(value)["coordinates"][0]
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    return {"west": min(xs), "south": min(ys), "east": max(xs), "north": max(ys)}


def create_task(stub: upscaling_pb2_grpc.UpscalingServiceStub, backend: Backend, n: int, title: str) -> int:
    reply = stub.CreateTask(upscaling_pb2.CreateTaskRequest(
        title=title, label="openeo",
        service=common_pb2.ServiceRef(endpoint=backend.endpoint, application=backend.application),
        parameters_json=json.dumps({"year": "2024"}),
        dimension=upscaling_pb2.Dimension(name="spatial_extent", values_json=tiles(n)),
    ), timeout=600)
    return int(reply.task.id)


async def progress(db_url: str, task_id: int, n: int, t0: float, want_finished: bool,
                   polls: list[int] | None = None) -> tuple[float, float | None]:
    """Seconds from t0 until every job was submitted, and until every job finished (if asked); each poll (a
    count over the task's rows) is appended to `polls`."""
    conn = await asyncpg.connect(db_url)
    submitted_at = finished_at = None
    try:
        while True:
            if polls is not None:
                polls.append(1)
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE status <> 'created') AS submitted, "
                "count(*) FILTER (WHERE status IN ('finished', 'failed', 'canceled')) AS done "
                "FROM unit_jobs WHERE task_id = $1", task_id)
            assert row is not None  # an aggregate query always returns a row
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
    """User + system CPU seconds used so far by a process (from /proc; 0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:13]) / os.sysconf("SC_CLK_TCK")


def process_table() -> dict[int, tuple[str, int]]:
    """Every process of the machine: pid -> (command name, parent pid)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            table[int(entry.name)] = (name, int(rest[1]))
    return table


def with_descendants(roots: list[int], table: dict[int, tuple[str, int]]) -> list[int]:
    """`roots` and all their descendants (a service's worker processes count as the service)."""
    children: dict[int, list[int]] = {}
    for pid, (_, parent) in table.items():
        children.setdefault(parent, []).append(pid)
    out, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def load() -> str:
    """The machine's load averages (1, 5, 15 min): the machine is shared, every figure is quoted with them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


INFRASTRUCTURE = ("local-openeo", "postgresql", "rabbitmq")  # CpuMeter groups that are not our services


class CpuMeter:
    """CPU seconds per named group of processes between `start()` and `stop()`. A group is the descendants of
    some root pids, or (PostgreSQL) the server processes of this run's database, or (RabbitMQ) the broker's
    `beam.smp`. The broker is shared with everything else on the machine, so its figure is an upper bound."""

    def __init__(self, roots: dict[str, list[int]], postgres_pids: Callable[[], list[int]]) -> None:
        self.roots = roots
        self.postgres_pids = postgres_pids
        self.before: dict[str, dict[int, float]] = {}
        self.used: dict[str, float] = {}

    def _snapshot(self) -> dict[str, dict[int, float]]:
        table = process_table()
        groups = {name: with_descendants(pids, table) for name, pids in self.roots.items()}
        groups["postgresql"] = self.postgres_pids()
        groups["rabbitmq"] = [pid for pid, (name, _) in table.items() if name == "beam.smp"]
        return {name: {pid: cpu_seconds(pid) for pid in pids} for name, pids in groups.items()}

    def start(self) -> None:
        self.before = self._snapshot()

    def stop(self) -> None:
        """The CPU of the processes alive at the end (a process that ended meanwhile is not counted)."""
        after = self._snapshot()
        self.used = {name: sum(s - self.before.get(name, {}).get(pid, 0.0) for pid, s in pids.items() if s > 0)
                     for name, pids in after.items()}

    def per_job(self, jobs: int) -> str:
        total = sum(self.used.values())
        parts = ", ".join(f"{name} {1000 * s / jobs:.2f}" for name, s in self.used.items())
        return f"{1000 * total / jobs:.2f} ms per job ({parts})"

    def ours_ms(self, jobs: int) -> float:
        """CPU ms per job of this project's services (gateway, monitor, dispatchers): the issue's accounting, whose
        5.85 ms baseline was the dispatchers' 4.7 plus the monitor's 1.1; not the openEO backend or the broker and
        database servers."""
        return 1000 * sum(s for name, s in self.used.items() if name not in INFRASTRUCTURE) / jobs


def naive_loop(backend: Backend, sample: int) -> float:
    """Jobs/s of the sequential openeo-client loop (create_job + start)."""
    con = openeo.connect(backend.endpoint).authenticate_basic("demo", "demo")
    t0 = time.monotonic()
    for i, value in enumerate(tiles(sample)):
        cube = con.datacube_from_process("wind_turbine_detection", namespace=backend.application,
                                         spatial_extent=bbox(value), year="2024")
        cube.create_job(title=f"naive {i}", out_format="GTiff").start()
    return sample / (time.monotonic() - t0)


def wait_started(backend: Backend, n: int, t0: float, stop: threading.Event) -> float | None:
    """Seconds from t0 until the backend counted n job starts (None when `stop` is set first)."""
    while not stop.is_set():
        if backend.admin("GET", "report")["totals"]["started"] >= n:
            return time.monotonic() - t0
        stop.wait(0.1)
    return None


def mbjm_rate(backend: Backend, sample: int, parallelism: int, workdir: Path) -> tuple[float, dict[str, int]]:
    """Jobs/s (to the backend's n-th start) of openEO's MultiBackendJobManager over `sample` jobs: `parallel_jobs`
    and its job-start thread pool set to `parallelism`, polling every second, the documented `start_job` callback
    (it creates the job; the manager starts it), a CSV job database, results not downloaded."""
    import pandas as pd
    from openeo.extra.job_management import CsvJobDatabase, MultiBackendJobManager, _manager

    con = openeo.connect(backend.endpoint).authenticate_basic("demo", "demo")
    df = pd.DataFrame([bbox(value) for value in tiles(sample)])

    def start_job(row: pd.Series, connection: openeo.Connection, **_: object) -> openeo.BatchJob:
        extent = {key: float(row[key]) for key in ("west", "south", "east", "north")}
        cube = connection.datacube_from_process("wind_turbine_detection", namespace=backend.application,
                                                spatial_extent=extent, year="2024")
        return cube.create_job(title=f"mbjm {row.name}", out_format="GTiff")

    # With basic auth there is no refresh token: the manager warns at every launch that it cannot refresh it.
    logging.getLogger("openeo.extra.job_management").setLevel(logging.ERROR)
    manager = MultiBackendJobManager(poll_sleep=1, root_dir=workdir, download_results=False)
    manager.add_backend("local", connection=con, parallel_jobs=parallelism)
    # run_jobs builds its worker pool itself, with 2 job-start threads: give it ours.
    pool_class = _manager._JobManagerWorkerThreadPool
    _manager._JobManagerWorkerThreadPool = functools.partial(  # type: ignore[assignment, misc]
        pool_class, pool_configs={"job_start": parallelism})
    stop = threading.Event()
    result: list[float | None] = [None]
    t0 = time.monotonic()
    watcher = threading.Thread(target=lambda: result.__setitem__(0, wait_started(backend, sample, t0, stop)))
    watcher.start()
    try:
        # (openeo annotates start_job as Callable[[], BatchJob], but calls it with row, connection, ...)
        stats = manager.run_jobs(df=df, start_job=start_job,  # type: ignore[arg-type]
                                 job_db=CsvJobDatabase(workdir / "jobs.csv"))
        watcher.join(timeout=5)  # the last starts are counted within the watcher's next poll
    finally:
        _manager._JobManagerWorkerThreadPool = pool_class  # type: ignore[misc]
        stop.set()
        watcher.join()
    if result[0] is None:
        raise RuntimeError(f"MultiBackendJobManager: {sample} starts not seen ({dict(stats)})")
    return sample / result[0], dict(stats)


def start_times(backend: Backend) -> list[float]:
    """Epoch seconds of every job start on `backend` (a job's `updated` is its start once started: queued and
    run durations are zero, so it finished at that instant and nothing changed it since)."""
    con = openeo.connect(backend.endpoint).authenticate_basic("demo", "demo")
    jobs = con.list_jobs(limit=None)
    return sorted(datetime.fromisoformat(job["updated"].replace("Z", "+00:00")).timestamp()
                  for job in jobs if job.get("status") != "created")


def max_in_window(times: list[float], window_s: float = 1.0) -> int:
    """The most of `times` (sorted) in any half-open window [t, t + window_s)."""
    return max((bisect.bisect_left(times, t + window_s) - i for i, t in enumerate(times)), default=0)


def dispatcher_parallelism(env: dict[str, str]) -> tuple[str, int]:
    """The dispatcher's concurrency setting (its environment variable and the value it will run with)."""
    fields = {f.name: f for f in dataclasses.fields(upscaling_config.Settings)}
    for name in CONCURRENCY_SETTINGS:
        if name in fields:
            variable = upscaling_config.ENV.get(name, name.upper())
            raw, default = env.get(variable), fields[name].default
            return variable, int(raw) if raw else int(default) if isinstance(default, (int, float)) else 0
    raise RuntimeError("no dispatcher concurrency setting found in upscaling.config.Settings")


@contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM/SIGHUP raise SystemExit, so the clean-up in `finally` runs also when the run is killed."""
    def raise_exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, raise_exit) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated parts to run, of {PARTS}")
    parser.add_argument("--jobs", type=int, default=10_000, help="throughput: jobs of the zero-latency task")
    parser.add_argument("--sample", type=int, default=300, help="throughput: jobs of the naive baseline loop")
    parser.add_argument("--dispatchers", type=int, default=2,
                        help="dispatcher processes of the throughput and monitor parts (latency and limit run one)")
    parser.add_argument("--active", type=int, default=1_000, help="monitor: active jobs")
    parser.add_argument("--watchers", type=int, default=10, help="monitor: WatchTask streams")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="latency/limit: delay on create and start")
    parser.add_argument("--latency-jobs", type=int, default=2_000, help="latency: jobs of our task")
    parser.add_argument("--naive-sample", type=int, default=100, help="latency: jobs of the naive loop")
    parser.add_argument("--mbjm-sample", type=int, default=200, help="latency: jobs of MultiBackendJobManager")
    parser.add_argument("--parallelism", type=int, default=0,
                        help="MultiBackendJobManager's parallel_jobs and start threads (0: the dispatcher's setting)")
    parser.add_argument("--limit-starts", type=float, default=10.0, help="limit: starts_per_second of the backend")
    parser.add_argument("--limit-jobs", type=int, default=300, help="limit: jobs of the task")
    parser.add_argument("--dispatcher-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment of the dispatchers (repeatable; the bench's own is passed through)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="throughput and latency: per-job counts (SQL, broker, HTTP, json) and py-spy profiles "
                             "into DIR (DIR/latency for the latency part)")
    args = parser.parse_args(argv)
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown or not args.parts:
        parser.error(f"--parts: unknown {sorted(unknown)}; choose from {PARTS}")
    for item in args.dispatcher_env:
        if "=" not in item:
            parser.error(f"--dispatcher-env {item!r}: expected NAME=VALUE")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    admin_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    rabbitmq_url = os.environ.get("RABBITMQ_URL", DEFAULT_RABBITMQ_URL)
    db_name = f"upscaling_bench_{uuid.uuid4().hex[:8]}"
    prefix = f"bench_{uuid.uuid4().hex[:8]}"
    with terminate_as_exit():
        asyncio.run(_exec(admin_url, f'CREATE DATABASE "{db_name}"'))
        try:
            return Run(args, admin_url, rabbitmq_url, db_name, prefix).run()
        finally:
            # Every broker name and the database of this run go, also when it failed.
            asyncio.run(drop_private_resources(admin_url, db_name, rabbitmq_url, prefix))
            print(f"Removed database {db_name} and broker names {prefix}.*", flush=True)


class Run:
    """One benchmark run: its processes, its figures."""

    def __init__(self, args: argparse.Namespace, admin_url: str, rabbitmq_url: str, db_name: str,
                 prefix: str) -> None:
        self.args = args
        self.db_url = with_database(admin_url, db_name)
        self.admin_url, self.db_name = admin_url, db_name
        self.rabbitmq_url = rabbitmq_url
        self.prefix = prefix
        self.logs = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
        self.backends: dict[str, Backend] = {}
        self.services: list[ServiceProcess] = []
        self.lines: list[str] = []
        self.ok: dict[str, bool] = {}

    def out(self, line: str) -> None:
        self.lines.append(line)

    def run(self) -> int:
        args = self.args
        try:
            self.start_stack()
            if "throughput" in args.parts:
                self.throughput()
            if "monitor" in args.parts:
                self.monitor()
            if "latency" in args.parts or "limit" in args.parts:
                for service in self.services:
                    if service.name.startswith("dispatcher-") and service.name != "dispatcher-0":
                        service.stop()
            if "latency" in args.parts:
                self.latency()
            if "limit" in args.parts:
                self.limit()
        finally:
            for service in reversed(self.services):
                service.stop()
            for backend in self.backends.values():
                backend.stop()
        print("\n" + "\n".join(self.lines))
        verdicts = ", ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in self.ok.items())
        print(f"\nTargets: {verdicts}")
        print(f"Service logs: {self.logs}")
        shutil.rmtree(self.logs / "profile-raw", ignore_errors=True)
        return 0

    def start_stack(self) -> None:
        args = self.args
        latency_s = args.latency_ms / 1000
        self.backends["zero"] = start_local_openeo("zero")
        if "latency" in args.parts:
            self.backends["slow"] = start_local_openeo("slow", *latency_flags(latency_s))
        if "limit" in args.parts:
            self.backends["limited"] = start_local_openeo("limited", *latency_flags(latency_s))
        auth = {"method": "basic", "username": "demo", "password": "demo"}
        entries = [{"endpoint": b.endpoint, "auth": auth, "max_running_jobs": 0} for b in self.backends.values()]
        if "limited" in self.backends:
            entries[-1]["starts_per_second"] = args.limit_starts
        http_port, grpc_port = free_port(), free_port()
        self.grpc_address = f"127.0.0.1:{grpc_port}"
        env = {**os.environ, "DATABASE_URL": self.db_url, "RABBITMQ_URL": self.rabbitmq_url,
               "BROKER_PREFIX": self.prefix, "LOG_LEVEL": "INFO", "MAX_DIMENSION_VALUES": "20000",
               "GATEWAY_HOST": "127.0.0.1", "GATEWAY_HTTP_PORT": str(http_port), "GATEWAY_GRPC_PORT": str(grpc_port),
               "TILER_ADDRESS": f"127.0.0.1:{free_port()}", "MONITOR_HEALTH_PORT": str(free_port()),
               "MONITOR_PAGE_SIZE": str(PAGE_SIZE), "MONITOR_INTERVAL_MIN_S": "0.5", "MONITOR_INTERVAL_MAX_S": "2",
               "METRICS_PORT": "0", "OPENEO_BACKENDS": json.dumps(entries),
               "UDP_ALLOWED_URLS": ",".join(f"{b.url}/udp/" for b in self.backends.values())}
        worker_env = {**env, "MIGRATE_ON_START": "false"}
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            worker_env["BENCH_PROFILE_DIR"] = str(args.profile.resolve())
            worker_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROFILE_HOOK), env.get("PYTHONPATH")]))
        dispatcher_env = {**worker_env, **dict(item.split("=", 1) for item in args.dispatcher_env)}
        self.parallelism_setting = dispatcher_parallelism(dispatcher_env)
        self.services = [ServiceProcess("gateway", "gateway", env, self.logs / "gateway.log"),
                         ServiceProcess("monitor", "services.monitor", worker_env, self.logs / "monitor.log")]
        self.services += [ServiceProcess(f"dispatcher-{i}", "services.dispatcher",
                                         {**dispatcher_env, "DISPATCHER_HEALTH_PORT": str(free_port())},
                                         self.logs / f"dispatcher-{i}.log") for i in range(max(1, args.dispatchers))]
        self.services[0].start()
        wait_grpc_serving(self.grpc_address, self.services[0])
        for service in self.services[1:]:
            service.start()
        for service in self.services[1:]:
            wait_grpc_serving(f"127.0.0.1:{service.env.get(service.name.split('-')[0].upper() + '_HEALTH_PORT')}",
                              service)
        channel = grpc.insecure_channel(self.grpc_address, options=[
            ("grpc.max_send_message_length", 1 << 28), ("grpc.max_receive_message_length", 1 << 28)])
        self.stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
        variable, value = self.parallelism_setting
        self.out(f"Run: {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, {os.cpu_count()} cores, "
                 f"dispatcher {variable}={value}, git {git_head()}")

    def cpu_meter(self, backend: Backend) -> CpuMeter:
        roots = {s.name: [s.process.pid] for s in self.services if s.process and s.process.poll() is None}
        roots["local-openeo"] = [backend.process.pid]
        return CpuMeter(roots, self.postgres_pids)

    def database_stats(self) -> dict[str, int]:
        """This run's database counters (pg_stat_database: transactions, rows read and written)."""
        async def query() -> dict[str, int]:
            conn = await asyncpg.connect(self.admin_url)
            try:
                await conn.execute("SELECT pg_stat_clear_snapshot()")
                row = await conn.fetchrow(
                    "SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted, tup_updated,"
                    " tup_deleted, blks_hit + blks_read AS blocks FROM pg_stat_database WHERE datname = $1",
                    self.db_name)
                return {key: int(value) for key, value in dict(row or {}).items()}
            finally:
                await conn.close()

        return asyncio.run(query())

    def postgres_pids(self) -> list[int]:
        """The PostgreSQL server processes of this run's database (its clients' connections)."""
        async def query() -> list[int]:
            conn = await asyncpg.connect(self.admin_url)
            try:
                rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", self.db_name)
                return [int(row["pid"]) for row in rows]
            finally:
                await conn.close()

        return asyncio.run(query())

    def throughput(self) -> None:
        args, backend = self.args, self.backends["zero"]
        print(f"Throughput: naive openeo-client loop over {args.sample} jobs ...", flush=True)
        naive_load = load()
        client_cpu, backend_cpu = time.process_time(), cpu_seconds(backend.process.pid)
        naive_rate = naive_loop(backend, args.sample)
        # The floor of any pipeline built on the `openeo` client and this backend: what the client and the backend
        # spend on create + start alone (no tracking, no database, no queue).
        client_cpu = 1000 * (time.process_time() - client_cpu) / args.sample
        backend_cpu = 1000 * (cpu_seconds(backend.process.pid) - backend_cpu) / args.sample
        backend.admin("POST", "reset", {"jobs": True, "counters": True})
        print(f"Throughput: one task of {args.jobs} jobs ...", flush=True)
        meter = self.cpu_meter(backend)
        profiler = Profiler(args.profile, args.profile, self.services) if args.profile else None
        if profiler:
            profiler.start()
            db_before = self.database_stats()
        meter.start()
        t0 = time.monotonic()
        task_id = create_task(self.stub, backend, args.jobs, "bench throughput")
        created_s = time.monotonic() - t0
        polls: list[int] = []
        submitted_s, finished_s = asyncio.run(progress(self.db_url, task_id, args.jobs, t0, True, polls))
        assert finished_s is not None
        meter.stop()
        run_load = load()
        if profiler:
            self.lines.extend(profiler.stop(args.jobs))
            time.sleep(1)  # PostgreSQL's statistics collector reports about once a second
            db_after = self.database_stats()
            self.out("### PostgreSQL, this run's database, per job (all clients): " + ", ".join(
                f"{key} {(db_after[key] - db_before.get(key, 0)) / args.jobs:.2f}" for key in db_after)
                + f"; of tup_returned, the bench's own progress polls account for about {len(polls):.0f} x "
                  f"{args.jobs} rows = {len(polls):.0f} per job")
        duplicates = backend.admin("GET", "report").get("duplicates", {}).get("tags", {})
        # The machine's load changes over a run: the baseline is measured again after ours, the ratio uses both.
        print(f"Throughput: naive openeo-client loop over {args.sample} jobs again ...", flush=True)
        naive_after_load = load()
        naive_after = naive_loop(backend, args.sample)
        rate = args.jobs / submitted_s
        self.out(f"\n## Zero-latency backend, {args.dispatchers} dispatcher process(es), {args.jobs} jobs")
        self.out("| measure | value |\n|---|---|")
        self.out(f"| CreateTask({args.jobs}) call | {created_s:.2f} s |")
        self.out(f"| all {args.jobs} jobs submitted | {submitted_s:.1f} s = **{rate:.0f} jobs/s** (load {run_load}) |")
        self.out(f"| all {args.jobs} jobs finished | {finished_s:.1f} s = {args.jobs / finished_s:.0f} jobs/s |")
        self.out(f"| naive client loop, {args.sample} jobs (baseline), before / after ours | {naive_rate:.0f} jobs/s "
                 f"(load {naive_load}) / {naive_after:.0f} jobs/s (load {naive_after_load}) |")
        self.out(f"| ratio submitted / naive (mean of both) | {2 * rate / (naive_rate + naive_after):.2f}x |")
        self.out(f"| naive loop's own CPU per job (before ours): the `openeo` client's create + start and the backend "
                 f"answering them, nothing else | {client_cpu + backend_cpu:.2f} ms (client {client_cpu:.2f}, "
                 f"local backend {backend_cpu:.2f}) |")
        self.out(f"| duplicate backend jobs | {len(duplicates)} |")
        self.out(f"| CPU, CreateTask to all finished ({finished_s:.1f} s wall), all processes | "
                 f"{meter.per_job(args.jobs)} |")
        ours_ms = meter.ours_ms(args.jobs)
        self.out(f"| CPU of our services (gateway, monitor, dispatchers) | **{ours_ms:.2f} ms per job** |")
        self.ok["throughput >= 500 jobs/s"] = rate >= 500
        self.ok["CPU of our services <= 2.5 ms/job"] = ours_ms <= 2.5
        self.ok["no duplicates (zero latency)"] = not duplicates

    def monitor(self) -> None:
        args, backend = self.args, self.backends["zero"]
        print(f"Monitor cost: {args.active} active jobs, {args.watchers} watchers ...", flush=True)
        backend.admin("PUT", "config", {"queue_seconds": 0, "run_seconds": 3600})
        task_id = create_task(self.stub, backend, args.active, "bench monitor")
        asyncio.run(progress(self.db_url, task_id, args.active, time.monotonic(), False))
        watchers = [threading.Thread(target=_watch, args=(self.stub, task_id), daemon=True)
                    for _ in range(args.watchers)]
        for watcher in watchers:
            watcher.start()
        since = time.time() + 1
        time.sleep(12)  # a measuring span of monitor cycles, not a wait for a condition
        calls = cycle_calls(self.logs / "monitor.log", since)
        self.stub.CancelTask(upscaling_pb2.CancelTaskRequest(task_id=task_id), timeout=60)
        target = math.ceil(args.active / PAGE_SIZE) + 1
        apex = args.watchers * args.active
        worst = max(calls) if calls else None
        self.out(f"\n## Monitor, {args.active} active jobs, {args.watchers} watchers (load {load()})")
        self.out(f"backend calls per monitor cycle: max {worst} over {len(calls)} cycles (target <= {target}); "
                 f"APEx-style watching: {apex} calls per interval, ours {apex / max(1, worst or 1):.0f}x fewer")
        self.ok[f"monitor <= {target} calls/cycle"] = worst is not None and worst <= target

    def latency(self) -> None:
        args, backend = self.args, self.backends["slow"]
        parallelism = args.parallelism or self.parallelism_setting[1]
        print(f"Latency {args.latency_ms:.0f} ms: naive loop over {args.naive_sample} jobs ...", flush=True)
        naive_load = load()
        naive_rate = naive_loop(backend, args.naive_sample)
        backend.admin("POST", "reset", {"jobs": True, "counters": True})
        print(f"Latency {args.latency_ms:.0f} ms: MultiBackendJobManager over {args.mbjm_sample} jobs "
              f"(parallel_jobs={parallelism}) ...", flush=True)
        mbjm_load = load()
        workdir = Path(tempfile.mkdtemp(prefix="bench-mbjm-"))
        try:
            mbjm, mbjm_stats = mbjm_rate(backend, args.mbjm_sample, parallelism, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        backend.admin("POST", "reset", {"jobs": True, "counters": True})
        print(f"Latency {args.latency_ms:.0f} ms: one task of {args.latency_jobs} jobs, one dispatcher ...", flush=True)
        meter = self.cpu_meter(backend)
        profiler = Profiler(args.profile, args.profile / "latency", self.services) if args.profile else None
        if profiler:
            profiler.start()
        meter.start()
        t0 = time.monotonic()
        task_id = create_task(self.stub, backend, args.latency_jobs, "bench latency")
        submitted_s, _ = asyncio.run(progress(self.db_url, task_id, args.latency_jobs, t0, False))
        meter.stop()
        if profiler:
            self.lines.extend(profiler.stop(args.latency_jobs))
        ours_load = load()
        report = backend.admin("GET", "report")
        duplicates = report.get("duplicates", {}).get("tags", {})
        faults = report.get("faults", {})
        ours = args.latency_jobs / submitted_s
        self.out(f"\n## Backend holding every create and start for {args.latency_ms:.0f} ms, one dispatcher "
                 f"({self.parallelism_setting[0]}={self.parallelism_setting[1]})")
        self.out("| run | jobs | jobs/s submitted | load (1/5/15 min) |\n|---|---|---|---|")
        self.out(f"| ours (CreateTask to all submitted) | {args.latency_jobs} | **{ours:.1f}** | {ours_load} |")
        self.out(f"| naive sequential openeo loop (sample) | {args.naive_sample} | {naive_rate:.2f} | {naive_load} |")
        self.out(f"| MultiBackendJobManager, parallel_jobs={parallelism}, {parallelism} start threads, "
                 f"poll_sleep=1 (sample) | {args.mbjm_sample} | {mbjm:.2f} | {mbjm_load} |")
        self.out(f"ratios: ours / naive **{ours / naive_rate:.1f}x**, ours / MultiBackendJobManager "
                 f"**{ours / mbjm:.1f}x**; duplicate backend jobs: {len(duplicates)}; injected faults in our run: "
                 f"{json.dumps(faults)}; MultiBackendJobManager stats: {json.dumps(mbjm_stats)}")
        self.out(f"CPU of our run: {meter.per_job(args.latency_jobs)}")
        self.ok["latency: ours >= 20x naive"] = ours >= 20 * naive_rate
        self.ok["latency: ours >= 15x MultiBackendJobManager"] = ours >= 15 * mbjm
        self.ok["no duplicates (latency)"] = not duplicates

    def limit(self) -> None:
        args, backend = self.args, self.backends["limited"]
        print(f"Limit: {args.limit_jobs} jobs, starts_per_second={args.limit_starts} ...", flush=True)
        t0 = time.monotonic()
        task_id = create_task(self.stub, backend, args.limit_jobs, "bench limit")
        submitted_s, _ = asyncio.run(progress(self.db_url, task_id, args.limit_jobs, t0, False))
        times = start_times(backend)
        worst = max_in_window(times)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        self.out(f"\n## Backend with starts_per_second={args.limit_starts:g} ({args.latency_ms:.0f} ms on create "
                 f"and start), one dispatcher, {args.limit_jobs} jobs (load {load()})")
        self.out(f"starts seen by the backend: {len(times)}; all submitted in {submitted_s:.1f} s; mean start rate "
                 f"{(len(times) - 1) / span if span else 0:.2f}/s; **max starts in any 1 s window: {worst}** "
                 f"(limit {args.limit_starts:g}); smallest gap between starts {min(gaps, default=0) * 1000:.0f} ms")
        self.ok["starts_per_second honoured"] = len(times) == args.limit_jobs and worst <= args.limit_starts


class Profiler:
    """Per-job counters (bench/profile_hook, snapshots on SIGUSR1) and py-spy recordings of the dispatchers and
    the monitor over one phase."""

    def __init__(self, hook_directory: Path, directory: Path, services: list[ServiceProcess]) -> None:
        self.hook_directory = hook_directory.resolve()  # where the services' hooks write their snapshots
        self.directory = directory.resolve()  # where this phase's results go
        self.directory.mkdir(parents=True, exist_ok=True)
        self.targets = [s for s in services if s.process and s.process.poll() is None
                        and (s.name == "monitor" or s.name.startswith("dispatcher"))]
        self.spies: list[subprocess.Popen[bytes]] = []

    def _snapshot(self) -> dict[str, dict[str, int]]:
        """Signal every target and read the counts it writes."""
        seen = set(self.hook_directory.glob("*.json"))
        for service in self.targets:
            assert service.process is not None
            service.process.send_signal(signal.SIGUSR1)
        counts: dict[str, dict[str, int]] = {}
        deadline = time.monotonic() + 10
        while len(counts) < len(self.targets) and time.monotonic() < deadline:
            for service in self.targets:
                assert service.process is not None
                for path in self.hook_directory.glob(f"*-{service.process.pid}-*.json"):
                    if path not in seen and service.name not in counts:
                        try:
                            counts[service.name] = json.loads(path.read_text())
                        except ValueError:
                            pass  # still being written
            time.sleep(0.1)
        return counts

    def start(self) -> None:
        self.before = self._snapshot()
        spy = shutil.which("py-spy", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
        if spy:
            for service in self.targets:
                assert service.process is not None
                self.spies.append(subprocess.Popen(
                    [spy, "record", "--pid", str(service.process.pid), "--format", "raw", "--rate", str(PYSPY_RATE),
                     "--nonblocking", "--gil", "--threads",
                     "--output", str(self.directory / f"{service.name}.pyspy.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop(self, jobs: int) -> list[str]:
        after = self._snapshot()
        for spy in self.spies:
            spy.send_signal(signal.SIGINT)
        for spy in self.spies:
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
        lines = [f"\n## Profile: per-job counts ({jobs} jobs; files in {self.directory})"]
        for name, counts in after.items():
            before = self.before.get(name, {})
            delta = {key: value - before.get(key, 0) for key, value in counts.items()}
            delta = {key: value for key, value in delta.items() if value > 0}
            (self.directory / f"{name}.counts.json").write_text(json.dumps(delta, indent=1, sort_keys=True))
            lines.append(f"### {name}")
            for key, value in sorted(delta.items(), key=lambda kv: -kv[1])[:25]:
                lines.append(f"- {value / jobs:8.3f} per job  {key}")
        for path in sorted(self.directory.glob("*.pyspy.txt")):
            lines.append(f"### py-spy {path.name}: CPU ms per job by frame (inclusive; samples of the GIL holder, "
                         f"{PYSPY_RATE}/s)")
            for frame, samples in top_frames(path):
                lines.append(f"- {1000 * samples / PYSPY_RATE / jobs:7.3f} ms  {frame}")
        for service in self.targets:
            assert service.process is not None
            for path in self.hook_directory.glob(f"*-{service.process.pid}-*.json"):
                path.unlink()
        return lines


def top_frames(path: Path, n: int = 30) -> list[tuple[str, int]]:
    """The `n` frames (function and file) with the most samples in a py-spy raw (collapsed stacks) file, each
    sample counted once per frame however deep its recursion."""
    totals: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = {re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")[1:]}
        for frame in frames:
            totals[frame] += int(count)
    return totals.most_common(n)


def git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


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
