"""Every write of a unit job's status, in the caller's transaction: a change (or a batch of changes) locks the
task rows, then the job rows (always in that order and by id, so the gateway, the dispatchers and the monitors
never deadlock), applies the one transition rule (`upscaling.jobs.transitions`), writes the jobs with one
statement, numbers and stores the job events with one statement, and re-derives the task from its stored
jobs-per-status. Returns the events for the caller to publish after commit (or to enqueue in the outbox).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from upscaling.broker import event_routing_key
from upscaling.db import AnyConnection, Row
from upscaling.jobs import costs, outbox, transitions
from upscaling.jobs.events import PendingEvent, job_event, now_proto, task_event
from upscaling.jobs.messages import submit_message
from upscaling.logs import correlation_id
from upscaling.statuses import ACTIVE_JOB_STATUSES, derive_task_status

# The columns a status change reads (never `*`: a job's parameters and arguments hold its whole tile geometry).
_JOB_STATE = "id, task_id, status, tag, backend_job_id, progress, message, usage, costs, results, backend"
_TASK_STATE = "id, status, last_sequence, job_counts, cancel_requested, costs, usage, max_costs, stop_reason"
# The columns of a job message (`messages.submit_message`).
_MESSAGE_COLUMNS = "id, task_id, service, submit_arguments, format, title, tag, attempts, process_id"
ACTIVE = sorted(ACTIVE_JOB_STATUSES)


class _Unknown:
    pass


UNKNOWN: Any = _Unknown()  # `task_id` not given: looked up


def _never_submitted(job: Row) -> bool:
    """A job no dispatcher has touched yet: cancelling it needs no backend call."""
    return bool(job["status"] == "created" and job["backend_job_id"] is None and job["submitted_at"] is None)


def _require_transaction(conn: AnyConnection, what: str) -> None:
    if not conn.is_in_transaction():
        raise RuntimeError(f"{what} must run inside a transaction")


async def job_counts(conn: AnyConnection, task_id: int) -> dict[str, int]:
    """A task's jobs per status, counted."""
    rows = await conn.fetch("SELECT status, count(*) AS n FROM unit_jobs WHERE task_id = $1 GROUP BY status",
                            task_id)
    return {r["status"]: r["n"] for r in rows}


async def refresh_task(conn: AnyConnection, task_id: int, *, sequence: int | None = None,
                       task: asyncpg.Record | None = None, counts: dict[str, int] | None = None,
                       spend: costs.Spend | None = None, announce: bool = False) -> list[PendingEvent]:
    """Re-derive a task's status (task row locked by the caller, or here) from `counts` (jobs per status;
    counted when not given), add `spend` to its costs and usage, and store them; emits a task event when the
    status, the costs or usage changed, or when the caller `announce`s a change of the task (its stop reason)."""
    if task is None:
        task = await conn.fetchrow(f"SELECT {_TASK_STATE} FROM upscale_tasks WHERE id = $1 FOR UPDATE", task_id)
        if task is None:
            return []
    seq = task["last_sequence"] if sequence is None else sequence
    if counts is None:
        counts = await job_counts(conn, task_id)
    status = derive_task_status(counts, task["cancel_requested"])
    state = dict(task)
    if spend:
        state["costs"] = round((task["costs"] or 0.0) + spend.costs, 9)
        state["usage"] = costs.add_usage(task["usage"], spend)
    events: list[PendingEvent] = []
    if status != task["status"] or spend or announce:
        seq += 1
        event = task_event(task_id, status, counts, seq, state)
        await conn.execute("INSERT INTO task_events (task_id, sequence, job_id, payload) VALUES ($1, $2, NULL, $3)",
                           task_id, seq, event.body)
        events.append(event)
    if spend:
        await conn.execute("UPDATE upscale_tasks SET costs = $2, usage = $3 WHERE id = $1", task_id, state["costs"],
                           state["usage"])
    if seq != task["last_sequence"] or status != task["status"] or counts != task["job_counts"]:
        await conn.execute("UPDATE upscale_tasks SET status = $2, last_sequence = $3, job_counts = $4, updated = now()"
                           " WHERE id = $1", task_id, status, seq, counts)
    return events


