"""What a watcher knows about a task: job statuses from the snapshot and events, counts, rate and ETA."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from upscaling_client.models import JOB_STATUSES, TERMINAL_TASK_STATUSES, TaskEvent, done_count

RATE_WINDOW_S = 60.0


class TaskState:
    """Folds a task's watch events into its current picture (pure logic: no I/O)."""

    def __init__(self, task_id: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.task_id = task_id
        self.title = ""
        self.status = "created"
        self.sequence = 0
        self.jobs: dict[int, str] = {}
        self.total = 0
        self._counts: dict[str, int] | None = None
        self._clock = clock
        self._started = clock()
        self._done_times: deque[tuple[float, int]] = deque()

    @property
    def counts(self) -> dict[str, int]:
        """Jobs per status (every status, zeros included)."""
        if self._counts is not None:
            return dict(self._counts)
        counts = dict.fromkeys(JOB_STATUSES, 0)
        for status in self.jobs.values():
            counts[status] = counts.get(status, 0) + 1
        return counts

    @property
    def done(self) -> int:
        """Jobs in a terminal status."""
        return done_count(self.counts)

    @property
    def terminal(self) -> bool:
        """Whether the task has ended."""
        return self.status in TERMINAL_TASK_STATUSES

    def apply(self, event: TaskEvent) -> None:
        """Take one event into account (events at or below the current sequence change nothing but a snapshot)."""
        if event.kind == "snapshot" and event.task is not None:
            self.title = event.task.title
            self.status = event.task.status
            self.jobs = {j.id: j.status for j in event.task.jobs}
            self.total = len(self.jobs) or event.task.total
            self._counts = None if self.jobs else dict(event.task.job_counts)
        elif event.sequence <= self.sequence:
            return
        elif event.kind == "job" and event.job_id is not None:
            if self._counts is None:
                self.jobs[event.job_id] = event.status
        elif event.kind == "task":
            self.status = event.status
            if event.job_counts and (self._counts is not None or not self.jobs):
                self._counts = dict(event.job_counts)
                self.total = sum(event.job_counts.values())
        self.sequence = max(self.sequence, event.sequence)
        self._record_done()

    def _record_done(self) -> None:
        now = self._clock()
        self._done_times.append((now, self.done))
        while len(self._done_times) > 2 and now - self._done_times[0][0] > RATE_WINDOW_S:
            self._done_times.popleft()

    @property
    def rate(self) -> float:
        """Jobs reaching a terminal status per second, over the last minute (0 before there is a measure)."""
        if len(self._done_times) < 2:
            return 0.0
        (t0, d0), (t1, d1) = self._done_times[0], self._done_times[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 and d1 > d0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds until every job is terminal at the current rate (None when unknown)."""
        rate = self.rate
        remaining = self.total - self.done
        if remaining <= 0:
            return 0.0
        return remaining / rate if rate > 0 else None

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._started
