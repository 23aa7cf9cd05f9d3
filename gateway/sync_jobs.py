"""Synchronous jobs (`POST /sync_jobs`, gRPC `RunSyncJob`): one UDP call run at once on the backend (openEO
`POST /result`) and its result file returned directly, as APEx does, for AOIs small enough to answer while the
caller waits.

The request is validated exactly like `POST /unit_jobs` (`TaskService.check_job`); then the AOI (every bounding-box
and GeoJSON parameter of the UDP, defaults included) must be at most `SYNC_MAX_AREA_KM2`, checked before anything
reaches the backend, and the result at most `SYNC_MAX_BYTES`. Nothing is stored but the audit entry.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from pyproj import Geod, Transformer
from shapely.geometry import box, shape

from gateway.audit import AuditLog, audited
from gateway.auth import Principal
from gateway.tasks import JobSpec, TaskService
from gateway.udp import Udp
from upscaling import metrics
from upscaling.config import from_env
from upscaling.errors import InvalidArgument, ResourceExhausted, ServiceError, TooManyRequests, Unavailable
from upscaling.limits import exceeded
from upscaling.openeo_backend import connection as backend_connection
from upscaling.openeo_backend import errors as backend_errors
from upscaling.openeo_backend import jobs as backend_jobs
from upscaling.openeo_backend import sync as backend_sync

_GEOD = Geod(ellps="WGS84")
_WGS84 = (None, 4326, "4326", "EPSG:4326", "epsg:4326")


@dataclass(frozen=True)
class SyncLimits:
    """Limits of synchronous jobs; each field names its variable in `ENV` (0 switches the area/per-user ones off)."""

    max_area_km2: float = 2500.0
    max_bytes: int = 32 * 1024 * 1024
    timeout_s: float = 300.0
    max_per_user: int = 2
    max_running: int = 16


ENV: dict[str, str] = {
    "max_area_km2": "SYNC_MAX_AREA_KM2",
    "max_bytes": "SYNC_MAX_BYTES",
    "timeout_s": "SYNC_TIMEOUT_S",
    "max_per_user": "SYNC_MAX_PER_USER",
    "max_running": "SYNC_MAX_RUNNING",
}


def load_sync_limits() -> SyncLimits:
    """The limits from the environment; ValueError naming the variable when one is wrong."""
    limits = from_env(SyncLimits, ENV)
    if limits.max_area_km2 < 0 or limits.max_per_user < 0:
        raise ValueError("SYNC_MAX_AREA_KM2 and SYNC_MAX_PER_USER must not be negative")
    if limits.max_bytes < 1 or limits.timeout_s <= 0 or limits.max_running < 1:
        raise ValueError("SYNC_MAX_BYTES, SYNC_TIMEOUT_S and SYNC_MAX_RUNNING must be positive")
    return limits


# ---- the AOI's area ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _to_wgs84(crs: str) -> Transformer:
    return Transformer.from_crs(crs, "EPSG:4326", always_xy=True)


def _bbox_area_km2(value: Mapping[str, Any]) -> float:
    west, south, east, north = (float(value[k]) for k in ("west", "south", "east", "north"))
    crs = value.get("crs")
    if crs not in _WGS84:
        west, south, east, north = _to_wgs84(f"EPSG:{crs}" if isinstance(crs, int) else str(crs)).transform_bounds(
            west, south, east, north)
    return abs(_GEOD.geometry_area_perimeter(box(west, south, east, north))[0]) / 1e6


def _geojson_area_km2(value: Mapping[str, Any]) -> float:
    if value.get("type") == "FeatureCollection":
        return sum(_geojson_area_km2(f) for f in value.get("features") or [] if isinstance(f, dict))
    if value.get("type") == "Feature":
        geometry = value.get("geometry")
        return _geojson_area_km2(geometry) if isinstance(geometry, dict) else 0.0
    return abs(_GEOD.geometry_area_perimeter(shape(dict(value)))[0]) / 1e6


def aoi_area_km2(udp: Udp, arguments: Mapping[str, Any]) -> float | None:
    """The largest area (km², geodesic on WGS84) of the UDP's spatial arguments — bounding boxes (in any CRS pyproj
    knows) and GeoJSON, the parameters' defaults where not given — or None when the call has none; InvalidArgument
    when an area cannot be computed."""
    areas: list[float] = []
    for param in udp.parameters:
        if not (param.is_bbox or param.is_geojson):
            continue
        value = arguments.get(param.name, param.default)
        if not isinstance(value, dict) or "from_parameter" in value:
            continue
        try:
            if all(k in value for k in ("west", "south", "east", "north")):
                area = _bbox_area_km2(value)
            elif "type" in value:
                area = _geojson_area_km2(value)
            else:
                continue
        except Exception as exc:  # pyproj and shapely raise several types for unusable CRSs and geometries
            raise InvalidArgument(f"parameter {param.name!r}: cannot compute the area of the AOI ({exc})") from None
        if not math.isfinite(area):
            raise InvalidArgument(f"parameter {param.name!r}: the area of the AOI is not finite")
        areas.append(area)
    return max(areas) if areas else None


# ---- the service ------------------------------------------------------------------------------------------


class BadGateway(Unavailable):
    """The backend failed (5xx, connection error, refused credentials): HTTP 502, gRPC UNAVAILABLE."""

    http_status = 502
    error_code = "BACKEND_ERROR"


class BackendTimeout(ServiceError):
    """The backend did not answer in time: HTTP 504, gRPC DEADLINE_EXCEEDED."""

    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504
    error_code = "BACKEND_TIMEOUT"


def _backend_failure(exc: backend_errors.BackendError, endpoint: str) -> ServiceError:
    """What the caller is told when the backend failed a synchronous request (the backend's message kept)."""
    where = f"the openEO backend {endpoint}"
    if isinstance(exc, backend_sync.ResultTooLarge):
        size = f"{exc.size} bytes" if exc.size is not None else "larger"
        return ResourceExhausted(exceeded("SYNC_MAX_BYTES", exc.limit, f"the result of {where} is {size}; run it as "
                                          "a batch job with POST /unit_jobs or POST /upscale_tasks instead"),
                                 error_code="RESULT_TOO_LARGE")
    if isinstance(exc, backend_errors.BackendTimeoutError):
        return BackendTimeout(f"{where} did not answer in time: {exc}; run large requests as batch jobs "
                              "(POST /unit_jobs)")
    if isinstance(exc, backend_errors.BackendLimitError):
        return TooManyRequests(f"{where} is at its limit, retry later: {exc}", error_code="BACKEND_BUSY")
    if isinstance(exc, backend_errors.BackendPermanentError):
        return InvalidArgument(f"{where} refused the request: {exc}", error_code="BACKEND_REJECTED")
    if isinstance(exc, backend_errors.BackendAuthError):
        return BadGateway(f"{where} refused the service's credentials: {exc}", error_code="BACKEND_AUTH_FAILED")
    return BadGateway(f"{where} failed: {exc}")


class SyncJobs:
    """Runs synchronous jobs for callers: validated like unit jobs, limited per user and per gateway worker, audited
    (`job.sync`). The backend calls run in threads of their own (SYNC_MAX_RUNNING of them), so that long
    synchronous jobs never hold the threads other work of the gateway uses."""

    def __init__(self, tasks: TaskService, limits: SyncLimits) -> None:
        self.tasks = tasks
        self.limits = limits
        self.audit: AuditLog | None = tasks.audit
        self._running: dict[str, int] = {}
        self._threads = ThreadPoolExecutor(limits.max_running, thread_name_prefix="sync-job")

    def close(self) -> None:
        """Stop taking jobs (running backend calls end by their timeout)."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    @contextmanager
    def _slot(self, user: str) -> Iterator[None]:
        """One running synchronous job of `user` on this gateway worker: Unavailable (SYNC_BUSY) when the worker
        runs SYNC_MAX_RUNNING, TooManyRequests (TOO_MANY_SYNC_JOBS) when the user runs SYNC_MAX_PER_USER."""
        total = sum(self._running.values())
        if total >= self.limits.max_running:
            raise Unavailable(exceeded("SYNC_MAX_RUNNING", self.limits.max_running, f"this gateway runs {total} "
                                       "synchronous jobs; retry shortly"), error_code="SYNC_BUSY")
        current = self._running.get(user, 0)
        limit = self.limits.max_per_user
        if limit and current >= limit:
            raise TooManyRequests(exceeded("SYNC_MAX_PER_USER", limit, f"{current} synchronous jobs of this user "
                                           "are running"), error_code="TOO_MANY_SYNC_JOBS")
        self._running[user] = current + 1
        try:
            yield
        finally:
            left = self._running.get(user, 1) - 1
            if left > 0:
                self._running[user] = left
            else:
                self._running.pop(user, None)

    def check_area(self, udp: Udp, arguments: Mapping[str, Any]) -> None:
        """ResourceExhausted (AOI_TOO_LARGE) when the AOI is larger than SYNC_MAX_AREA_KM2."""
        limit = self.limits.max_area_km2
        area = aoi_area_km2(udp, arguments) if limit else None
        if area is not None and area > limit:
            raise ResourceExhausted(exceeded("SYNC_MAX_AREA_KM2", f"{limit:g}", f"the AOI covers {area:,.0f} km²; "
                                             "run it as a batch job with POST /upscale_tasks (one job per tile) or "
                                             "POST /unit_jobs instead"), error_code="AOI_TOO_LARGE")

    @audited("job.sync", "job")
    async def run(self, spec: JobSpec, caller: Principal) -> backend_sync.SyncResult:
        """Validate the request, check the AOI, then run it on the backend in a worker thread."""
        job = await self.tasks.check_job(spec)
        if spec.label != "openeo":  # POST /result is openEO's; other platforms run as batch jobs
            raise InvalidArgument(f"synchronous jobs run on openEO backends (label 'openeo'), not {spec.label!r}; "
                                  "use POST /unit_jobs")
        self.check_area(job.udp, job.arguments)
        # the first of several named backends (a synchronous request is not spread: it is one request)
        endpoint = job.candidates[0]
        backend = self.tasks.backends.find(endpoint)
        assert backend is not None  # check_job found it
        account = backend_connection.SERVICE
        if self.tasks.credentials is not None and backend.auth.per_user:
            # a backend that runs each user's jobs with the user's own credentials runs this one so too
            await self.tasks.credentials.prepare(caller, endpoint)
            try:
                account = await self.tasks.credentials.store.account(backend, caller.user_id)
            except backend_errors.BackendError as exc:
                raise _backend_failure(exc, endpoint) from exc
        call = backend_jobs.JobSpec(process_id=job.udp.id, namespace=job.service["application"],
                                    arguments=job.arguments, title=job.title, description="", format=job.format)
        with self._slot(caller.user_id):
            started = time.monotonic()
            try:
                # in a thread of its own, with this request's context (its correlation id goes to the backend)
                compute = functools.partial(contextvars.copy_context().run, backend_sync.compute_result, backend,
                                            self.limits.timeout_s, call, self.limits.max_bytes, account)
                result = await asyncio.get_running_loop().run_in_executor(self._threads, compute)
            except backend_errors.BackendError as exc:
                answer = _backend_failure(exc, endpoint)
                if not isinstance(exc, backend_sync.ResultTooLarge):
                    metrics.backend_error(endpoint, exc)
                metrics.SYNC_JOBS.labels(endpoint, answer.error_code).inc()
                raise answer from exc
            finally:
                metrics.SYNC_SECONDS.labels(endpoint).observe(time.monotonic() - started)
        metrics.SYNC_JOBS.labels(endpoint, "ok").inc()
        return result
