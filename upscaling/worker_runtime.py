"""What every queue/backend worker service (dispatcher, monitor) opens at start and closes at stop: settings,
logging, backends, the database pool (migrations first if configured), the broker topology, a thread pool for
the synchronous openeo client, gRPC health, Prometheus metrics on METRICS_PORT, and the SIGTERM/SIGINT event."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import asyncpg
from aio_pika.abc import AbstractRobustConnection

from upscaling import broker, metrics
from upscaling.backends import Backends, load_backends
from upscaling.config import Settings
from upscaling.credentials import CredentialStore, load_cipher
from upscaling.db import create_pool
from upscaling.grpc_server import GrpcServer, shutdown_event
from upscaling.health_watch import Check, HealthWatch, broker_check, database_check
from upscaling.logs import configure_logging
from upscaling.migrations import migrate
from upscaling.startup import with_retry


@dataclass
class WorkerRuntime:
    """The open resources of a worker service."""

    settings: Settings
    backends: Backends
    stop: asyncio.Event
    pool: asyncpg.Pool
    connection: AbstractRobustConnection
    topology: broker.DeclaredExchanges
    executor: ThreadPoolExecutor
    # The checks gRPC health follows: a service adds its own (e.g. that its consumers are registered).
    health_checks: dict[str, Check] = field(default_factory=dict)
    # Users' own backend credentials (None when no backend uses a per-user `auth.method`).
    credentials: CredentialStore | None = None


@contextlib.asynccontextmanager
async def worker_runtime(service: str, settings: Settings, health_port: int | None = None,
                         threads: int | None = None, *, db_gauges: bool = False,
                         queue_gauges: bool = False, own_queues: bool = False) -> AsyncIterator[WorkerRuntime]:
    """Open everything a worker needs (waiting for PostgreSQL and RabbitMQ), serve gRPC health on
    `health_port` (NOT_SERVING while a dependency is down) and the metrics of `service` (with the database / queue
    gauges if asked), and close it all again on exit. The service that consumes the job queues (`own_queues`) declares
    the whole topology; the others too where their broker user may, else the exchanges they publish to."""
    configure_logging(service, settings.log_level, settings.log_format)
    backends = load_backends()
    try:
        cipher = load_cipher(backends)
    except ValueError as exc:
        raise SystemExit(f"{service} cannot start: {exc}") from None
    stop = shutdown_event()
    if settings.migrate_on_start:
        await with_retry("database", lambda: migrate(settings.database_url))
    # Dispatcher and monitor use pool connections for plain queries and transactions only (the monitor's
    # session-level locks live on their own connection).
    pool = await with_retry("database", lambda: create_pool(settings, session_state=False))
    connection = await with_retry("rabbitmq", lambda: broker.connect(settings.rabbitmq_url, service))
    executor = ThreadPoolExecutor(max_workers=threads or 8, thread_name_prefix=f"{service}-openeo")
    server: GrpcServer | None = None
    watch: HealthWatch | None = None
    checks: dict[str, Check] = {"database": database_check(pool), "rabbitmq": broker_check(connection)}
    metrics_server: metrics.MetricsServer | None = None
    try:
        names = broker.Topology(settings.broker_prefix)
        topology = await (broker.declare(await broker.open_channel(connection), names) if own_queues
                          else broker.declare_permitted(connection, names))
        state = metrics.ClusterState(pool if db_gauges else None, connection if queue_gauges else None,
                                     broker.Topology(settings.broker_prefix))
        metrics_server = await metrics.start_server(settings, service, state)
        if health_port is not None:
            server = GrpcServer(settings, [], settings.health_host, health_port)
            await server.start()
            # NOT_SERVING while PostgreSQL or RabbitMQ is down; the service reconnects and resumes by itself.
            watch = HealthWatch(server.health, checks)
            watch.start()
        credentials = None if cipher is None else CredentialStore(pool, cipher, settings.openeo_timeout_s)
        yield WorkerRuntime(settings, backends, stop, pool, connection, topology, executor, checks, credentials)
    finally:
        if watch is not None:
            await watch.stop()
        if server is not None:
            await server.stop()
        if metrics_server is not None:
            await metrics_server.stop()
        with contextlib.suppress(Exception):
            await connection.close()
        await pool.close()
        executor.shutdown(wait=False, cancel_futures=True)
