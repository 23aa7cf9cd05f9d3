"""Support for the operations tests: a whole stack (tiler, gateway, monitors, dispatchers, local openEO backend)
on a private database and broker prefix, every service with its metrics endpoint on a free port; scraping
`/metrics` and reading JSON log lines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import grpc
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.infra import ServiceProcess, free_port, unique_name, wait_grpc_serving, wait_http_ok, with_database
from tests.support import LocalOpenEO, admin_sql, drop_private_resources, tiles
from upscaling import broker
from upscaling.migrations import migrate
from upscaling.v1 import upscaling_pb2_grpc

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample of a `/metrics` page by (name, labels), parsed with the Prometheus client's parser."""
    reply = requests.get(url, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Type"].startswith("text/plain"), reply.headers
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def has(samples: Samples, name: str) -> bool:
    return any(n == name for n, _ in samples)


def json_lines(proc: ServiceProcess) -> list[dict[str, Any]]:
    """The JSON log lines of a service process."""
    found = []
    for line in proc.log().splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return found


@dataclass
class Service:
    """A service process with its metrics URL."""

    proc: ServiceProcess
    metrics_url: str
    health: str | None = None

    def metrics(self) -> Samples:
        return scrape(self.metrics_url)

    def sigterm(self, timeout: float = 30) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds until it exited)."""
        assert self.proc.process is not None
        started = time.monotonic()
        self.proc.process.send_signal(signal.SIGTERM)
        code = self.proc.process.wait(timeout=timeout)
        return code, time.monotonic() - started


@dataclass
class OpsStack:
    """The running stack of one test module."""

    backend: LocalOpenEO
    env: dict[str, str]
    logs: Path
    http: str
    grpc: str
    gateway: Service
    tiler: Service
    monitors: list[Service] = field(default_factory=list)
    dispatchers: list[Service] = field(default_factory=list)

    def start(self, module: str, name: str, **extra: str) -> Service:
        """Start a dispatcher or monitor replica (free health and metrics ports), waited until SERVING."""
        health, metrics_port = free_port(), free_port()
        port_var = "DISPATCHER_HEALTH_PORT" if module == "dispatcher" else "MONITOR_HEALTH_PORT"
        proc = ServiceProcess(name, f"services.{module}",
                              {**self.env, port_var: str(health), "METRICS_PORT": str(metrics_port), **extra},
                              self.logs / f"{name}.log")
        proc.start()
        wait_grpc_serving(f"127.0.0.1:{health}", proc)
        service = Service(proc, f"http://127.0.0.1:{metrics_port}/metrics", f"127.0.0.1:{health}")
        wait_http_ok(service.metrics_url, proc)
        (self.dispatchers if module == "dispatcher" else self.monitors).append(service)
        return service

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.grpc)

    def stub(self, channel: grpc.Channel) -> upscaling_pb2_grpc.UpscalingServiceStub:
        return upscaling_pb2_grpc.UpscalingServiceStub(channel)

    def task_body(self, n: int, title: str = "operations test") -> dict[str, Any]:
        return {"title": title, "label": "openeo",
                "service": {"endpoint": self.backend.endpoint, "application": self.backend.application},
                "parameters": {"year": 2024}, "dimension": {"name": "spatial_extent", "values": tiles(n)}}

    def create(self, n: int, headers: dict[str, str] | None = None, **changes: Any) -> int:
        """Create a task of n tiles with `POST /upscale_tasks`; returns its id."""
        reply = requests.post(f"{self.http}/upscale_tasks", json={**self.task_body(n), **changes},
                              headers=headers or {}, timeout=30)
        assert reply.status_code == 201, reply.text
        return reply.json()["id"]

    def task(self, task_id: int) -> dict[str, Any]:
        reply = requests.get(f"{self.http}/upscale_tasks/{task_id}", timeout=10)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def wait_task(self, task_id: int, statuses: set[str], limit_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + limit_s
        while True:
            body = self.task(task_id)
            if body["status"] in statuses:
                return body
            assert time.monotonic() < deadline, f"task {task_id} still {body['status']}: {body.get('job_counts')}"
            time.sleep(0.3)

    def wait_jobs(self, task_id: int, counts: dict[str, int], limit_s: float = 120) -> dict[str, Any]:
        """Wait until the task's non-zero job counts are exactly `counts`."""
        deadline = time.monotonic() + limit_s
        while True:
            body = self.task(task_id)
            if {k: v for k, v in body["job_counts"].items() if v} == counts:
                return body
            assert time.monotonic() < deadline, f"task {task_id}: {body['job_counts']} != {counts}"
            time.sleep(0.3)


