"""Recording job status changes: one transaction updates the job, derives the task status, numbers the
events per task and stores them in `task_events`; the caller publishes them after commit.

Lock order everywhere: the task row, then the job row — so the gateway (cancel/retry), the dispatcher and
the monitor never deadlock. Job statuses change only here (or, in bulk, followed by `refresh_task`), which
keeps the task's stored jobs-per-status right without recounting a large task on every change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractExchange
from google.protobuf.timestamp_pb2 import Timestamp

from upscaling import event_wire
from upscaling.broker import event_batch_routing_key, event_routing_key
from upscaling.logs import correlation_id
from upscaling.statuses import TERMINAL_JOB_STATUSES, derive_task_status, job_status_to_proto, task_status_to_proto
from upscaling.v1 import jobs_pb2, upscaling_pb2

log = logging.getLogger(__name__)

_UNSET: Any = object()
# The columns a status change reads (never `*`: a job's parameters and arguments hold its whole tile geometry).
_JOB_STATE = "id, task_id, status, backend_job_id, progress, message, usage, costs, results"
_TASK_STATE = "id, status, last_sequence, job_counts, cancel_requested"


@dataclass(frozen=True)
class PendingEvent:
    """A serialized `WatchTaskResponse` and its routing key, to publish once the transaction committed."""

    routing_key: str
    body: bytes
    sequence: int
    correlation_id: str | None = None  # of the change; None: the caller's context at publish time


def _now_proto() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp


async def _job_counts(conn: asyncpg.Connection, task_id: int) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM unit_jobs WHERE task_id = $1 GROUP BY status",
                            task_id)
    return {r["status"]: r["n"] for r in rows}


async def _known_counts(conn: asyncpg.Connection, task: asyncpg.Record) -> dict[str, int]:
    """The task's stored jobs-per-status, or a recount when none is stored yet."""
    stored = task["job_counts"]
    return dict(stored) if stored is not None else await _job_counts(conn, task["id"])


def _moved(counts: dict[str, int], old: str, new: str, n: int = 1) -> dict[str, int]:
    """Jobs-per-status after `n` jobs moved from `old` to `new`."""
    counts = dict(counts)
    counts[old] = counts.get(old, 0) - n
    counts[new] = counts.get(new, 0) + n
    return {status: k for status, k in counts.items() if k > 0}


def _job_event(task_id: int, job_id: int, status: str, job: dict[str, Any], sequence: int, now: Timestamp,
               cid: str | None) -> PendingEvent:
    """The serialized job event of a job (`job` holds its backend_job_id, progress and message)."""
    event = jobs_pb2.JobStatusEvent(
        job_id=job_id, task_id=task_id, status=job_status_to_proto(status),
        backend_job_id=job.get("backend_job_id") or "", progress=job.get("progress") or 0.0,
        message=job.get("message") or "", time=now, sequence=sequence, correlation_id=cid or "")
    body = upscaling_pb2.WatchTaskResponse(job_event=event, sequence=sequence).SerializeToString()
    return PendingEvent(event_routing_key(task_id, job_id), body, sequence)


async def _store_job_events(conn: asyncpg.Connection, task_id: int, events: list[PendingEvent],
                            job_ids: list[int]) -> None:
    """Insert job events (one per job of `job_ids`, same order) into `task_events` with one statement."""
    if events:
        await conn.execute(
            "INSERT INTO task_events (task_id, sequence, job_id, payload)"
            " SELECT $1, u.s, u.j, u.p FROM unnest($2::bigint[], $3::bigint[], $4::bytea[]) AS u(s, j, p)",
            task_id, [e.sequence for e in events], job_ids, [e.body for e in events])


async def _store(conn: asyncpg.Connection, task_id: int, job_id: int | None,
                 response: upscaling_pb2.WatchTaskResponse) -> PendingEvent:
    body = response.SerializeToString()
    await conn.execute("INSERT INTO task_events (task_id, sequence, job_id, payload) VALUES ($1, $2, $3, $4)",
                       task_id, response.sequence, job_id, body)
    return PendingEvent(event_routing_key(task_id, job_id), body, response.sequence)


