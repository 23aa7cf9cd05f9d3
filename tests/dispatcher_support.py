"""Support for the dispatcher tests: the local openEO backend process, dispatcher processes, DB rows and
job messages published like the gateway's outbox relay does."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import requests

from tests.infra import ROOT, ServiceProcess, free_port, wait_grpc_serving
from upscaling import broker
from upscaling.v1 import common_pb2, jobs_pb2

ADMIN_TOKEN = "dispatcher-test-admin"
EXTENT = {"west": 14.370712, "south": 47.265837, "east": 14.405670, "north": 47.275632}
POLYGON = {"type": "Polygon", "coordinates": [[[14.370712, 47.265837], [14.40567, 47.265837],
                                               [14.40567, 47.275632], [14.370712, 47.275632],
                                               [14.370712, 47.265837]]]}


class LocalOpenEO:
    """The local openEO backend as a subprocess, with admin access."""

    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_OPENEO_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local_openeo", "--port", "0", "--admin-token", ADMIN_TOKEN,
             "--queue-seconds", "0.2", "--run-seconds", "0.5", "--result-size", "32"],
            cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"listening on (http://\S+)", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"local openEO backend did not start: {line!r}")
        self.url = match.group(1)
        self.endpoint = f"{self.url}/openeo/1.2"
        self.application = f"{self.url}/udp/wind_turbine_detection.json"
        self.admin_http = requests.Session()
        self.admin_http.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        response = self.admin_http.request(method, f"{self.url}/admin/{path}", json=body, timeout=10)
        assert response.status_code == 200, response.text
        return response.json() if response.content else None

    def configure(self, **changes: Any) -> None:
        self.admin("PUT", "config", changes)

    def reset(self) -> None:
        """Forget jobs and counters; no faults; default durations and limits."""
        self.admin("POST", "reset", {"jobs": True, "counters": True})
        self.configure(faults={}, queue_seconds=0.2, run_seconds=0.5, max_concurrent=0, start_rate=0,
                       job_error_fraction=0)

    def report(self) -> dict[str, Any]:
        return self.admin("GET", "report")

    def backends_env(self, **limits: Any) -> str:
        return json.dumps([{"endpoint": self.endpoint,
                            "auth": {"method": "basic", "username": "demo", "password": "demo"}, **limits}])


def dispatcher_env(base: dict[str, str], backend: LocalOpenEO, prefix: str, **extra: str) -> dict[str, str]:
    """Environment of a dispatcher (or monitor) process of one test."""
    return {**base, "BROKER_PREFIX": prefix, "OPENEO_BACKENDS": backend.backends_env(), "MIGRATE_ON_START": "false",
            "HEALTH_HOST": "127.0.0.1", "GRPC_GRACE_S": "5", "SUBMIT_BACKOFF_BASE_S": "0.05",
            "SUBMIT_BACKOFF_MAX_S": "0.5", "OPENEO_TIMEOUT_S": "5", "LOG_LEVEL": "INFO", **extra}


def start_service(module: str, env: dict[str, str], log_path: Path) -> ServiceProcess:
    """`python -m services.<module>` with a free health port, waited until SERVING."""
    port = free_port()
    port_var = "DISPATCHER_HEALTH_PORT" if module == "dispatcher" else "MONITOR_HEALTH_PORT"
    proc = ServiceProcess(module, f"services.{module}", {**env, port_var: str(port)}, log_path)
    proc.start()
    wait_grpc_serving(f"127.0.0.1:{port}", proc, timeout=60)
    return proc


async def db_connect(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(url)
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    return conn


async def insert_task(conn: asyncpg.Connection, backend: LocalOpenEO, n: int, *,
                      arguments: dict[str, Any] | None = None, endpoint: str | None = None) -> tuple[int, list[int]]:
    """A task of `n` unit jobs in status `created`, as the gateway stores them."""
    service = {"endpoint": endpoint or backend.endpoint, "application": backend.application}
    args = {"spatial_extent": EXTENT, "year": "2024"} if arguments is None else arguments
    task_id = await conn.fetchval(
        "INSERT INTO upscale_tasks (title, label, service, parameters, dimension_name, correlation_id, process_id,"
        " job_count) VALUES ('dispatcher test', 'openeo', $1, '{\"year\": \"2024\"}', 'spatial_extent', $2,"
        " 'wind_turbine_detection', $3) RETURNING id", service, uuid.uuid4().hex, n)
    job_ids = []
    for seq in range(1, n + 1):
        job_ids.append(await conn.fetchval(
            "INSERT INTO unit_jobs (task_id, seq, title, label, service, parameters, format, tag, process_id,"
            " submit_arguments) VALUES ($1, $2, $3, 'openeo', $4, $5, 'gtiff', $6, 'wind_turbine_detection', $7)"
            " RETURNING id",
            task_id, seq, f"dispatcher test - Processing Job {seq}", service,
            {"spatial_extent": POLYGON, "year": "2024"}, f"uj-{uuid.uuid4()}", args))
    return task_id, job_ids


async def job_message(conn: asyncpg.Connection, job_id: int) -> jobs_pb2.SubmitJobMessage:
    """The SubmitJobMessage of a unit job row."""
    row = await conn.fetchrow("SELECT uj.*, t.correlation_id FROM unit_jobs uj"
                              " LEFT JOIN upscale_tasks t ON t.id = uj.task_id WHERE uj.id = $1", job_id)
    return jobs_pb2.SubmitJobMessage(
        job_id=row["id"], task_id=row["task_id"] or 0,
        service=common_pb2.ServiceRef(endpoint=row["service"]["endpoint"],
                                      application=row["service"]["application"]),
        parameters_json=json.dumps(row["submit_arguments"]), format=row["format"], title=row["title"],
        tag=row["tag"], correlation_id=row["correlation_id"] or "", attempt=row["attempts"] + 1,
        process_id=row["process_id"])


class Broker:
    """A connection to the test's topology: publish job messages, read dead letters and events."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.topology = broker.Topology(prefix)

    async def __aenter__(self) -> Broker:
        self.connection = await aio_pika.connect(self.url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        self.declared = await broker.declare(self.channel, self.topology)
        self.events = await self.channel.declare_queue(exclusive=True)
        await self.events.bind(self.declared.events_exchange, routing_key="task.#")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await broker.delete(self.channel, self.topology)
        await self.connection.close()

    async def publish(self, body: bytes) -> None:
        await self.declared.jobs_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                             content_type="application/x-protobuf"),
            routing_key=self.topology.jobs_routing_key)

    async def publish_jobs(self, conn: asyncpg.Connection, job_ids: list[int]) -> None:
        for job_id in job_ids:
            await self.publish((await job_message(conn, job_id)).SerializeToString())

    async def drain(self, queue: aio_pika.abc.AbstractQueue) -> list[bytes]:
        bodies = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            bodies.append(message.body)
        return bodies


async def wait_until(check: Callable[[], Awaitable[Any]], limit_s: float = 30.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + limit_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s}s waiting for {what}")
        await asyncio.sleep(0.1)


async def job_statuses(conn: asyncpg.Connection, task_id: int) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM unit_jobs WHERE task_id = $1 GROUP BY status",
                            task_id)
    return {r["status"]: r["n"] for r in rows}


async def all_in(conn: asyncpg.Connection, task_id: int, statuses: set[str], n: int) -> bool:
    counts = await job_statuses(conn, task_id)
    return sum(v for k, v in counts.items() if k in statuses) == n


def one_backend_job_per_tag(report: dict[str, Any], tags: list[str]) -> None:
    """Assert the admin report shows exactly one backend job for each tag, and no duplicated tag."""
    assert report["duplicates"]["tags"] == {}, report["duplicates"]
    assert {tag: report["tags"].get(tag, 0) for tag in tags} == dict.fromkeys(tags, 1)
