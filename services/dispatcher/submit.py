"""Submitting one unit job: checks, per-backend limits, create-or-find by tag, start, status recording.

Exactly one backend job per unit job:
- `unit_jobs.submitted_at` (while the job is `created` without backend job) is a lease: a try sets it when it
  reserves the job (raising `attempts`, committed) and renews it before each request that may create a backend
  job when its last renewal is older than START_WINDOW_S / 2; such a request is only sent within START_WINDOW_S of
  the renewal (else nothing is sent and the lease is renewed), and the lease lasts START_WINDOW_S + the client
  timeout + SUBMIT_SETTLE_S (`upscaling.leases`), so no create request of an earlier try can still take effect once
  it expired. Another
  delivery of the job (a duplicate, or a redelivery after a crash) waits for the lease to expire, then takes it
  over; a try that finds its lease taken stops.
- A try that takes over a lease (an earlier try got as far as maybe creating the job) first looks for the job on
  the backend by its tag; so does a try after its own create request failed without an answer.
- The backend job id is stored as soon as it is known: before the job is started when a start rate limit
  separates create and start, else (create and start in one worker-thread call) with the `queued` status, or
  right after a failed start. A crash in between leaves the lease set, so the next try finds the job by its tag.

A try runs named steps (`services.dispatcher.attempt`: find by tag, create, ask the status, start, record queued)
until the job is recorded, fails, or another try takes it over; a failed backend call (a typed
`upscaling.openeo_backend.errors.BackendError`) starts a new round after a backoff, or fails the job.
Backend calls run on the dispatcher's worker threads (DISPATCHER_THREADS: the backend calls in flight).
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
from aio_pika.abc import AbstractExchange

from services.dispatcher import backend_choice, backend_limits, cost_limit
from services.dispatcher.attempt import Lease, Reaction, Step, SubmitTry, job_spec, message_arguments, next_step, react
from services.dispatcher.backend_health import BackendHealth
from services.dispatcher.batching import MicroBatcher
from services.dispatcher.owner_accounts import OwnerAccounts, job_owner
from upscaling import jobs, metrics
from upscaling.backends import BackendConfig, Backends
from upscaling.config import Settings
from upscaling.credentials import CredentialStore
from upscaling.jobs.costs import REACHED_SQL
from upscaling.leases import START_WINDOW_S, lease_seconds
from upscaling.logs import correlation_id
from upscaling.openeo_backend import jobs as backend_jobs
from upscaling.openeo_backend.connection import Account
from upscaling.openeo_backend.errors import (
    BackendError,
    BackendTimeoutError,
    BackendTransientError,
    BackendUnreachableError,
    ErrorKind,
)
from upscaling.openeo_backend.health import check as backend_health_check
from upscaling.v1 import jobs_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")


# The unit jobs of a batch of messages (without their arguments: a message carries them).
_JOBS_SQL = """
SELECT uj.id, uj.task_id, uj.status, uj.backend_job_id, uj.tag, uj.attempts, uj.submitted_at, uj.service,
       uj.format, uj.title, uj.process_id, uj.owner, uj.backend, uj.candidates,
       (uj.cancel_requested OR coalesce(t.cancel_requested, false)) AS cancel, t.costs AS task_costs, t.max_costs
FROM unit_jobs uj LEFT JOIN upscale_tasks t ON t.id = uj.task_id
WHERE uj.id = ANY($1::bigint[])
"""


# The reservation of a batch of jobs no try has leased yet, on backends without a running-jobs limit (see
# Submitter._reserve): rows are locked in id order, and a row another transaction holds right now is skipped
# (that job then takes the one-job transaction), so two dispatchers' batches never deadlock.
_FIRST_LEASES_SQL = f"""
WITH wanted AS (SELECT * FROM unnest($1::bigint[], $2::text[]) AS w(id, backend)),
locked AS (
  SELECT uj.id FROM unit_jobs uj JOIN wanted ON wanted.id = uj.id
  WHERE uj.status = 'created' AND uj.backend_job_id IS NULL AND uj.submitted_at IS NULL AND NOT uj.cancel_requested
    AND NOT EXISTS (SELECT 1 FROM upscale_tasks t WHERE t.id = uj.task_id AND (t.cancel_requested OR {REACHED_SQL}))
  ORDER BY uj.id FOR UPDATE OF uj SKIP LOCKED)
