"""Prometheus metrics of every service: the series (all named `upscaling_*`), the state read at scrape time from
PostgreSQL and RabbitMQ, and the `/metrics` HTTP endpoint of the services without an HTTP port of their own.

Each service exports only its own group of series (see `GROUPS`), plus the client's process/Python metrics.
Counters and histograms are updated by one-line hooks where things happen; gauges of the shared state (tasks and
jobs by status, outbox backlog, queue lengths) are read when scraped, at most once per `STATE_MAX_AGE_S`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable, Iterator

import asyncpg
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from upscaling import broker
from upscaling.config import Settings
from upscaling.openeo_backend.errors import BackendError
from upscaling.statuses import JOB_STATUSES, TASK_STATUSES

log = logging.getLogger(__name__)

# Default METRICS_PORT of each service with its own metrics endpoint (the gateway serves /metrics on its HTTP port).
DEFAULT_PORTS = {"tiler": 9101, "dispatcher": 9102, "monitor": 9103}
# The shared state is read at most this often, however many scrapers there are.
STATE_MAX_AGE_S = 1.0
STATE_TIMEOUT_S = 5.0

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_CALL_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000)

# --- dispatcher ----------------------------------------------------------------------------------------------
SUBMISSIONS = Counter("upscaling_submissions", "Unit job submissions by backend and outcome (submitted, failed)",
                      ["backend", "outcome"], registry=None)
SUBMISSION_SECONDS = Histogram(
    "upscaling_submission_seconds",
    "Time from reserving a unit job to recording it queued: the create and start requests, retries included",
    ["backend"], buckets=_LATENCY_BUCKETS, registry=None)
BACKEND_REQUEST_SECONDS = Histogram(
    "upscaling_backend_request_seconds",
    "Duration of one backend call of the dispatcher by operation (create_and_start = create + start in one go)",
    ["backend", "call"], buckets=_LATENCY_BUCKETS, registry=None)
DEAD_LETTERS = Counter("upscaling_dead_letters",
                       "Dead letters handled, by decision (republished, failed, dropped, obsolete)", ["decision"],
                       registry=None)
BACKEND_DRAINED = Gauge("upscaling_backend_drained",
                        "1 while this dispatcher sends no new jobs to the backend (drained after transient errors)",
                        ["backend"], registry=None)
DELIVERY_FAILURES = Counter("upscaling_delivery_failures",
                            "Job messages whose handling failed unexpectedly (counted per job in PostgreSQL)",
                            registry=None)
# --- dispatcher and monitor ----------------------------------------------------------------------------------
BACKEND_ERRORS = Counter(
    "upscaling_backend_errors",
    "Failed backend calls by kind (limit, transient, auth, permanent) and openEO error code / HTTP status",
    ["backend", "kind", "code"], registry=None)
RETRIES = Counter("upscaling_retries",
                  "Retries: dispatcher retries of backend calls (limit, transient, auth) and monitor resubmissions "
                  "of failed backend jobs (resubmit)", ["backend", "reason"], registry=None)
# --- monitor -------------------------------------------------------------------------------------------------
CYCLE_SECONDS = Histogram("upscaling_monitor_cycle_seconds", "Duration of one monitor cycle of a backend",
                          ["backend"], buckets=_LATENCY_BUCKETS, registry=None)
CYCLE_CALLS = Histogram("upscaling_monitor_cycle_backend_calls", "Backend HTTP calls of one monitor cycle",
                        ["backend"], buckets=_CALL_BUCKETS, registry=None)
BACKEND_CALLS = Counter("upscaling_monitor_backend_calls",
                        "Backend HTTP calls of the monitor by kind (listing, job_gets, results, logs, stops)",
                        ["backend", "kind"], registry=None)
MONITOR_LOCK_HELD = Gauge("upscaling_monitor_lock_held", "1 while this monitor replica polls the backend",
                          ["backend"], registry=None)
JOB_CHANGES = Counter("upscaling_monitor_job_changes",
                      "Job changes recorded by the monitor, by new status (resubmitted: sent again)",
                      ["status"], registry=None)
RECONCILED = Counter("upscaling_reconciled",
                     "Unit jobs nothing was moving that the reconciler published again, by reason "
                     "(no_message, lease_expired, created_not_started)", ["reason"], registry=None)
RECONCILER_LOCK_HELD = Gauge("upscaling_reconciler_lock_held", "1 on the monitor replica running the reconciler",
                             registry=None)
# --- gateway -------------------------------------------------------------------------------------------------
EVENTS_RECEIVED = Counter("upscaling_events_received", "Status events the gateway received from the broker",
                          registry=None)
EVENTS_FANNED_OUT = Counter("upscaling_events_fanned_out",
                            "Status events handed to watchers (one per event and watcher)", registry=None)
WATCHERS = Gauge("upscaling_watchers", "Watchers connected (grpc: WatchTask streams, websocket: WebSockets)",
                 ["kind"], registry=None, multiprocess_mode="livesum")
SYNC_JOBS = Counter("upscaling_sync_jobs", "Synchronous jobs (POST /sync_jobs, RunSyncJob) that reached a backend, by "
                    "backend and outcome (ok, or the error code answered)", ["backend", "outcome"], registry=None)
SYNC_SECONDS = Histogram("upscaling_sync_job_seconds", "Duration of the backend call of a synchronous job",
                         ["backend"], buckets=_LATENCY_BUCKETS, registry=None)
OUTBOX_PUBLISHED = Counter("upscaling_outbox_published",
                           "Outbox rows (job messages, status events) this process's relay published (confirmed)",
                           registry=None)
# --- tiler ---------------------------------------------------------------------------------------------------
TILER_REQUESTS = Counter("upscaling_tiler_requests", "TileAoi calls by outcome (ok, error)", ["outcome"],
                         registry=None)
TILES = Counter("upscaling_tiles", "Tiles returned by TileAoi", registry=None)
TILER_SECONDS = Histogram("upscaling_tiler_seconds", "Duration of TileAoi calls", buckets=_LATENCY_BUCKETS,
                          registry=None)

GROUPS: dict[str, tuple[Collector, ...]] = {
    "dispatcher": (SUBMISSIONS, SUBMISSION_SECONDS, BACKEND_REQUEST_SECONDS, BACKEND_ERRORS, RETRIES, DEAD_LETTERS,
                   DELIVERY_FAILURES, OUTBOX_PUBLISHED, BACKEND_DRAINED),
    "monitor": (CYCLE_SECONDS, CYCLE_CALLS, BACKEND_CALLS, MONITOR_LOCK_HELD, JOB_CHANGES, BACKEND_ERRORS,
                RETRIES, RECONCILED, RECONCILER_LOCK_HELD, OUTBOX_PUBLISHED),
    "relay": (OUTBOX_PUBLISHED,),
    "gateway": (EVENTS_RECEIVED, EVENTS_FANNED_OUT, WATCHERS, SYNC_JOBS, SYNC_SECONDS, BACKEND_ERRORS),
    "tiler": (TILER_REQUESTS, TILES, TILER_SECONDS),
}
for _kind in ("grpc", "websocket"):
    WATCHERS.labels(_kind)  # exported as 0 before the first watcher

_registered: set[int] = set()


def register(service: str, *extra: Collector) -> None:
    """Export the series of `service` (and `extra` collectors) from this process; idempotent."""
    for collector in (*GROUPS.get(service, ()), *extra):
        if id(collector) not in _registered:
            REGISTRY.register(collector)
            _registered.add(id(collector))


# --- hooks ---------------------------------------------------------------------------------------------------

def backend_error(backend: str, error: BackendError) -> None:
    """Count a failed backend call by its kind and the backend's error code (else the HTTP status)."""
    BACKEND_ERRORS.labels(backend, error.kind.value, error.label).inc()