async def stop_for_costs(conn: AnyConnection, task_id: int) -> list[PendingEvent]:
    """When a task's costs reached its `max_costs`: its jobs never submitted end `canceled` with the reason, and
    the task's `stop_reason` says it (set once); jobs already submitted continue. Nothing when not reached."""
    _require_transaction(conn, "stopping a task's submissions")
    task = await conn.fetchrow("SELECT costs, max_costs, stop_reason FROM upscale_tasks WHERE id = $1 FOR UPDATE",
                               task_id)
    if task is None or not costs.reached(task["max_costs"], task["costs"]):
        return []
    reason = task["stop_reason"] or costs.stop_reason(task["max_costs"], task["costs"])
    if task["stop_reason"] is None:
        await conn.execute("UPDATE upscale_tasks SET stop_reason = $2, updated = now() WHERE id = $1", task_id,
                           reason)
    ids = [r["id"] for r in await conn.fetch(
        "SELECT id FROM unit_jobs WHERE task_id = $1 AND status = 'created' AND backend_job_id IS NULL"
        " AND submitted_at IS NULL ORDER BY id", task_id)]
    events = await update_jobs(conn, [(job_id, {"status": "canceled", "message": reason}) for job_id in ids],
                               task_id=task_id)
    task_key = task_event_key(task_id)
    if task["stop_reason"] is None and not any(e.routing_key == task_key for e in events):
        events.extend(await refresh_task(conn, task_id, announce=True))  # the watchers learn the stop reason
    return events


def task_event_key(task_id: int) -> str:
    """The routing key of a task's task events."""
    return event_routing_key(task_id, None)


async def _write_rows(conn: AnyConnection, plan: transitions.Plan) -> None:
    rows = [plan.rows[job_id] for job_id in sorted(plan.rows)]
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
        [None if r["results"] is None else json.dumps(r["results"]) for r in rows],
        [r["id"] in plan.finish for r in rows])


async def _record_task(conn: AnyConnection, task: asyncpg.Record | None, jobs: Mapping[int, Any],
                       changes: list[tuple[int, transitions.Change]]) -> tuple[list[PendingEvent], set[int]]:
    """Apply the changes of one task's jobs (task None: standalone jobs, no events); when what they report makes
    the task reach its `max_costs`, its jobs never submitted are stopped (`stop_for_costs`)."""
    if task is None:
        plan = transitions.plan(jobs, None, changes)
    else:
        counts = task["job_counts"]
        try:
            if counts is None:
                raise transitions.CountsMissed()
            plan = transitions.plan(jobs, counts, changes)
        except transitions.CountsMissed:
            # Not stored yet, or a change was written behind this module's back: count again.
            plan = transitions.plan(jobs, await job_counts(conn, task["id"]), changes)
    if not plan.rows:
        return [], plan.stale
    await _write_rows(conn, plan)
    if task is None:
        return [], plan.stale
    task_id = task["id"]
    seq = task["last_sequence"]
    context_cid = correlation_id.get()
    now = now_proto()
    events: list[PendingEvent] = []
    for change in plan.events:
        seq += 1
        event = job_event(task_id, change.job_id, change.state["status"], change.state, seq, now,
                          change.correlation_id if change.correlation_id is not None else context_cid)
        if change.correlation_id is not None:
            event = dataclasses.replace(event, correlation_id=change.correlation_id)
        events.append(event)
    if events:
        await conn.execute(
            "INSERT INTO task_events (task_id, sequence, job_id, payload)"
            " SELECT $1, u.s, u.j, u.p FROM unnest($2::bigint[], $3::bigint[], $4::bytea[]) AS u(s, j, p)",
            task_id, [e.sequence for e in events], [c.job_id for c in plan.events], [e.body for e in events])
    events.extend(await refresh_task(conn, task_id, sequence=seq, task=task, counts=plan.counts, spend=plan.spend))
    if plan.spend and costs.reached(task["max_costs"], (task["costs"] or 0.0) + plan.spend.costs):
        events.extend(await stop_for_costs(conn, task_id))
    return events, plan.stale


