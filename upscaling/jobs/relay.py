"""The outbox relay: publishes outbox rows (job messages to the jobs exchange, status events to the events
exchange) and marks them sent only once the broker confirmed them.

It runs in every dispatcher and monitor (and, for deployments that want it apart, as `python -m
upscaling.jobs.relay`), so no service depends on the gateway being up. Any number of relays may run: each batch
is claimed with `FOR UPDATE SKIP LOCKED`. A relay wakes on `NOTIFY upscaling_outbox` (sent with every enqueue)
or every `poll_s` seconds. Events relayed by different replicas may reach the broker out of order: watchers
order them by sequence and fill gaps from `task_events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from upscaling import broker, event_loop, metrics
from upscaling.config import load_settings
from upscaling.jobs.outbox import EVENTS, JOBS, NOTIFY_CHANNEL
from upscaling.worker_runtime import worker_runtime

log = logging.getLogger(__name__)

# Publishes of a batch awaiting their broker confirm at once: the client walks every outstanding confirmation on
# each (multiple) confirm frame, so a whole batch in flight costs quadratic CPU; a window keeps it linear.
CONFIRM_WINDOW = 64

_CLAIM_SQL = """
SELECT id, exchange, routing_key, payload, message_type, correlation_id, headers FROM outbox
WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
"""


def _message(row: asyncpg.Record) -> aio_pika.Message:
    """The AMQP message of an outbox row."""
    if row["exchange"] == JOBS:
        return aio_pika.Message(row["payload"], delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                content_type="application/x-protobuf", type=row["message_type"],
                                message_id=f"outbox-{row['id']}", correlation_id=row["correlation_id"])
    headers: dict[str, Any] = dict(row["headers"] or {})
    return aio_pika.Message(row["payload"], content_type="application/x-protobuf", type=row["message_type"],
                            correlation_id=row["correlation_id"], headers=headers)


class OutboxRelay:
    """Background publisher of pending outbox rows."""

    def __init__(self, pool: asyncpg.Pool, database_url: str, amqp: AbstractRobustConnection,
                 topology: broker.Topology, poll_s: float = 1.0, batch_size: int = 500) -> None:
        self.pool = pool
        self.database_url = database_url
        self.amqp = amqp
        self.topology = topology
        self.poll_s = poll_s
        self.batch_size = batch_size
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        self._wake.set()

    async def _listen(self) -> asyncpg.Connection | None:
        try:
            conn: asyncpg.Connection = await asyncpg.connect(self.database_url)
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
            return conn
        except Exception as exc:
            log.warning("outbox relay cannot LISTEN (%s); polling every %.1f s", exc, self.poll_s)
            return None

    async def _exchanges(self, channel: AbstractChannel) -> dict[str, AbstractExchange]:
        declared = await broker.declare_exchanges(channel, self.topology)
        return {JOBS: declared.jobs_exchange, EVENTS: declared.events_exchange}

    async def _run(self) -> None:
        listener = await self._listen()
        channel: AbstractChannel | None = None
        exchanges: dict[str, AbstractExchange] = {}
        try:
            while True:
                try:
                    if channel is None or channel.is_closed:
                        channel = await broker.open_channel(self.amqp)
                        exchanges = await self._exchanges(channel)
                    self._wake.clear()
                    while await self.relay_batch(exchanges) == self.batch_size:
                        pass
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("outbox relay failed; retrying")
                    channel = None
                    await asyncio.sleep(min(self.poll_s, 1.0))
                    continue
                if listener is None or listener.is_closed():
                    listener = await self._listen()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)
        finally:
            if listener is not None and not listener.is_closed():
                await listener.close()
            if channel is not None and not channel.is_closed:
                await channel.close()

    async def relay_batch(self, exchanges: dict[str, AbstractExchange]) -> int:
        """Publish one batch of pending rows (in id order; up to CONFIRM_WINDOW confirms awaited together); returns how
        many."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM_SQL, self.batch_size)
            if not rows:
                return 0
            window = asyncio.Semaphore(CONFIRM_WINDOW)

            async def publish(row: asyncpg.Record) -> None:
                async with window:
                    await exchanges[row["exchange"]].publish(_message(row), routing_key=row["routing_key"])

            results = await asyncio.gather(*(publish(r) for r in rows), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result  # nothing marked sent: the batch is published again (consumers deduplicate)
            await conn.execute("UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])",
                               [r["id"] for r in rows])
        self.published += len(rows)
        metrics.OUTBOX_PUBLISHED.inc(len(rows))
        log.debug("outbox published", extra={"count": len(rows)})
        return len(rows)


async def main() -> None:
    """Run a relay on its own until SIGTERM/SIGINT."""
    settings = load_settings()
    async with worker_runtime("relay", settings) as rt:
        relay = OutboxRelay(rt.pool, settings.database_url, rt.connection, broker.Topology(settings.broker_prefix),
                            poll_s=settings.outbox_poll_s)
        relay.start()
        log.info("outbox relay started")
        try:
            await rt.stop.wait()
        finally:
            await relay.stop()


if __name__ == "__main__":
    event_loop.run(main())
