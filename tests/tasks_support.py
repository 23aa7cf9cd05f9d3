"""Support for the task API tests: the local openEO backend, a gateway process of its own (own broker prefix,
backends pointing at the local backend), database helpers and job-queue readers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
import pytest_asyncio

from tests.infra import (
    ROOT,
    ServiceProcess,
    free_port,
    unique_name,
    wait_grpc_serving,
    wait_http_ok,
    with_database,
)
from upscaling import broker, jobstore
from upscaling.v1 import jobs_pb2

ADMIN_TOKEN = "tasks-test-admin"
MAX_VALUES = 50
TILE = {"type": "Polygon", "coordinates": [[[14.37, 47.27], [14.37, 47.26], [14.40, 47.26], [14.40, 47.27],
                                            [14.37, 47.27]]]}


def tiles(n: int) -> list[dict[str, Any]]:
    """n distinct small Polygons."""
    out = []
    for i in range(n):
        x = 14.0 + 0.05 * i
        out.append({"type": "Polygon", "coordinates": [[[x, 47.0], [x + 0.04, 47.0], [x + 0.04, 47.04],
                                                        [x, 47.04], [x, 47.0]]]})
    return out


class LocalBackend:
    """The local openEO backend as a subprocess on a free port."""

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

    def udp(self, name: str) -> str:
        return f"{self.url}/udp/{name}.json"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Gateway:
    """A gateway process of these tests and what it talks to."""

    process: ServiceProcess
    http: str
    grpc: str
    backend: LocalBackend
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


@pytest.fixture(scope="session")
def tasks_gateway(stack: Any, service_env: dict[str, str], infra: Any,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with its own broker prefix (no dispatcher consumes its queue) and the local openEO backend."""
    backend = LocalBackend()
    prefix = unique_name("tasks")
    # A database of its own: the outbox is per database, and the stack's gateway relays every row it sees.
    db_name = unique_name("tasks_test")
    asyncio.run(_admin_sql(infra.admin_database_url, f'CREATE DATABASE "{db_name}"'))
    database_url = with_database(infra.admin_database_url, db_name)
    http_port, grpc_port = free_port(), free_port()
    env = {**service_env, "BROKER_PREFIX": prefix, "DATABASE_URL": database_url, "TILER_ADDRESS": stack.tiler_address,
           "GATEWAY_HTTP_PORT": str(http_port), "GATEWAY_GRPC_PORT": str(grpc_port),
           "OPENEO_BACKENDS": json.dumps([{"endpoint": backend.endpoint, "auth": {"method": "basic",
                                                                                   "username": "demo",
                                                                                   "password": "demo"}}]),
           "MAX_DIMENSION_VALUES": str(MAX_VALUES), "OUTBOX_POLL_S": "0.5", "UDP_FETCH_TIMEOUT_S": "5"}
    log_path = Path(tmp_path_factory.mktemp("tasks")) / "gateway.log"
    proc = ServiceProcess("tasks-gateway", "gateway", env, log_path)
    proc.start()
    try:
        wait_http_ok(f"http://127.0.0.1:{http_port}/health", proc)
        wait_grpc_serving(f"127.0.0.1:{grpc_port}", proc)
        yield Gateway(proc, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", backend, prefix,
                      database_url, infra.rabbitmq_url)
    finally:
        proc.stop()
        backend.stop()

        async def cleanup() -> None:
            connection = await aio_pika.connect(infra.rabbitmq_url)
            channel = await connection.channel()
            await broker.delete(channel, broker.Topology(prefix=prefix))
            await connection.close()
            await _admin_sql(infra.admin_database_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')

        asyncio.run(cleanup())


async def _admin_sql(admin_url: str, sql: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def db_connect(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(url)
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    return conn


@pytest_asyncio.fixture
async def tdb(tasks_gateway: Gateway) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the run's database (migrated by the gateway)."""
    conn = await db_connect(tasks_gateway.database_url)
    yield conn
    await conn.close()


@pytest_asyncio.fixture
async def events_exchange(tasks_gateway: Gateway) -> AsyncIterator[aio_pika.abc.AbstractExchange]:
    """The gateway's events exchange, on a channel with publisher confirms (to simulate the monitor)."""
    connection = await aio_pika.connect(tasks_gateway.rabbitmq_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange(broker.Topology(tasks_gateway.prefix).events_exchange,
                                              aio_pika.ExchangeType.TOPIC, durable=True)
    yield exchange
    await connection.close()


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


async def wait_until(check: Callable[[], Awaitable[Any]], limit_s: float = 15.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + limit_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s}s waiting for {what}")
        await asyncio.sleep(0.1)