UPDATE unit_jobs uj SET submitted_at = clock_timestamp(), backend = wanted.backend, attempts = uj.attempts + 1,
                        updated = now()
FROM locked, wanted WHERE uj.id = locked.id AND wanted.id = locked.id
RETURNING uj.id, uj.submitted_at
"""


class Outcome(enum.Enum):
    """What a reservation attempt found."""

    RESERVED = "reserved"
    BUSY = "busy"        # the backend is at its running-jobs limit: wait
    LEASED = "leased"    # another try holds the job's lease (or crashed holding it): wait until it expires
    CHANGED = "changed"  # the job changed meanwhile (canceled, submitted elsewhere): check it again


@dataclass(frozen=True)
class Reservation:
    outcome: Outcome
    lease: datetime | None = None  # the job's `submitted_at` as this try set it
    search_first: bool = False     # an earlier try may have created the backend job
    wait_s: float = 0.0            # LEASED: until the lease expires


class UnknownJobError(Exception):
    """A job message names no unit job (the consumer dead-letters it)."""


class LeaseStale(Exception):
    """A create request waited for a worker thread past its lease's renewal window: nothing was sent."""


class Flow(enum.Enum):
    """Where a try goes after a step."""

    NEXT = "next"    # on to its next step
    AGAIN = "again"  # a new round (nothing was sent)
    STOP = "stop"    # the try is over: the job is recorded, or another try took it over


class MoveJob(Exception):
    """The job's backend was drained before any create reached it: the try gave its lease back, and the job goes
    to another of its candidates."""


class StaleTry(Exception):
    """The job was resubmitted or retried (a new tag) while this try worked on it: the try records nothing."""


_Item = tuple[int | None, int, str, str | None, str]  # task id, job id, backend job id, correlation id, tag


class QueuedRecorder:
    """Records submitted jobs as `queued` in batches (`MicroBatcher`): each task's jobs of a batch go in one
    transaction (`jobs.record_submitted`), their events are published with one confirm wait, and one
    log line names them. `record` returns once its job's batch committed and was published; it raises StaleTry
    when the job's tag is no longer the one submitted."""

    def __init__(self, pool: asyncpg.Pool, events: AbstractExchange, max_batch: int = 256) -> None:
        self.pool = pool
        self.events = events
        self._batcher: MicroBatcher[_Item, Exception | None] = MicroBatcher(self._write_batch, max_batch)

    async def record(self, task_id: int | None, job_id: int, backend_job_id: str, tag: str) -> None:
        error = await self._batcher((task_id, job_id, backend_job_id, correlation_id.get(), tag))
        if error is not None:
            raise error

    async def _write_batch(self, items: list[_Item]) -> list[Exception | None]:
        by_task: dict[int | None, list[_Item]] = {}
        for item in items:
            by_task.setdefault(item[0], []).append(item)
        outcomes = dict(zip(by_task, await asyncio.gather(*(self._write(t, group) for t, group in by_task.items())),
                            strict=True))
        results: list[Exception | None] = []
        for task_id, job_id, *_ in items:
            outcome = outcomes[task_id]
            results.append(outcome if isinstance(outcome, Exception)
                           else StaleTry(f"unit job {job_id} got a new tag meanwhile") if job_id in outcome else None)
        return results

    async def _write(self, task_id: int | None, items: list[_Item]) -> Exception | set[int]:
        token = correlation_id.set(items[0][3])
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                events, stale = await jobs.record_submitted(
                    conn, task_id, [(j, b, c, tag) for _, j, b, c, tag in items])
            await jobs.publish_committed(self.events, events)
            # One line per recorded batch (per job at DEBUG): a 10,000-job task does not cost 10,000 log lines.
            log.info("unit jobs submitted", extra={"task_id": task_id, "count": len(items) - len(stale),
                                                   "job_ids": [i[1] for i in items if i[1] not in stale]})
        except Exception as exc:
            return exc
        finally:
            correlation_id.reset(token)
        return stale


