"""Status events of tasks and jobs: building them, and turning committed ones into broker messages (consecutive
events of one task go in one batch message). Events are numbered and stored in `task_events` by
`upscaling.jobs.store`; a service publishes them after commit (`publish_committed`) or hands them to the outbox
(`upscaling.jobs.outbox.enqueue_events`), which the relays publish."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange
from google.protobuf.timestamp_pb2 import Timestamp

from upscaling import event_wire
from upscaling.broker import event_batch_routing_key, event_routing_key
from upscaling.jobs.costs import as_costs, metrics
from upscaling.logs import correlation_id
from upscaling.statuses import job_status_to_proto, task_status_to_proto
from upscaling.v1 import jobs_pb2, upscaling_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingEvent:
    """A serialized `WatchTaskResponse` and its routing key, to publish once the transaction committed."""

    routing_key: str
    body: bytes
    sequence: int
    correlation_id: str | None = None  # of the change; None: the caller's context at publish time


@dataclass(frozen=True)
class BrokerMessage:
    """One message for the events exchange: a single event or a batch of one task's consecutive events."""

    routing_key: str
    body: bytes
    message_type: str
    correlation_id: str | None
    headers: dict[str, int]


def now_proto() -> Timestamp:
    """The current time as a protobuf Timestamp."""
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp


def fill_usage(target: Any, usage: Any) -> None:
    """Put a stored `usage` ({"cpu": {"value", "unit"}, ...}) into a proto's `map<string, UsageMetric>`."""
    for name, (value, unit) in metrics(usage).items():
        target[name].value = value
        target[name].unit = unit


def job_event(task_id: int, job_id: int, status: str, job: Mapping[str, Any], sequence: int, now: Timestamp,
              cid: str | None) -> PendingEvent:
    """The serialized job event of a job (`job` holds its backend_job_id, progress, message, costs, usage and
    backend)."""
    event = jobs_pb2.JobStatusEvent(
        job_id=job_id, task_id=task_id, status=job_status_to_proto(status),
        backend_job_id=job.get("backend_job_id") or "", progress=job.get("progress") or 0.0,
        message=job.get("message") or "", time=now, sequence=sequence, correlation_id=cid or "",
        backend=job.get("backend") or "")
    costs = as_costs(job.get("costs"))
    if costs is not None:
        event.costs = costs
    fill_usage(event.usage, job.get("usage"))
    body = upscaling_pb2.WatchTaskResponse(job_event=event, sequence=sequence).SerializeToString()
    return PendingEvent(event_routing_key(task_id, job_id), body, sequence)


def task_event(task_id: int, status: str, counts: Mapping[str, int], sequence: int,
               task: Mapping[str, Any] | None = None) -> PendingEvent:
    """The serialized task event of a task whose status (or costs, usage, stop reason: from `task`) changed."""
    event = jobs_pb2.TaskStatusEvent(task_id=task_id, status=task_status_to_proto(status), job_counts=counts,
                                     time=now_proto(), sequence=sequence, correlation_id=correlation_id.get() or "")
    if task is not None:
        event.costs = as_costs(task.get("costs")) or 0.0
        fill_usage(event.usage, task.get("usage"))
        event.stop_reason = task.get("stop_reason") or ""
    body = upscaling_pb2.WatchTaskResponse(task_event=event, sequence=sequence).SerializeToString()
    return PendingEvent(event_routing_key(task_id, None), body, sequence)


def broker_messages(events: list[PendingEvent]) -> list[BrokerMessage]:
    """The messages of events, in order: consecutive events of one task (up to MAX_BATCH) in one batch message."""
    out: list[BrokerMessage] = []
    i = 0
    while i < len(events):
        task_key = events[i].routing_key.split(".", 2)[1]
        j = i + 1
        while j < len(events) and j - i < event_wire.MAX_BATCH and events[j].routing_key.split(".", 2)[1] == task_key:
            j += 1
        group = events[i:j]
        first = group[0]
        if len(group) == 1:
            out.append(BrokerMessage(first.routing_key, first.body, event_wire.EVENT_TYPE, first.correlation_id,
                                     {"sequence": first.sequence}))
        else:
            body = event_wire.batch_body([e.body for e in group])
            out.append(BrokerMessage(event_batch_routing_key(int(task_key)), body, event_wire.BATCH_TYPE,
                                     first.correlation_id, {"sequence": first.sequence,
                                                           "last_sequence": group[-1].sequence, "count": len(group)}))
        i = j
    return out


def amqp_message(message: BrokerMessage) -> aio_pika.Message:
    """The AMQP message of an events-exchange message (no correlation id: the caller's context's)."""
    return aio_pika.Message(message.body, content_type="application/x-protobuf", type=message.message_type,
                            correlation_id=message.correlation_id if message.correlation_id is not None
                            else correlation_id.get(), headers=dict(message.headers))


async def publish(exchange: AbstractExchange, events: list[PendingEvent]) -> None:
    """Publish committed events (publisher confirms; consecutive events of a task as one batch message)."""
    for message in broker_messages(events):
        await exchange.publish(amqp_message(message), routing_key=message.routing_key)


async def publish_many(exchange: AbstractExchange, events: list[PendingEvent]) -> None:
    """`publish`, with every message sent before waiting for the confirms (one round trip for many)."""
    messages = broker_messages(events)
    if len(messages) <= 1:
        await publish(exchange, events)
        return
    results = await asyncio.gather(*(exchange.publish(amqp_message(m), routing_key=m.routing_key) for m in messages),
                                   return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


# How long publishing committed events may wait (a robust channel waits for its reconnection).
PUBLISH_COMMITTED_TIMEOUT_S = 2.0


async def publish_committed(exchange: AbstractExchange, events: list[PendingEvent]) -> bool:
    """`publish_many` for events whose change committed: they are stored in `task_events`, so a broker outage is
    logged, not raised, and not waited out (watchers read what they missed from the database). False when not
    published."""
    if not events:
        return True
    try:
        await asyncio.wait_for(publish_many(exchange, events), PUBLISH_COMMITTED_TIMEOUT_S)
        return True
    except Exception as exc:
        log.warning("status events not published (stored in task_events): %s", exc or type(exc).__name__,
                    extra={"events": len(events)})
        return False

