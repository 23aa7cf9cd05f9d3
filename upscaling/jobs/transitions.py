"""The one transition rule of unit jobs, pure: what a change does to a job, and what a batch of changes does to
the jobs of one task and to its jobs-per-status. A single update is a batch of one, so a job, a bulk update and a
submission record all follow this rule (`upscaling.jobs.store` only reads and writes the rows it plans).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from upscaling.jobs.costs import Spend
from upscaling.statuses import TERMINAL_JOB_STATUSES

# The columns a change may set besides `status` (the job state a change reads and writes).
FIELDS = ("backend_job_id", "progress", "message", "usage", "costs", "results")
# The columns a watcher sees: a change of one of them is a job event.
PUBLIC = frozenset({"status", "backend_job_id", "progress", "message", "costs", "usage"})
# Read-only columns a job event carries besides PUBLIC (never set by a change: the dispatcher picks the backend).
CARRIED = ("backend",)
# Keys of a change that are not columns: may a terminal job change status (retries, resubmissions); the
# correlation id of the change (its event carries it); the tag the change was made for (else the job is stale).
OPTIONS = frozenset({"allow_from_terminal", "correlation_id", "expect_tag"})
_KEYS = OPTIONS | PUBLIC | frozenset(FIELDS)

Change = Mapping[str, Any]


def apply(job: Mapping[str, Any], change: Change) -> dict[str, Any]:
    """The columns `change` changes on `job` (empty: nothing to record). A terminal job keeps its status unless
    the change allows leaving a terminal status."""
    if not _KEYS.issuperset(change):
        raise ValueError(f"not a job change: {sorted(set(change) - _KEYS)}")
    changed: dict[str, Any] = {}
    status = change.get("status")
    if status is not None and status != job["status"]:
        if job["status"] not in TERMINAL_JOB_STATUSES or change.get("allow_from_terminal", False):
            changed["status"] = status
    for column in FIELDS:
        if column in change and change[column] != job[column]:
            changed[column] = change[column]
    return changed


@dataclass
class JobEvent:
    """A job event to number and store: the job's public state right after one change."""

    job_id: int
    state: dict[str, Any]
    correlation_id: str | None  # of the change; None: the caller's context


@dataclass
class Plan:
    """What a batch of changes does to one task's jobs (or to standalone jobs, with `counts` None)."""

    rows: dict[int, dict[str, Any]] = field(default_factory=dict)  # job id -> state after the batch
    finish: set[int] = field(default_factory=set)  # jobs that became terminal (their finished_at is set)
    events: list[JobEvent] = field(default_factory=list)
    counts: dict[str, int] | None = None
    stale: set[int] = field(default_factory=set)  # jobs whose tag is not the one a change expected
    spend: Spend = field(default_factory=Spend)  # what the changes add to the task's costs and usage


class CountsMissed(Exception):
    """The stored jobs-per-status do not hold a job that changes status: they must be counted again."""


def plan(jobs: Mapping[int, Any], counts: Mapping[str, int] | None,
         changes: Sequence[tuple[int, Change]]) -> Plan:
    """Apply `changes` in order to `jobs` (id -> state; a job may change several times) and to `counts`
    (None: not counted, standalone jobs). Raises CountsMissed when `counts` lack a job's old status."""
    state = {job_id: dict(job) for job_id, job in jobs.items()}
    out = Plan(counts=None if counts is None else dict(counts))
    for job_id, change in changes:
        job = state.get(job_id)
        if job is None:
            continue
        expected = change.get("expect_tag")
        if expected is not None and job.get("tag") != expected:
            out.stale.add(job_id)
            continue
        changed = apply(job, change)
        if not changed:
            continue
        if "status" in changed:
            if out.counts is not None:
                if out.counts.get(job["status"], 0) <= 0:
                    raise CountsMissed(job_id)
                # In place (the plan's own copy): one dict for the batch, not one copy per job.
                out.counts[job["status"]] -= 1
                out.counts[changed["status"]] = out.counts.get(changed["status"], 0) + 1
            if changed["status"] in TERMINAL_JOB_STATUSES:
                out.finish.add(job_id)
        out.spend.add(job, changed)
        job.update(changed)
        out.rows[job_id] = job
        if PUBLIC & changed.keys():
            event_state = {k: job[k] for k in PUBLIC}
            event_state.update((k, job.get(k)) for k in CARRIED)
            out.events.append(JobEvent(job_id, event_state, change.get("correlation_id")))
    if out.counts is not None:
        out.counts = {status: k for status, k in out.counts.items() if k > 0}
    return out
