"""Fixtures: a private database and broker prefix per run, the tiler and gateway as real processes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import grpc
import pytest

from tests.infra import (
    ServiceProcess,
    free_port,
    service_urls,
    unique_name,
    wait_grpc_serving,
    wait_http_ok,
    with_database,
)
from tests.support import admin_sql, db_connect, drop_private_resources


@dataclass(frozen=True)
class Infra:
    """Connection URLs of this run's private database and broker names."""

    admin_database_url: str
    database_url: str
    rabbitmq_url: str
    broker_prefix: str


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """A fresh database (dropped afterwards) and a broker prefix of this run."""
    import asyncio

    with service_urls() as (admin_url, mq_url):
        db_name = unique_name("upscaling_test")
        prefix = unique_name("test")

        asyncio.run(admin_sql(admin_url, f'CREATE DATABASE "{db_name}"'))
        try:
            yield Infra(admin_url, with_database(admin_url, db_name), mq_url, prefix)
        finally:
            asyncio.run(drop_private_resources(admin_url, db_name, mq_url, prefix))


@pytest.fixture(scope="session")
def service_env(infra: Infra) -> dict[str, str]:
    """Environment shared by every service process of the run."""
    return {
        **os.environ,
        "DATABASE_URL": infra.database_url,
        "RABBITMQ_URL": infra.rabbitmq_url,
        "BROKER_PREFIX": infra.broker_prefix,
        "LOG_LEVEL": "INFO",
        "MAX_TILES": "100000",
        "HTTP_MAX_BODY_BYTES": str(8 * 1024 * 1024),
        "GATEWAY_HOST": "127.0.0.1",
        "TILER_HOST": "127.0.0.1",
        "METRICS_PORT": "0",  # no metrics endpoints unless a test asks for one (on a free port)
    }


@dataclass
class Stack:
    """Addresses of the running services."""

    tiler: ServiceProcess
    gateway: ServiceProcess
    tiler_address: str
    gateway_grpc: str
    http: str


@pytest.fixture(scope="session")
def stack(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The tiler and the gateway as real processes on free ports."""
    logs = tmp_path_factory.mktemp("logs")
    tiler_port, http_port, grpc_port = free_port(), free_port(), free_port()
    tiler = ServiceProcess("tiler", "services.tiler", {**service_env, "TILER_PORT": str(tiler_port)},
                           logs / "tiler.log")
    gateway = ServiceProcess(
        "gateway", "gateway",
        {**service_env, "TILER_ADDRESS": f"127.0.0.1:{tiler_port}", "GATEWAY_HTTP_PORT": str(http_port),
         "GATEWAY_GRPC_PORT": str(grpc_port)},
        logs / "gateway.log")
    tiler.start()
    gateway.start()
    try:
        wait_grpc_serving(f"127.0.0.1:{tiler_port}", tiler)
        wait_http_ok(f"http://127.0.0.1:{http_port}/health", gateway)
        wait_grpc_serving(f"127.0.0.1:{grpc_port}", gateway)
        yield Stack(tiler, gateway, f"127.0.0.1:{tiler_port}", f"127.0.0.1:{grpc_port}",
                    f"http://127.0.0.1:{http_port}")
    finally:
        gateway.stop()
        tiler.stop()


@pytest.fixture(scope="session")
def tiler_channel(stack: Stack) -> Iterator[grpc.Channel]:
    """A channel to the tiler service itself."""
    with grpc.insecure_channel(stack.tiler_address, options=[("grpc.max_receive_message_length", 1 << 28)]) as ch:
        yield ch


@pytest.fixture(scope="session")
def gateway_channel(stack: Stack) -> Iterator[grpc.Channel]:
    """A channel to the gateway's public gRPC port."""
    with grpc.insecure_channel(stack.gateway_grpc, options=[("grpc.max_receive_message_length", 1 << 28)]) as ch:
        yield ch


@pytest.fixture
async def conn(infra: Infra) -> AsyncIterator[asyncpg.Connection]:
    """A connection to this run's database (json/jsonb decoded)."""
    connection = await db_connect(infra.database_url)
    yield connection
    await connection.close()
