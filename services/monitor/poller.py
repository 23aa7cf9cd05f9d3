"""The monitor loop: per backend and cycle one paged job listing, per-job calls only where needed, every
change recorded and published, and an adaptive interval between cycles."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from aio_pika.abc import AbstractExchange

from services.monitor import cancel, store
from services.monitor.calls import CallCounter
from services.monitor.locks import BackendLocks
from services.monitor.store import JobChange
from upscaling import jobs, metrics
from upscaling.backends import BackendConfig, Backends
from upscaling.config import Settings
from upscaling.logs import correlation_id
from upscaling.openeo_backend import jobs as backend_jobs
from upscaling.openeo_backend.errors import BackendError
from upscaling.statuses import from_openeo

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class CycleResult:
    """What one backend's cycle found and did."""

    backend: str
    active: int = 0
    changes: int = 0
    resubmitted: int = 0
    calls: CallCounter = field(default_factory=CallCounter)


def next_interval(current: float, results: Sequence[CycleResult], low: float, high: float) -> float:
    """Shortest while jobs change, backing off x1.5 while active jobs do not change, longest when idle."""
    if any(r.changes for r in results):
        return low
    if not any(r.active for r in results):
        return high
    return min(max(current, low) * 1.5, high)


class Monitor:
    """Polls every configured backend whose advisory lock this replica holds."""

    def __init__(self, settings: Settings, backends: Backends, pool: asyncpg.Pool, events: AbstractExchange,
                 locks: BackendLocks, executor: ThreadPoolExecutor) -> None:
        self.settings = settings
        self.backends = backends
        self.pool = pool
        self.events = events
        self.locks = locks
        self.executor = executor
        self.low = max(0.01, settings.monitor_interval_min_s)
        self.high = max(self.low, settings.monitor_interval_max_s)
        self.timeout_s = settings.openeo_timeout_s

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args))

    async def _backend(self, calls: CallCounter, kind: str, fn: Callable[..., T], backend: BackendConfig,
                       *args: Any) -> T:
        """`fn(backend, timeout, *args)` (one HTTP call of `kind`) in a worker thread."""
        calls.add(kind)
        return await self._run(fn, backend, self.timeout_s, *args)

    async def run(self, stop: asyncio.Event) -> None:
        """Cycle until `stop` is set (the current cycle always completes)."""
        interval = self.low
        while not stop.is_set():
            started = time.monotonic()
            results = await self.cycle()
            busy = time.monotonic() - started
            # A cycle that failed before polling (e.g. the database is down) is tried again soon, not after the
            # longest interval: the monitor resumes as soon as its dependencies are back.
            interval = self.low if results is None else next_interval(interval, results, self.low, self.high)
            # Never busy more than half the time: a cycle is followed by a rest at least as long as it took (no
            # early wake-up), so a flood of changes is recorded in fewer, larger and cheaper batches and leaves
            # the CPU to submissions.
            rest = min(busy, self.high)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=rest)
            await self._sleep(max(0.0, interval - rest), stop)

    async def _sleep(self, interval: float, stop: asyncio.Event) -> None:
        """Wait `interval`, waking early on stop or when the active jobs / cancellations change."""
        deadline = time.monotonic() + interval
        try:
            baseline = await store.signature(self.pool)
        except Exception as exc:
            log.warning("cannot read the active job count: %s", exc)
            baseline = None
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(stop.wait(), timeout=min(self.low, remaining))
                return
            except TimeoutError:
                pass
            if baseline is not None and time.monotonic() < deadline:
                try:
                    if await store.signature(self.pool) != baseline:
                        return
                except Exception as exc:
                    log.warning("cannot read the active job count: %s", exc)

    async def cycle(self) -> list[CycleResult] | None:
        """One cycle over every backend this replica may poll (None: it failed before polling any)."""
        try:
            await self._cancel_unsubmitted()
            held = await self.locks.acquire([b.endpoint for b in self.backends.configs])
        except Exception:
            log.exception("monitor cycle failed before polling")
            return None
        mine = [b for b in self.backends.configs if b.endpoint in held]
        for config in self.backends.configs:
            metrics.MONITOR_LOCK_HELD.labels(config.endpoint).set(1 if config.endpoint in held else 0)
        for skipped in self.backends.configs:
            if skipped.endpoint not in held:
                log.debug("backend polled by another replica", extra={"backend": skipped.endpoint})
        outcomes = await asyncio.gather(*(self.poll_backend(b) for b in mine), return_exceptions=True)
        results = []
        for backend, outcome in zip(mine, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.warning("backend cycle failed", extra={"backend": backend.endpoint, "error": repr(outcome)})
                if isinstance(outcome, BackendError):
                    metrics.backend_error(backend.endpoint, outcome)
            else:
                results.append(outcome)
        return results

    async def _cancel_unsubmitted(self) -> None:
        changes = await store.unsubmitted_cancels(self.pool)
        await self._record(changes)

    async def poll_backend(self, backend: BackendConfig) -> CycleResult:
        """One cycle of one backend: stop canceled jobs, list, describe the missing, record the changes."""
        started = time.monotonic()
        result = CycleResult(backend.endpoint)
        rows = await store.active_jobs(self.pool, [backend.endpoint, *backend.aliases])
        result.active = len(rows)
        if rows:
            await self._poll(backend, rows, result)
        duration = time.monotonic() - started
        metrics.monitor_cycle(backend.endpoint, duration, result.calls.by_kind(), result.resubmitted)
        extra = {"backend": backend.endpoint, "active_jobs": result.active, "changes": result.changes,
                 "resubmitted": result.resubmitted, **result.calls.as_log(), "duration_s": round(duration, 4)}
        log.log(logging.INFO if rows else logging.DEBUG, "monitor cycle", extra=extra)
        return result

    async def _poll(self, backend: BackendConfig, rows: list[asyncpg.Record], result: CycleResult) -> None:
        calls = result.calls
        stoppable = cancel.to_stop(rows)
        if stoppable:
            await cancel.stop_jobs(functools.partial(self._backend, calls, "stops", backend_jobs.stop_job), backend,
                                   stoppable)
        by_backend_id = {r["backend_job_id"]: r for r in rows}
        listing = await self._run(backend_jobs.list_jobs, backend, self.timeout_s, self.settings.monitor_page_size,
                                  set(by_backend_id))
        calls.add("listing", listing.pages)
        listed = listing.jobs
        missing = [job_id for job_id in by_backend_id if job_id not in listed]
        described = await asyncio.gather(
            *(self._backend(calls, "job_gets", backend_jobs.describe_job, backend, job_id) for job_id in missing),
            return_exceptions=True)
        reports: dict[str, dict[str, Any] | None] = dict(listed)
        for job_id, outcome in zip(missing, described, strict=True):
            if isinstance(outcome, BaseException):
                log.warning("cannot describe backend job", extra={"backend": backend.endpoint,
                                                                  "backend_job_id": job_id, "error": str(outcome)})
                if isinstance(outcome, BackendError):
                    metrics.backend_error(backend.endpoint, outcome)
            else:
                reports[job_id] = outcome
        changes = await asyncio.gather(*(self._change_for(backend, by_backend_id[job_id], report, calls)
                                         for job_id, report in reports.items()))
        found = [c for c in changes if c is not None]
        result.changes = len(found)
        result.resubmitted = sum(1 for c in found if c.resubmit)
        await self._record(found)
        await store.mark_checked(self.pool, [by_backend_id[j]["id"] for j, r in reports.items() if r is not None])

    async def _change_for(self, backend: BackendConfig, row: asyncpg.Record, report: dict[str, Any] | None,
                          calls: CallCounter) -> JobChange | None:
        """The change to record for a job given the backend's report (None: the backend lost the job)."""
        change = JobChange(row["id"], row["task_id"], row["correlation_id"])
        backend_job_id = row["backend_job_id"]
        if report is None:
            if row["cancel"]:  # stopped and then forgotten (an OGC server deletes a dismissed job)
                change.fields = {"status": "canceled"}
                return change
            change.fields = {"status": "failed",
                             "message": f"backend job {backend_job_id} vanished: the backend no longer knows it"}
            return change
        status = from_openeo(report.get("status"))
        raw_progress = report.get("progress")
        progress = float(raw_progress) if isinstance(raw_progress, int | float) else None
        if status == "finished":
            try:
                results = await self._backend(calls, "results", backend_jobs.results_metadata, backend, backend_job_id)
            except Exception as exc:
                log.warning("cannot fetch results metadata; retrying next cycle",
                            extra={"backend": backend.endpoint, "backend_job_id": backend_job_id,
                                   "error": str(exc)})
                return None
            change.fields = {"status": "finished", "progress": 100.0 if progress is None else progress,
                             "usage": report.get("usage"), "costs": report.get("costs"), "results": results}
            return change
        if status == "failed":
            return await self._failed(backend, row, report, calls, change)
        if status == "canceled":
            change.fields = {"status": "canceled"}
            return change
        if status == "created" or (status == row["status"] and (progress is None or progress == row["progress"])):
            return None
        change.fields = {"status": status}
        if progress is not None:
            change.fields["progress"] = progress
        return change

    async def _failed(self, backend: BackendConfig, row: asyncpg.Record, report: dict[str, Any],
                      calls: CallCounter, change: JobChange) -> JobChange:
        backend_job_id = row["backend_job_id"]
        try:
            message = await self._backend(calls, "logs", backend_jobs.error_message, backend, backend_job_id)
        except Exception as exc:
            log.warning("cannot fetch job logs", extra={"backend": backend.endpoint, "backend_job_id": backend_job_id,
                                                        "error": str(exc)})
            message = None
        message = message or f"backend job {backend_job_id} ended in error"
        attempts = max(row["attempts"], 1)
        if attempts < row["max_attempts"] and not row["cancel"]:
            change.resubmit = True
            change.fields = {"message": f"attempt {attempts} of {row['max_attempts']} failed ({message}); resubmitted"}
            return change
        change.fields = {"status": "failed", "message": message, "usage": report.get("usage"),
                         "costs": report.get("costs")}
        return change

    async def _record(self, changes: list[JobChange]) -> None:
        """Record the changes, one transaction per task, and publish each task's events after its commit."""
        by_task: dict[int | None, list[JobChange]] = defaultdict(list)
        for change in changes:
            by_task[change.task_id].append(change)
        for task_id in sorted(by_task, key=lambda t: -1 if t is None else t):
            group = by_task[task_id]
            token = correlation_id.set(group[0].correlation_id)
            try:
                events = await store.record(self.pool, group)
                statuses = Counter("resubmitted" if c.resubmit else c.fields.get("status", "updated") for c in group)
                metrics.job_changes(statuses)
                # One line per task and cycle (with the task's correlation id), not one per job.
                log.info("jobs recorded", extra={"task_id": task_id, "count": len(group), "statuses": dict(statuses)})
                await jobs.publish_committed(self.events, events)
            except Exception:
                log.exception("cannot record job changes", extra={"task_id": task_id})
            finally:
                correlation_id.reset(token)
