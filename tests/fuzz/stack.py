"""The stack the fuzz tests attack: tiler, gateway, dispatcher and monitor as real processes over a private
database and broker prefix, with the local openEO backend; health checks and the final stuck-task check."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.infra import ROOT, ServiceProcess, free_port, unique_name, wait_grpc_serving, wait_http_ok, with_database
from tests.support import LocalOpenEO, admin_sql, db_connect, drop_private_resources, tiles
from upscaling import broker
from upscaling.migrations import migrate
from upscaling.statuses import TERMINAL_TASK_STATUSES

T = TypeVar("T")
MAX_TILES = 5000
MAX_DIMENSION_VALUES = 50
HTTP_MAX_BODY_BYTES = 2 * 1024 * 1024
GRPC_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Address space of each fuzzed service: an input that makes a service balloon ends in a MemoryError (and a
# failed test) instead of the machine's OOM killer hitting whatever else runs there.
MEMORY_LIMIT_BYTES = 4 * 1024**3


class LimitedProcess(ServiceProcess):
    """A service process with MEMORY_LIMIT_BYTES of address space."""

    def start(self) -> None:
        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))

        self.log_file = self.log_path.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", self.module], env=self.env, cwd=ROOT,
                                        stdout=self.log_file, stderr=subprocess.STDOUT, preexec_fn=limit)


class SyncDb:
    """One asyncpg connection driven from synchronous (hypothesis) tests through a loop in a thread."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.conn: asyncpg.Connection = self.run(db_connect(url))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=60)

    def fetchval(self, sql: str, *args: Any) -> Any:
        return self.run(self.conn.fetchval(sql, *args))

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return self.run(self.conn.fetch(sql, *args))

    def close(self) -> None:
        self.run(self.conn.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@dataclass
class FuzzStack:
    """Addresses of the running services, the backend, the database and the broker names."""

    tiler: str
    gateway_grpc: str
    http: str
    ws: str
    backend: LocalOpenEO
    database_url: str
    rabbitmq_url: str
    prefix: str
    db: SyncDb
    processes: list[ServiceProcess]
    health_ports: list[int]
    created_tasks: set[int] = field(default_factory=set)

    @property
    def topology(self) -> broker.Topology:
        return broker.Topology(prefix=self.prefix)

    def service(self) -> dict[str, str]:
        return {"endpoint": self.backend.endpoint, "application": self.backend.application}

    def task_body(self, n: int = 1) -> dict[str, Any]:
        """A valid `POST /upscale_tasks` body of n tiles."""
        return {"title": "fuzz", "label": "openeo", "service": self.service(), "parameters": {"year": 2024},
                "dimension": {"name": "spatial_extent", "values": tiles(n)}}

    def assert_healthy(self) -> None:
        """Every process alive, the gateway's /health 200, every gRPC health service SERVING."""
        for proc in self.processes:
            proc.assert_alive()
        reply = requests.get(f"{self.http}/health", timeout=15)
        assert reply.status_code == 200, reply.text
        for address in (self.tiler, self.gateway_grpc, *(f"127.0.0.1:{p}" for p in self.health_ports)):
            with grpc.insecure_channel(address) as channel:
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
                assert status.status == health_pb2.HealthCheckResponse.SERVING, address

    def task_count(self) -> tuple[int, int, int]:
        """(tasks, unit jobs, outbox rows ever written) in the database."""
        row = self.db.run(self.db.conn.fetchrow(
            "SELECT (SELECT count(*) FROM upscale_tasks) AS t, (SELECT count(*) FROM unit_jobs) AS j,"
            " (SELECT coalesce(max(id), 0) FROM outbox) AS o"))
        return row["t"], row["j"], row["o"]

    def open_tasks(self) -> list[int]:
        return [r["id"] for r in self.db.fetch(
            "SELECT id FROM upscale_tasks WHERE status <> ALL($1::text[]) ORDER BY id", list(TERMINAL_TASK_STATUSES))]

    def settle_tasks(self, finish_s: float = 60, cancel_s: float = 60) -> dict[str, int]:
        """Let every task finish (up to `finish_s`), cancel those still open and wait for them (`cancel_s`);
        returns the tasks per final status plus `canceled at the end` and `left non-terminal`."""
        deadline = time.monotonic() + finish_s
        while self.open_tasks() and time.monotonic() < deadline:
            time.sleep(0.5)
        leftovers = self.open_tasks()
        for task_id in leftovers:
            reply = requests.post(f"{self.http}/upscale_tasks/{task_id}/cancel", timeout=30)
            assert reply.status_code in (200, 409), reply.text
        deadline = time.monotonic() + cancel_s
        while self.open_tasks() and time.monotonic() < deadline:
            time.sleep(0.5)
        result = {f"tasks {r['status']}": r["n"] for r in self.db.fetch(
            "SELECT status, count(*) AS n FROM upscale_tasks GROUP BY status")}
        result["tasks canceled at the end"] = len(leftovers)
        result["tasks left non-terminal"] = len(self.open_tasks())
        return result


def _env(base: dict[str, str], **extra: str) -> dict[str, str]:
    return {**base, **extra}


@contextlib.contextmanager
def start_fuzz_stack(infra: Any, service_env: dict[str, str], logs: Path) -> Iterator[FuzzStack]:
    """Start every process (waited until healthy); stop them and drop the database and broker names after."""
    backend = LocalOpenEO("--queue-seconds", "0.1", "--run-seconds", "0.3")
    db_name = unique_name("upscaling_fuzz")
    asyncio.run(admin_sql(infra.admin_database_url, f'CREATE DATABASE "{db_name}"'))
    db_url = with_database(infra.admin_database_url, db_name)
    asyncio.run(migrate(db_url))
    prefix = unique_name("fuzz")
    tiler_port, http_port, grpc_port = free_port(), free_port(), free_port()
    dispatcher_port, monitor_port = free_port(), free_port()
    env = _env(service_env, DATABASE_URL=db_url, BROKER_PREFIX=prefix, OPENEO_BACKENDS=backend.backends_env(),
               UDP_ALLOWED_URLS=backend.udp_catalogue,
               MIGRATE_ON_START="false", HEALTH_HOST="127.0.0.1", MAX_TILES=str(MAX_TILES),
               MAX_DIMENSION_VALUES=str(MAX_DIMENSION_VALUES), HTTP_MAX_BODY_BYTES=str(HTTP_MAX_BODY_BYTES),
               GRPC_MAX_MESSAGE_BYTES=str(GRPC_MAX_MESSAGE_BYTES), UDP_FETCH_TIMEOUT_S="3", OUTBOX_POLL_S="0.5",
               TILER_PORT=str(tiler_port), TILER_ADDRESS=f"127.0.0.1:{tiler_port}", TILER_TIMEOUT_S="60",
               GATEWAY_HTTP_PORT=str(http_port), GATEWAY_GRPC_PORT=str(grpc_port),
               DISPATCHER_HEALTH_PORT=str(dispatcher_port), MONITOR_HEALTH_PORT=str(monitor_port),
               MONITOR_INTERVAL_MIN_S="0.2", MONITOR_INTERVAL_MAX_S="1", OPENEO_TIMEOUT_S="5",
               SUBMIT_BACKOFF_BASE_S="0.05", SUBMIT_BACKOFF_MAX_S="0.5", GRPC_GRACE_S="5", DISPATCHER_PREFETCH="8")
    procs = [LimitedProcess("fuzz-tiler", "services.tiler", env, logs / "tiler.log"),
             LimitedProcess("fuzz-gateway", "gateway", env, logs / "gateway.log"),
             LimitedProcess("fuzz-dispatcher", "services.dispatcher", env, logs / "dispatcher.log"),
             LimitedProcess("fuzz-monitor", "services.monitor", env, logs / "monitor.log")]
    db: SyncDb | None = None
    try:
        for proc in procs:
            proc.start()
        wait_grpc_serving(f"127.0.0.1:{tiler_port}", procs[0])
        wait_http_ok(f"http://127.0.0.1:{http_port}/health", procs[1])
        wait_grpc_serving(f"127.0.0.1:{grpc_port}", procs[1])
        wait_grpc_serving(f"127.0.0.1:{dispatcher_port}", procs[2])
        wait_grpc_serving(f"127.0.0.1:{monitor_port}", procs[3])
        db = SyncDb(db_url)
        yield FuzzStack(f"127.0.0.1:{tiler_port}", f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}",
                        f"ws://127.0.0.1:{http_port}", backend, db_url, infra.rabbitmq_url, prefix, db, procs,
                        [dispatcher_port, monitor_port])
    finally:
        if db is not None:
            db.close()
        for proc in reversed(procs):
            proc.stop()
        backend.stop()
        asyncio.run(drop_private_resources(infra.admin_database_url, db_name, infra.rabbitmq_url, prefix))


def log_tail(stack: FuzzStack, name: str, n: int = 3000) -> str:
    """The end of a service's log (for assertion messages)."""
    for proc in stack.processes:
        if proc.name == name:
            return proc.log()[-n:]
    return json.dumps([p.name for p in stack.processes])
