"""Batch job handlers: create, list, describe, update, delete, start, cancel, results, assets, logs."""

from __future__ import annotations

import hmac
import time
from typing import Any

from aiohttp import web

from local_openeo.backend import Backend, endpoint
from local_openeo.config import API_PREFIX
from local_openeo.errors import ApiError, body_invalid, job_locked, job_not_finished
from local_openeo.graph import analyze_process
from local_openeo.jobs import ACTIVE, CANCELED, ERROR, FINISHED, QUEUED, RUNNING, Job, rfc3339
from local_openeo.jsonio import json_response, read_object
from local_openeo.limits import LimitRejection
from local_openeo.results import ASSETS
from local_openeo.stac import results_collection

_LEVELS = {"debug": 0, "info": 1, "warning": 2, "error": 3}
_METADATA: dict[str, type | tuple[type, ...]] = {
    "title": str,
    "description": str,
    "plan": str,
    "budget": (int, float),
    "log_level": str,
    "job_options": dict,
}


def _metadata(body: dict) -> dict[str, Any]:
    """The job metadata properties present in a request body, type-checked."""
    found = {}
    for key, kinds in _METADATA.items():
        if key in body:
            value = body[key]
            if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
                raise body_invalid(f"Property '{key}' has an invalid type.")
            found[key] = value
    return found


@endpoint("create_job")
async def create_job(backend: Backend, request: web.Request) -> web.Response:
    user = backend.user(request)
    body = await read_object(request)
    info = await analyze_process(body.get("process"), backend.resolver, request.host)
    now = time.time()
    job_id, seq = backend.store.next_ids()
    job = Job(
        id=job_id, user=user, seq=seq, process=body["process"], info=info, created=now, updated=now, **_metadata(body)
    )
    backend.store.add(job)
    backend.accounting.job_created(job)
    location = f"{backend.base_url(request)}{API_PREFIX}/jobs/{job_id}"
    return web.Response(status=201, headers={"Location": location, "OpenEO-Identifier": job_id})


@endpoint("list_jobs")
async def list_jobs(backend: Backend, request: web.Request) -> web.Response:
    """Newest first; with ``limit``, a ``next`` link carries the cursor of the following page."""
    user = backend.user(request)
    try:
        limit = int(request.query["limit"]) if "limit" in request.query else None
        cursor = int(request.query["cursor"]) if "cursor" in request.query else None
        if limit is not None and limit < 1:
            raise ValueError
    except ValueError:
        raise ApiError(400, "ParameterInvalid", "'limit' must be a positive integer, 'cursor' an integer.") from None
    page, next_cursor = backend.store.page(user, limit, cursor)
    links = []
    if next_cursor is not None:
        href = f"{backend.base_url(request)}{API_PREFIX}/jobs?limit={limit}&cursor={next_cursor}"
        links.append({"rel": "next", "href": href, "type": "application/json", "title": "Next page"})
    now = time.time()
    costs = backend.settings.costs_in_listing
    return json_response({"jobs": [job.describe(now, full=False, costs=costs) for job in page], "links": links})


@endpoint("get_job")
async def get_job(backend: Backend, request: web.Request) -> web.Response:
    _, job = backend.job(request)
    return json_response(job.describe(time.time(), full=True))


@endpoint("update_job")
async def update_job(backend: Backend, request: web.Request) -> web.Response:
    _, job = backend.job(request)
    body = await read_object(request)
    now = time.time()
    status = job.status(now)
    if status in ACTIVE:
        raise job_locked(job.id, status)
    changes = _metadata(body)
    if "process" in body:
        info = await analyze_process(body["process"], backend.resolver, request.host)
        changes.update(process=body["process"], info=info)
    for key, value in changes.items():
        setattr(job, key, value)
    job.updated = now
    return web.Response(status=204)


@endpoint("delete_job")
async def delete_job(backend: Backend, request: web.Request) -> web.Response:
    user, job = backend.job(request)
    backend.store.delete(job)
    backend.accounting.deleted[user] += 1
    return web.Response(status=204)


@endpoint("start_job")
async def start_job(backend: Backend, request: web.Request) -> web.Response:
    """Queue the job unless a limit refuses; whether it will fail is decided now (seeded)."""
    user, job = backend.job(request)
    now = time.time()
    if job.status(now) in ACTIVE:
        return web.Response(status=202)  # already queued or running: ignored, as the API specifies
    active = backend.store.active_count(user, now)
    try:
        backend.limiter.check(user, active, time.monotonic())
    except LimitRejection as exc:
        backend.accounting.rejections[user][exc.reason] += 1
        raise
    settings = backend.settings
    error = job.info.extent_error
    if error is None and backend.faults.job_fails():
        error = (
            f"Simulated processing failure of job {job.id} "
            f"(job_error_fraction={settings.job_error_fraction}, seed={settings.seed})."
        )
    job.started = job.updated = now
    job.queue_s, job.run_s = settings.queue_seconds, settings.run_seconds
    job.fails, job.error_message = error is not None, error
    job.cost = settings.job_costs
    job.canceled = None
    job.starts += 1
    backend.store.activate(job)
    backend.accounting.job_started(job, active + 1)
    return web.Response(status=202)