def submitted(backend: str, started: float) -> None:
    """Count a submission recorded as queued, `started` (time.monotonic()) when its job was reserved."""
    SUBMISSIONS.labels(backend, "submitted").inc()
    SUBMISSION_SECONDS.labels(backend).observe(time.monotonic() - started)


def backend_call(backend: str, call: str, started: float) -> None:
    """Time one backend call of the dispatcher (`call`: the operation's name; `started`: time.perf_counter())."""
    BACKEND_REQUEST_SECONDS.labels(backend, call).observe(time.perf_counter() - started)


def monitor_cycle(backend: str, duration_s: float, calls: dict[str, int], resubmitted: int) -> None:
    """Record one monitor cycle of a backend (`calls`: HTTP calls by kind)."""
    CYCLE_SECONDS.labels(backend).observe(duration_s)
    CYCLE_CALLS.labels(backend).observe(sum(calls.values()))
    for kind, n in calls.items():
        if n:
            BACKEND_CALLS.labels(backend, kind).inc(n)
    if resubmitted:
        RETRIES.labels(backend, "resubmit").inc(resubmitted)


def job_changes(statuses: dict[str, int]) -> None:
    """Count the job changes the monitor recorded, by new status."""
    for status, n in statuses.items():
        JOB_CHANGES.labels(status).inc(n)


# --- shared state read at scrape time ------------------------------------------------------------------------

_TASKS_SQL = "SELECT status, count(*) AS n FROM upscale_tasks GROUP BY status"
_JOBS_SQL = "SELECT status, count(*) AS n FROM unit_jobs GROUP BY status"
_OUTBOX_SQL = """
SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created)), 0)::float8 AS age
FROM outbox WHERE sent_at IS NULL
"""


