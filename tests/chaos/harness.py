"""The chaos run: one task of many jobs through the whole stack (tiler, gateway, 2 dispatchers, 2 monitors, the
local openEO backend with seeded faults of every kind) on a private RabbitMQ node and a private PostgreSQL cluster,
while every service kind is SIGKILLed and restarted and the broker and the database are each stopped for a while.
A gRPC watcher follows the task throughout, reconnecting with `after_sequence`. Everything is derived from one
seed; the run records when each fault happened and how long until the task made progress again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import grpc
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.chaos.servers import PrivatePostgres, PrivateRabbitMQ
from tests.infra import ServiceProcess, free_port, wait_grpc_serving, wait_http_ok, with_database
from tests.support import LocalOpenEO, admin_sql, tiles
from upscaling import broker
from upscaling.health_watch import LIVENESS
from upscaling.migrations import migrate
from upscaling.statuses import TERMINAL_JOB_STATUSES, TERMINAL_TASK_STATUSES, task_status_from_proto
from upscaling.v1 import upscaling_pb2, upscaling_pb2_grpc

SERVICE_KINDS = ("dispatcher", "monitor", "gateway", "tiler")
OPENEO_TIMEOUT_S = 3.0


def backend_faults() -> dict[str, dict[str, float]]:
    """Seeded faults of every kind the local backend knows (local_openeo.faults.KINDS), about 5 % per endpoint;
    `delay` holds a request past the client timeout."""
    return {
        "create_job": {"503": 0.02, "500": 0.005, "502": 0.005, "504": 0.005, "429": 0.005, "delay": 0.005,
                       "lost": 0.01, "lost_500": 0.0025, "lost_502": 0.0025, "lost_503": 0.0025, "lost_504": 0.0025},
        "start_job": {"503": 0.03, "lost_502": 0.01, "lost": 0.005, "delay": 0.005},
        "list_jobs": {"503": 0.03, "delay": 0.01, "lost_504": 0.03},
        "get_job": {"503": 0.05},
        "get_results": {"503": 0.03, "500": 0.01, "lost_500": 0.01},
        "get_logs": {"503": 0.05},
    }


@dataclass(frozen=True)
class ChaosConfig:
    """One run's size and fault plan."""

    seed: int
    jobs: int
    window_s: float          # faults happen within this long after the task was created
    outage_s: float          # RabbitMQ and PostgreSQL are each down this long
    kills_per_kind: int      # SIGKILLs per service kind (dispatcher, monitor, gateway, tiler)
    limit_s: float           # the task must be terminal this long after the last fault
    job_error_fraction: float = 0.05
    max_attempts: int = 3

    @classmethod
    def from_env(cls) -> ChaosConfig:
        """CHAOS_PROFILE=full (make chaos: 2,000 jobs, 20 s outages) or short (make test), CHAOS_SEED, and
        CHAOS_JOBS / CHAOS_OUTAGE_S / CHAOS_KILLS / CHAOS_WINDOW_S to override."""
        full = os.environ.get("CHAOS_PROFILE", "short") == "full"
        seed = int(os.environ.get("CHAOS_SEED") or (random.SystemRandom().randrange(1, 10**6) if full else 7))
        return cls(seed=seed,
                   jobs=int(os.environ.get("CHAOS_JOBS") or (2000 if full else 150)),
                   window_s=float(os.environ.get("CHAOS_WINDOW_S") or (150 if full else 40)),
                   outage_s=float(os.environ.get("CHAOS_OUTAGE_S") or (20 if full else 6)),
                   kills_per_kind=int(os.environ.get("CHAOS_KILLS") or 2),
                   limit_s=float(os.environ.get("CHAOS_LIMIT_S") or (600 if full else 240)))


@dataclass
class Fault:
    """One planned fault: a SIGKILL of a service (restarted after `down_s`) or an outage of a server."""

    at_s: float
    kind: str     # "kill" or "outage"
    target: str   # service name, or "rabbitmq" / "postgresql"
    down_s: float
    started: float = 0.0   # time.monotonic() when injected
    ended: float = 0.0     # ... when the service / server was back (kills: the kill itself)
    progress_at_end: int = -1
    recovered_s: float | None = None
    reported_down: set[str] = field(default_factory=set)  # outages: services whose health said so meanwhile
    not_alive: set[str] = field(default_factory=set)      # outages: services whose liveness failed meanwhile


