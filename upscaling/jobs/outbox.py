"""The outbox: messages written in the same transaction as the change they announce, published by the relays
(`upscaling.jobs.relay`) once it committed. A row carries either a job message for the jobs exchange or a status
event (batch) for the events exchange. Every enqueue is followed by `NOTIFY` in the same transaction, so a relay
wakes when the change commits."""

from __future__ import annotations

import json
from collections.abc import Sequence

from upscaling.broker import JOBS_ROUTING_KEY
from upscaling.db import AnyConnection
from upscaling.jobs.events import PendingEvent, broker_messages
from upscaling.jobs.messages import MESSAGE_TYPE
from upscaling.logs import correlation_id
from upscaling.v1 import jobs_pb2

NOTIFY_CHANNEL = "upscaling_outbox"
JOBS = "jobs"
EVENTS = "events"


async def notify(conn: AnyConnection) -> None:
    """Wake the relays (inside a transaction: delivered at commit)."""
    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")


async def enqueue_jobs(conn: AnyConnection, messages: Sequence[jobs_pb2.SubmitJobMessage]) -> None:
    """Queue job messages for the jobs exchange (one statement), then wake the relays."""
    if not messages:
        return
    await conn.execute(
        "INSERT INTO outbox (job_id, routing_key, payload, exchange, message_type)"
        " SELECT u.j, $3, u.p, $4, $5 FROM unnest($1::bigint[], $2::bytea[]) AS u(j, p)",
        [m.job_id for m in messages], [m.SerializeToString() for m in messages], JOBS_ROUTING_KEY, JOBS,
        MESSAGE_TYPE)
    await notify(conn)


async def enqueue_events(conn: AnyConnection, events: list[PendingEvent]) -> None:
    """Queue status events for the events exchange (stored and numbered already; one statement), then wake the
    relays. Used where a process publishes nothing to the broker itself (the gateway)."""
    messages = broker_messages(events)
    if not messages:
        return
    await conn.execute(
        "INSERT INTO outbox (routing_key, payload, exchange, message_type, correlation_id, headers)"
        " SELECT u.k, u.p, $5, u.t, u.c, u.h::jsonb"
        " FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $6::text[]) AS u(k, p, t, c, h)",
        [m.routing_key for m in messages], [m.body for m in messages], [m.message_type for m in messages],
        [m.correlation_id if m.correlation_id is not None else correlation_id.get() for m in messages], EVENTS,
        [json.dumps(m.headers) for m in messages])
    await notify(conn)


