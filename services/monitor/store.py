"""Database side of the monitor: which jobs are active, and recording changes (status updates, resubmissions,
cancellations of jobs never submitted) through `upscaling.jobs`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from upscaling import jobs
from upscaling.statuses import ACTIVE_JOB_STATUSES, TERMINAL_TASK_STATUSES

_ACTIVE_SQL = """
SELECT uj.id, uj.task_id, uj.status, uj.backend_job_id, uj.progress, uj.message, uj.attempts, uj.costs, uj.usage,
       uj.owner,
       (uj.cancel_requested OR coalesce(t.cancel_requested, false)) AS cancel,
       coalesce(t.max_attempts, 1) AS max_attempts, t.correlation_id
FROM unit_jobs uj LEFT JOIN upscale_tasks t ON t.id = uj.task_id
WHERE uj.backend = ANY($1::text[]) AND uj.backend_job_id IS NOT NULL
  AND uj.status = ANY($2::text[])
ORDER BY uj.id
"""

_SIGNATURE_SQL = """
SELECT count(*) FILTER (WHERE uj.backend_job_id IS NOT NULL AND uj.status <> 'created') AS active,
       count(*) FILTER (WHERE uj.cancel_requested) AS cancels,
       (SELECT count(*) FROM upscale_tasks WHERE cancel_requested
           AND NOT status = ANY($2::text[])) AS task_cancels
FROM unit_jobs uj WHERE uj.status = ANY($1::text[])
"""

_UNSUBMITTED_CANCELS_SQL = """
SELECT uj.id, uj.task_id, t.correlation_id
FROM unit_jobs uj LEFT JOIN upscale_tasks t ON t.id = uj.task_id
WHERE uj.status = 'created' AND uj.backend_job_id IS NULL AND uj.submitted_at IS NULL
  AND (uj.cancel_requested OR coalesce(t.cancel_requested, false))
ORDER BY uj.task_id, uj.id
"""

_ACTIVE = sorted(ACTIVE_JOB_STATUSES)
_TERMINAL_TASK = sorted(TERMINAL_TASK_STATUSES)


@dataclass
class JobChange:
    """What to record for one job. `resubmit` turns a backend error into a new submission."""

    job_id: int
    task_id: int | None
    correlation_id: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    resubmit: bool = False
    logs: FailureLogs | None = None  # the error log entries of a failed backend job, stored with the change
    spent: dict[str, Any] = field(default_factory=dict)  # a resubmitted attempt's costs/usage, recorded first


@dataclass(frozen=True)
class FailureLogs:
    """The error-level log entries of one failed backend job of a unit job (stored once per failure)."""

    backend_job_id: str
    attempt: int
    entries: list[dict[str, str]]


async def active_jobs(pool: asyncpg.Pool, endpoints: list[str]) -> list[asyncpg.Record]:
    """Jobs of a backend (any spelling of its endpoint) whose backend job is known and not terminal."""
    return await pool.fetch(_ACTIVE_SQL, endpoints, _ACTIVE)


async def signature(pool: asyncpg.Pool) -> tuple[int, int, int]:
    """A cheap fingerprint of the work to do (active jobs, cancellations); a change wakes the monitor up."""
    row = await pool.fetchrow(_SIGNATURE_SQL, _ACTIVE, _TERMINAL_TASK)
    assert row is not None  # an aggregate query always returns a row
    return row["active"], row["cancels"], row["task_cancels"]


# How stale `checked_at` may get: a job the backend keeps reporting unchanged is not rewritten every cycle.
CHECKED_AT_PRECISION_S = 30.0


async def mark_checked(pool: asyncpg.Pool, job_ids: list[int]) -> None:
    """Record when the backend last reported these jobs (to within CHECKED_AT_PRECISION_S)."""
    if job_ids:
        await pool.execute("UPDATE unit_jobs SET checked_at = now() WHERE id = ANY($1::bigint[])"
                           " AND (checked_at IS NULL OR checked_at < now() - make_interval(secs => $2))",
                           job_ids, CHECKED_AT_PRECISION_S)


async def record(pool: asyncpg.Pool, changes: list[JobChange]) -> list[jobs.PendingEvent]:
    """Record the changes of one task's jobs in one transaction (plain changes as one batch, then the
    resubmissions, whose job messages go to the outbox); returns the events to publish after commit."""
    if not changes:
        return []
    task_id = changes[0].task_id if all(c.task_id == changes[0].task_id for c in changes) else jobs.UNKNOWN
    plain = [(c.job_id, c.spent if c.resubmit else c.fields) for c in sorted(changes, key=lambda c: c.job_id)
             if not c.resubmit or c.spent]
    again = [(c.job_id, c.fields.get("message"), c.correlation_id)
             for c in sorted(changes, key=lambda c: c.job_id) if c.resubmit]
    logs = [(c.job_id, c.logs) for c in changes if c.logs is not None]
    async with pool.acquire() as conn, conn.transaction():
        if logs:
            await conn.executemany(
                "INSERT INTO job_logs (job_id, backend_job_id, attempt, entries) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (job_id, backend_job_id) DO NOTHING",
                [(job_id, f.backend_job_id, f.attempt, f.entries) for job_id, f in logs])
        events = await jobs.update_jobs(conn, plain, task_id=task_id) if plain else []
        events.extend(await jobs.resubmit(conn, again, task_id=task_id))
    return events


async def stored_logs(pool: asyncpg.Pool, job_id: int, backend_job_id: str) -> list[dict[str, str]] | None:
    """The error log entries stored for this failure (None: not fetched yet)."""
    entries = await pool.fetchval("SELECT entries FROM job_logs WHERE job_id = $1 AND backend_job_id = $2", job_id,
                                  backend_job_id)
    return None if entries is None else list(entries)


async def unsubmitted_cancels(pool: asyncpg.Pool) -> list[JobChange]:
    """Jobs whose cancellation was requested before any submission: they become `canceled` here."""
    rows = await pool.fetch(_UNSUBMITTED_CANCELS_SQL)
    return [JobChange(r["id"], r["task_id"], r["correlation_id"],
                      {"status": "canceled", "message": "canceled before submission"}) for r in rows]