def plan(config: ChaosConfig, services: dict[str, list[str]]) -> list[Fault]:
    """The seeded fault plan: both outages at fixed points of the window, the kills at random times outside them
    (at least `kills_per_kind` per kind, replicas chosen at random)."""
    rng = random.Random(f"{config.seed}/plan")
    w = config.window_s
    outages = [Fault(0.25 * w, "outage", "rabbitmq", config.outage_s),
               Fault(0.60 * w, "outage", "postgresql", config.outage_s)]
    busy = [(f.at_s - 2, f.at_s + f.down_s + 4) for f in outages]
    kills: list[Fault] = []
    for kind in SERVICE_KINDS:
        for _ in range(config.kills_per_kind):
            while True:
                at = rng.uniform(0.03 * w, w)
                if all(not (a <= at <= b) for a, b in busy):
                    break
            kills.append(Fault(at, "kill", rng.choice(services[kind]), rng.uniform(0.5, 3.0)))
            busy.append((at - 1, at + 1))
    return sorted(outages + kills, key=lambda f: f.at_s)


@dataclass
class Watcher:
    """A gRPC WatchTask client that reconnects with `after_sequence` whenever its stream breaks."""

    address: str
    task_id: int
    sequences: list[int] = field(default_factory=list)
    reconnects: int = 0
    terminal: str | None = None
    errors: list[str] = field(default_factory=list)

    def run(self, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        last = 0
        while self.terminal is None and time.monotonic() < deadline:
            try:
                with grpc.insecure_channel(self.address) as channel:
                    stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
                    request = upscaling_pb2.WatchTaskRequest(task_id=self.task_id, after_sequence=last)
                    for update in stub.WatchTask(request, timeout=max(1.0, deadline - time.monotonic())):
                        kind = update.WhichOneof("update")
                        if kind == "snapshot":
                            last = update.sequence
                            if task_status_from_proto(update.snapshot.status) in TERMINAL_TASK_STATUSES:
                                self.terminal = task_status_from_proto(update.snapshot.status)
                            continue
                        self.sequences.append(update.sequence)
                        last = update.sequence
                        if kind == "task_event":
                            status = task_status_from_proto(update.task_event.status)
                            if status in TERMINAL_TASK_STATUSES:
                                self.terminal = status
                if self.terminal is None:
                    self.errors.append("stream ended before the task was terminal")
            except grpc.RpcError as exc:
                self.errors.append(f"{exc.code().name}: {exc.details()}"[:200])
            if self.terminal is None:
                self.reconnects += 1
                time.sleep(0.5)


class Progress:
    """Polls the task's last event sequence (its progress) from PostgreSQL in a thread, reconnecting after
    outages; `history` is [(time.monotonic(), sequence)] of every change."""

    def __init__(self, database_url: str, task_id: int) -> None:
        self.database_url = database_url
        self.task_id = task_id
        self.history: list[tuple[float, int]] = []
        self.current = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    async def _run(self) -> None:
        conn: asyncpg.Connection | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(self.database_url, timeout=2)
                seq = await conn.fetchval("SELECT last_sequence FROM upscale_tasks WHERE id = $1", self.task_id,
                                          timeout=2)
                if seq is not None and seq != self.current:
                    self.current = seq
                    self.history.append((time.monotonic(), seq))
            except Exception:
                if conn is not None:
                    conn.terminate()
                conn = None
            await asyncio.sleep(0.2)
        if conn is not None:
            await conn.close()

    def first_change_after(self, moment: float, above: int) -> float | None:
        """Seconds from `moment` to the first recorded sequence above `above` (None: none yet)."""
        for at, seq in self.history:
            if at >= moment and seq > above:
                return at - moment
        return None


@dataclass
class Service:
    """A service process of the run on fixed ports (restarts come back on the same ones)."""

    kind: str
    proc: ServiceProcess
    health: str | None = None    # gRPC health address
    http: str | None = None      # HTTP health URL
    liveness: str | None = None  # gRPC address whose "liveness" health service must stay SERVING in outages
    started_at: float = 0.0      # time.monotonic() of its last start

    def kill(self) -> None:
        """SIGKILL the service with its child processes (the tiler's worker pool), as a container kill would."""
        assert self.proc.process is not None
        pid = self.proc.process.pid
        children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
        self.proc.process.send_signal(signal.SIGKILL)
        for child in children.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGKILL)
        self.proc.process.wait(timeout=30)

    def alive(self, timeout: float = 2) -> bool:
        """Whether the liveness health service answers SERVING (it must, whatever the dependencies do)."""
        assert self.liveness is not None
        with grpc.insecure_channel(self.liveness) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=LIVENESS), timeout=timeout)
            except grpc.RpcError:
                return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def healthy(self, timeout: float = 5) -> bool:
        if self.proc.process is None or self.proc.process.poll() is not None:
            return False
        if self.http is not None:
            try:
                return requests.get(self.http, timeout=timeout + 6).status_code == 200
            except requests.RequestException:
                return False
        assert self.health is not None
        with grpc.insecure_channel(self.health) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            except grpc.RpcError:
                return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


