"""The dead-letter queue is handled, never silent. Per dead letter, with the counts kept in PostgreSQL:

- a message that is not a job message (undecodable) or names no unit job: kept in `dead_letters` and dropped,
  unless its outbox id names the job (then that job fails, as below);
- a job already moved on (not `created`, or resubmitted with another tag): obsolete, dropped;
- a job whose message failed `POISON_FAILURES` times for the same reason, or was dead-lettered `DEAD_LETTER_MAX`
  times: the job becomes `failed` with a message saying why (shown by `GET /unit_jobs/{id}` and WatchTask), so its
  task can end and `retry` submits it again;
- anything else is a healthy job whose message ran out of deliveries because consumers died holding it: it is
  published again after an exponential backoff (with jitter).

Every decision is logged, counted (`upscaling_dead_letters_total{decision}`) and kept in `dead_letters`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re

import aio_pika
import asyncpg
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractQueue

from services.dispatcher import delivery
from services.dispatcher.consumer import parse
from upscaling import jobs, metrics
from upscaling.config import Settings
from upscaling.v1 import jobs_pb2

log = logging.getLogger(__name__)

_OUTBOX_ID = re.compile(r"^outbox-(\d{1,18})$")


def death_reason(message: AbstractIncomingMessage) -> str:
    """Why the broker dead-lettered a message (`x-death`: rejected, delivery_limit, ...)."""
    deaths = (message.headers or {}).get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        reason = deaths[0].get("reason")
        return reason.decode() if isinstance(reason, bytes) else str(reason)
    return "unknown"


class DeadLetterHandler:
    """Consumes `<prefix>.jobs.dead` (a small prefetch: a message is held during its backoff)."""

    def __init__(self, queue: AbstractQueue, jobs_exchange: AbstractExchange, routing_key: str, pool: asyncpg.Pool,
                 events: AbstractExchange, settings: Settings) -> None:
        self.queue = queue
        self.jobs_exchange = jobs_exchange
        self.routing_key = routing_key
        self.pool = pool
        self.events = events
        self.settings = settings
        self.tasks: set[asyncio.Task[None]] = set()
        self._held = delivery.HeldJobs()
        self._stopping = asyncio.Event()
        self.consumer_tag: str | None = None

    def held(self) -> set[int]:
        """The jobs whose dead letters are being handled (e.g. waiting for their backoff)."""
        return self._held.ids()

    async def start(self) -> None:
        self.consumer_tag = await self.queue.consume(self._on_message, no_ack=False)
        log.info("consuming dead letters", extra={"queue": self.queue.name})

    async def stop(self) -> None:
        """Stop consuming; messages being handled go back to the dead-letter queue."""
        self._stopping.set()
        if self.consumer_tag is not None:
            with contextlib.suppress(Exception):
                await self.queue.cancel(self.consumer_tag)
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=5)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(self._process(message))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def backoff(self, dead_letters: int) -> float:
        """Seconds before the n-th republication of a job's message (exponential, full jitter above half)."""
        ceiling = min(self.settings.dead_letter_backoff_max_s,
                      self.settings.dead_letter_backoff_base_s * 2 ** max(0, dead_letters - 1))
        return random.uniform(ceiling / 2, ceiling)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        while True:
            try:
                await self._decide(message)
                return
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
                raise
            except Exception as exc:
                outage = await delivery.ride_out_outage(message, self.pool, self._stopping, exc,
                                                        "handling a dead letter")
                if outage is not None:
                    if outage:
                        continue
                    return
                log.exception("handling a dead letter failed; returned to the dead-letter queue")
                await asyncio.sleep(1.0)
                await message.nack(requeue=True)
                return

    async def _outbox_job(self, message: AbstractIncomingMessage) -> int | None:
        """The job an undecodable message was published for, when its id names an outbox row."""
        match = _OUTBOX_ID.match(message.message_id or "")
        if match is None:
            return None
        return await self.pool.fetchval("SELECT job_id FROM outbox WHERE id = $1", int(match.group(1)))

    async def _drop(self, message: AbstractIncomingMessage, job_id: int | None, decision: str, reason: str) -> None:
        await delivery.log_dead_letter(self.pool, job_id, decision, reason, message.body)
        metrics.DEAD_LETTERS.labels(decision).inc()
        log.log(logging.INFO if decision == "obsolete" else logging.ERROR, "dead letter %s", decision,
                extra={"job_id": job_id, "reason": reason, "death": death_reason(message)})
        await message.ack()

    async def _decide(self, message: AbstractIncomingMessage) -> None:
        """Handle one dead letter."""
        try:
            msg = parse(message.body, message.content_type)
        except ValueError as exc:
            job_id = await self._outbox_job(message)
            if job_id is None:
                await self._drop(message, None, "dropped", f"undecodable job message: {exc}")
                return
            await self._fail(message, job_id, f"its job message could not be decoded ({exc})")
            return
        job = await self.pool.fetchrow("SELECT id, status, tag FROM unit_jobs WHERE id = $1", msg.job_id)
        if job is None:
            await self._drop(message, None, "dropped", f"job message for an unknown unit job {msg.job_id}")
            return
        if job["status"] != "created" or (msg.tag and msg.tag != job["tag"]):
            await self._drop(message, job["id"], "obsolete",
                             f"unit job {job['id']} is {job['status']} (tag {job['tag']}); nothing to do")
            return
        failures, last_error, dead = await delivery.failures(self.pool, msg.job_id, msg.tag)
        if failures >= self.settings.poison_failures:
            await self._fail(message, msg.job_id, f"submitting it failed {failures} times: {last_error}")
            return
        if dead >= self.settings.dead_letter_max:
            await self._fail(message, msg.job_id, f"its job message was dead-lettered {dead} times without being "
                                                  "handled (its consumers kept dying)")
            return
        with self._held.hold(msg.job_id):
            await self._republish(message, msg)

    async def _republish(self, message: AbstractIncomingMessage, msg: jobs_pb2.SubmitJobMessage) -> None:
        """Publish a healthy job's dead letter to the job queue again after its backoff, then drop it."""
        async with self.pool.acquire() as conn:
            dead = await delivery.count_dead_letter(conn, msg.job_id, msg.tag)
        delay = self.backoff(dead)
        log.warning("dead-lettered job message of a healthy unit job; publishing it again after a backoff",
                    extra={"job_id": msg.job_id, "dead_letters": dead, "backoff_s": round(delay, 2),
                           "death": death_reason(message)})
        await asyncio.sleep(delay)
        await self.jobs_exchange.publish(
            aio_pika.Message(message.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                             content_type=message.content_type, type=message.type, message_id=message.message_id,
                             correlation_id=message.correlation_id, headers={"x-republished": dead}),
            routing_key=self.routing_key)
        await delivery.log_dead_letter(self.pool, msg.job_id, "republished",
                                       f"dead-lettered ({death_reason(message)}) {dead} time(s); backoff "
                                       f"{delay:.1f} s", b"")
        metrics.DEAD_LETTERS.labels("republished").inc()
        await message.ack()

    async def _fail(self, message: AbstractIncomingMessage, job_id: int, why: str) -> None:
        """Fail a poison message's job (if it is still waiting for submission) with a message saying why."""
        text = f"not submitted: {why}"
        async with self.pool.acquire() as conn, conn.transaction():
            # Lock order of upscaling.jobs: the task row, then the job row.
            task_id = await conn.fetchval("SELECT task_id FROM unit_jobs WHERE id = $1", job_id)
            if task_id is not None:
                await conn.execute("SELECT 1 FROM upscale_tasks WHERE id = $1 FOR UPDATE", task_id)
            status = await conn.fetchval("SELECT status FROM unit_jobs WHERE id = $1 FOR UPDATE", job_id)
            events = await jobs.update_job(conn, job_id, status="failed", message=text) \
                if status == "created" else []
            await delivery.log_dead_letter(conn, job_id, "failed" if events else "obsolete", text, message.body)
        decision = "failed" if events else "obsolete"
        metrics.DEAD_LETTERS.labels(decision).inc()
        log.error("poison job message: unit job failed", extra={"job_id": job_id, "reason": text,
                                                                "death": death_reason(message)})
        await jobs.publish_committed(self.events, events)
        await message.ack()