class Submitter:
    """Handles job messages: everything but the broker acknowledgement."""

    def __init__(self, settings: Settings, backends: Backends, pool: asyncpg.Pool, events: AbstractExchange,
                 executor: Executor, credentials: CredentialStore | None = None) -> None:
        self.settings = settings
        self.backends = backends
        self.pool = pool
        self.events = events
        self.executor = executor
        self._job_locks: dict[int, tuple[asyncio.Lock, int]] = {}  # lock, users
        self._queued = QueuedRecorder(pool, events)
        self._create_slots = asyncio.Semaphore(max(1, settings.dispatcher_threads))
        self._job_rows: MicroBatcher[int, asyncpg.Record | None] = MicroBatcher(self._fetch_jobs)
        self._first_leases: MicroBatcher[tuple[int, str], datetime | None] = MicroBatcher(self._lease_first)
        self._pacer = backend_limits.StartPacer()
        self._accounts = OwnerAccounts(credentials)
        self.health = BackendHealth(settings.backend_drain_failures, settings.backend_drain_cooldown_s)

    # --- helpers -------------------------------------------------------------------------------------------

    async def watch_health(self, stop: asyncio.Event) -> None:
        """Health-check the configured backends (`GET /`) until `stop`: the breakers of `backend_health`."""
        timeout = min(self.settings.openeo_timeout_s, 10.0)

        async def check(backend: BackendConfig) -> None:
            context = contextvars.copy_context()
            await asyncio.get_running_loop().run_in_executor(
                self.executor, context.run, backend_health_check, backend, timeout)

        await self.health.run(self.backends.configs, check, self.settings.backend_health_interval_s, stop)

    async def _fetch_jobs(self, job_ids: list[int]) -> list[asyncpg.Record | None]:
        """The unit jobs of a batch of messages (None for unknown ids)."""
        rows = {row["id"]: row for row in await self.pool.fetch(_JOBS_SQL, job_ids)}
        return [rows.get(job_id) for job_id in job_ids]

    async def _lease_first(self, items: list[tuple[int, str]]) -> list[datetime | None]:
        """Reserve a batch of (job id, backend) no try has leased yet: each job's new lease, or None."""
        rows = await self.pool.fetch(_FIRST_LEASES_SQL, [i for i, _ in items], [b for _, b in items])
        leases = {row["id"]: row["submitted_at"] for row in rows}
        return [leases.pop(job_id, None) for job_id, _ in items]

    def _backoff(self, n: int) -> float:
        """Exponential backoff with full jitter for the n-th retry (n >= 1)."""
        ceiling = min(self.settings.submit_backoff_max_s, self.settings.submit_backoff_base_s * 2 ** (n - 1))
        return random.uniform(0, ceiling)

    async def _call(self, backend: BackendConfig, operation: Callable[..., T], *args: Any,
                    not_after: float | None = None, start_slot: float | None = None) -> T:
        """Run `operation(backend, client timeout, *args)` (an `upscaling.openeo_backend.jobs` operation: it raises
        typed BackendErrors) in a worker thread, timed by its name. With `not_after` (time.monotonic()), a call that
        only gets a thread later raises LeaseStale instead of sending anything; with `start_slot` (a start's local
        slot, `backend_limits.StartPacer`), it waits for its turn or raises SlotMissed without sending anything."""
        timeout = self.settings.openeo_timeout_s

        async def run(account: Account) -> T:
            def work() -> T:
                if not_after is not None and time.monotonic() > not_after:
                    raise LeaseStale()
                if start_slot is not None:
                    self._pacer.wait_turn(backend, start_slot)
                started = time.perf_counter()
                try:
                    return operation(backend, timeout, *args, account=account)
                finally:
                    metrics.backend_call(backend.endpoint, operation.__name__, started)

            context = contextvars.copy_context()  # the worker thread's log lines and requests keep the correlation id
            return await asyncio.get_running_loop().run_in_executor(self.executor, context.run, work)

        # As the job owner's backend account on a backend with per-user credentials, else the service account.
        try:
            result = await self._accounts.call(backend, run)
        except BackendTransientError:
            self.health.failure(backend.endpoint)
            raise
        except BackendError:
            self.health.success(backend.endpoint)  # it answered (a limit or a refusal is not an outage)
            raise
        self.health.success(backend.endpoint)
        return result

    async def _update(self, job_id: int, **changes: Any) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            events = await jobs.update_job(conn, job_id, **changes)
        await jobs.publish_committed(self.events, events)

    async def _fail(self, job_id: int, message: str) -> None:
        log.warning("unit job failed", extra={"job_id": job_id, "reason": message})
        await self._update(job_id, status="failed", message=message)

    # --- the flow ------------------------------------------------------------------------------------------

    async def handle(self, msg: jobs_pb2.SubmitJobMessage) -> None:
        """Submit the job of a message (returns when the message can be acknowledged). Two copies of one job's
        message in this process are handled one after the other (the second then finds the job submitted)."""
        lock, users = self._job_locks.get(msg.job_id, (asyncio.Lock(), 0))
        self._job_locks[msg.job_id] = (lock, users + 1)
        try:
            async with lock:
                for _ in range(100):
                    if not await self._handle_once(msg):
                        return
                raise RuntimeError(f"unit job {msg.job_id} kept changing while being submitted")
        finally:
            lock, users = self._job_locks[msg.job_id]
            if users == 1:
                del self._job_locks[msg.job_id]
            else:
                self._job_locks[msg.job_id] = (lock, users - 1)

    async def _handle_once(self, msg: jobs_pb2.SubmitJobMessage) -> bool:
        """One pass; True when the job changed under us and must be looked at again."""
        row = await self._job_rows(msg.job_id)
        if row is None:
            raise UnknownJobError(f"job message for an unknown unit job {msg.job_id}")
        status = row["status"]
        if status != "created":  # queued, running, unknown, or terminal
            log.info("unit job already submitted or done; nothing to do",
                     extra={"job_id": row["id"], "status": status})
            return False
        if row["cancel"]:
            if row["backend_job_id"] is None:
                await self._update(row["id"], status="canceled", message="canceled before submission")
                log.info("unit job canceled before submission", extra={"job_id": row["id"]})
            return False
        job_owner.set(row["owner"])  # whose backend credentials the calls of this job use (per-user backends)
        if row["backend_job_id"] is None and row["submitted_at"] is None and cost_limit.over_limit(row):
            await cost_limit.stop(self.pool, self.events, row["task_id"])
            return False
        choice = backend_choice.candidates(self.backends, row, msg.service.endpoint)
        if choice.missing is not None:
            metrics.SUBMISSIONS.labels(choice.missing, "failed").inc()
            await self._fail(row["id"], f"backend {choice.missing!r} is not configured (configured: "
                                        f"{', '.join(self.backends.endpoints())})")
            return False
        backend = choice.backends[0]
        if choice.several and row["backend"] is not None and (
                row["backend_job_id"] is not None or row["submitted_at"] is not None):
            # A create may have reached the backend chosen before: the job stays there (see `_reserve`).
            backend = self.backends.find(row["backend"]) or backend
        if row["backend_job_id"] is not None:
            # Created on the backend by an earlier delivery that did not get to record the start.
            return await self._submit(msg, row, backend, Reservation(Outcome.RESERVED), choice.several)
        if choice.several and row["submitted_at"] is None:
            backend, reservation = await self._reserve_among(row, choice.backends)
        else:
            reservation = await self._reserve_when_free(row, backend)
        if reservation.outcome is Outcome.CHANGED:
            return True
        if reservation.outcome is Outcome.LEASED:
            log.info("another try holds the job; waiting for its lease to expire",
                     extra={"job_id": row["id"], "wait_s": round(reservation.wait_s, 3)})
            await asyncio.sleep(reservation.wait_s + random.uniform(0.0, 0.2))
            return True
        return await self._submit(msg, row, backend, reservation, choice.several)

    async def _reserve_when_free(self, row: asyncpg.Record, backend: BackendConfig) -> Reservation:
        """`_reserve`, waiting (with growing pauses) while the backend is at its running-jobs limit."""
        waits = 0
        while (reservation := await self._reserve(row, backend)).outcome is Outcome.BUSY:
            waits += 1
            if waits == 1:
                log.info("backend at its running-jobs limit; waiting",
                         extra={"job_id": row["id"], "backend": backend.endpoint,
                                "max_running_jobs": backend.max_running_jobs})
            await asyncio.sleep(min(0.05 * 2 ** min(waits, 5), 1.0) * random.uniform(0.5, 1.0))
        return reservation

    async def _reserve_among(self, row: asyncpg.Record, candidates: list[BackendConfig]
                             ) -> tuple[BackendConfig, Reservation]:
        """`_reserve` on the best of several candidate backends (`backend_choice.rank`) whose running-job slot is
        free, waiting (with growing pauses) while all are full or drained."""
        waits = 0
        while True:
            active = await backend_limits.active_counts(self.pool, [b.endpoint for b in candidates], row["id"])
            ranked = backend_choice.rank(candidates, active, self.health.available, row["id"])
            for backend in ranked:
                reservation = await self._reserve(row, backend)
                if reservation.outcome is not Outcome.BUSY:
                    return backend, reservation
            if not ranked and not await self.pool.fetchval(
                    "SELECT uj.status = 'created' AND uj.backend_job_id IS NULL AND uj.submitted_at IS NULL"
                    " AND NOT (uj.cancel_requested OR coalesce(t.cancel_requested, false))"
                    " FROM unit_jobs uj LEFT JOIN upscale_tasks t ON t.id = uj.task_id WHERE uj.id = $1", row["id"]):
                return candidates[0], Reservation(Outcome.CHANGED)  # canceled (or taken) while every one was drained
            waits += 1
            if waits == 1:
                log.info("every candidate backend is full or drained; waiting",
                         extra={"job_id": row["id"], "backends": [b.endpoint for b in candidates],
                                "drained": self.health.drained()})
            await asyncio.sleep(min(0.05 * 2 ** min(waits, 5), 1.0) * random.uniform(0.5, 1.0))

    @property
    def lease_s(self) -> float:
        """How long a try's lease on a job lasts after its last renewal."""
        return lease_seconds(self.settings)

    async def _reserve(self, row: asyncpg.Record, backend: BackendConfig) -> Reservation:
        """Take the job's lease and a running-job slot, counting the attempt, in one transaction."""
        if backend.max_running_jobs <= 0:
            # No running-jobs limit: a job no try has leased yet (the common case) is reserved by one statement
            # with the same effect as the transaction below; any other case takes the transaction.
            lease = await self._first_leases((row["id"], backend.endpoint))
            if lease is not None:
                return Reservation(Outcome.RESERVED, lease=lease, search_first=False)
        async with self.pool.acquire() as conn, conn.transaction():
            free = await backend_limits.running_slot_free(conn, backend, row["id"])
            current = await conn.fetchrow(
                "SELECT uj.status, uj.backend_job_id, uj.attempts, uj.submitted_at, uj.backend,"
                " extract(epoch FROM uj.submitted_at + make_interval(secs => $2) - now())::float8 AS lease_left_s,"
                " (uj.cancel_requested OR coalesce(t.cancel_requested, false)) AS cancel,"
                f" coalesce({REACHED_SQL}, false) AS over_costs"
                " FROM unit_jobs uj LEFT JOIN upscale_tasks t ON t.id = uj.task_id WHERE uj.id = $1",
                row["id"], self.lease_s)
            if (current is None or current["status"] != "created" or current["backend_job_id"] is not None
                    or current["cancel"] or (current["over_costs"] and current["submitted_at"] is None)):
                return Reservation(Outcome.CHANGED)
            if (current["lease_left_s"] or 0.0) > 0:
                return Reservation(Outcome.LEASED, wait_s=current["lease_left_s"])
            if not free:
                return Reservation(Outcome.BUSY)
            # `submitted_at` set: a try with this tag got as far as (maybe) creating a backend job. The monitor
            # clears it, with a new tag, when it resubmits; a release clears it when no create was sent.
            search_first = current["submitted_at"] is not None
            if search_first and current["backend"] not in (None, backend.endpoint):
                # An earlier try may have created the job on another backend: it is looked for there.
                return Reservation(Outcome.CHANGED)
            lease = await conn.fetchval(
                "UPDATE unit_jobs SET submitted_at = clock_timestamp(), backend = $2, attempts = $3, updated = now()"
                " WHERE id = $1 AND status = 'created' AND backend_job_id IS NULL"
                " AND submitted_at IS NOT DISTINCT FROM $4 RETURNING submitted_at",
                row["id"], backend.endpoint, current["attempts"] + (0 if search_first else 1),
                current["submitted_at"])
            if lease is None:
                return Reservation(Outcome.CHANGED)
        return Reservation(Outcome.RESERVED, lease=lease, search_first=search_first)

    async def _keep_lease(self, state: Lease | None) -> bool:
        """Renew this try's lease on its job unless it was taken a moment ago; False when another try took it
        over. (A request sent within START_WINDOW_S of the lease's renewal ends before the lease does.)"""
        if state is None:
            return True
        if time.monotonic() - state.renewed < START_WINDOW_S / 2:
            return True
        value = await self.pool.fetchval(
            "UPDATE unit_jobs SET submitted_at = clock_timestamp() WHERE id = $1 AND submitted_at = $2"
            " AND status = 'created' AND backend_job_id IS NULL RETURNING submitted_at", state.job_id, state.value)
        if value is None:
            return False
        state.value, state.renewed = value, time.monotonic()
        return True

    # --- one try: its steps (`services.dispatcher.attempt.next_step` picks the next one) ---------------------

    async def _submit(self, msg: jobs_pb2.SubmitJobMessage, row: asyncpg.Record, backend: BackendConfig,
                      reservation: Reservation, several: bool = False) -> bool:
        """Create (or find) and start the backend job, retrying transient errors; record the outcome."""
        arguments = message_arguments(msg)
        if arguments is None:
            arguments = await self.pool.fetchval("SELECT submit_arguments FROM unit_jobs WHERE id = $1",
                                                 row["id"]) or {}
        lease = None if reservation.lease is None else Lease(row["id"], reservation.lease, time.monotonic())
        attempt = SubmitTry(row["id"], row["task_id"], row["tag"], job_spec(msg, row, arguments), lease,
                            backend_job_id=row["backend_job_id"], maybe_created=reservation.search_first)
        try:
            await self._run_try(attempt, backend, several)
        except MoveJob:
            await asyncio.shield(backend_limits.release_running_slot(
                self.pool, attempt.job_id, attempt.lease.value if attempt.lease else None))
            log.info("backend drained before the job reached it; the job goes to another candidate",
                     extra={"job_id": attempt.job_id, "backend": backend.endpoint})
            return True
        except BaseException:
            if attempt.nothing_sent:
                # No create was sent: free the running-job slot for others right away.
                await asyncio.shield(backend_limits.release_running_slot(
                    self.pool, attempt.job_id, attempt.lease.value if attempt.lease else None))
            raise
        return False

    async def _run_try(self, t: SubmitTry, backend: BackendConfig, several: bool = False) -> None:
        """Run the try's steps until the job is recorded queued, failed, or taken over by another try. With
        several candidates, a try on a drained backend moves the job (MoveJob) when no create may have reached
        it, else waits until the backend answers again and looks for the job by its tag there first."""
        while True:
            try:
                flow = await self._step(t, backend)
            except StaleTry as exc:
                log.info("unit job resubmitted or changed while this try worked on it; the try stops",
                         extra={"job_id": t.job_id, "backend_job_id": t.backend_job_id, "error": str(exc)})
                return
            except BackendError as exc:
                if several and not self.health.available(backend.endpoint):
                    metrics.backend_error(backend.endpoint, exc)
                    if t.nothing_sent:
                        raise MoveJob() from exc
                    log.warning("backend drained while the job may exist there; waiting until it answers",
                                extra={"job_id": t.job_id, "backend": backend.endpoint, "error": str(exc)})
                    if not await self._wait_backend(t, backend):
                        return
                    flow = Flow.AGAIN
                elif not await self._after_error(t, backend, exc):
                    return
                else:
                    flow = Flow.AGAIN
            if flow is Flow.STOP:
                return
            if flow is Flow.AGAIN:
                t.new_round()

    async def _wait_backend(self, t: SubmitTry, backend: BackendConfig, check_s: float = 2.0) -> bool:
        """Wait until a drained backend answers again (True), or until the job is canceled meanwhile (False: it is
        recorded `canceled`; a backend job an earlier create may have made there cannot be stopped)."""
        while True:
            try:
                await asyncio.wait_for(self.health.wait_available(backend.endpoint), check_s)
                return True
            except TimeoutError:
                pass
            canceled = await self.pool.fetchval(
                "SELECT uj.status = 'created' AND (uj.cancel_requested OR coalesce(t.cancel_requested, false))"
                " FROM unit_jobs uj LEFT JOIN upscale_tasks t ON t.id = uj.task_id WHERE uj.id = $1 AND uj.tag = $2",
                t.job_id, t.tag)
            if canceled:
                await self._update(t.job_id, status="canceled",
                                   message=f"canceled while backend {backend.endpoint} did not answer; a backend job "
                                           "an earlier request may have created there was not stopped")
                log.info("unit job canceled while its backend was drained", extra={"job_id": t.job_id})
                return False

    async def _step(self, t: SubmitTry, backend: BackendConfig) -> Flow:
        step = next_step(t)
        if step is Step.FIND:
            return await self._find(t, backend)
        if step is Step.CREATE:
            return await self._create(t, backend)
        if step is Step.STATUS:
            t.backend_status = await self._call(backend, backend_jobs.job_status, t.backend_job_id)
            return Flow.NEXT
        if step is Step.START:
            await self._start(t, backend)
            return Flow.NEXT
        await self._record_queued(t, backend)
        return Flow.STOP

    async def _find(self, t: SubmitTry, backend: BackendConfig) -> Flow:
        """Look for the backend job an earlier create request may have made (once that request can have taken
        effect); store its id when found."""
        t.searched = True
        await asyncio.sleep(max(0.0, t.search_not_before - time.monotonic()))
        if not await self._keep_lease(t.lease):
            log.info("another try took the job over", extra={"job_id": t.job_id})
            return Flow.STOP
        found = await self._call(backend, backend_jobs.find_job_by_tag, t.tag)
        if found is not None:
            t.backend_job_id, t.backend_status = found
            log.info("found the backend job of an earlier try by its tag",
                     extra={"job_id": t.job_id, "backend_job_id": t.backend_job_id})
            await self._store_backend_job_id(t)
        return Flow.NEXT

    async def _create(self, t: SubmitTry, backend: BackendConfig) -> Flow:
        """Create the backend job; without a start rate limit it is started in the same worker-thread call. Its id
        is stored before the start when the start is separate or failed (recording it `queued` stores it else)."""
        sent_before = t.maybe_created
        t.maybe_created = True  # from here on a failure leaves it unknown whether the job exists
        t.search_not_before = time.monotonic()
        start_now = backend.starts_per_second <= 0
        # At most one create per worker thread waits for its thread: a renewed lease is not spent queueing.
        async with self._create_slots:
            if not await self._keep_lease(t.lease):
                log.info("another try took the job over", extra={"job_id": t.job_id})
                return Flow.STOP
            # Sent within START_WINDOW_S of the lease's renewal (so it ends before the lease does), however long
            # it waits for a worker thread.
            not_after = None if t.lease is None else t.lease.send_deadline()
            start_error: BackendError | None = None
            try:
                if start_now:
                    backend_job_id, start_error = await self._call(backend, backend_jobs.create_and_start, t.spec,
                                                                   not_after=not_after)
                else:
                    backend_job_id = await self._call(backend, backend_jobs.create_job, t.spec, not_after=not_after)
            except LeaseStale:
                t.maybe_created = sent_before  # nothing was sent: renew and try again
                log.debug("create waited past its lease window; renewing", extra={"job_id": t.job_id})
                return Flow.AGAIN
            except BackendTimeoutError:
                # The backend may still be handling the request: do not look too early.
                t.search_not_before += self.settings.openeo_timeout_s + self.settings.submit_settle_s
                raise
            except BackendUnreachableError:
                t.maybe_created = sent_before  # no connection was made: the request did nothing
                raise
        t.backend_job_id = backend_job_id
        if start_now and start_error is None:
            t.backend_status = "queued"
            return Flow.NEXT
        t.backend_status = None if start_now else "created"  # after a failed start: ask before starting again
        await self._store_backend_job_id(t)
        if start_error is not None:
            raise start_error
        return Flow.NEXT

    async def _store_backend_job_id(self, t: SubmitTry) -> None:
        """Record the backend job id before the start (no event yet: the `queued` event carries it), unless the
        job was resubmitted meanwhile (a new tag)."""
        if await self.pool.fetchval(
                "UPDATE unit_jobs SET backend_job_id = $2, updated = now() WHERE id = $1 AND tag = $3"
                " AND status = 'created' RETURNING id", t.job_id, t.backend_job_id, t.tag) is None:
            raise StaleTry(f"unit job {t.job_id} changed while submitting")

    async def _start(self, t: SubmitTry, backend: BackendConfig) -> None:
        """Start the created backend job in the backend's next start slot (sent in that slot by the worker thread:
        a start whose thread came too late takes a new slot)."""
        t.backend_status = None  # if the start fails, ask before starting again
        if backend.starts_per_second <= 0:
            await self._call(backend, backend_jobs.start_job, t.backend_job_id)
            t.backend_status = "queued"
            return
        while True:
            slot = self._pacer.slot(backend, await backend_limits.start_slot_wait(self.pool, backend))
            await asyncio.sleep(max(0.0, slot - time.monotonic()))
            try:
                await self._call(backend, backend_jobs.start_job, t.backend_job_id, start_slot=slot)
            except backend_limits.SlotMissed:
                log.debug("start got its worker thread after its slot; taking a new slot", extra={"job_id": t.job_id})
                continue
            t.backend_status = "queued"
            return

    async def _record_queued(self, t: SubmitTry, backend: BackendConfig) -> None:
        assert t.backend_job_id is not None
        await self._queued.record(t.task_id, t.job_id, t.backend_job_id, t.tag)
        metrics.submitted(backend.endpoint, t.started)
        log.debug("unit job submitted", extra={"job_id": t.job_id, "backend_job_id": t.backend_job_id,
                                               "backend": backend.endpoint})

    async def _after_error(self, t: SubmitTry, backend: BackendConfig, exc: BackendError) -> bool:
        """Count a failed call and wait before the next round (True), or fail the job (False)."""
        metrics.backend_error(backend.endpoint, exc)
        if exc.kind is ErrorKind.TRANSIENT:
            t.failures += 1
        reaction = react(exc, t.failures, self.settings.submit_max_attempts)
        if reaction is Reaction.WAIT:
            t.limit_waits += 1
            metrics.RETRIES.labels(backend.endpoint, "limit").inc()
            delay = self._backoff(min(t.limit_waits, 30))
            log.info("backend over a limit; retrying",
                     extra={"job_id": t.job_id, "error": str(exc), "retry_in_s": round(delay, 3)})
            await asyncio.sleep(delay)
            return True
        if reaction is Reaction.RETRY:
            metrics.RETRIES.labels(backend.endpoint, "transient").inc()
            delay = self._backoff(t.failures)
            log.warning("transient backend error; retrying",
                        extra={"job_id": t.job_id, "error": str(exc), "attempt": t.failures,
                               "retry_in_s": round(delay, 3)})
            await asyncio.sleep(delay)
            return True
        metrics.SUBMISSIONS.labels(backend.endpoint, "failed").inc()
        await self._fail(t.job_id, f"gave up after {t.failures} attempts: {exc}" if reaction is Reaction.GIVE_UP
                         else str(exc))
        return False