@dataclass
class Outcome:
    """What a run found (asserted by the test, printed as the report)."""

    config: ChaosConfig
    faults: list[Fault]
    task: dict[str, Any]
    job_statuses: dict[str, int]
    not_terminal: int
    report: dict[str, Any]
    tags: dict[str, int]
    dead_letter_queue: int
    dead_letters: dict[str, int]
    unexplained_failed_dead_letters: list[int]
    watcher: Watcher
    last_sequence: int
    unhealthy: list[str]
    duration_s: float
    duplicate_jobs: list[dict[str, Any]] = field(default_factory=list)  # unit jobs of duplicated tags


class ChaosRun:
    """Start everything, run the plan, collect the outcome, tear everything down (also on failure)."""

    def __init__(self, config: ChaosConfig) -> None:
        self.config = config
        self.logs = Path(tempfile.mkdtemp(prefix="chaos-logs-"))
        self.rabbitmq: PrivateRabbitMQ | None = None
        self.postgres: PrivatePostgres | None = None
        self.backend: LocalOpenEO | None = None
        self.services: dict[str, Service] = {}
        self.env: dict[str, str] = {}

    # --- set-up / tear-down ---------------------------------------------------------------------------------

    def __enter__(self) -> ChaosRun:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        self.rabbitmq = PrivateRabbitMQ()
        self.postgres = PrivatePostgres()
        self.postgres.start()
        self.rabbitmq.start()
        asyncio.run(admin_sql(self.postgres.url, 'CREATE DATABASE "upscaling"'))
        db_url = with_database(self.postgres.url, "upscaling")
        asyncio.run(migrate(db_url))
        self.backend = LocalOpenEO("--queue-seconds", "0.5", "--run-seconds", "2")
        self.backend.configure(seed=self.config.seed, faults=backend_faults(), fault_delay=OPENEO_TIMEOUT_S + 1.5,
                               job_error_fraction=self.config.job_error_fraction)
        # A running-jobs limit spreads the jobs over the fault window (a job spends about 2.5 s queued + running).
        running = max(4, round(self.config.jobs / (0.9 * self.config.window_s) * 2.5))
        tiler_port, http_port, grpc_port = free_port(), free_port(), free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_OPENEO_", "CHAOS_"))},
            "DATABASE_URL": db_url, "RABBITMQ_URL": self.rabbitmq.url, "BROKER_PREFIX": "chaos",
            "OPENEO_BACKENDS": self.backend.backends_env(max_running_jobs=running), "MIGRATE_ON_START": "true",
            "UDP_ALLOWED_URLS": self.backend.udp_catalogue,
            "DISPATCHER_PREFETCH": "64",
            "LOG_LEVEL": "INFO", "METRICS_PORT": "0", "HEALTH_HOST": "127.0.0.1", "GATEWAY_HOST": "127.0.0.1",
            "TILER_HOST": "127.0.0.1", "TILER_PORT": str(tiler_port), "TILER_ADDRESS": f"127.0.0.1:{tiler_port}",
            "GATEWAY_HTTP_PORT": str(http_port), "GATEWAY_GRPC_PORT": str(grpc_port),
            "OPENEO_TIMEOUT_S": str(OPENEO_TIMEOUT_S), "SUBMIT_MAX_ATTEMPTS": "12", "SUBMIT_BACKOFF_BASE_S": "0.2",
            "SUBMIT_BACKOFF_MAX_S": "3", "MONITOR_INTERVAL_MIN_S": "0.5", "MONITOR_INTERVAL_MAX_S": "2",
            "RECONCILE_INTERVAL_S": "5", "RECONCILE_AFTER_S": "30", "DISPATCHER_HEARTBEAT_S": "2",
            "DEAD_LETTER_BACKOFF_BASE_S": "0.5", "DEAD_LETTER_BACKOFF_MAX_S": "5", "GRPC_GRACE_S": "3",
            "OUTBOX_POLL_S": "0.5", "MAX_DIMENSION_VALUES": str(max(10_000, self.config.jobs))}
        self.http = f"http://127.0.0.1:{http_port}"
        self.grpc = f"127.0.0.1:{grpc_port}"
        self._add("tiler", "tiler", "services.tiler", {}, health=f"127.0.0.1:{tiler_port}")
        self._add("gateway", "gateway", "gateway", {}, http=f"{self.http}/health")
        for i in (1, 2):
            port = free_port()
            self._add("monitor", f"monitor-{i}", "services.monitor", {"MONITOR_HEALTH_PORT": str(port)},
                      health=f"127.0.0.1:{port}")
        for i in (1, 2):
            port = free_port()
            self._add("dispatcher", f"dispatcher-{i}", "services.dispatcher", {"DISPATCHER_HEALTH_PORT": str(port)},
                      health=f"127.0.0.1:{port}")
        for service in self.services.values():
            service.proc.start()
            service.started_at = time.monotonic()
        for service in self.services.values():
            if service.http:
                wait_http_ok(service.http, service.proc, timeout=120)
            else:
                assert service.health is not None
                wait_grpc_serving(service.health, service.proc, timeout=120)

    def _add(self, kind: str, name: str, module: str, extra: dict[str, str], *, health: str | None = None,
             http: str | None = None) -> None:
        proc = ServiceProcess(name, module, {**self.env, **extra}, self.logs / f"{name}.log")
        liveness = None if kind == "tiler" else (self.grpc if kind == "gateway" else health)
        self.services[name] = Service(kind, proc, health, http, liveness)

    def close(self) -> None:
        for service in self.services.values():
            with contextlib.suppress(Exception):
                service.proc.stop(timeout=15)
        if self.backend is not None:
            self.backend.stop()
        if self.rabbitmq is not None:
            self.rabbitmq.destroy()
        if self.postgres is not None:
            self.postgres.destroy()

    def log_tails(self, lines: int = 15) -> str:
        out = []
        for name, service in self.services.items():
            text = service.proc.log().splitlines()[-lines:]
            out.append(f"--- {name}\n" + "\n".join(line[:400] for line in text))
        return "\n".join(out)

    # --- the run --------------------------------------------------------------------------------------------

    def run(self) -> Outcome:
        assert self.backend is not None and self.postgres is not None and self.rabbitmq is not None
        config = self.config
        by_kind: dict[str, list[str]] = {}
        for name, service in self.services.items():
            by_kind.setdefault(service.kind, []).append(name)
        faults = plan(config, by_kind)
        body = {"title": f"chaos {config.seed}", "label": "openeo",
                "service": {"endpoint": self.backend.endpoint, "application": self.backend.application},
                "parameters": {"year": 2024}, "max_attempts": config.max_attempts,
                "dimension": {"name": "spatial_extent", "values": tiles(config.jobs)}}
        started = time.monotonic()
        reply = requests.post(f"{self.http}/upscale_tasks", json=body, timeout=120)
        assert reply.status_code == 201, reply.text
        task_id = reply.json()["id"]
        progress = Progress(self.env["DATABASE_URL"], task_id)
        progress.start()
        watcher = Watcher(self.grpc, task_id)
        watch_thread = threading.Thread(target=watcher.run, args=(config.window_s + config.limit_s + 60,),
                                        daemon=True)
        watch_thread.start()
        restarts: list[tuple[float, Service]] = []
        try:
            for fault in faults:
                while time.monotonic() < started + fault.at_s:
                    restarts = self._restart_due(restarts)
                    time.sleep(0.05)
                self._inject(fault, progress, restarts)
            while restarts:
                restarts = self._restart_due(restarts)
                time.sleep(0.05)
            deadline = time.monotonic() + config.limit_s
            while watcher.terminal is None and time.monotonic() < deadline:
                time.sleep(0.5)
            watch_thread.join(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            progress.stop()
        for fault in faults:
            fault.recovered_s = progress.first_change_after(fault.ended, fault.progress_at_end)
        return self._outcome(task_id, faults, watcher, time.monotonic() - started)

    def _restart_due(self, restarts: list[tuple[float, Service]]) -> list[tuple[float, Service]]:
        left = []
        for at, service in restarts:
            if time.monotonic() >= at:
                service.proc.start()
                service.started_at = time.monotonic()
            else:
                left.append((at, service))
        return left

    def _inject(self, fault: Fault, progress: Progress, restarts: list[tuple[float, Service]]) -> None:
        assert self.rabbitmq is not None and self.postgres is not None
        fault.started = time.monotonic()
        if fault.kind == "kill":
            self.services[fault.target].kill()
            restarts.append((time.monotonic() + fault.down_s, self.services[fault.target]))
            fault.ended = time.monotonic()
            fault.progress_at_end = progress.current
            return
        server = self.rabbitmq if fault.target == "rabbitmq" else self.postgres
        # Liveness is asked of the services alive when the outage begins (one still starting after a kill waits for
        # the server before it serves anything).
        candidates = [name for name, service in self.services.items() if service.liveness is not None]
        with ThreadPoolExecutor(len(candidates)) as pool:
            alive_before = {name for name, ok in zip(candidates, pool.map(
                lambda name: self.services[name].alive(), candidates), strict=True) if ok}
        server.stop()
        end = time.monotonic() + fault.down_s
        misses: dict[str, int] = {}
        while time.monotonic() < end:
            restarts[:] = self._restart_due(restarts)
            # Every service that uses the server says so in its health (the tiler uses neither).
            pending = [name for name, service in self.services.items()
                       if service.kind != "tiler" and name not in fault.reported_down]
            if pending and time.monotonic() < end - 1:
                with ThreadPoolExecutor(len(pending)) as pool:
                    down = pool.map(lambda name: not self.services[name].healthy(timeout=1), pending)
                    fault.reported_down.update(name for name, is_down in zip(pending, down, strict=True) if is_down)
            users = [name for name in alive_before if self.services[name].started_at < fault.started]
            if users:
                with ThreadPoolExecutor(len(users)) as pool:
                    alive = pool.map(lambda name: self.services[name].alive(), users)
                    for name, ok in zip(users, alive, strict=True):
                        # Dead means not answering three checks in a row (one slow answer on a busy machine is not).
                        misses[name] = 0 if ok else misses.get(name, 0) + 1
                        if misses[name] >= 3:
                            fault.not_alive.add(name)
            time.sleep(0.5)
        server.start()
        fault.ended = time.monotonic()
        fault.progress_at_end = progress.current

    def _outcome(self, task_id: int, faults: list[Fault], watcher: Watcher, duration_s: float) -> Outcome:
        assert self.backend is not None and self.rabbitmq is not None
        task = requests.get(f"{self.http}/upscale_tasks/{task_id}", timeout=60).json()

        async def read() -> tuple[dict[str, int], int, list[str], dict[str, int], list[int], int]:
            conn = await asyncpg.connect(self.env["DATABASE_URL"])
            try:
                rows = await conn.fetch("SELECT status, count(*) AS n FROM unit_jobs WHERE task_id = $1"
                                        " GROUP BY status", task_id)
                statuses = {r["status"]: r["n"] for r in rows}
                not_terminal = sum(n for s, n in statuses.items() if s not in TERMINAL_JOB_STATUSES)
                tags = [r["tag"] for r in await conn.fetch("SELECT tag FROM unit_jobs WHERE task_id = $1"
                                                           " AND status = 'finished'", task_id)]
                decisions = {r["decision"]: r["n"] for r in await conn.fetch(
                    "SELECT decision, count(*) AS n FROM dead_letters GROUP BY decision")}
                unexplained = [r["job_id"] for r in await conn.fetch(
                    "SELECT d.job_id FROM dead_letters d LEFT JOIN unit_jobs j ON j.id = d.job_id"
                    " WHERE d.decision = 'failed' AND (j.status IS DISTINCT FROM 'failed' OR coalesce(j.message, '')"
                    " NOT LIKE 'not submitted:%')")]
                last = await conn.fetchval("SELECT last_sequence FROM upscale_tasks WHERE id = $1", task_id)
                return statuses, not_terminal, tags, decisions, unexplained, last
            finally:
                await conn.close()

        statuses, not_terminal, finished_tags, decisions, unexplained, last = asyncio.run(read())
        report = self.backend.report()
        tags = {tag: report["tags"].get(tag, 0) for tag in finished_tags}

        async def dlq() -> int:
            connection = await aio_pika.connect(self.rabbitmq.url)
            try:
                channel = await connection.channel()
                return (await broker.queue_counts(channel, broker.Topology("chaos").dead_letter_queue))[0]
            finally:
                await connection.close()

        unhealthy = [name for name, service in self.services.items() if not service.healthy()]
        outcome = Outcome(self.config, faults, task, statuses, not_terminal, report, tags, asyncio.run(dlq()),
                          decisions, unexplained, watcher, last, unhealthy, duration_s)
        duplicated = list(report["duplicates"]["tags"]) + [t for t, n in tags.items() if n != 1]
        if duplicated:
            async def jobs() -> list[dict[str, Any]]:
                conn = await asyncpg.connect(self.env["DATABASE_URL"])
                try:
                    rows = await conn.fetch("SELECT id, tag, status, backend_job_id, attempts, message, submitted_at,"
                                            " updated FROM unit_jobs WHERE tag = ANY($1::text[])", duplicated)
                    return [dict(r) for r in rows]
                finally:
                    await conn.close()

            outcome.duplicate_jobs = asyncio.run(jobs())
            backend_jobs = self.backend.jobs()
            for job in outcome.duplicate_jobs:
                job["backend_jobs"] = [(j["id"], j.get("created"), j.get("status")) for j in backend_jobs.values()
                                       if job["tag"] in (j.get("description") or "")]
                recorded = backend_jobs.get(job["backend_job_id"] or "")
                job["recorded_backend_job"] = recorded and {k: recorded.get(k) for k in ("id", "description",
                                                                                          "status", "created")}
        return outcome


def summary(outcome: Outcome) -> str:
    """The printed report: per fault the time until the task made progress again, then the totals."""
    c = outcome.config
    lines = [f"chaos run seed={c.seed}: {c.jobs} jobs, window {c.window_s:.0f} s, outages {c.outage_s:.0f} s, "
             f"{c.kills_per_kind} kills per service kind; {outcome.duration_s:.1f} s in all"]
    for f in outcome.faults:
        what = f"SIGKILL {f.target} (restarted after {f.down_s:.1f} s)" if f.kind == "kill" \
            else f"{f.target} stopped {f.down_s:.0f} s ({len(f.reported_down)} services NOT_SERVING)"
        rec = "no further progress needed" if f.recovered_s is None else f"progress again after {f.recovered_s:.2f} s"
        lines.append(f"  t={f.at_s:6.1f} s  {what:<60} {rec}")
    recovered = [f.recovered_s for f in outcome.faults if f.recovered_s is not None]
    kills = sum(1 for f in outcome.faults if f.kind == "kill")
    outages = sum(1 for f in outcome.faults if f.kind == "outage")
    faults = outcome.report["totals"]["faults"]
    duplicates = len(outcome.report["duplicates"]["tags"])
    lines.append(
        f"  totals: jobs {sum(outcome.job_statuses.values())} {json.dumps(outcome.job_statuses, sort_keys=True)}, "
        f"task {outcome.task['status']}, kills {kills}, outages {outages}, backend faults injected {faults} "
        f"({outcome.report['totals']['lost_responses']} lost responses, "
        f"{outcome.report['totals']['failing']} job errors), duplicates {duplicates}, "
        f"stranded {outcome.not_terminal}, dead letters {json.dumps(outcome.dead_letters, sort_keys=True)}, "
        f"watcher reconnects {outcome.watcher.reconnects}, events {len(outcome.watcher.sequences)}, "
        f"recovery max {max(recovered, default=0):.2f} s / mean {sum(recovered) / max(1, len(recovered)):.2f} s")
    return "\n".join(lines)
