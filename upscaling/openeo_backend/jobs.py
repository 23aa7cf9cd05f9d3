"""Batch-job operations on a backend. Each takes the backend, the client timeout and the backend account whose
credentials it uses (`account`, default the service account; a job's owner's account for backends with per-user
credentials), runs through `connection.call` (typed errors, one re-authentication) and is blocking: call it from
a worker thread.

A unit job's backend job carries the job's tag in its description (`tag_marker`), so a job whose create request
lost its answer can be found again (`find_job_by_tag`) instead of created twice.

Each operation dispatches on the backend's platform: an `ogc_api_process` backend is served by `ogc_processes`
(execute starts the job: `create_job` executes, `start_job` does nothing; results become STAC-like JSON; OGC
backends use the service account's `none`/`basic` credentials).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from upscaling.backends import OGC_API_PROCESS, BackendConfig
from upscaling.jobs.messages import openeo_format
from upscaling.openeo_backend import connection, ogc_processes, paging
from upscaling.openeo_backend.connection import SERVICE, Account
from upscaling.openeo_backend.errors import BackendError, BackendPermanentError


def _ogc(backend: BackendConfig) -> bool:
    return backend.platform == OGC_API_PROCESS


def tag_marker(tag: str) -> str:
    """The marker put in a backend job's description so the job can be found again."""
    return f"[{tag}]"


@dataclass(frozen=True)
class JobSpec:
    """What a backend job is created from: the UDP call and the job's metadata."""

    process_id: str
    namespace: str | None
    arguments: dict[str, Any]
    title: str
    description: str
    format: str = ""
    tag: str = ""  # the unit job's tag (in `description` too; OGC backends carry it in their `tag_input`)


