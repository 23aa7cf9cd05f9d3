"""Database side of the monitor: which jobs are active, and recording changes (status updates, resubmissions,
cancellations of jobs never submitted) through `upscaling.jobstore`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from upscaling import jobstore
from upscaling.v1 import common_pb2, jobs_pb2

_ACTIVE_SQL = """
SELECT uj.id, uj.task_id, uj.status, uj.backend_job_id, uj.progress, uj.message, uj.attempts,
       (uj.cancel_requested OR coalesce(t.cancel_requested, false)) AS cancel,
       coalesce(t.max_attempts, 1) AS max_attempts, t.correlation_id
FROM unit_jobs uj LEFT JOIN upscale_tasks t ON t.id = uj.task_id
WHERE uj.backend = ANY($1::text[]) AND uj.backend_job_id IS NOT NULL
  AND uj.status IN ('created', 'queued', 'running', 'unknown')
ORDER BY uj.id
"""

_SIGNATURE_SQL = """
SELECT count(*) FILTER (WHERE uj.backend_job_id IS NOT NULL AND uj.status <> 'created') AS active,
       count(*) FILTER (WHERE uj.cancel_requested) AS cancels,
       (SELECT count(*) FROM upscale_tasks WHERE cancel_requested
           AND status NOT IN ('finished', 'failed', 'canceled')) AS task_cancels
FROM unit_jobs uj WHERE uj.status IN ('created', 'queued', 'running', 'unknown')
"""

_UNSUBMITTED_CANCELS_SQL = """
SELECT uj.id, uj.task_id, t.correlation_id
FROM unit_jobs uj LEFT JOIN upscale_tasks t ON t.id = uj.task_id
WHERE uj.status = 'created' AND uj.backend_job_id IS NULL AND uj.submitted_at IS NULL
  AND (uj.cancel_requested OR coalesce(t.cancel_requested, false))
ORDER BY uj.task_id, uj.id
"""

_FORMAT_NAMES = {"gtiff": "gtiff", "geotiff": "gtiff", "geojson": "geojson", "netcdf": "netcdf", "json": "json"}


@dataclass
class JobChange:
    """What to record for one job. `resubmit` turns a backend error into a new submission."""

    job_id: int
    task_id: int | None
    correlation_id: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    resubmit: bool = False


async def active_jobs(pool: asyncpg.Pool, endpoints: list[str]) -> list[asyncpg.Record]:
    """Jobs of a backend (any spelling of its endpoint) whose backend job is known and not terminal."""
    return await pool.fetch(_ACTIVE_SQL, endpoints)


async def signature(pool: asyncpg.Pool) -> tuple[int, int, int]:
    """A cheap fingerprint of the work to do (active jobs, cancellations); a change wakes the monitor up."""
    row = await pool.fetchrow(_SIGNATURE_SQL)
    return row["active"], row["cancels"], row["task_cancels"]


# How stale `checked_at` may get: a job the backend keeps reporting unchanged is not rewritten every cycle.
CHECKED_AT_PRECISION_S = 30.0


async def mark_checked(pool: asyncpg.Pool, job_ids: list[int]) -> None:
    """Record when the backend last reported these jobs (to within CHECKED_AT_PRECISION_S)."""
    if job_ids:
        await pool.execute("UPDATE unit_jobs SET checked_at = now() WHERE id = ANY($1::bigint[])"
                           " AND (checked_at IS NULL OR checked_at < now() - make_interval(secs => $2))",
                           job_ids, CHECKED_AT_PRECISION_S)


def submit_message(job: asyncpg.Record, correlation_id: str | None) -> jobs_pb2.SubmitJobMessage:
    """The job message for a (re)submission of a unit job row."""
    service = job["service"] or {}
    return jobs_pb2.SubmitJobMessage(
        job_id=job["id"], task_id=job["task_id"] or 0,
        service=common_pb2.ServiceRef(endpoint=service.get("endpoint", ""),
                                      application=service.get("application", ""),
                                      namespace=service.get("namespace") or ""),
        parameters_json=json.dumps(job["submit_arguments"] or {}, separators=(",", ":")),
        format=_FORMAT_NAMES.get((job["format"] or "").lower(), (job["format"] or "").lower()),
        title=job["title"], tag=job["tag"], correlation_id=correlation_id or "",
        attempt=job["attempts"] + 1, process_id=job["process_id"] or "")


async def _resubmit(conn: asyncpg.Connection, change: JobChange) -> list[jobstore.PendingEvent]:
    events = await jobstore.update_job(
        conn, change.job_id, status="created", allow_from_terminal=True, backend_job_id=None, progress=None,
        message=change.fields.get("message"), usage=None, costs=None, results=None)
    job = await conn.fetchrow(
        "UPDATE unit_jobs SET tag = 'uj-' || gen_random_uuid(), submitted_at = NULL, backend_job_id = NULL,"
        " finished_at = NULL, updated = now() WHERE id = $1 RETURNING *", change.job_id)
    message = submit_message(job, change.correlation_id)
    await conn.execute("INSERT INTO outbox (job_id, routing_key, payload) VALUES ($1, 'submit', $2)",
                       change.job_id, message.SerializeToString())
    return events


async def record(pool: asyncpg.Pool, changes: list[JobChange]) -> list[jobstore.PendingEvent]:
    """Record the changes of one task's jobs in one transaction; returns the events to publish after commit."""
    events: list[jobstore.PendingEvent] = []
    plain = [c for c in changes if not c.resubmit]
    task_id = changes[0].task_id if changes else None
    async with pool.acquire() as conn, conn.transaction():
        if len(plain) > 1 and task_id is not None and all(c.task_id == task_id for c in changes):
            # Many plain updates of one task: one statement each for the jobs, their events and the task.
            events.extend(await jobstore.update_jobs_bulk(conn, task_id, [(c.job_id, c.fields) for c in plain]))
            plain = []
        for change in sorted(changes, key=lambda c: c.job_id):
            if change.resubmit:
                events.extend(await _resubmit(conn, change))
            elif plain:
                events.extend(await jobstore.update_job(conn, change.job_id, **change.fields))
    return events


async def unsubmitted_cancels(pool: asyncpg.Pool) -> list[JobChange]:
    """Jobs whose cancellation was requested before any submission: they become `canceled` here."""
    rows = await pool.fetch(_UNSUBMITTED_CANCELS_SQL)
    return [JobChange(r["id"], r["task_id"], r["correlation_id"],
                      {"status": "canceled", "message": "canceled before submission"}) for r in rows]
