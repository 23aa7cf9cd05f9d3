"""In-memory batch jobs whose status follows from timestamps (no timers), and the per-user job store."""

from __future__ import annotations

import heapq
import itertools
import secrets
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter

from local_openeo.errors import job_not_found
from local_openeo.graph import GraphInfo

CREATED, QUEUED, RUNNING, FINISHED, ERROR, CANCELED = (
    "created",
    "queued",
    "running",
    "finished",
    "error",
    "canceled",
)
ACTIVE = (QUEUED, RUNNING)


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True, eq=False)
class Job:
    """A batch job. After a start, its status is a pure function of the clock:
    queued for ``queue_s``, running for ``run_s``, then finished (or error when ``fails``)."""

    id: str
    user: str
    seq: int
    process: dict
    info: GraphInfo
    created: float
    updated: float  # last change of the job's metadata (creation, PATCH, start, cancel)
    title: str | None = None
    description: str | None = None
    plan: str | None = None
    budget: float | None = None
    log_level: str | None = None
    job_options: dict | None = None
    started: float | None = None
    queue_s: float = 0.0
    run_s: float = 0.0
    fails: bool = False
    error_message: str | None = None
    cost: float | None = None  # what the job reports it cost once ended (fixed at its start); None: by run time
    canceled: float | None = None
    starts: int = 0
    deleted: bool = False
    active_entry: list | None = None  # heap entry while counted as queued/running

    @property
    def end(self) -> float:
        """When processing ends (finished or error); only meaningful once started."""
        return (self.started or 0.0) + self.queue_s + self.run_s

    def status(self, now: float) -> str:
        if self.started is None:
            return CREATED
        if self.canceled is not None:
            return CANCELED
        elapsed = now - self.started
        if elapsed < self.queue_s:
            return QUEUED
        if elapsed < self.queue_s + self.run_s:
            return RUNNING
        return ERROR if self.fails else FINISHED

    def progress(self, now: float, status: str) -> int | None:
        if status in (CREATED, QUEUED):
            return 0
        if status == FINISHED:
            return 100
        if status == RUNNING or (status == CANCELED and self.run_s > 0):
            at = now if status == RUNNING else (self.canceled or now)
            fraction = (at - (self.started or 0.0) - self.queue_s) / self.run_s
            return max(0, min(99, int(fraction * 100)))
        return None

    def updated_at(self, now: float, status: str) -> float:
        """Time of the latest change visible at `now` (metadata change or status transition)."""
        if status in (CREATED, CANCELED):
            return self.updated
        started = self.started or 0.0
        transition = {QUEUED: started, RUNNING: started + self.queue_s}.get(status, self.end)
        return max(self.updated, transition)

    def usage(self) -> dict:
        seconds = max(self.run_s, 0.001)
        return {
            "cpu": {"value": round(seconds * 4, 3), "unit": "cpu-seconds"},
            "memory": {"value": round(seconds * 4 * 2048, 1), "unit": "mb-seconds"},
            "duration": {"value": round(self.run_s, 3), "unit": "seconds"},
        }

    def costs(self) -> float:
        if self.cost is not None:
            return self.cost
        return round(0.05 + max(self.run_s, 0.001) * 0.01, 4)

    def describe(self, now: float, *, full: bool, costs: bool = True) -> dict:
        """openEO batch job metadata (``GET /jobs/{id}``; without the process for listings, and without costs and
        usage when not ``costs``). An ended job (finished or error) reports its ``costs`` and ``usage``."""
        status = self.status(now)
        data: dict = {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "status": status,
            "created": rfc3339(self.created),
            "updated": rfc3339(self.updated_at(now, status)),
        }
        progress = self.progress(now, status)
        if progress is not None:
            data["progress"] = progress
        if self.plan is not None:
            data["plan"] = self.plan
        if self.budget is not None:
            data["budget"] = self.budget
        if costs and status in (FINISHED, ERROR):
            data["usage"] = self.usage()
            data["costs"] = self.costs()
        if full:
            data["process"] = self.process
            if self.log_level is not None:
                data["log_level"] = self.log_level
            if self.job_options is not None:
                data["job_options"] = self.job_options
        return data


class JobStore:
    """All jobs by id, each user's jobs in creation order, and each user's queued+running jobs."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self._by_user: dict[str, list[Job]] = {}
        self._deleted: Counter[str] = Counter()
        self._active: dict[str, list[list]] = {}  # user → heap of [end, seq, job, valid]
        self._active_count: Counter[str] = Counter()
        self._seq = itertools.count(1)
        self._prefix = secrets.token_hex(4)

    def clear(self) -> None:
        self.jobs.clear()
        self._by_user.clear()
        self._deleted.clear()
        self._active.clear()
        self._active_count.clear()

    def next_ids(self) -> tuple[str, int]:
        seq = next(self._seq)
        return f"j-{self._prefix}{seq:08x}", seq

    def add(self, job: Job) -> None:
        self.jobs[job.id] = job
        self._by_user.setdefault(job.user, []).append(job)

    def get(self, user: str, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None or job.user != user:
            raise job_not_found(job_id)
        return job

    def delete(self, job: Job) -> None:
        self.deactivate(job)
        job.deleted = True
        del self.jobs[job.id]
        jobs = self._by_user[job.user]
        self._deleted[job.user] += 1
        if self._deleted[job.user] > 64 and 2 * self._deleted[job.user] > len(jobs):
            self._by_user[job.user] = [j for j in jobs if not j.deleted]
            self._deleted[job.user] = 0

    def page(self, user: str, limit: int | None, cursor: int | None) -> tuple[list[Job], int | None]:
        """Newest first; the cursor is the ``seq`` of the last job of the previous page."""
        jobs = self._by_user.get(user, [])
        index = len(jobs) if cursor is None else bisect_left(jobs, cursor, key=attrgetter("seq"))
        page: list[Job] = []
        index -= 1
        while index >= 0 and (limit is None or len(page) < limit):
            if not jobs[index].deleted:
                page.append(jobs[index])
            index -= 1
        while index >= 0 and jobs[index].deleted:
            index -= 1
        return page, (page[-1].seq if page and index >= 0 else None)

    def activate(self, job: Job) -> None:
        """Count a just started job as queued/running until its end (or cancel/delete)."""
        self.deactivate(job)
        entry = [job.end, job.seq, job, True]
        job.active_entry = entry
        heapq.heappush(self._active.setdefault(job.user, []), entry)
        self._active_count[job.user] += 1

    def deactivate(self, job: Job) -> None:
        entry = job.active_entry
        if entry is not None and entry[3]:
            entry[3] = False
            self._active_count[job.user] -= 1
        job.active_entry = None

    def active_count(self, user: str, now: float) -> int:
        """Number of the user's jobs that are queued or running at `now`."""
        heap = self._active.get(user)
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if entry[3]:
                entry[3] = False
                entry[2].active_entry = None
                self._active_count[user] -= 1
        return self._active_count[user]