def service_procs(stack: OpsStack) -> list[Service]:
    return [*stack.dispatchers, *stack.monitors, stack.gateway, stack.tiler]


@dataclass
class StackConfig:
    """What differs between the operations test modules."""

    name: str
    backend_limits: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    backend_args: tuple[str, ...] = ("--queue-seconds", "0.1", "--run-seconds", "0.3")


async def dead_letters(url: str, prefix: str) -> int:
    """Messages in the dead-letter queue of a topology."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(broker.Topology(prefix).dead_letter_queue, passive=True)
        return queue.declaration_result.message_count or 0
    finally:
        await connection.close()


@contextlib.contextmanager
def ops_stack(infra: Any, service_env: dict[str, str], logs: Path, config: StackConfig) -> Iterator[OpsStack]:
    """Start the backend, a private database, the tiler and the gateway; yield; stop everything."""
    backend = LocalOpenEO(*config.backend_args)
    db_name = unique_name(f"upscaling_{config.name}")
    asyncio.run(admin_sql(infra.admin_database_url, f'CREATE DATABASE "{db_name}"'))
    db_url = with_database(infra.admin_database_url, db_name)
    asyncio.run(migrate(db_url))
    http_port, grpc_port, tiler_port = free_port(), free_port(), free_port()
    gateway_metrics = f"http://127.0.0.1:{http_port}/metrics"
    tiler_metrics_port = free_port()
    env = {**service_env, "DATABASE_URL": db_url, "BROKER_PREFIX": unique_name(config.name),
           "OPENEO_BACKENDS": backend.backends_env(**config.backend_limits), "MIGRATE_ON_START": "false",
           "UDP_ALLOWED_URLS": backend.udp_catalogue,
           "HEALTH_HOST": "127.0.0.1", "METRICS_HOST": "127.0.0.1", "GATEWAY_HTTP_PORT": str(http_port),
           "GATEWAY_GRPC_PORT": str(grpc_port), "TILER_PORT": str(tiler_port),
           "TILER_ADDRESS": f"127.0.0.1:{tiler_port}", "MONITOR_INTERVAL_MIN_S": "0.2",
           "MONITOR_INTERVAL_MAX_S": "1", "OPENEO_TIMEOUT_S": "3", "SUBMIT_BACKOFF_BASE_S": "0.05",
           "SUBMIT_BACKOFF_MAX_S": "0.5", "GRPC_GRACE_S": "5", "OUTBOX_POLL_S": "0.5", **config.env}
    tiler = ServiceProcess("tiler", "services.tiler", {**env, "METRICS_PORT": str(tiler_metrics_port)},
                           logs / "tiler.log")
    gateway = ServiceProcess("gateway", "gateway", env, logs / "gateway.log")
    stack = OpsStack(backend, env, logs, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}",
                     Service(gateway, gateway_metrics),
                     Service(tiler, f"http://127.0.0.1:{tiler_metrics_port}/metrics", f"127.0.0.1:{tiler_port}"))
    try:
        tiler.start()
        gateway.start()
        wait_grpc_serving(f"127.0.0.1:{tiler_port}", tiler)
        wait_http_ok(f"{stack.http}/health", gateway)
        wait_http_ok(stack.tiler.metrics_url, tiler)
        yield stack
    finally:
        for service in service_procs(stack):
            service.proc.stop()
        backend.stop()
        asyncio.run(drop_private_resources(infra.admin_database_url, db_name, infra.rabbitmq_url,
                                           env["BROKER_PREFIX"]))