async def refresh_task(conn: asyncpg.Connection, task_id: int, *, sequence: int | None = None,
                       task: asyncpg.Record | None = None, counts: dict[str, int] | None = None) -> list[PendingEvent]:
    """Re-derive a task's status (inside a transaction, task row locked by the caller or here) from `counts`
    (jobs per status; recounted when not given) and store both; emits a task event when the status changed."""
    if task is None:
        task = await conn.fetchrow(f"SELECT {_TASK_STATE} FROM upscale_tasks WHERE id = $1 FOR UPDATE", task_id)
        if task is None:
            return []
    seq = task["last_sequence"] if sequence is None else sequence
    if counts is None:
        counts = await _job_counts(conn, task_id)
    status = derive_task_status(counts, task["cancel_requested"])
    events: list[PendingEvent] = []
    if status != task["status"]:
        seq += 1
        event = jobs_pb2.TaskStatusEvent(task_id=task_id, status=task_status_to_proto(status), job_counts=counts,
                                         time=_now_proto(), sequence=seq, correlation_id=correlation_id.get() or "")
        events.append(await _store(conn, task_id, None,
                                   upscaling_pb2.WatchTaskResponse(task_event=event, sequence=seq)))
    if seq != task["last_sequence"] or status != task["status"] or counts != task["job_counts"]:
        await conn.execute("UPDATE upscale_tasks SET status = $2, last_sequence = $3, job_counts = $4, updated = now()"
                           " WHERE id = $1", task_id, status, seq, counts)
    return events


