"""Consuming job messages: manual acks, one asyncio task per message (bounded by the prefetch limit),
graceful stop (in-flight messages get a grace period, the rest go back to the queue).

An unexpected failure is told apart from an outage: while PostgreSQL or the broker is down, the message is held
(or left to the broker's redelivery) and nothing is counted; otherwise the failure is counted for the job in
PostgreSQL and the message returned, or dead-lettered once it failed POISON_FAILURES times for the same reason
(the dead-letter handler then fails the job with that reason)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError
from google.protobuf.message import DecodeError

from services.dispatcher import delivery
from services.dispatcher.submit import Submitter, UnknownJobError
from upscaling import metrics
from upscaling.logs import correlation_id, new_correlation_id
from upscaling.v1 import jobs_pb2

log = logging.getLogger(__name__)

# Pause before returning a message that failed unexpectedly, so redeliveries do not spin.
NACK_DELAY_S = 1.0
# Tries of one delivery that end in a broken connection (after an outage) before it counts as a failure.
MAX_CONNECTION_RETRIES = 10


CONTENT_TYPE = "application/x-protobuf"


def parse(body: bytes, content_type: str | None = None) -> jobs_pb2.SubmitJobMessage:
    """The job message of a body; ValueError when it is not one."""
    if content_type and content_type != CONTENT_TYPE:
        raise ValueError(f"content type {content_type[:60]!r}, expected {CONTENT_TYPE}")
    try:
        msg = jobs_pb2.SubmitJobMessage.FromString(body)
    except DecodeError as exc:
        raise ValueError(f"not a SubmitJobMessage: {exc}") from exc
    if msg.job_id <= 0:
        raise ValueError("SubmitJobMessage without a job id")
    return msg


async def settle(outcome: Awaitable[object], job_id: int) -> None:
    """Acknowledge / return a message; when its channel is gone (a broker outage) the broker redelivers it anyway
    and the job's state in PostgreSQL decides what the next delivery does."""
    try:
        await outcome
    except (AMQPError, ChannelInvalidStateError, ConnectionError) as exc:
        log.warning("message not settled: its channel is gone; it will be redelivered",
                    extra={"job_id": job_id, "error": repr(exc)})


class Consumer:
    """Feeds the messages of the job queue to a Submitter."""

    def __init__(self, queue: AbstractQueue, submitter: Submitter, grace_s: float, poison_failures: int = 3) -> None:
        self.queue = queue
        self.submitter = submitter
        self.grace_s = grace_s
        self.poison_failures = max(1, poison_failures)
        self.tasks: set[asyncio.Task[None]] = set()
        self._held = delivery.HeldJobs()
        self._stopping = asyncio.Event()
        self.consumer_tag: str | None = None

    def held(self) -> set[int]:
        """The jobs whose messages this consumer holds right now."""
        return self._held.ids()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(self._process(message))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        try:
            msg = parse(message.body, message.content_type)
        except ValueError as exc:
            log.error("poison job message dead-lettered", extra={"error": str(exc), "size": len(message.body),
                                                                 "message_id": message.message_id})
            await settle(message.reject(requeue=False), 0)
            return
        correlation_id.set(msg.correlation_id or message.correlation_id or new_correlation_id())
        with self._held.hold(msg.job_id):
            await self._handle(message, msg)

    async def _handle(self, message: AbstractIncomingMessage, msg: jobs_pb2.SubmitJobMessage) -> None:
        pool = self.submitter.pool
        connection_errors = 0
        while True:
            try:
                await self.submitter.handle(msg)
            except UnknownJobError as exc:
                log.error("job message for an unknown unit job dead-lettered", extra={"error": str(exc),
                                                                                     "job_id": msg.job_id})
                await settle(message.reject(requeue=False), msg.job_id)
                return
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
                raise
            except Exception as exc:
                # An outage is not the job's fault: nothing is counted.
                outage = await delivery.ride_out_outage(message, pool, self._stopping, exc,
                                                        f"submitting unit job {msg.job_id}")
                if outage is not None:
                    if outage:
                        continue
                    return
                connection_errors += 1
                if delivery.is_connection_error(exc) and connection_errors <= MAX_CONNECTION_RETRIES:
                    # A connection that broke in an outage which is over now: not the job's fault, try again.
                    log.warning("connection error while submitting; trying again",
                                extra={"job_id": msg.job_id, "error": repr(exc)})
                    await asyncio.sleep(NACK_DELAY_S)
                    continue
                await self._failed(message, msg, exc)
                return
            await settle(message.ack(), msg.job_id)
            return

    async def _failed(self, message: AbstractIncomingMessage, msg: jobs_pb2.SubmitJobMessage,
                      exc: Exception) -> None:
        """Count an unexpected failure of a job's message; return the message, or dead-letter it when it failed
        `poison_failures` times for the same reason."""
        reason = f"{type(exc).__name__}: {exc}"
        metrics.DELIVERY_FAILURES.inc()
        try:
            failures = await delivery.record_failure(self.submitter.pool, msg.job_id, msg.tag, reason)
        except Exception:
            failures = 0  # the database went away in between: an outage, not the job's fault
        if failures >= self.poison_failures:
            log.error("job message failed repeatedly for the same reason; dead-lettered",
                      extra={"job_id": msg.job_id, "failures": failures, "error": reason})
            await settle(message.reject(requeue=False), msg.job_id)
            return
        log.exception("submitting a unit job failed unexpectedly; message returned to the queue",
                      extra={"job_id": msg.job_id, "failures": failures, "redelivered": message.redelivered},
                      exc_info=exc)
        await asyncio.sleep(NACK_DELAY_S)
        await settle(message.nack(requeue=True), msg.job_id)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain within the grace period."""
        self.consumer_tag = consumer_tag = await self.queue.consume(self._on_message, no_ack=False)
        log.info("consuming job messages", extra={"queue": self.queue.name})
        await stop.wait()
        self._stopping.set()
        with contextlib.suppress(Exception):
            await self.queue.cancel(consumer_tag)
        if self.tasks:
            log.info("stopping: waiting for in-flight messages", extra={"in_flight": len(self.tasks),
                                                                        "grace_s": self.grace_s})
            _, pending = await asyncio.wait(set(self.tasks), timeout=self.grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
                log.warning("in-flight messages returned to the queue", extra={"count": len(pending)})
