"""Support for the task API tests: a gateway process of its own (own broker prefix, own database, backends
pointing at the local openEO backend), event publishing like the monitor's and job-queue readers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
import pytest_asyncio
import requests

from tests.infra import ServiceProcess, free_port, unique_name, wait_grpc_serving, wait_http_ok, with_database
from tests.support import LocalOpenEO, admin_sql, db_connect, drop_private_resources, tiles
from upscaling import broker
from upscaling import jobs as jobstore
from upscaling.v1 import jobs_pb2

MAX_VALUES = 50
TILE = {"type": "Polygon", "coordinates": [[[14.37, 47.27], [14.37, 47.26], [14.40, 47.26], [14.40, 47.27],
                                            [14.37, 47.27]]]}


@dataclass
class Gateway:
    """A gateway process of these tests and what it talks to."""

    process: ServiceProcess
    http: str
    grpc: str
    backend: LocalOpenEO
    prefix: str
    database_url: str
    rabbitmq_url: str

    def task_body(self, n: int = 2, **changes: Any) -> dict[str, Any]:
        """The seed notebook's request body, with n tiles."""
        body: dict[str, Any] = {
            "title": "Wind Turbine Detection", "label": "openeo",
            "service": {"endpoint": self.backend.endpoint, "application": self.backend.application},
            "parameters": {"year": 2024},
            "dimension": {"name": "spatial_extent", "values": tiles(n)},
        }
        body.update(changes)
        return body


def create(gw: Gateway, n: int = 2, **changes: Any) -> int:
    """Create a task of n tiles over HTTP (201 asserted); returns its id."""
    reply = requests.post(f"{gw.http}/upscale_tasks", json=gw.task_body(n, **changes), timeout=30)
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


@contextlib.contextmanager
def gateway_process(stack: Any, service_env: dict[str, str], infra: Any, log_dir: Path, name: str = "tasks",
                    **extra_env: str) -> Iterator[Gateway]:
    """A gateway with its own broker prefix and database (no dispatcher consumes its queue), an outbox relay
    and its own local openEO backend; `extra_env` adds or overrides variables (e.g. GATEWAY_WORKERS)."""
    backend = LocalOpenEO()
    prefix = unique_name(name)
    # A database of its own: the outbox is per database, and the stack's relays publish every row they see.
    db_name = unique_name(f"{name}_test")
    try:
        asyncio.run(admin_sql(infra.admin_database_url, f'CREATE DATABASE "{db_name}"'))
    except BaseException:
        backend.stop()  # (e.g. called from a running event loop: no backend process is left behind)
        raise
    database_url = with_database(infra.admin_database_url, db_name)
    http_port, grpc_port = free_port(), free_port()
    env = {**service_env, "BROKER_PREFIX": prefix, "DATABASE_URL": database_url, "TILER_ADDRESS": stack.tiler_address,
           "GATEWAY_HTTP_PORT": str(http_port), "GATEWAY_GRPC_PORT": str(grpc_port),
           "OPENEO_BACKENDS": backend.backends_env(), "MAX_DIMENSION_VALUES": str(MAX_VALUES), "OUTBOX_POLL_S": "0.5",
           "UDP_ALLOWED_URLS": backend.udp_catalogue, "UDP_FETCH_TIMEOUT_S": "5", **extra_env}
    proc = ServiceProcess(f"{name}-gateway", "gateway", env, log_dir / "gateway.log")
    proc.start()
    # The outbox relay the dispatchers and monitors run (no dispatcher or monitor runs for this gateway).
    relay = ServiceProcess(f"{name}-relay", "upscaling.jobs.relay", env, log_dir / "relay.log")
    relay.start()
    try:
        wait_http_ok(f"http://127.0.0.1:{http_port}/health", proc)
        wait_grpc_serving(f"127.0.0.1:{grpc_port}", proc)
        yield Gateway(proc, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", backend, prefix,
                      database_url, infra.rabbitmq_url)
    finally:
        proc.stop()
        relay.stop()
        backend.stop()
        asyncio.run(drop_private_resources(infra.admin_database_url, db_name, infra.rabbitmq_url, prefix))


@pytest.fixture(scope="session")
def tasks_gateway(stack: Any, service_env: dict[str, str], infra: Any,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with its own broker prefix (no dispatcher consumes its queue) and the local openEO backend."""
    with gateway_process(stack, service_env, infra, Path(tmp_path_factory.mktemp("tasks"))) as gateway:
        yield gateway


@pytest_asyncio.fixture
async def tdb(tasks_gateway: Gateway) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the run's database (migrated by the gateway)."""
    conn = await db_connect(tasks_gateway.database_url)
    yield conn
    await conn.close()


@contextlib.asynccontextmanager
async def events_exchange_of(gateway: Gateway) -> AsyncIterator[aio_pika.abc.AbstractExchange]:
    """A gateway's events exchange, on a channel with publisher confirms (to simulate the monitor)."""
    connection = await aio_pika.connect(gateway.rabbitmq_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        yield await channel.declare_exchange(broker.Topology(gateway.prefix).events_exchange,
                                             aio_pika.ExchangeType.TOPIC, durable=True)
    finally:
        await connection.close()


@pytest_asyncio.fixture
async def events_exchange(tasks_gateway: Gateway) -> AsyncIterator[aio_pika.abc.AbstractExchange]:
    """The gateway's events exchange, on a channel with publisher confirms (to simulate the monitor)."""
    async with events_exchange_of(tasks_gateway) as exchange:
        yield exchange


async def change_job(conn: asyncpg.Connection, exchange: aio_pika.abc.AbstractExchange, job_id: int,
                     **fields: Any) -> list[jobstore.PendingEvent]:
    """Apply a change the way the monitor does: update_job in a transaction, publish after commit."""
    async with conn.transaction():
        events = await jobstore.update_job(conn, job_id, **fields)
    await jobstore.publish(exchange, events)
    return events


async def read_submit_messages(gateway: Gateway, task_id: int, count: int, limit_s: float = 15.0
                               ) -> list[tuple[jobs_pb2.SubmitJobMessage, aio_pika.abc.AbstractIncomingMessage]]:
    """Take the job messages of one task from the gateway's job queue (others are acked away)."""
    connection = await aio_pika.connect(gateway.rabbitmq_url)
    found = []
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(broker.Topology(gateway.prefix).jobs_queue, ensure=True)
        deadline = time.monotonic() + limit_s
        while len(found) < count and time.monotonic() < deadline:
            message = await queue.get(fail=False, no_ack=False)
            if message is None:
                await asyncio.sleep(0.1)
                continue
            await message.ack()
            parsed = jobs_pb2.SubmitJobMessage.FromString(message.body)
            if parsed.task_id == task_id:
                found.append((parsed, message))
    finally:
        await connection.close()
    return found

