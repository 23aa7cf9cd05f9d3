"""Consuming job messages: manual acks, one asyncio task per message (bounded by the prefetch limit),
graceful stop (in-flight messages get a grace period, the rest go back to the queue)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from google.protobuf.message import DecodeError

from services.dispatcher.submit import Submitter, UnknownJobError
from upscaling.logs import correlation_id, new_correlation_id
from upscaling.v1 import jobs_pb2

log = logging.getLogger(__name__)

# Pause before returning a message that failed unexpectedly (e.g. the database is down), so redeliveries
# do not spin; the queue's delivery limit dead-letters a message that keeps failing.
NACK_DELAY_S = 1.0


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


class Consumer:
    """Feeds the messages of the job queue to a Submitter."""

    def __init__(self, queue: AbstractQueue, submitter: Submitter, grace_s: float) -> None:
        self.queue = queue
        self.submitter = submitter
        self.grace_s = grace_s
        self.tasks: set[asyncio.Task[None]] = set()

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
            await message.reject(requeue=False)
            return
        correlation_id.set(msg.correlation_id or message.correlation_id or new_correlation_id())
        try:
            await self.submitter.handle(msg)
        except UnknownJobError as exc:
            log.error("job message for an unknown unit job dead-lettered", extra={"error": str(exc),
                                                                                 "job_id": msg.job_id})
            await message.reject(requeue=False)
            return
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            raise
        except Exception:
            log.exception("submitting a unit job failed unexpectedly; message returned to the queue",
                          extra={"job_id": msg.job_id, "redelivered": message.redelivered})
            await asyncio.sleep(NACK_DELAY_S)
            await message.nack(requeue=True)
            return
        await message.ack()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain within the grace period."""
        consumer_tag = await self.queue.consume(self._on_message, no_ack=False)
        log.info("consuming job messages", extra={"queue": self.queue.name})
        await stop.wait()
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