class ClusterState(Collector):
    """Gauges of the state every replica shares: tasks and jobs by status and the outbox backlog (from PostgreSQL,
    with `pool`), job queue lengths (from RabbitMQ, with `amqp`). Every replica exports the same values: aggregate
    them with max(), not sum()."""

    def __init__(self, pool: asyncpg.Pool | None = None, amqp: AbstractRobustConnection | None = None,
                 topology: broker.Topology | None = None) -> None:
        self.pool = pool
        self.amqp = amqp
        self.topology = topology
        self._channel: AbstractChannel | None = None
        self._read_at = -1e9
        self._lock = asyncio.Lock()
        self.tasks: dict[str, int] = {}
        self.jobs: dict[str, int] = {}
        self.outbox: tuple[int, float] | None = None
        self.queues: dict[str, tuple[int, int]] = {}  # queue -> (messages ready, consumers)

    async def refresh(self) -> None:
        """Read the state again unless it was read less than STATE_MAX_AGE_S ago (errors keep the old values)."""
        async with self._lock:
            if time.monotonic() - self._read_at < STATE_MAX_AGE_S:
                return
            try:
                await asyncio.wait_for(self._read(), STATE_TIMEOUT_S)
            except Exception as exc:
                log.warning("cannot read the state for the metrics: %s", exc)
            self._read_at = time.monotonic()

    async def _read(self) -> None:
        if self.pool is not None:
            async with self.pool.acquire() as conn:
                self.tasks = {r["status"]: r["n"] for r in await conn.fetch(_TASKS_SQL)}
                self.jobs = {r["status"]: r["n"] for r in await conn.fetch(_JOBS_SQL)}
                row = await conn.fetchrow(_OUTBOX_SQL)  # an aggregate: always one row
                if row is not None:
                    self.outbox = (row["n"], row["age"])
        if self.amqp is not None and self.topology is not None:
            if self._channel is None or self._channel.is_closed:
                self._channel = await self.amqp.channel()
            for name, queue in (("jobs", self.topology.jobs_queue), ("dead", self.topology.dead_letter_queue)):
                self.queues[name] = await broker.queue_counts(self._channel, queue)

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.pool is not None:
            yield _by_status("upscaling_tasks", "Upscale tasks by status", TASK_STATUSES, self.tasks)
            yield _by_status("upscaling_jobs", "Unit jobs by status", JOB_STATUSES, self.jobs)
            if self.outbox is not None:
                yield GaugeMetricFamily("upscaling_outbox_backlog", "Job messages in the outbox not yet published",
                                        value=self.outbox[0])
                yield GaugeMetricFamily("upscaling_outbox_oldest_seconds",
                                        "Age of the oldest job message in the outbox not yet published",
                                        value=self.outbox[1])
        if self.queues:
            messages = GaugeMetricFamily("upscaling_queue_messages",
                                         "Messages ready in a queue (jobs: the job queue lag; dead: dead letters)",
                                         labels=["queue"])
            consumers = GaugeMetricFamily("upscaling_queue_consumers", "Consumers of a queue", labels=["queue"])
            for name, (ready, count) in self.queues.items():
                messages.add_metric([name], ready)
                consumers.add_metric([name], count)
            yield messages
            yield consumers


def _by_status(name: str, doc: str, statuses: Iterable[str], counts: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["status"])
    for status in dict.fromkeys([*statuses, *counts]):
        family.add_metric([status], counts.get(status, 0))
    return family


def multiprocess() -> bool:
    """Whether this process is one of several sharing their metrics (PROMETHEUS_MULTIPROC_DIR, set by a
    multi-worker gateway before anything was imported)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def _multiprocess_registry(state: ClusterState | None) -> CollectorRegistry:
    """Counters, histograms and gauges summed over every worker, the shared state, and the process series of the
    worker answering."""
    from prometheus_client import multiprocess as mp

    registry = CollectorRegistry()
    mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    if state is not None:
        registry.register(state)
    return registry


async def render(state: ClusterState | None = None) -> bytes:
    """The exposition text of this process's registry (the shared state read first)."""
    if state is not None:
        await state.refresh()
    if multiprocess():
        return generate_latest(_multiprocess_registry(state))
    return generate_latest(REGISTRY)


# --- the /metrics endpoint of the tiler, dispatcher and monitor ----------------------------------------------

def metrics_port(settings: Settings, service: str) -> int:
    """METRICS_PORT, or the service's default port when it is not set (0: no metrics endpoint)."""
    return settings.metrics_port if settings.metrics_port >= 0 else DEFAULT_PORTS.get(service, 0)


class MetricsServer:
    """`GET /metrics` over HTTP (aiohttp, on the service's event loop)."""

    def __init__(self, host: str, port: int, state: ClusterState | None = None) -> None:
        self.host = host
        self.port = port
        self.state = state
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await render(self.state)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        """Listen (nothing when the port is 0; a port in use is logged and leaves the service without metrics)."""
        if self.port == 0:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:
            log.warning("metrics endpoint not started: cannot listen on %s:%s (%s)", self.host, self.port, exc)
            await runner.cleanup()
            return
        self._runner = runner
        log.info("metrics listening", extra={"metrics_port": self.port})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.state is not None:
            await self.state.close()


async def start_server(settings: Settings, service: str, state: ClusterState | None = None) -> MetricsServer:
    """Register the series of `service` (and `state`) and serve them on its metrics port."""
    register(service, *([state] if state is not None else []))
    server = MetricsServer(settings.metrics_host, metrics_port(settings, service), state)
    await server.start()
    return server