async def record(conn: AnyConnection, changes: Sequence[tuple[int, transitions.Change]], *,
                 task_id: int | None = UNKNOWN) -> tuple[list[PendingEvent], set[int]]:
    """Apply `changes` ((job id, change), in order; a job may appear several times) inside the caller's
    transaction: (events to publish after commit, ids of jobs left alone because their tag is not the one a
    change expected). `task_id`, when the caller knows every job is of that task (None: standalone jobs), saves
    looking it up."""
    _require_transaction(conn, "recording job changes")
    if not changes:
        return [], set()
    ids = sorted({job_id for job_id, _ in changes})
    if task_id is UNKNOWN:
        task_ids = [r["task_id"] for r in await conn.fetch(
            "SELECT DISTINCT task_id FROM unit_jobs WHERE id = ANY($1::bigint[]) AND task_id IS NOT NULL", ids)]
    else:
        task_ids = [] if task_id is None else [task_id]
    tasks = {r["id"]: r for r in await conn.fetch(
        f"SELECT {_TASK_STATE} FROM upscale_tasks WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE", task_ids)
    } if task_ids else {}
    rows = await conn.fetch(f"SELECT {_JOB_STATE} FROM unit_jobs WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
                            ids)
    if any(r["task_id"] is not None and r["task_id"] not in tasks for r in rows):
        # The caller's task id was not every job's (never expected): lock the others too.
        return await record(conn, changes)
    by_task: dict[int | None, dict[int, asyncpg.Record]] = {}
    for row in rows:
        by_task.setdefault(row["task_id"], {})[row["id"]] = row
    events: list[PendingEvent] = []
    stale: set[int] = set()
    for tid in sorted(by_task, key=lambda t: -1 if t is None else t):
        jobs = by_task[tid]
        group = [(job_id, change) for job_id, change in changes if job_id in jobs]
        more, left = await _record_task(conn, None if tid is None else tasks[tid], jobs, group)
        events.extend(more)
        stale |= left
    return events, stale


async def update_jobs(conn: AnyConnection, changes: Sequence[tuple[int, transitions.Change]], *,
                      task_id: int | None = UNKNOWN) -> list[PendingEvent]:
    """`record` without tags: the events to publish after commit."""
    return (await record(conn, changes, task_id=task_id))[0]


async def update_job(conn: AnyConnection, job_id: int, **change: Any) -> list[PendingEvent]:
    """One job's change (`status`, `backend_job_id`, `progress`, `message`, `usage`, `costs`, `results`,
    `allow_from_terminal`): a batch of one. A terminal job keeps its status unless `allow_from_terminal`; a call
    that changes nothing records nothing."""
    return await update_jobs(conn, [(job_id, change)])


async def record_submitted(conn: AnyConnection, task_id: int | None,
                           submitted: Sequence[tuple[int, str, str | None, str]]
                           ) -> tuple[list[PendingEvent], set[int]]:
    """Jobs submitted to their backend ((job id, backend job id, correlation id, tag), all of one task) become
    `queued` with their backend job id. A job whose tag is no longer the one submitted (resubmitted or retried
    meanwhile) is left alone: returns (events, ids of those stale jobs)."""
    return await record(conn, [(job_id, {"status": "queued", "backend_job_id": backend_job_id, "correlation_id": cid,
                                         "expect_tag": tag})
                               for job_id, backend_job_id, cid, tag in submitted], task_id=task_id)


