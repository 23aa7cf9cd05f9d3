"""The task logic shared by the HTTP bridge and the gRPC API: create, read, list, cancel, retry, results,
describe. Everything is validated before anything is stored; writes happen in one transaction each, and
status events are published after commit.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.audit import AuditLog, admin_read, audited
from gateway.auth import Principal
from gateway.backend_credentials import BackendCredentials
from gateway.udp import Udp, UdpCache, coerce_value, validate_arguments
from upscaling import jobs
from upscaling.backends import OGC_API_PROCESS, PLATFORMS, BackendConfig, Backends, normalize_endpoint
from upscaling.db import AnyConnection
from upscaling.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, TooManyRequests
from upscaling.jobs import outbox
from upscaling.jobs.messages import DEFAULT_FORMAT, FORMATS
from upscaling.limits import exceeded
from upscaling.logs import correlation_id
from upscaling.statuses import ACTIVE_JOB_STATUSES, TASK_STATUSES, TERMINAL_JOB_STATUSES

LABELS = PLATFORMS  # a task's label is its backend's platform
MAX_ATTEMPTS = 5
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Tasks (and standalone unit jobs) of a user that count against MAX_TASKS_IN_FLIGHT_PER_USER.
_IN_FLIGHT = sorted(ACTIVE_JOB_STATUSES & set(TASK_STATUSES))
# Rows are scoped to their owner: `$n` is the caller's user id, or NULL for an admin (every row).
_JOB_COLUMNS = ("id, task_id, seq, title, label, status, service, parameters, format, backend_job_id, progress,"
                " message, costs, usage, created, updated, backend")


@dataclass
class TaskSpec:
    """A task request, from HTTP JSON or a CreateTaskRequest."""

    title: str
    label: str
    service: dict[str, Any]
    parameters: dict[str, Any] = field(default_factory=dict)
    format: str | None = None
    dimension_name: str = ""
    dimension_values: list[Any] = field(default_factory=list)
    max_attempts: int | None = None
    max_costs: float | None = None


@dataclass
class JobSpec:
    """A standalone unit job request (`POST /unit_jobs`)."""

    title: str
    label: str
    service: dict[str, Any]
    parameters: dict[str, Any] = field(default_factory=dict)
    format: str | None = None


@dataclass(frozen=True)
class CheckedJob:
    """A unit job request once validated: what the backend is called with."""

    title: str
    service: dict[str, Any]
    candidates: list[str]  # the canonical endpoints of the backends the job may run on (one, or several)
    udp: Udp
    format: str
    arguments: dict[str, Any]


@dataclass
class TaskView:
    """A task row and its job rows, read consistently."""

    task: asyncpg.Record
    jobs: list[asyncpg.Record]


def _check_label(label: Any) -> None:
    if label not in LABELS:
        raise InvalidArgument(f"label must be one of {', '.join(LABELS)}, got {label!r}")


def ogc_process_url(backend: BackendConfig, application: str) -> str:
    """The description URL of an OGC process: `application` itself when it is a process URL of the backend
    (`{endpoint}/processes/{id}`), else `{url}/processes/{application}` for a process id; InvalidArgument for a
    URL elsewhere."""
    if application.startswith(("http://", "https://")):
        normalized = normalize_endpoint(application)
        for base in (backend.endpoint, *backend.aliases, normalize_endpoint(backend.url)):
            prefix = f"{base}/processes/"
            rest = normalized[len(prefix):] if normalized.startswith(prefix) else ""
            if rest and not any(c in rest for c in "/?#") and not rest.isspace():
                return f"{backend.url.rstrip('/')}/processes/{rest}"
        raise InvalidArgument(f"service.application {application[:300]!r} is not a process of {backend.endpoint} "
                              f"(expected {backend.endpoint}/processes/<id>, or the process id)")
    if "/" in application or not application.strip():
        raise InvalidArgument(f"service.application {application[:300]!r} is not an OGC process id")
    return f"{backend.url.rstrip('/')}/processes/{urllib.parse.quote(application, safe='')}"
def backend_columns(candidates: list[str]) -> tuple[str | None, list[str] | None]:
    """A new job's `backend` and `candidates` columns: one candidate is its backend (as before); with several the
    dispatcher chooses one when it leases the job."""
    if len(candidates) == 1:
        return candidates[0], None
    return None, candidates


def encode_page_token(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"t:{last_id}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int | None:
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if not text.startswith("t:") or not text[2:].isascii():
            raise ValueError(text)
        last_id = int(text[2:])
        if not 0 < last_id < 2**63:
            raise ValueError(text)
        return last_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidArgument("invalid page_token (pass the next_page_token of a previous page)") from exc


def check_storable(value: Any, where: str) -> None:
    """InvalidArgument unless `value` can be stored as JSON/text: no NUL character, no lone surrogate, no NaN or
    infinite number (PostgreSQL refuses each of them), anywhere in nested lists and objects."""
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise InvalidArgument(f"{path} contains a NUL character (\\u0000), which cannot be stored")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidArgument(f"{path} contains a lone surrogate (invalid Unicode)") from None
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidArgument(f"{path} contains the number {item}, which JSON cannot carry")
        elif isinstance(item, dict):
            for key, inner in item.items():
                stack.append((key, f"{path} (a key)"))
                stack.append((inner, f"{path}.{key}" if isinstance(key, str) and len(key) < 40 else path))
        elif isinstance(item, list | tuple):
            stack.extend((inner, f"{path}[{i}]") for i, inner in enumerate(item))


def _now_proto() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp


def _task_not_found(task_id: int) -> NotFound:
    return NotFound(f"upscale task {task_id} not found", error_code="TASK_NOT_FOUND")


def _job_not_found(job_id: int) -> NotFound:
    return NotFound(f"unit job {job_id} not found", error_code="JOB_NOT_FOUND")


def _owned(row: asyncpg.Record, caller: Principal) -> bool:
    """Whether the caller may see a task or job row (its owner, or an admin)."""
    return caller.admin or row["owner"] == caller.user_id


class TaskService:
    """Task operations over the database and the UDP cache. The gateway publishes nothing to the broker: job
    messages and status events go to the outbox, in the transaction of their change (`upscaling.jobs`).

    Every operation takes the caller: rows are stored with the caller as owner and read, changed and listed only
    by their owner (or an admin); another user's task or job is "not found", exactly like one that does not exist.
    """

    def __init__(self, pool: asyncpg.Pool, backends: Backends, udps: UdpCache, max_dimension_values: int,
                 max_in_flight_per_user: int = 0) -> None:
        self.pool = pool
        self.backends = backends
        self.udps = udps
        self.max_dimension_values = max_dimension_values
        self.max_in_flight_per_user = max_in_flight_per_user
        self.audit: AuditLog | None = AuditLog(pool)
        # Users' own backend credentials (set when a backend uses a per-user auth.method).
        self.credentials: BackendCredentials | None = None

    async def _check_in_flight(self, conn: AnyConnection, caller: Principal) -> None:
        """Inside the creating transaction: serialize the caller's creations (advisory lock on the user) and
        refuse one more task when the caller already has MAX_TASKS_IN_FLIGHT_PER_USER unfinished ones."""
        limit = self.max_in_flight_per_user
        if not limit:
            return
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('upscaling-owner:' || $1, 0))",
                           caller.user_id)
        n = await conn.fetchval(
            "SELECT (SELECT count(*) FROM upscale_tasks WHERE owner = $1 AND status = ANY($2::text[]))"
            " + (SELECT count(*) FROM unit_jobs WHERE owner = $1 AND task_id IS NULL AND status = ANY($2::text[]))",
            caller.user_id, _IN_FLIGHT)
        if n >= limit:
            raise TooManyRequests(exceeded("MAX_TASKS_IN_FLIGHT_PER_USER", limit,
                                           f"{n} tasks of this user are not finished yet"),
                                  error_code="TOO_MANY_TASKS_IN_FLIGHT")

    # ---- validation -------------------------------------------------------------------------------------

    async def _check_service(self, label: str, service: Any) -> tuple[dict[str, Any], list[str], Udp]:
        """(public service dict as the client sent it, candidate backends' canonical endpoints, UDP) or
        InvalidArgument. `service.endpoint` is one backend URL, a configured group name, or a list of them; the
        label must be the platform of those backends; an `ogc_api_process` application is the process (its URL,
        or its id: the only form when several backends are named) on that server."""
        _check_label(label)
        if not isinstance(service, dict):
            raise InvalidArgument("service must be an object {endpoint, application, namespace?}")
        endpoint, application = service.get("endpoint"), service.get("application")
        if not isinstance(endpoint, str | list) or not endpoint:
            raise InvalidArgument("service.endpoint is required (an openEO backend or OGC API - Processes URL, a "
                                  "backend group name, or a list of them)")
        if not isinstance(application, str) or not application:
            raise InvalidArgument("service.application is required (the URL of the UDP JSON, or of the OGC process)")
        try:
            backends = self.backends.resolve(endpoint)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        platform = backends[0].platform  # (resolve: one platform)
        if platform != label:
            raise InvalidArgument(f"label {label!r} does not match service.endpoint {endpoint!r}, an "
                                  f"{platform} backend: use label {platform!r}")
        if label == OGC_API_PROCESS:
            if len(backends) > 1 and application.startswith(("http://", "https://")):
                raise InvalidArgument("service.application names the process by its id when service.endpoint names "
                                      "several OGC API - Processes backends (each runs the process of that id)")
            udp = await self.udps.get(ogc_process_url(backends[0], application), ogc=True)
        else:
            udp = await self.udps.get(application)
        candidates = [b.endpoint for b in backends]
        public = {"endpoint": endpoint, "application": application}
        if service.get("namespace"):
            public["namespace"] = str(service["namespace"])
        return public, candidates, udp

    @staticmethod
    def _check_format(fmt: str | None) -> str:
        fmt = (fmt or DEFAULT_FORMAT).lower()
        if fmt not in FORMATS:
            raise InvalidArgument(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        return fmt

    @staticmethod
    def _check_max_costs(value: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise InvalidArgument(f"max_costs must be a number above 0, got {value!r}")
        return float(value)

    @staticmethod
    def _check_title(title: Any) -> str:
        if not isinstance(title, str) or not title.strip():
            raise InvalidArgument("title is required")
        return title

    async def check_job(self, spec: JobSpec) -> CheckedJob:
        """Validate a one-job request (`POST /unit_jobs`, `POST /sync_jobs`): InvalidArgument with the reason."""
        check_storable({"title": spec.title, "label": spec.label, "service": spec.service,
                        "parameters": spec.parameters}, "request")
        title = self._check_title(spec.title)
        service, candidates, udp = await self._check_service(spec.label, spec.service)
        fmt = self._check_format(spec.format)
        if not isinstance(spec.parameters, dict):
            raise InvalidArgument("parameters must be an object")
        return CheckedJob(title, service, candidates, udp, fmt, validate_arguments(udp, spec.parameters))

    async def _prepare_credentials(self, caller: Principal, candidates: list[str]) -> None:
        """The caller's own credentials for every candidate backend that runs jobs with them (before anything is
        stored: a refused token exchange stores nothing)."""
        if self.credentials is not None:
            for endpoint in candidates:
                await self.credentials.prepare(caller, endpoint)

    # ---- create -----------------------------------------------------------------------------------------

    @audited("task.create", "task")
    async def create_task(self, spec: TaskSpec, caller: Principal) -> asyncpg.Record:
        """Validate a task request, then store the task, its jobs and their outbox rows in one transaction."""
        check_storable({"title": spec.title, "label": spec.label, "service": spec.service,
                        "parameters": spec.parameters, "dimension.name": spec.dimension_name}, "request")
        check_storable(spec.dimension_values, "dimension.values")
        title = self._check_title(spec.title)
        service, candidates, udp = await self._check_service(spec.label, spec.service)
        backend, several = backend_columns(candidates)
        fmt = self._check_format(spec.format)
        max_attempts = 1 if spec.max_attempts is None else spec.max_attempts
        if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or not 1 <= max_attempts <= 5:
            raise InvalidArgument(f"max_attempts must be an integer from 1 to {MAX_ATTEMPTS}")
        max_costs = self._check_max_costs(spec.max_costs)
        if not isinstance(spec.parameters, dict):
            raise InvalidArgument("parameters must be an object")
        dim = spec.dimension_name
        dim_param = udp.parameter(dim) if dim else None
        if dim_param is None:
            raise InvalidArgument(f"dimension.name {dim!r} is not a parameter of the process {udp.id} "
                                  f"(parameters: {', '.join(p.name for p in udp.parameters) or 'none'})")
        if dim in spec.parameters:
            raise InvalidArgument(f"parameter {dim!r} is the dimension: give its values in dimension.values only")
        values = spec.dimension_values
        if not isinstance(values, list) or not values:
            raise InvalidArgument("dimension.values needs at least one value")
        if len(values) > self.max_dimension_values:
            raise ResourceExhausted(exceeded("MAX_DIMENSION_VALUES", self.max_dimension_values,
                                             f"dimension.values has {len(values)} values"),
                                    error_code="TOO_MANY_DIMENSION_VALUES")
        base = validate_arguments(udp, spec.parameters, provided=[dim])
        converted: list[Any] = []
        problems: list[str] = []
        for i, value in enumerate(values):
            try:
                converted.append(coerce_value(dim_param, value))
            except ValueError as exc:
                problems.append(f"dimension.values[{i}]: {exc}")
        if problems:
            more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
            raise InvalidArgument(f"invalid values for parameter {dim!r}: " + "; ".join(problems[:5]) + more)

        await self._prepare_credentials(caller, candidates)
        cid = correlation_id.get() or ""
        async with self.pool.acquire() as conn, conn.transaction():
            await self._check_in_flight(conn, caller)
            task = await conn.fetchrow(
                "INSERT INTO upscale_tasks (title, label, service, parameters, format, dimension_name, correlation_id,"
                " process_id, job_count, max_attempts, owner, job_counts, max_costs)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING *",
                title, spec.label, service, spec.parameters, fmt, dim, cid, udp.id, len(values), max_attempts,
                caller.user_id, {"created": len(values)}, max_costs)
            assert task is not None  # INSERT ... RETURNING returns its row
            rows = await conn.fetch(
                "INSERT INTO unit_jobs (task_id, seq, title, label, service, parameters, format, tag,"
                " backend, process_id, submit_arguments, owner, candidates)"
                " SELECT $1, u.n, $2 || ' - Processing Job ' || u.n, $3, $4, $5::jsonb ||"
                " jsonb_build_object($6::text, u.v), $7, 'uj-' || gen_random_uuid(), $8, $9, $10::jsonb ||"
                " jsonb_build_object($6::text, u.sv), $13, $14"
                " FROM unnest($11::jsonb[], $12::jsonb[]) WITH ORDINALITY AS u(v, sv, n)"
                " RETURNING id, seq, tag",
                task["id"], title, spec.label, service, spec.parameters, dim, fmt, backend, udp.id, base, values,
                converted, caller.user_id, several)
            await jobs.submit_new(conn, [
                {"id": job["id"], "task_id": task["id"], "service": service, "format": fmt, "attempts": 0,
                 "submit_arguments": {**base, dim: converted[job["seq"] - 1]}, "process_id": udp.id,
                 "title": f"{title} - Processing Job {job['seq']}", "tag": job["tag"]} for job in rows], cid)
        return task

    @audited("job.create", "job")
    async def create_job(self, spec: JobSpec, caller: Principal) -> asyncpg.Record:
        """Validate and store a standalone unit job (no task) and its outbox row."""
        checked = await self.check_job(spec)
        title, service, candidates, udp, fmt, arguments = (checked.title, checked.service, checked.candidates,
                                                           checked.udp, checked.format, checked.arguments)
        backend, several = backend_columns(candidates)
        await self._prepare_credentials(caller, candidates)
        cid = correlation_id.get() or ""
        async with self.pool.acquire() as conn, conn.transaction():
            await self._check_in_flight(conn, caller)
            job = await conn.fetchrow(
                "INSERT INTO unit_jobs (task_id, seq, title, label, service, parameters, format, tag, backend,"
                " process_id, submit_arguments, owner, candidates) VALUES (NULL, 1, $1, $2, $3, $4, $5,"
                " 'uj-' || gen_random_uuid(), $6, $7, $8, $9, $10) RETURNING *",
                title, spec.label, service, spec.parameters, fmt, backend, udp.id, arguments, caller.user_id,
                several)
            assert job is not None  # INSERT ... RETURNING returns its row
            await jobs.submit_new(conn, [job], cid)
        return job

    # ---- read -------------------------------------------------------------------------------------------

    @admin_read("task")
    async def get_task(self, task_id: int, caller: Principal) -> TaskView:
        """The caller's task and its jobs (ordered by seq), read in one snapshot."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            task = await conn.fetchrow("SELECT * FROM upscale_tasks WHERE id = $1 AND ($2::text IS NULL OR owner = $2)",
                                       task_id, caller.owner_filter)
            if task is None:
                raise _task_not_found(task_id)
            jobs = await conn.fetch(f"SELECT {_JOB_COLUMNS} FROM unit_jobs WHERE task_id = $1 ORDER BY seq, id",
                                    task_id)
        return TaskView(task, list(jobs))

    @admin_read("task")
    async def task_exists(self, task_id: int, caller: Principal) -> asyncpg.Record:
        """The caller's task row (NotFound for another user's)."""
        task = await self.pool.fetchrow(
            "SELECT * FROM upscale_tasks WHERE id = $1 AND ($2::text IS NULL OR owner = $2)", task_id,
            caller.owner_filter)
        if task is None:
            raise _task_not_found(task_id)
        return task

    @admin_read("job")
    async def get_job(self, job_id: int, caller: Principal) -> asyncpg.Record:
        """The caller's unit job row (NotFound for another user's)."""
        job = await self.pool.fetchrow("SELECT * FROM unit_jobs WHERE id = $1 AND ($2::text IS NULL OR owner = $2)",
                                       job_id, caller.owner_filter)
        if job is None:
            raise _job_not_found(job_id)
        return job

    async def list_tasks(self, statuses: list[str], page_size: int, page_token: str, caller: Principal
                         ) -> tuple[list[asyncpg.Record], dict[int, dict[str, int]], str]:
        """A page of the caller's tasks, newest first: (rows, counts per task, next page token or "")."""
        unknown = [s for s in statuses if s not in TASK_STATUSES]
        if unknown:
            raise InvalidArgument(f"unknown task status {unknown[0]!r}; one of {', '.join(TASK_STATUSES)}")
        if page_size < 0:
            raise InvalidArgument("page_size must not be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        before = decode_page_token(page_token)
        rows = await self.pool.fetch(
            "SELECT * FROM upscale_tasks WHERE ($1::text[] IS NULL OR status = ANY($1::text[]))"
            " AND ($2::bigint IS NULL OR id < $2) AND ($4::text IS NULL OR owner = $4) ORDER BY id DESC LIMIT $3",
            statuses or None, before, size + 1, caller.owner_filter)
        next_token = encode_page_token(rows[size - 1]["id"]) if len(rows) > size else ""
        rows = rows[:size]
        # The jobs-per-status `upscaling.jobs` keeps on each task row; counted only for a task without them.
        counts: dict[int, dict[str, int]] = {r["id"]: dict(r["job_counts"] or {}) for r in rows}
        uncounted = [r["id"] for r in rows if r["job_counts"] is None]
        if uncounted:
            for r in await self.pool.fetch(
                    "SELECT task_id, status, count(*) AS n FROM unit_jobs WHERE task_id = ANY($1::bigint[])"
                    " GROUP BY task_id, status", uncounted):
                counts[r["task_id"]][r["status"]] = r["n"]
        return list(rows), counts, next_token

    async def jobs_status(self, include_tasks: bool, include_jobs: bool, caller: Principal, limit: int = 1000
                          ) -> dict[str, list[asyncpg.Record]]:
        """The caller's recent tasks and standalone jobs, newest first."""
        result: dict[str, list[asyncpg.Record]] = {}
        if include_tasks:
            result["upscaling_tasks"] = list(await self.pool.fetch(
                "SELECT * FROM upscale_tasks WHERE ($2::text IS NULL OR owner = $2) ORDER BY id DESC LIMIT $1",
                limit, caller.owner_filter))
        if include_jobs:
            result["processing_jobs"] = list(await self.pool.fetch(
                f"SELECT {_JOB_COLUMNS} FROM unit_jobs WHERE task_id IS NULL AND ($2::text IS NULL OR owner = $2)"
                " ORDER BY id DESC LIMIT $1", limit, caller.owner_filter))
        return result

    async def job_results(self, job_id: int, caller: Principal) -> dict[str, Any]:
        """The stored STAC of the caller's finished job (the backend is never called)."""
        job = await self.get_job(job_id, caller)
        if job["status"] != "finished":
            raise FailedPrecondition(f"unit job {job_id} is {job['status']}, results exist only once it is finished",
                                     error_code="JOB_NOT_FINISHED")
        if not job["results"]:
            raise FailedPrecondition(f"the results of unit job {job_id} are not stored yet; retry shortly",
                                     error_code="RESULTS_NOT_AVAILABLE")
        return job["results"]

    async def job_logs(self, job_id: int, caller: Principal) -> list[asyncpg.Record]:
        """The stored error log entries of the caller's job, one row per failed backend job, oldest first."""
        await self.get_job(job_id, caller)
        return list(await self.pool.fetch(
            "SELECT backend_job_id, attempt, entries FROM job_logs WHERE job_id = $1 ORDER BY fetched, attempt",
            job_id))

    @admin_read("task")
    async def task_results(self, task_id: int, caller: Principal) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
        """The caller's task and its finished jobs with their results."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            task = await conn.fetchrow("SELECT * FROM upscale_tasks WHERE id = $1 AND ($2::text IS NULL OR owner = $2)",
                                       task_id, caller.owner_filter)
            if task is None:
                raise _task_not_found(task_id)
            jobs = await conn.fetch(
                "SELECT id, title, status, parameters, backend_job_id, backend, results, updated FROM unit_jobs"
                " WHERE task_id = $1 AND status = 'finished' ORDER BY seq, id", task_id)
        return task, list(jobs)

    async def describe(self, label: str, service: Any) -> Udp:
        """The UDP of a service (label checked, endpoint not required for openEO). An `ogc_api_process` service
        names its process by URL, or by id with the server's endpoint (then the label must match its platform)."""
        _check_label(label)
        application = service.get("application") if isinstance(service, dict) else None
        if not isinstance(application, str) or not application:
            raise InvalidArgument("service.application is required (the URL of the UDP JSON, or of the OGC process)")
        endpoint = service.get("endpoint") if isinstance(service, dict) else None
        if isinstance(endpoint, str) and endpoint and (label == OGC_API_PROCESS or self.backends.find(endpoint)):
            return (await self._check_service(label, service))[2]
        if label == OGC_API_PROCESS:
            if not application.startswith(("http://", "https://")):
                raise InvalidArgument("service.endpoint is required when service.application is an OGC process id")
            url = application
            for backend in self.backends.configs:  # a process of a configured server: fetched where it is reached
                if backend.platform == OGC_API_PROCESS:
                    with contextlib.suppress(InvalidArgument):
                        url = ogc_process_url(backend, application)
                        break
            return await self.udps.get(url, ogc=True)
        return await self.udps.get(application)

    # ---- cancel / retry ---------------------------------------------------------------------------------

    @audited("task.cancel", "task")
    async def cancel_task(self, task_id: int, caller: Principal) -> None:
        """Request cancellation: unsubmitted jobs become canceled now, submitted ones are stopped by the monitor."""
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                task = await conn.fetchrow("SELECT * FROM upscale_tasks WHERE id = $1 FOR UPDATE", task_id)
                if task is None or not _owned(task, caller):
                    raise _task_not_found(task_id)
                if task["status"] in TERMINAL_JOB_STATUSES:
                    raise FailedPrecondition(f"upscale task {task_id} is already {task['status']}",
                                             error_code="TASK_ALREADY_TERMINAL")
                events = await jobs.request_task_cancel(conn, task_id)
                await outbox.enqueue_events(conn, events)

    @audited("task.retry", "task")
    async def retry_failed(self, task_id: int, caller: Principal) -> int:
        """Put every failed job of a task back to `created` with a new tag and a new outbox row."""
        if self.credentials is not None:
            # The owner's own backend credentials are renewed first (a new token exchange, or a check that a
            # refresh token is registered), so the retried jobs do not fail again for want of them.
            task = await self.pool.fetchrow("SELECT owner, service FROM upscale_tasks WHERE id = $1", task_id)
            if task is not None and task["owner"] == caller.user_id:
                await self.credentials.prepare_again(caller, (task["service"] or {}).get("endpoint"))
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                task = await conn.fetchrow("SELECT * FROM upscale_tasks WHERE id = $1 FOR UPDATE", task_id)
                if task is None or not _owned(task, caller):
                    raise _task_not_found(task_id)
                if task["cancel_requested"]:
                    raise FailedPrecondition(f"upscale task {task_id} was canceled; its jobs cannot be retried",
                                             error_code="TASK_CANCELED")
                retried, events = await jobs.retry_failed(conn, task_id, correlation_id.get() or "")
                await outbox.enqueue_events(conn, events)
        return retried

    @audited("job.cancel", "job")
    async def cancel_job(self, job_id: int, caller: Principal) -> asyncpg.Record:
        """Cancel one unit job (task row locked first when it belongs to one)."""
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                task_id = await conn.fetchval("SELECT task_id FROM unit_jobs WHERE id = $1", job_id)
                if task_id is not None:
                    await conn.execute("SELECT 1 FROM upscale_tasks WHERE id = $1 FOR UPDATE", task_id)
                job = await conn.fetchrow("SELECT * FROM unit_jobs WHERE id = $1 FOR UPDATE", job_id)
                if job is None or not _owned(job, caller):
                    raise _job_not_found(job_id)
                if job["status"] in TERMINAL_JOB_STATUSES:
                    raise FailedPrecondition(f"unit job {job_id} is already {job['status']}",
                                             error_code="JOB_ALREADY_TERMINAL")
                await outbox.enqueue_events(conn, await jobs.request_job_cancel(conn, job))
                job = await conn.fetchrow("SELECT * FROM unit_jobs WHERE id = $1", job_id)
        assert job is not None  # locked above: it cannot have gone
        return job

