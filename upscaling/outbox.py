"""The outbox relay: publishes job messages written to the `outbox` table (in the same transaction as their
jobs) to the jobs exchange, and marks them sent only once the broker confirmed them.

Safe with several relays at once: each batch is claimed with `FOR UPDATE SKIP LOCKED`. A relay wakes on
`NOTIFY upscaling_outbox` (sent by the writers) or every `poll_s` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aio_pika
import asyncpg
from aio_pika.abc import AbstractRobustConnection

from upscaling import broker, metrics

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "upscaling_outbox"

_CLAIM_SQL = """
SELECT id, routing_key, payload FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
"""


async def notify(conn: asyncpg.Connection) -> None:
    """Wake the relays (inside a transaction: delivered at commit)."""
    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")


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
            conn = await asyncpg.connect(self.database_url)
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
            return conn
        except Exception as exc:
            log.warning("outbox relay cannot LISTEN (%s); polling every %.1f s", exc, self.poll_s)
            return None

    async def _run(self) -> None:
        listener = await self._listen()
        channel = None
        try:
            while True:
                try:
                    if channel is None or channel.is_closed:
                        channel = await broker.open_channel(self.amqp)
                        exchange = await channel.declare_exchange(
                            self.topology.jobs_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
                    self._wake.clear()
                    while await self.relay_batch(exchange) == self.batch_size:
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

    async def relay_batch(self, exchange: aio_pika.abc.AbstractExchange) -> int:
        """Publish one batch of pending rows; returns how many were published."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM_SQL, self.batch_size)
            if not rows:
                return 0
            await asyncio.gather(*(
                exchange.publish(
                    aio_pika.Message(r["payload"], delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                     content_type="application/x-protobuf",
                                     type="upscaling.v1.SubmitJobMessage", message_id=f"outbox-{r['id']}"),
                    routing_key=r["routing_key"])
                for r in rows))
            await conn.execute("UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])",
                               [r["id"] for r in rows])
        self.published += len(rows)
        metrics.OUTBOX_PUBLISHED.inc(len(rows))
        log.debug("outbox published", extra={"count": len(rows)})
        return len(rows)