async def resubmit(conn: AnyConnection, jobs: Sequence[tuple[int, str | None, str | None]], *,
                   task_id: int | None = UNKNOWN, clear_cancel: bool = False) -> list[PendingEvent]:
    """Submit jobs again ((job id, message to show, correlation id of the new job message)): each goes back to
    `created` (from any status) without backend job or results, gets a new tag, and its job message goes to the
    outbox. `clear_cancel` also forgets a requested cancellation (a user's retry)."""
    if not jobs:
        return []
    events = await update_jobs(conn, [(job_id, {"status": "created", "allow_from_terminal": True,
                                                "backend_job_id": None, "progress": None, "message": message,
                                                "usage": None, "costs": None, "results": None})
                                      for job_id, message, _ in jobs], task_id=task_id)
    rows = await conn.fetch(
        "UPDATE unit_jobs SET tag = 'uj-' || gen_random_uuid(), submitted_at = NULL, backend_job_id = NULL,"
        " finished_at = NULL, cancel_requested = cancel_requested AND NOT $2, updated = now()"
        f" WHERE id = ANY($1::bigint[]) RETURNING {_MESSAGE_COLUMNS}", [job_id for job_id, _, _ in jobs], clear_cancel)
    cids = {job_id: cid for job_id, _, cid in jobs}
    await outbox.enqueue_jobs(conn, [submit_message(r, cids[r["id"]]) for r in sorted(rows, key=lambda r: r["id"])])
    return events


async def submit_new(conn: AnyConnection, jobs: Sequence[Row], cid: str | None) -> None:
    """Queue the job messages of newly stored jobs (rows or dicts with the columns of a job message)."""
    await outbox.enqueue_jobs(conn, [submit_message(job, cid) for job in jobs])


async def republish(conn: AnyConnection, job_ids: Sequence[int]) -> list[int]:
    """Queue the job message of stranded `created` jobs again (same tag, the task's correlation id); returns the
    ids of the jobs still `created`."""
    rows = await conn.fetch(
        f"SELECT {', '.join('uj.' + c for c in _MESSAGE_COLUMNS.split(', '))}, t.correlation_id AS task_cid"
        " FROM unit_jobs uj LEFT JOIN upscale_tasks t ON t.id = uj.task_id"
        " WHERE uj.id = ANY($1::bigint[]) AND uj.status = 'created' ORDER BY uj.id", list(job_ids))
    await outbox.enqueue_jobs(conn, [submit_message(r, r["task_cid"]) for r in rows])
    return [r["id"] for r in rows]


async def request_task_cancel(conn: AnyConnection, task_id: int) -> list[PendingEvent]:
    """Ask to cancel a task (its row locked by the caller): every active job is marked, the ones never submitted
    become `canceled` now (the monitor stops the others)."""
    _require_transaction(conn, "cancelling a task")
    await conn.execute("UPDATE upscale_tasks SET cancel_requested = true, updated = now() WHERE id = $1", task_id)
    marked = await conn.fetch(
        "UPDATE unit_jobs SET cancel_requested = true, updated = now() WHERE id IN (SELECT id FROM unit_jobs"
        " WHERE task_id = $1 AND status = ANY($2::text[]) ORDER BY id FOR UPDATE)"
        " RETURNING id, status, backend_job_id, submitted_at", task_id, ACTIVE)
    unsubmitted = sorted(r["id"] for r in marked if _never_submitted(r))
    events = await update_jobs(conn, [(job_id, {"status": "canceled"}) for job_id in unsubmitted], task_id=task_id)
    if not events:
        events = await refresh_task(conn, task_id)  # the cancellation alone may end the task
    return events


async def request_job_cancel(conn: AnyConnection, job: Row) -> list[PendingEvent]:
    """Ask to cancel one unit job (its task row, then its row locked by the caller): a job never submitted becomes
    `canceled` now, the monitor stops the others."""
    _require_transaction(conn, "cancelling a job")
    await conn.execute("UPDATE unit_jobs SET cancel_requested = true, updated = now() WHERE id = $1", job["id"])
    if _never_submitted(job):
        return await update_jobs(conn, [(job["id"], {"status": "canceled"})], task_id=job["task_id"])
    return []


async def retry_failed(conn: AnyConnection, task_id: int, cid: str | None) -> tuple[int, list[PendingEvent]]:
    """Submit every failed job of a task again (task row locked by the caller): (how many, events)."""
    _require_transaction(conn, "retrying jobs")
    ids = [r["id"] for r in await conn.fetch(
        "SELECT id FROM unit_jobs WHERE task_id = $1 AND status = 'failed' ORDER BY id", task_id)]
    events = await resubmit(conn, [(job_id, None, cid) for job_id in ids], task_id=task_id, clear_cancel=True)
    return len(ids), events