@dataclass
class Listing:
    """What `list_jobs` found: the listing entries of the wanted jobs by id, and the pages it read."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pages: int = 0


def create_job(backend: BackendConfig, timeout_s: float, spec: JobSpec, account: Account = SERVICE) -> str:
    """Create (not start) a batch job calling the UDP; returns the backend job id. (OGC: execute the process,
    which starts it.)"""
    if _ogc(backend):
        return ogc_processes.execute(backend, timeout_s, spec.process_id, spec.arguments, tag_marker(spec.tag))

    def create(conn: Any) -> str:
        cube = conn.datacube_from_process(spec.process_id, namespace=spec.namespace or None, **spec.arguments)
        job = cube.create_job(title=spec.title, description=spec.description, out_format=openeo_format(spec.format))
        return str(job.job_id)

    return connection.call(backend, timeout_s, create, account)


def start_job(backend: BackendConfig, timeout_s: float, job_id: str, account: Account = SERVICE) -> None:
    """Start a created backend job (`POST /jobs/{id}/results`; OGC jobs start when executed)."""
    if _ogc(backend):
        return
    connection.call(backend, timeout_s, lambda conn: conn.job(job_id).start(), account)


def create_and_start(backend: BackendConfig, timeout_s: float, spec: JobSpec,
                     account: Account = SERVICE) -> tuple[str, BackendError | None]:
    """`create_job` then `start_job` in one go: (backend job id, None) when both succeeded, (backend job id, the
    start's error) when only the create did; a failed create raises."""
    job_id = create_job(backend, timeout_s, spec, account)
    try:
        start_job(backend, timeout_s, job_id, account)
    except BackendError as exc:
        return job_id, exc
    return job_id, None


def find_job_by_tag(backend: BackendConfig, timeout_s: float, tag: str,
                    page_size: int = 100, account: Account = SERVICE) -> tuple[str, str] | None:
    """(backend job id, openEO status) of the job whose description or title carries `tag_marker(tag)`, or
    None when no page of the listing has it."""
    marker = tag_marker(tag)
    if _ogc(backend):
        return ogc_processes.find_job(backend, timeout_s, marker, page_size)
    for page in paging.job_pages(backend, timeout_s, page_size, account):
        for job in page.get("jobs") or ():
            if marker in (job.get("description") or "") or marker in (job.get("title") or ""):
                return str(job["id"]), str(job.get("status") or "created")
    return None


def list_jobs(backend: BackendConfig, timeout_s: float, page_size: int, wanted: set[str],
              account: Account = SERVICE) -> Listing:
    """Page through the job listing until every wanted job id was seen or the pages end."""
    listing = Listing()
    if not wanted:
        return listing
    if _ogc(backend):
        for reports in ogc_processes.job_pages(backend, timeout_s, page_size):
            listing.pages += 1
            listing.jobs.update((r["id"], r) for r in reports if r["id"] in wanted)
            if len(listing.jobs) >= len(wanted):
                break
        return listing
    for page in paging.job_pages(backend, timeout_s, page_size, account):
        listing.pages += 1
        for job in page.get("jobs") or ():
            job_id = job.get("id")
            if job_id in wanted:
                listing.jobs[job_id] = job
        if len(listing.jobs) >= len(wanted):
            break
    return listing


def describe_job(backend: BackendConfig, timeout_s: float, job_id: str,
                 account: Account = SERVICE) -> dict[str, Any] | None:
    """`GET /jobs/{id}`; None when the backend does not know the job (404)."""
    if _ogc(backend):
        return ogc_processes.describe(backend, timeout_s, job_id)
    try:
        return dict(connection.call(backend, timeout_s, lambda conn: conn.job(job_id).describe(), account))
    except BackendError as exc:
        if exc.http_status == 404:
            return None
        raise


def job_status(backend: BackendConfig, timeout_s: float, job_id: str, account: Account = SERVICE) -> str:
    """The openEO status of a backend job."""
    if _ogc(backend):
        described = ogc_processes.describe(backend, timeout_s, job_id)
        if described is None:
            raise BackendPermanentError(f"{backend.endpoint}: job {job_id} not found", http_status=404)
        return str(described["status"])
    report = connection.call(backend, timeout_s, lambda conn: conn.job(job_id).describe(), account)
    return str(report.get("status") or "created")


def results_metadata(backend: BackendConfig, timeout_s: float, job_id: str,
                     account: Account = SERVICE) -> dict[str, Any]:
    """The STAC results metadata of a finished job (`GET /jobs/{id}/results`; OGC: `ogc_processes.stac_results`)."""
    if _ogc(backend):
        return ogc_processes.stac_results(backend, job_id,
                                          ogc_processes.results_document(backend, timeout_s, job_id))
    return dict(connection.call(backend, timeout_s, lambda conn: conn.job(job_id).get_results().get_metadata(),
                                     account))


# At most this many error-level entries of one failed job are kept, each message at most MAX_LOG_MESSAGE characters.
MAX_LOG_ENTRIES = 100
MAX_LOG_MESSAGE = 4000


def error_logs(backend: BackendConfig, timeout_s: float, job_id: str,
               account: Account = SERVICE) -> list[dict[str, str]]:
    """The error-level log entries of a job (`GET /jobs/{id}/logs?level=error`), oldest first, as
    `{id, level, message, code, time}` texts (the last MAX_LOG_ENTRIES of them). (OGC jobs have no logs: the
    message of the failed job's status info, as one entry.)"""
    if _ogc(backend):
        message = ogc_processes.error_message(backend, timeout_s, job_id)
        return log_entries([{"level": "error", "message": message}] if message else [])
    entries = connection.call(backend, timeout_s, lambda conn: list(conn.job(job_id).logs(level="error")),
                              account)
    return log_entries(entries)


def log_entries(entries: Any) -> list[dict[str, str]]:
    """A backend's log entries, error level only, normalized (pure)."""
    out = []
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict) or str(entry.get("level", "")).lower() != "error":
            continue
        out.append({"id": str(entry.get("id") or ""), "level": "error",
                    "message": str(entry.get("message") or "")[:MAX_LOG_MESSAGE],
                    "code": str(entry.get("code") or ""), "time": str(entry.get("time") or "")})
    return out[-MAX_LOG_ENTRIES:]


def last_error_message(entries: list[dict[str, str]]) -> str | None:
    """The message of the last error entry that has one (pure)."""
    for entry in reversed(entries):
        if entry.get("message"):
            return entry["message"]
    return None


def error_message(backend: BackendConfig, timeout_s: float, job_id: str, account: Account = SERVICE) -> str | None:
    """The message of the last error-level log entry of a job (`GET /jobs/{id}/logs?level=error`), if any."""
    return last_error_message(error_logs(backend, timeout_s, job_id, account))


def stop_job(backend: BackendConfig, timeout_s: float, job_id: str, account: Account = SERVICE) -> None:
    """Cancel a job on the backend (`DELETE /jobs/{id}/results`; OGC: dismiss, `DELETE /jobs/{id}`)."""
    if _ogc(backend):
        ogc_processes.dismiss(backend, timeout_s, job_id)
        return
    connection.call(backend, timeout_s, lambda conn: conn.job(job_id).stop(), account)
