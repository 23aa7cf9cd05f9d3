"""Job and task statuses: the APEx enum, the mapping from openEO, and the task status rules.

Task status rules (explicit, unlike APEx's):
- `created` while no job has been submitted (every job still `created`, none terminal);
- `running` while work remains and at least one job runs; `queued` while work remains otherwise;
- once every job is terminal: `canceled` if the task was canceled, else `finished` if at least one job
  finished, else `failed` if at least one failed, else `canceled` (every job canceled one by one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from upscaling.v1 import common_pb2

JOB_STATUSES = ("created", "queued", "running", "finished", "canceled", "failed", "unknown")
TASK_STATUSES = ("created", "queued", "running", "finished", "canceled", "failed")
TERMINAL_JOB_STATUSES = frozenset({"finished", "canceled", "failed"})
ACTIVE_JOB_STATUSES = frozenset({"created", "queued", "running", "unknown"})
TERMINAL_TASK_STATUSES = frozenset({"finished", "canceled", "failed"})

_FROM_OPENEO = {
    "created": "created",
    "queued": "queued",
    "running": "running",
    "finished": "finished",
    "canceled": "canceled",
    "cancelled": "canceled",
    "error": "failed",
    "failed": "failed",
}


def from_openeo(status: str | None) -> str:
    """The APEx job status of an openEO job status (`error` → `failed`, `cancelled` → `canceled`)."""
    return _FROM_OPENEO.get((status or "").lower(), "unknown")


def derive_task_status(counts: Mapping[str, int], cancel_requested: bool = False) -> str:
    """A task's status from the number of its jobs in each status (see the module docstring)."""
    total = sum(counts.values())
    if total == 0:
        return "canceled" if cancel_requested else "created"
    active = sum(counts.get(s, 0) for s in ACTIVE_JOB_STATUSES)
    if active:
        if counts.get("running", 0):
            return "running"
        if counts.get("created", 0) == total:
            return "created"
        return "queued"
    if cancel_requested:
        return "canceled"
    if counts.get("finished", 0):
        return "finished"
    if counts.get("failed", 0):
        return "failed"
    return "canceled"


def job_status_to_proto(status: str) -> common_pb2.JobStatus:
    """`common_pb2.JobStatus` value of a job status name."""
    return cast(common_pb2.JobStatus, common_pb2.JobStatus.Value(f"JOB_STATUS_{status.upper()}"))


def job_status_from_proto(value: int) -> str:
    """Job status name of a `common_pb2.JobStatus` value."""
    return common_pb2.JobStatus.Name(value).removeprefix("JOB_STATUS_").lower()


def task_status_to_proto(status: str) -> common_pb2.TaskStatus:
    """`common_pb2.TaskStatus` value of a task status name."""
    return cast(common_pb2.TaskStatus, common_pb2.TaskStatus.Value(f"TASK_STATUS_{status.upper()}"))


def task_status_from_proto(value: int) -> str:
    """Task status name of a `common_pb2.TaskStatus` value."""
    return common_pb2.TaskStatus.Name(value).removeprefix("TASK_STATUS_").lower()
