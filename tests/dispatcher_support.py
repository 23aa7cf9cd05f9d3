"""Support for the dispatcher tests: dispatcher processes, DB rows and job messages published like the
gateway's outbox relay does."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg

from tests.infra import ServiceProcess, free_port, wait_grpc_serving
from tests.support import EXTENT, POLYGON, LocalOpenEO
from upscaling import broker, event_wire
from upscaling.v1 import common_pb2, jobs_pb2, upscaling_pb2


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

    async def drain_events(self) -> list[upscaling_pb2.WatchTaskResponse]:
        """The status events published so far (batch messages unpacked), in order."""
        events = []
        while (message := await self.events.get(fail=False, no_ack=True)) is not None:
            events.extend(event_wire.decode(message.body, message.type))
        return events

    async def drain(self, queue: aio_pika.abc.AbstractQueue) -> list[bytes]:
        bodies = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            bodies.append(message.body)
        return bodies


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