@endpoint("cancel_job")
async def cancel_job(backend: Backend, request: web.Request) -> web.Response:
    user, job = backend.job(request)
    now = time.time()
    if job.status(now) in ACTIVE:
        job.canceled = job.updated = now
        backend.store.deactivate(job)
        backend.accounting.canceled[user] += 1
    return web.Response(status=204)


@endpoint("get_results")
async def get_results(backend: Backend, request: web.Request) -> web.Response:
    _, job = backend.job(request)
    status = job.status(time.time())
    if status == ERROR:
        raise ApiError(424, "JobFailed", job.error_message or f"Batch job {job.id} failed.")
    if status != FINISHED:
        raise job_not_finished(job.id, status)
    jobs_url = f"{backend.base_url(request)}{API_PREFIX}/jobs"
    name = ASSETS[job.info.output][0]
    asset_url = f"{jobs_url}/{job.id}/results/assets/{backend.signature(job.id, name)}/{name}"
    max_px = backend.settings.result_size
    return json_response(results_collection(job, jobs_url=jobs_url, asset_url=asset_url, max_px=max_px, status=status))


@endpoint("download_asset")
async def download_asset(backend: Backend, request: web.Request) -> web.Response:
    """A result file (signed URL, no token needed); generated on first download; HEAD and Range work."""
    job_id, name = request.match_info["job_id"], request.match_info["name"]
    job = backend.store.jobs.get(job_id)
    if job is None:
        raise ApiError(404, "JobNotFound", f"The batch job '{job_id}' does not exist.")
    valid = hmac.compare_digest(request.match_info["signature"], backend.signature(job_id, name))
    if not valid or name != ASSETS[job.info.output][0]:
        raise ApiError(404, "AssetNotFound", f"No asset '{name}' for batch job '{job_id}' at this URL.")
    status = job.status(time.time())
    if status != FINISHED or job.info.extent is None:
        raise job_not_finished(job_id, status)
    data = await backend.files.get(job.info.output, job.info.extent, backend.settings.result_size)
    backend.accounting.downloads[job.user] += 1
    headers = {"Accept-Ranges": "bytes", "Content-Type": ASSETS[job.info.output][1]}
    if request.method == "GET" and "Range" in request.headers:
        try:
            start, stop, _ = request.http_range.indices(len(data))
        except ValueError:
            start, stop = 0, 0
        if start >= stop:
            headers["Content-Range"] = f"bytes */{len(data)}"
            return web.Response(status=416, headers=headers)
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
        return web.Response(status=206, body=data[start:stop], headers=headers)
    return web.Response(body=data, headers=headers)


@endpoint("get_logs")
async def get_logs(backend: Backend, request: web.Request) -> web.Response:
    _, job = backend.job(request)
    level = request.query.get("level", "").lower() or "debug"
    if level not in _LEVELS:
        raise ApiError(400, "ParameterInvalid", "'level' must be one of error, warning, info, debug.")
    entries = job_logs(job, time.time())
    offset = request.query.get("offset")
    ids = [entry["id"] for entry in entries]
    if offset in ids:
        entries = entries[ids.index(offset) + 1 :]
    entries = [e for e in entries if _LEVELS[e["level"]] >= _LEVELS[level]]
    return json_response({"level": level, "logs": entries, "links": []})


def job_logs(job: Job, now: float) -> list[dict]:
    """Log entries of the job's current run, derived from its timestamps."""
    entries = [_log(1, "info", "Batch job created.", job.created)]
    if job.info.udps:
        entries.append(_log(2, "debug", f"Resolved remote processes: {', '.join(job.info.udps)}.", job.created))
    if job.started is None:
        return entries
    status = job.status(now)
    entries.append(_log(3, "info", f"Batch job queued (start #{job.starts}).", job.started))
    running_at = job.started + job.queue_s
    if status != QUEUED and (status != CANCELED or (job.canceled or now) >= running_at):
        entries.append(_log(4, "info", "Batch job running.", running_at))
    if status == RUNNING:
        entries.append(_log(5, "debug", f"Progress {job.progress(now, status)}%.", now))
    elif status == FINISHED:
        entries.append(_log(6, "info", f"Batch job finished: 1 asset ({ASSETS[job.info.output][0]}).", job.end))
    elif status == ERROR:
        entries.append({**_log(6, "error", job.error_message or "Batch job failed.", job.end), "code": "JobFailed"})
    elif status == CANCELED:
        entries.append(_log(6, "info", "Batch job canceled.", job.canceled or now))
    return entries


def _log(number: int, level: str, message: str, at: float) -> dict:
    return {"id": str(number), "level": level, "message": message, "time": rfc3339(at)}
