"""`python -m services.monitor`: tracks active unit jobs on their backends, reconciles stranded ones and relays the
outbox; gRPC health on MONITOR_HEALTH_PORT."""

from __future__ import annotations

import asyncio
import logging

from services.monitor.locks import BackendLocks
from services.monitor.poller import Monitor
from services.monitor.reconciler import Reconciler
from upscaling import broker, event_loop
from upscaling.config import load_settings
from upscaling.jobs.relay import OutboxRelay
from upscaling.worker_runtime import worker_runtime

log = logging.getLogger("services.monitor")


async def main() -> None:
    settings = load_settings()
    async with worker_runtime("monitor", settings, settings.monitor_health_port, settings.monitor_threads,
                              db_gauges=True) as rt:
        locks = BackendLocks(settings.database_url)
        log.info("monitor started", extra={"backends": rt.backends.endpoints(),
                                           "interval_min_s": settings.monitor_interval_min_s,
                                           "interval_max_s": settings.monitor_interval_max_s,
                                           "page_size": settings.monitor_page_size,
                                           "reconcile_interval_s": settings.reconcile_interval_s,
                                           "reconcile_after_s": settings.reconcile_after_s})
        reconciler = Reconciler(settings, rt.pool, rt.connection, broker.Topology(settings.broker_prefix), locks)
        reconciling = asyncio.create_task(reconciler.run(rt.stop), name="reconciler")
        relay = OutboxRelay(rt.pool, settings.database_url, rt.connection, broker.Topology(settings.broker_prefix),
                            poll_s=settings.outbox_poll_s)
        relay.start()
        try:
            await Monitor(settings, rt.backends, rt.pool, rt.topology.events_exchange, locks, rt.executor,
                          credentials=rt.credentials).run(rt.stop)
            log.info("shutdown signal received; cycle completed")
        finally:
            rt.stop.set()
            await reconciling
            await relay.stop()
            await locks.close()


if __name__ == "__main__":
    event_loop.run(main())
