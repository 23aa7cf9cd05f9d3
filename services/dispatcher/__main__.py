"""`python -m services.dispatcher`: submits unit jobs from the job queue; gRPC health on DISPATCHER_HEALTH_PORT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from services.dispatcher.consumer import Consumer
from services.dispatcher.submit import Submitter
from upscaling import broker
from upscaling.backends import load_backends
from upscaling.config import load_settings
from upscaling.db import create_pool
from upscaling.grpc_server import GrpcServer, shutdown_event
from upscaling.logs import configure_logging
from upscaling.migrations import migrate
from upscaling.startup import with_retry

log = logging.getLogger("services.dispatcher")


async def main() -> None:
    settings = load_settings()
    configure_logging("dispatcher", settings.log_level, settings.log_format)
    backends = load_backends()
    stop = shutdown_event()
    if settings.migrate_on_start:
        await with_retry("database", lambda: migrate(settings.database_url))
    pool = await with_retry("database", lambda: create_pool(settings))
    connection = await with_retry("rabbitmq", lambda: broker.connect(settings.rabbitmq_url, "dispatcher"))
    publish_channel = await broker.open_channel(connection)
    topology = await broker.declare(publish_channel, broker.Topology(settings.broker_prefix))
    consume_channel = await broker.open_channel(connection, prefetch=settings.dispatcher_prefetch)
    jobs_queue = await consume_channel.get_queue(topology.jobs_queue.name, ensure=False)
    executor = ThreadPoolExecutor(max_workers=settings.dispatcher_threads, thread_name_prefix="dispatcher-openeo")
    server = GrpcServer(settings, [], settings.health_host, settings.dispatcher_health_port)
    await server.start()
    submitter = Submitter(settings, backends, pool, topology.events_exchange, executor)
    log.info("dispatcher started", extra={"backends": backends.endpoints(), "prefetch": settings.dispatcher_prefetch,
                                          "threads": settings.dispatcher_threads})
    try:
        await Consumer(jobs_queue, submitter, settings.grpc_grace_s).run(stop)
        log.info("dispatcher stopped consuming")
    finally:
        await server.stop()
        with contextlib.suppress(Exception):
            await connection.close()
        await pool.close()
        executor.shutdown(wait=False, cancel_futures=True)


if __name__ == "__main__":
    asyncio.run(main())