async def update_job(
    conn: asyncpg.Connection,
    job_id: int,
    *,
    status: str | None = None,
    backend_job_id: str | None = _UNSET,
    progress: float | None = _UNSET,
    message: str | None = _UNSET,
    usage: dict[str, Any] | None = _UNSET,
    costs: float | None = _UNSET,
    results: dict[str, Any] | None = _UNSET,
    allow_from_terminal: bool = False,
) -> list[PendingEvent]:
    """Apply a change to a unit job inside the caller's transaction; returns the events to publish.

    A terminal job does not change status again unless `allow_from_terminal` (retries). A call that
    changes nothing records nothing.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("update_job must run inside a transaction")
    task_id = await conn.fetchval("SELECT task_id FROM unit_jobs WHERE id = $1", job_id)
    task = None
    if task_id is not None:
        task = await conn.fetchrow(f"SELECT {_TASK_STATE} FROM upscale_tasks WHERE id = $1 FOR UPDATE", task_id)
    job = await conn.fetchrow(f"SELECT {_JOB_STATE} FROM unit_jobs WHERE id = $1 FOR UPDATE", job_id)
    if job is None:
        return []
    changes: dict[str, Any] = {}
    if status is not None and status != job["status"]:
        if job["status"] not in TERMINAL_JOB_STATUSES or allow_from_terminal:
            changes["status"] = status
    for column, value in (("backend_job_id", backend_job_id), ("progress", progress), ("message", message),
                          ("usage", usage), ("costs", costs), ("results", results)):
        if value is not _UNSET and value != job[column]:
            changes[column] = value
    if not changes:
        return []
    new_status = changes.get("status", job["status"])
    # Counted before this change is written, so a recount does not already include it.
    counts = counts_before = await _known_counts(conn, task) if task is not None else {}
    if task is not None and "status" in changes and counts_before.get(job["status"], 0) <= 0:
        # The stored counts missed a change written behind jobstore's back: count again.
        counts = counts_before = await _job_counts(conn, task_id)
    assignments = [f"{column} = ${i}" for i, column in enumerate(changes, start=2)]
    assignments.append("updated = now()")
    if "status" in changes and new_status in TERMINAL_JOB_STATUSES:
        assignments.append("finished_at = now()")
    await conn.execute(f"UPDATE unit_jobs SET {', '.join(assignments)} WHERE id = $1", job_id, *changes.values())
    if task is None:
        return []
    public = {"status", "backend_job_id", "progress", "message"}
    events: list[PendingEvent] = []
    seq = task["last_sequence"]
    if public & changes.keys():
        seq += 1
        event = _job_event(task_id, job_id, new_status, {**dict(job), **changes}, seq, _now_proto(),
                           correlation_id.get())
        await _store_job_events(conn, task_id, [event], [job_id])
        events.append(event)
    if "status" in changes:
        counts = _moved(counts_before, job["status"], new_status)
    events.extend(await refresh_task(conn, task_id, sequence=seq, task=task, counts=counts))
    return events


async def record_bulk_change(conn: asyncpg.Connection, task: asyncpg.Record, jobs: list[asyncpg.Record],
                             status: str) -> list[PendingEvent]:
    """Events for jobs the caller already moved to `status` in one statement (cancel/retry of a whole task):
    one job event per job, numbered and stored as `update_job` does, then the task re-derived (recounted)."""
    seq = task["last_sequence"]
    events: list[PendingEvent] = []
    cid = correlation_id.get() or ""
    now = _now_proto()
    for job in jobs:
        seq += 1
        fields = {"progress": job["progress"], "message": job["message"]}  # no backend job id in these events
        events.append(_job_event(task["id"], job["id"], status, fields, seq, now, cid))
    await _store_job_events(conn, task["id"], events, [j["id"] for j in jobs])
    events.extend(await refresh_task(conn, task["id"], sequence=seq, task=task))
    return events


_FIELDS = ("backend_job_id", "progress", "message", "usage", "costs", "results")


async def update_jobs_bulk(conn: asyncpg.Connection, task_id: int,
                           changes: list[tuple[int, dict[str, Any]]]) -> list[PendingEvent]:
    """`update_job(conn, job_id, **fields)` for many jobs of one task, inside the caller's transaction and with
    the same effect: the task row is locked once, the jobs are locked and updated with one statement each, their
    events stored with one INSERT, the task re-derived once. Falls back to `update_job` per job when a job
    appears twice, lost its task, or the stored counts need a recount."""
    if not conn.is_in_transaction():
        raise RuntimeError("update_jobs_bulk must run inside a transaction")
    ordered = sorted(changes, key=lambda c: c[0])
    ids = [job_id for job_id, _ in ordered]
    task = await conn.fetchrow(f"SELECT {_TASK_STATE} FROM upscale_tasks WHERE id = $1 FOR UPDATE", task_id)
    jobs = {r["id"]: r for r in await conn.fetch(
        f"SELECT {_JOB_STATE} FROM unit_jobs WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE", ids)}
    bulk = (task is not None and len(set(ids)) == len(ids)
            and all(job_id in jobs and jobs[job_id]["task_id"] == task_id for job_id in ids))
    rows: list[dict[str, Any]] = []
    events: list[PendingEvent] = []
    event_jobs: list[int] = []
    if bulk:
        assert task is not None
        counts = await _known_counts(conn, task)
        seq = task["last_sequence"]
        cid = correlation_id.get() or ""
        now = _now_proto()
        public = {"status", "backend_job_id", "progress", "message"}
        for job_id, fields in ordered:
            job = jobs[job_id]
            status = fields.get("status")
            changed: dict[str, Any] = {}
            if status is not None and status != job["status"]:
                if job["status"] not in TERMINAL_JOB_STATUSES or fields.get("allow_from_terminal", False):
                    changed["status"] = status
            for column in _FIELDS:
                if column in fields and fields[column] != job[column]:
                    changed[column] = fields[column]
            if not changed:
                continue
            new_status = changed.get("status", job["status"])
            if "status" in changed:
                if counts.get(job["status"], 0) <= 0:
                    bulk = False  # the stored counts missed a change: update_job recounts
                    break
                counts = _moved(counts, job["status"], new_status)
            merged = {**dict(job), **changed}
            merged["_finish"] = "status" in changed and new_status in TERMINAL_JOB_STATUSES
            rows.append(merged)
            if public & changed.keys():
                seq += 1
                events.append(_job_event(task_id, job_id, new_status, merged, seq, now, cid))
                event_jobs.append(job_id)
    if not bulk:
        events = []
        for job_id, fields in ordered:
            events.extend(await update_job(conn, job_id, **fields))
        return events
    if not rows:
        return []  # nothing changed: nothing recorded
    assert task is not None
    await conn.execute(
        "UPDATE unit_jobs u SET status = v.status, backend_job_id = v.backend_job_id, progress = v.progress,"
        " message = v.message, usage = v.usage::jsonb, costs = v.costs, results = v.results::jsonb,"
        " updated = now(), finished_at = CASE WHEN v.finish THEN now() ELSE u.finished_at END"
        " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::float8[], $5::text[], $6::text[], $7::float8[],"
        " $8::text[], $9::bool[]) AS v(id, status, backend_job_id, progress, message, usage, costs, results,"
        " finish) WHERE u.id = v.id",
        [r["id"] for r in rows], [r["status"] for r in rows], [r["backend_job_id"] for r in rows],
        [r["progress"] for r in rows], [r["message"] for r in rows],
        [None if r["usage"] is None else json.dumps(r["usage"]) for r in rows], [r["costs"] for r in rows],
        [None if r["results"] is None else json.dumps(r["results"]) for r in rows], [r["_finish"] for r in rows])
    await _store_job_events(conn, task_id, events, event_jobs)
    events.extend(await refresh_task(conn, task_id, sequence=seq, task=task, counts=counts))
    return events


async def record_submitted_bulk(conn: asyncpg.Connection, task_id: int | None,
                                submitted: list[tuple[int, str, str | None, str]]
                                ) -> tuple[list[PendingEvent], set[int]]:
    """`update_job(conn, job_id, status="queued", backend_job_id=...)` for many jobs of one task in one go, inside
    the caller's transaction: the task row is locked once, the jobs (`(job_id, backend_job_id, correlation id,
    tag)`) are updated with one statement, their events are numbered and stored with one INSERT, the counts are
    adjusted once. Jobs that are not `created` (or lost their task) go through `update_job` one by one.

    A job whose tag is no longer the one submitted (it was resubmitted or retried meanwhile, with a new tag) is
    left alone: returns (events, ids of those stale jobs)."""
    if not conn.is_in_transaction():
        raise RuntimeError("record_submitted_bulk must run inside a transaction")
    task = await conn.fetchrow(f"SELECT {_TASK_STATE} FROM upscale_tasks WHERE id = $1 FOR UPDATE", task_id)
    wanted = {job_id: (backend_job_id, cid) for job_id, backend_job_id, cid, _ in submitted}
    tags = {job_id: tag for job_id, _, _, tag in submitted}
    jobs = await conn.fetch(f"SELECT {_JOB_STATE}, tag FROM unit_jobs WHERE id = ANY($1::bigint[]) ORDER BY id"
                            " FOR UPDATE", list(wanted))
    stale = {j["id"] for j in jobs if j["tag"] != tags[j["id"]]}
    simple = [j for j in jobs if task is not None and j["task_id"] == task_id and j["status"] == "created"
              and j["id"] not in stale]
    events: list[PendingEvent] = []
    if simple:
        counts = await _known_counts(conn, task)
        if counts.get("created", 0) < len(simple):
            counts = await _job_counts(conn, task_id)  # the stored counts missed a change: count again
        await conn.execute(
            "UPDATE unit_jobs u SET status = 'queued', backend_job_id = v.b, updated = now()"
            " FROM unnest($1::bigint[], $2::text[]) AS v(id, b) WHERE u.id = v.id",
            [j["id"] for j in simple], [wanted[j["id"]][0] for j in simple])
        seq = task["last_sequence"]
        now = _now_proto()
        for job in simple:
            seq += 1
            backend_job_id, cid = wanted[job["id"]]
            event = _job_event(task_id, job["id"], "queued", {**dict(job), "backend_job_id": backend_job_id}, seq,
                               now, cid)
            events.append(dataclasses.replace(event, correlation_id=cid))
        await _store_job_events(conn, task_id, events, [j["id"] for j in simple])
        counts = _moved(counts, "created", "queued", len(simple))
        events.extend(await refresh_task(conn, task_id, sequence=seq, task=task, counts=counts))
    done = {j["id"] for j in simple} | stale
    for job_id, (backend_job_id, cid) in wanted.items():
        if job_id not in done:
            token = correlation_id.set(cid)
            try:
                events.extend(await update_job(conn, job_id, status="queued", backend_job_id=backend_job_id))
            finally:
                correlation_id.reset(token)
    return events, stale


async def events_after(conn: asyncpg.Connection | asyncpg.Pool, task_id: int,
                       after_sequence: int) -> list[upscaling_pb2.WatchTaskResponse]:
    """Stored events of a task with a sequence above `after_sequence`, in order (for resuming a watch)."""
    rows = await conn.fetch("SELECT payload FROM task_events WHERE task_id = $1 AND sequence > $2 ORDER BY sequence",
                            task_id, after_sequence)
    return [upscaling_pb2.WatchTaskResponse.FromString(r["payload"]) for r in rows]


def _message(body: bytes, message_type: str, sequence: int, cid: str | None) -> aio_pika.Message:
    return aio_pika.Message(body, content_type="application/x-protobuf", type=message_type,
                            correlation_id=cid if cid is not None else correlation_id.get(),
                            headers={"sequence": sequence})


def _messages(events: list[PendingEvent]) -> list[tuple[aio_pika.Message, str]]:
    """Broker messages (and routing keys) of events: consecutive events of one task go in batch messages."""
    out: list[tuple[aio_pika.Message, str]] = []
    i = 0
    while i < len(events):
        task_key = events[i].routing_key.split(".", 2)[1]
        j = i + 1
        while j < len(events) and j - i < event_wire.MAX_BATCH and events[j].routing_key.split(".", 2)[1] == task_key:
            j += 1
        group = events[i:j]
        if len(group) == 1:
            event = group[0]
            out.append((_message(event.body, event_wire.EVENT_TYPE, event.sequence, event.correlation_id),
                        event.routing_key))
        else:
            message = _message(event_wire.batch_body([e.body for e in group]), event_wire.BATCH_TYPE,
                               group[0].sequence, group[0].correlation_id)
            message.headers["last_sequence"] = group[-1].sequence
            message.headers["count"] = len(group)
            out.append((message, event_batch_routing_key(int(task_key))))
        i = j
    return out


async def publish(exchange: AbstractExchange, events: list[PendingEvent]) -> None:
    """Publish committed events (publisher confirms; consecutive events of a task as one batch message)."""
    for message, routing_key in _messages(events):
        await exchange.publish(message, routing_key=routing_key)


async def publish_many(exchange: AbstractExchange, events: list[PendingEvent]) -> None:
    """`publish`, with every message sent before waiting for the confirms (one round trip for many)."""
    messages = _messages(events)
    if len(messages) <= 1:
        await publish(exchange, events)
        return
    results = await asyncio.gather(*(exchange.publish(m, routing_key=key) for m, key in messages),
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
