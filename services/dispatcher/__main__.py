"""`python -m services.dispatcher`: submits unit jobs from the job queue; gRPC health on DISPATCHER_HEALTH_PORT."""

from __future__ import annotations

import logging

from services.dispatcher.consumer import Consumer
from services.dispatcher.submit import Submitter
from upscaling import broker, event_loop
from upscaling.config import load_settings
from upscaling.worker_runtime import worker_runtime

log = logging.getLogger("services.dispatcher")


async def main() -> None:
    settings = load_settings()
    async with worker_runtime("dispatcher", settings, settings.dispatcher_health_port,
                              settings.dispatcher_threads, queue_gauges=True) as rt:
        consume_channel = await broker.open_channel(rt.connection, prefetch=settings.dispatcher_prefetch)
        jobs_queue = await consume_channel.get_queue(rt.topology.jobs_queue.name, ensure=False)
        submitter = Submitter(settings, rt.backends, rt.pool, rt.topology.events_exchange, rt.executor)
        log.info("dispatcher started", extra={"backends": rt.backends.endpoints(),
                                              "prefetch": settings.dispatcher_prefetch,
                                              "threads": settings.dispatcher_threads})
        await Consumer(jobs_queue, submitter, settings.grpc_grace_s).run(rt.stop)
        log.info("dispatcher stopped consuming")


if __name__ == "__main__":
    event_loop.run(main())
