"""`python -m services.monitor`: tracks active unit jobs on their backends; gRPC health on MONITOR_HEALTH_PORT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from services.monitor.locks import BackendLocks
from services.monitor.poller import Monitor
from upscaling import broker
from upscaling.backends import load_backends
from upscaling.config import load_settings
from upscaling.db import create_pool
from upscaling.grpc_server import GrpcServer, shutdown_event
from upscaling.logs import configure_logging
from upscaling.migrations import migrate
from upscaling.startup import with_retry

log = logging.getLogger("services.monitor")


async def main() -> None:
    settings = load_settings()
    configure_logging("monitor", settings.log_level, settings.log_format)
    backends = load_backends()
    stop = shutdown_event()
    if settings.migrate_on_start:
        await with_retry("database", lambda: migrate(settings.database_url))
    pool = await with_retry("database", lambda: create_pool(settings))
    connection = await with_retry("rabbitmq", lambda: broker.connect(settings.rabbitmq_url, "monitor"))
    channel = await broker.open_channel(connection)
    topology = await broker.declare(channel, broker.Topology(settings.broker_prefix))
    server = GrpcServer(settings, [], settings.health_host, settings.monitor_health_port)
    await server.start()
    locks = BackendLocks(settings.database_url)
    executor = ThreadPoolExecutor(max_workers=settings.monitor_threads,
                                  thread_name_prefix="monitor-openeo")
    log.info("monitor started", extra={"backends": backends.endpoints(),
                                       "interval_min_s": settings.monitor_interval_min_s,
                                       "interval_max_s": settings.monitor_interval_max_s,
                                       "page_size": settings.monitor_page_size})
    try:
        await Monitor(settings, backends, pool, topology.events_exchange, locks, executor).run(stop)
        log.info("shutdown signal received; cycle completed")
    finally:
        await server.stop()
        await locks.close()
        with contextlib.suppress(Exception):
            await connection.close()
        await pool.close()
        executor.shutdown(wait=False, cancel_futures=True)


if __name__ == "__main__":
    asyncio.run(main())
