"""The reconciler: the database is the truth, the queue a delivery mechanism. One monitor replica at a time (a
session advisory lock, like the per-backend locks) looks every RECONCILE_INTERVAL_S for unit jobs that are
`created` and that nothing moves:

- no message published for them (outbox) and no change for RECONCILE_AFTER_S,
- no live lease (`submitted_at` unset, or older than the lease: the dispatcher holding it is gone),
- no live dispatcher holding their message (`dispatcher_heartbeats`),

and publishes them again through the outbox, with the reason in the log and `upscaling_reconciled_total{reason}`.
As many as the job and dead-letter queues' ready messages could not account for are republished (oldest first),
so a long backlog waiting in the queue is not copied. Never a second backend job for one tag: a republished job
with an expired lease is looked up on the backend by its tag before any create (the dispatcher's rule).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

import asyncpg
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from services.monitor.locks import BackendLocks
from upscaling import broker, jobs, metrics
from upscaling.config import Settings
from upscaling.leases import lease_seconds

log = logging.getLogger(__name__)

LOCK_NAME = "reconciler"
# A heartbeat not renewed for this many intervals: its dispatcher is gone.
HEARTBEAT_MISSES = 3

_STRANDED_SQL = """
SELECT uj.id,
       CASE WHEN uj.backend_job_id IS NOT NULL THEN 'created_not_started'
            WHEN uj.submitted_at IS NOT NULL THEN 'lease_expired'
            ELSE 'no_message' END AS reason
FROM unit_jobs uj
WHERE uj.status = 'created'
  AND uj.updated < now() - make_interval(secs => $1)
  AND (uj.submitted_at IS NULL OR uj.submitted_at < now() - make_interval(secs => $2))
  AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.job_id = uj.id
                  AND (o.sent_at IS NULL OR o.sent_at > now() - make_interval(secs => $1)))
  AND NOT EXISTS (SELECT 1 FROM dispatcher_heartbeats h
                  WHERE h.seen_at > now() - make_interval(secs => $3) AND uj.id = ANY (h.job_ids))
ORDER BY uj.id
"""

class Reconciler:
    """Republishes stranded unit jobs while this replica holds the reconciler lock."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, amqp: AbstractRobustConnection,
                 topology: broker.Topology, locks: BackendLocks) -> None:
        self.settings = settings
        self.pool = pool
        self.amqp = amqp
        self.topology = topology
        self.locks = locks  # shared with the poller (one lock connection per replica)
        self.after_s = settings.reconcile_after_s
        self.lease_s = lease_seconds(settings)
        self.heartbeat_dead_s = HEARTBEAT_MISSES * settings.dispatcher_heartbeat_s
        self._channel: AbstractChannel | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile every RECONCILE_INTERVAL_S until `stop` is set."""
        try:
            while not stop.is_set():
                try:
                    held = LOCK_NAME in await self.locks.acquire([LOCK_NAME])
                    metrics.RECONCILER_LOCK_HELD.set(1 if held else 0)
                    if held:
                        await self.cycle()
                except Exception as exc:
                    log.warning("reconciler cycle failed: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.settings.reconcile_interval_s)
        finally:
            if self._channel is not None and not self._channel.is_closed:
                with contextlib.suppress(Exception):
                    await self._channel.close()

    async def _ready_messages(self) -> int:
        """Messages ready in the job and dead-letter queues (they may still move some of the candidates)."""
        if self._channel is None or self._channel.is_closed:
            self._channel = await self.amqp.channel()
        ready = 0
        for name in (self.topology.jobs_queue, self.topology.dead_letter_queue):
            ready += (await broker.queue_counts(self._channel, name))[0]
        return ready

    async def cycle(self) -> int:
        """One pass; returns how many jobs were published again."""
        rows = await self.pool.fetch(_STRANDED_SQL, self.after_s, self.lease_s, self.heartbeat_dead_s)
        await self.pool.execute("DELETE FROM dispatcher_heartbeats WHERE seen_at < now() - interval '1 hour'")
        if not rows:
            return 0
        ready = await self._ready_messages()
        chosen = rows[:max(0, len(rows) - ready)]
        if not chosen:
            log.info("stranded-looking jobs left alone: the queues still hold enough messages for them",
                     extra={"candidates": len(rows), "ready_messages": ready})
            return 0
        reasons = {r["id"]: r["reason"] for r in chosen}
        async with self.pool.acquire() as conn, conn.transaction():
            republished = await jobs.republish(conn, list(reasons))
        by_reason = Counter(reasons[job_id] for job_id in republished)
        for reason, n in by_reason.items():
            metrics.RECONCILED.labels(reason).inc(n)
            log.warning("stranded unit jobs published again", extra={
                "reason": reason, "count": n, "job_ids": [j for j in republished if reasons[j] == reason][:100],
                "after_s": self.after_s, "ready_messages": ready})
        return len(republished)
