"""The monitor loop: per backend account and cycle one paged job listing (the service account, or on a backend
with per-user credentials each job owner's), per-job calls only where needed, every change recorded and
published, and an adaptive interval between cycles."""

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
from services.monitor.store import FailureLogs, JobChange
from upscaling import jobs, metrics
from upscaling.backends import BackendConfig, Backends
from upscaling.config import Settings
from upscaling.credentials import CredentialsError, CredentialStore, ProviderUnavailable
from upscaling.jobs.costs import as_costs, as_usage
from upscaling.logs import correlation_id
from upscaling.openeo_backend import jobs as backend_jobs
from upscaling.openeo_backend.connection import SERVICE, Account
from upscaling.openeo_backend.errors import BackendAuthError, BackendError
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
                 locks: BackendLocks, executor: ThreadPoolExecutor, credentials: CredentialStore | None = None) -> None:
        self.settings = settings
        self.credentials = credentials
        self.backends = backends
        self.pool = pool
        self.events = events
        self.locks = locks
        self.executor = executor
        self.low = max(0.01, settings.monitor_interval_min_s)
        self.high = max(self.low, settings.monitor_interval_max_s)
        self.timeout_s = settings.openeo_timeout_s

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    async def _backend(self, calls: CallCounter, kind: str, fn: Callable[..., T], backend: BackendConfig,
                       *args: Any, account: Account = SERVICE) -> T:
        """`fn(backend, timeout, *args)` (one HTTP call of `kind`, as `account`) in a worker thread."""
        calls.add(kind)
        return await self._run(fn, backend, self.timeout_s, *args, account=account)

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
        if rows and backend.auth.per_user:
            by_owner: dict[str, list[asyncpg.Record]] = defaultdict(list)
            for row in rows:
                by_owner[row["owner"]].append(row)
            outcomes = await asyncio.gather(*(self._poll_owner(backend, owner, owned, result)
                                              for owner, owned in by_owner.items()), return_exceptions=True)
            for owner, outcome in zip(by_owner, outcomes, strict=True):
                if isinstance(outcome, BaseException):  # this owner's jobs are polled again next cycle
                    log.warning("backend cycle of an owner failed",
                                extra={"backend": backend.endpoint, "owner": owner, "error": repr(outcome)})
                    if isinstance(outcome, BackendError):
                        metrics.backend_error(backend.endpoint, outcome)
        elif rows:
            await self._poll(backend, rows, result)
        duration = time.monotonic() - started
        metrics.monitor_cycle(backend.endpoint, duration, result.calls.by_kind(), result.resubmitted)
        extra = {"backend": backend.endpoint, "active_jobs": result.active, "changes": result.changes,
                 "resubmitted": result.resubmitted, **result.calls.as_log(), "duration_s": round(duration, 4)}
        log.log(logging.INFO if rows else logging.DEBUG, "monitor cycle", extra=extra)
        return result

    async def _poll_owner(self, backend: BackendConfig, owner: str, rows: list[asyncpg.Record],
                          result: CycleResult) -> None:
        """Poll one owner's jobs on a backend with per-user credentials, as the owner's account
        (`CredentialStore.call`: its token refreshed when it nears expiry, and once more when the backend refuses
        it). Jobs whose owner has no usable credentials any more fail with the reason; an unreachable identity
        provider skips the owner this cycle."""
        try:
            if self.credentials is None:
                raise CredentialsError(f"backend {backend.endpoint} needs its users' own credentials, which this "
                                       "monitor cannot read")
            await self.credentials.call(backend, owner, functools.partial(self._poll, backend, rows, result))
        except ProviderUnavailable as exc:
            log.warning("cannot get the owner's backend credentials; trying again next cycle",
                        extra={"backend": backend.endpoint, "owner": owner, "error": str(exc)})
        except BackendAuthError as exc:
            await self._fail_owner(backend, owner, rows, result, CredentialsError(
                f"backend {backend.endpoint} refused the credentials of user {owner!r} even after a refresh: {exc}"))
        except CredentialsError as error:
            await self._fail_owner(backend, owner, rows, result, error)

    async def _fail_owner(self, backend: BackendConfig, owner: str, rows: list[asyncpg.Record],
                          result: CycleResult, error: CredentialsError) -> None:
        """Fail the owner's jobs with the reason their credentials cannot be used."""
        changes = []
        for row in rows:
            change = JobChange(row["id"], row["task_id"], row["correlation_id"])
            change.fields = {"status": "failed", "message": str(error)}
            changes.append(change)
        log.warning("jobs failed: the owner's backend credentials are unusable",
                    extra={"backend": backend.endpoint, "owner": owner, "job_ids": [r["id"] for r in rows],
                           "error": str(error)})
        result.changes += len(changes)
        await self._record(changes)

    async def _poll(self, backend: BackendConfig, rows: list[asyncpg.Record], result: CycleResult,
                    account: Account = SERVICE) -> None:
        calls = result.calls
        stoppable = cancel.to_stop(rows)
        if stoppable:
            await cancel.stop_jobs(functools.partial(self._backend, calls, "stops", backend_jobs.stop_job,
                                                     account=account), backend, stoppable)
        by_backend_id = {r["backend_job_id"]: r for r in rows}
        listing = await self._run(backend_jobs.list_jobs, backend, self.timeout_s, self.settings.monitor_page_size,
                                  set(by_backend_id), account=account)
        calls.add("listing", listing.pages)
        listed = listing.jobs
        missing = [job_id for job_id in by_backend_id if job_id not in listed]
        described = await asyncio.gather(
            *(self._backend(calls, "job_gets", backend_jobs.describe_job, backend, job_id, account=account)
              for job_id in missing),
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
        changes = await asyncio.gather(*(self._change_for(backend, by_backend_id[job_id], report, calls, account,
                                                          listed=job_id in listed)
                                         for job_id, report in reports.items()))
        found = [c for c in changes if c is not None]
        result.changes += len(found)
        result.resubmitted += sum(1 for c in found if c.resubmit)
        await self._record(found)
        await store.mark_checked(self.pool, [by_backend_id[j]["id"] for j, r in reports.items() if r is not None])

    async def _change_for(self, backend: BackendConfig, row: asyncpg.Record, report: dict[str, Any] | None,
                          calls: CallCounter, account: Account = SERVICE, listed: bool = False
                          ) -> JobChange | None:
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
        if status in ("finished", "failed", "canceled") and listed and "costs" not in report and "usage" not in report:
            report = await self._described(backend, backend_job_id, report, calls, account)
        spent = self._spent(row, report)
        if status == "finished":
            try:
                results = await self._backend(calls, "results", backend_jobs.results_metadata, backend, backend_job_id,
                                              account=account)
            except Exception as exc:
                log.warning("cannot fetch results metadata; retrying next cycle",
                            extra={"backend": backend.endpoint, "backend_job_id": backend_job_id,
                                   "error": str(exc)})
                return None
            change.fields = {"status": "finished", "progress": 100.0 if progress is None else progress,
                             "results": results, **spent}
            return change
        if status == "failed":
            return await self._failed(backend, row, spent, calls, change, account)
        if status == "canceled":
            change.fields = {"status": "canceled", **spent}
            return change
        if status == "created" or (status == row["status"] and (progress is None or progress == row["progress"])
                                   and not spent):
            return None
        change.fields = {"status": status, **spent}
        if progress is not None:
            change.fields["progress"] = progress
        return change

    async def _described(self, backend: BackendConfig, backend_job_id: str, report: dict[str, Any],
                         calls: CallCounter, account: Account = SERVICE) -> dict[str, Any]:
        """An ended job's own `GET /jobs/{id}` when its listing entry carries no costs or usage (once: the job is
        recorded as ended in this cycle); the listing entry when that call fails."""
        try:
            described = await self._backend(calls, "job_gets", backend_jobs.describe_job, backend, backend_job_id,
                                             account=account)
        except Exception as exc:
            log.warning("cannot describe an ended backend job for its costs",
                        extra={"backend": backend.endpoint, "backend_job_id": backend_job_id, "error": str(exc)})
            return report
        return report if described is None else {**report, **described}

    @staticmethod
    def _spent(row: asyncpg.Record, report: dict[str, Any]) -> dict[str, Any]:
        """The costs and usage a report carries that differ from the recorded ones."""
        found: dict[str, Any] = {}
        costs, usage = as_costs(report.get("costs")), as_usage(report.get("usage"))
        if costs is not None and costs != row["costs"]:
            found["costs"] = costs
        if usage is not None and usage != row["usage"]:
            found["usage"] = usage
        return found

    async def _failed(self, backend: BackendConfig, row: asyncpg.Record, spent: dict[str, Any],
                      calls: CallCounter, change: JobChange, account: Account = SERVICE) -> JobChange:
        backend_job_id = row["backend_job_id"]
        attempts = max(row["attempts"], 1)
        entries = await store.stored_logs(self.pool, row["id"], backend_job_id)
        if entries is None:
            try:
                entries = await self._backend(calls, "logs", backend_jobs.error_logs, backend, backend_job_id,
                                              account=account)
                change.logs = FailureLogs(backend_job_id, attempts, entries)
            except Exception as exc:
                log.warning("cannot fetch job logs", extra={"backend": backend.endpoint,
                                                            "backend_job_id": backend_job_id, "error": str(exc)})
                entries = []
        message = backend_jobs.last_error_message(entries) or f"backend job {backend_job_id} ended in error"
        if attempts < row["max_attempts"] and not row["cancel"]:
            change.resubmit = True
            change.fields = {"message": f"attempt {attempts} of {row['max_attempts']} failed ({message}); resubmitted"}
            if spent:
                # what the failed attempt cost is recorded before the resubmission forgets the job's report
                change.spent = spent
            return change
        change.fields = {"status": "failed", "message": message, **spent}
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
