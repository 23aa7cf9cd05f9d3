"""`python -m services.dispatcher`: submits unit jobs from the job queue, handles its dead letters and relays the
outbox; gRPC health on DISPATCHER_HEALTH_PORT."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.dispatcher.consumer import Consumer
from services.dispatcher.dead_letters import DeadLetterHandler
from services.dispatcher.delivery import Heartbeat
from services.dispatcher.submit import Submitter
from upscaling import broker, event_loop
from upscaling.config import load_settings
from upscaling.jobs.relay import OutboxRelay
from upscaling.worker_runtime import worker_runtime

log = logging.getLogger("services.dispatcher")


async def main() -> None:
    settings = load_settings()
    async with worker_runtime("dispatcher", settings, settings.dispatcher_health_port,
                              settings.dispatcher_threads, queue_gauges=True, own_queues=True) as rt:
        names = broker.Topology(settings.broker_prefix)
        jobs_queue = await broker.consumer_queue(rt.connection, names.jobs_queue, settings.dispatcher_prefetch)
        dead_queue = await broker.consumer_queue(rt.connection, names.dead_letter_queue,
                                                 settings.dead_letter_prefetch)
        submitter = Submitter(settings, rt.backends, rt.pool, rt.topology.events_exchange, rt.executor,
                              credentials=rt.credentials)
        consumer = Consumer(jobs_queue, submitter, settings.grpc_grace_s, settings.poison_failures)
        dead_letters = DeadLetterHandler(dead_queue, rt.topology.jobs_exchange,
                                         names.jobs_routing_key, rt.pool,
                                         rt.topology.events_exchange, settings)
        # Ready only while both consumers are registered on the broker (a lost consumer is not SERVING).
        rt.health_checks["job consumer"] = lambda: broker.consuming(jobs_queue, consumer.consumer_tag)
        rt.health_checks["dead-letter consumer"] = lambda: broker.consuming(dead_queue, dead_letters.consumer_tag)
        heartbeat = Heartbeat(rt.pool, lambda: consumer.held() | dead_letters.held(), settings.dispatcher_heartbeat_s)
        log.info("dispatcher started", extra={"backends": rt.backends.endpoints(),
                                              "prefetch": settings.dispatcher_prefetch,
                                              "threads": settings.dispatcher_threads})
        relay = OutboxRelay(rt.pool, settings.database_url, rt.connection, broker.Topology(settings.broker_prefix),
                            poll_s=settings.outbox_poll_s)
        relay.start()
        heartbeat.start()
        await dead_letters.start()
        # Drains and restores backends for tasks over several of them (`backend_health`).
        health = asyncio.create_task(submitter.watch_health(rt.stop)) if len(rt.backends.configs) > 1 else None
        try:
            await consumer.run(rt.stop)
        finally:
            if health is not None:
                health.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await health
            await dead_letters.stop()
            await heartbeat.stop()
            await relay.stop()
        log.info("dispatcher stopped consuming")


if __name__ == "__main__":
    event_loop.run(main())
