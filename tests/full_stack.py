"""A whole stack of real processes for client-facing tests (map page, Node.js example): a gateway, one dispatcher
and a monitor on a database and broker prefix of their own, the session's tiler, and a local openEO backend whose
job durations the test chooses (slow enough to watch tiles change, or fast)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.infra import ServiceProcess, free_port, unique_name, wait_grpc_serving, wait_http_ok, with_database
from tests.support import LocalOpenEO, admin_sql, drop_private_resources

# A small AOI near the seed notebook's (Styria, Austria): 5x5km tiles of it make a handful of jobs.
AOI = {"type": "Polygon", "coordinates": [[[14.30, 47.22], [14.42, 47.22], [14.42, 47.30], [14.30, 47.30],
                                           [14.30, 47.22]]]}


@dataclass
class FullStack:
    """Addresses of a running stack and its backend."""

    http: str
    grpc: str
    backend: LocalOpenEO
    processes: list[ServiceProcess]

    def tiles(self, aoi: dict[str, Any] = AOI, grid: str = "5x5km") -> list[dict[str, Any]]:
        """The AOI's tiles from `POST /tiles` (APEx GeometryCollection)."""
        reply = requests.post(f"{self.http}/tiles", json={"aoi": aoi, "grid": grid}, timeout=60)
        assert reply.status_code == 201, reply.text
        return reply.json()["geometries"]

    def create_task(self, title: str, values: list[dict[str, Any]]) -> int:
        """A wind-turbine task over `values` (spatial extents) on the stack's backend; its id."""
        body = {"title": title, "label": "openeo",
                "service": {"endpoint": self.backend.endpoint, "application": self.backend.application},
                "parameters": {"year": 2024}, "dimension": {"name": "spatial_extent", "values": values}}
        reply = requests.post(f"{self.http}/upscale_tasks", json=body, timeout=60)
        assert reply.status_code == 201, reply.text
        return reply.json()["id"]

    def task(self, task_id: int) -> dict[str, Any]:
        reply = requests.get(f"{self.http}/upscale_tasks/{task_id}", timeout=30)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-3000:]}" for p in self.processes)


@dataclass
class Services:
    """A gateway, its dispatchers and a monitor running on a database and broker prefix of their own."""

    http: str
    grpc: str
    database_url: str
    processes: list[ServiceProcess]


@contextlib.contextmanager
def services(infra: Any, service_env: dict[str, str], tiler_address: str, logs: Path, env: dict[str, str], *,
             name: str, dispatchers: int = 1, log_prefix: str = "") -> Iterator[Services]:
    """Start a gateway (which applies the migrations), `dispatchers` dispatchers and a monitor on a fresh database
    and broker prefix named after `name`, with the test's `env` (backends, UDP allow-list, ...) over the defaults
    here; each is waited for until it serves. Stopped, and the database and broker names dropped, after."""
    prefix = unique_name(name)
    db_name = unique_name(f"{name}_test")
    asyncio.run(admin_sql(infra.admin_database_url, f'CREATE DATABASE "{db_name}"'))
    database_url = with_database(infra.admin_database_url, db_name)
    http_port, grpc_port = free_port(), free_port()
    base = {**service_env, "BROKER_PREFIX": prefix, "DATABASE_URL": database_url, "TILER_ADDRESS": tiler_address,
            "GATEWAY_HTTP_PORT": str(http_port), "GATEWAY_GRPC_PORT": str(grpc_port), "HEALTH_HOST": "127.0.0.1",
            "MONITOR_HEALTH_PORT": str(free_port()), "MONITOR_INTERVAL_MIN_S": "0.2", "MONITOR_INTERVAL_MAX_S": "1",
            "OUTBOX_POLL_S": "0.5", "GRPC_GRACE_S": "3",
            "DB_POOL_MAX": "4",  # small pools: these stacks run beside the session's gateways on one PostgreSQL
            **env}
    gateway = ServiceProcess("gateway", "gateway", base, logs / f"{log_prefix}gateway.log")
    workers = [(ServiceProcess("dispatcher" if dispatchers == 1 else f"dispatcher-{i}", "services.dispatcher",
                               {**base, "DISPATCHER_HEALTH_PORT": (port := str(free_port()))},
                               logs / f"{log_prefix}dispatcher{'' if dispatchers == 1 else f'-{i}'}.log"), port)
               for i in range(1, dispatchers + 1)]
    monitor = ServiceProcess("monitor", "services.monitor", base, logs / f"{log_prefix}monitor.log")
    started: list[ServiceProcess] = []
    try:
        gateway.start()
        started.append(gateway)
        wait_http_ok(f"http://127.0.0.1:{http_port}/health", gateway)  # migrations are applied by now
        wait_grpc_serving(f"127.0.0.1:{grpc_port}", gateway)
        for proc, port in (*workers, (monitor, base["MONITOR_HEALTH_PORT"])):
            proc.start()
            started.append(proc)
            wait_grpc_serving(f"127.0.0.1:{port}", proc)
        yield Services(f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", database_url, started)
    finally:
        for proc in reversed(started):
            proc.stop()
        asyncio.run(drop_private_resources(infra.admin_database_url, db_name, infra.rabbitmq_url, prefix))


@contextlib.contextmanager
def full_stack(infra: Any, service_env: dict[str, str], tiler_address: str, logs: Path, *,
               queue_seconds: float, run_seconds: float, max_running_jobs: int = 8, result_px: int = 32
               ) -> Iterator[FullStack]:
    """Start backend, gateway, dispatcher and monitor; stop them and drop the database and broker names after."""
    backend = LocalOpenEO("--queue-seconds", str(queue_seconds), "--run-seconds", str(run_seconds),
                          "--result-size", str(result_px))
    try:
        with services(infra, service_env, tiler_address, logs, name="full",
                      env={"OPENEO_BACKENDS": backend.backends_env(max_running_jobs=max_running_jobs),
                           "UDP_ALLOWED_URLS": backend.udp_catalogue}) as running:
            yield FullStack(running.http, running.grpc, backend, running.processes)
    finally:
        backend.stop()
