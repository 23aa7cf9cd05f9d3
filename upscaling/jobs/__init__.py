"""Unit jobs: the one owner of every job status write, job message and outbox enqueue.

- `transitions`: the transition rule (pure), for one job and for a batch alike;
- `store`: the writes (status changes, submissions, resubmissions, retries, cancellations) in the caller's
  transaction, with the task re-derived and the events numbered and stored;
- `costs`: costs and usage totals and the `max_costs` rule (pure);
- `messages`: the `SubmitJobMessage` builder and the table of output formats;
- `events`: status events and their broker messages (publish after commit);
- `outbox`: enqueueing job messages and status events, always with `NOTIFY`;
- `relay`: the outbox relay (runs in the dispatchers and monitors).
"""

from upscaling.jobs.events import PendingEvent, publish, publish_committed, publish_many
from upscaling.jobs.store import (
    UNKNOWN,
    record,
    record_submitted,
    refresh_task,
    republish,
    request_job_cancel,
    request_task_cancel,
    resubmit,
    retry_failed,
    stop_for_costs,
    submit_new,
    update_job,
    update_jobs,
)

__all__ = [
    "UNKNOWN",
    "PendingEvent",
    "publish",
    "publish_committed",
    "publish_many",
    "record",
    "record_submitted",
    "refresh_task",
    "republish",
    "request_job_cancel",
    "request_task_cancel",
    "resubmit",
    "retry_failed",
    "stop_for_costs",
    "submit_new",
    "update_job",
    "update_jobs",
]
