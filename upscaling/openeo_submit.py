"""Submitting unit jobs through the `openeo` client: build the UDP call, create the batch job with its tag,
find a job again by its tag, start it, and classify errors.

Every function here is synchronous and blocking: call them from worker threads only.
"""

from __future__ import annotations

import enum
from typing import Any

import openeo
import requests
from openeo.rest import OpenEoApiError, OpenEoApiPlainError

from upscaling.jobs.messages import openeo_format

# openEO error codes meaning "too many jobs right now": wait and retry, never fail.
LIMIT_CODES = frozenset({"ConcurrentJobLimit", "TooManyRequests"})


class ErrorKind(enum.Enum):
    """How the dispatcher reacts to an error of a backend call."""

    LIMIT = "limit"          # backend over a limit (429, ConcurrentJobLimit): wait and retry
    TRANSIENT = "transient"  # connection error, timeout, 5xx: retry with backoff, up to a maximum
    AUTH = "auth"            # 401/403: re-authenticate once
    PERMANENT = "permanent"  # any other 4xx: the job fails with the backend's message


def tag_marker(tag: str) -> str:
    """The marker put in a backend job's description so the job can be found again."""
    return f"[{tag}]"


def classify(exc: BaseException) -> ErrorKind:
    """The kind of an exception raised by a backend call."""
    if isinstance(exc, OpenEoApiError):
        status, code = exc.http_status_code, exc.code
    elif isinstance(exc, OpenEoApiPlainError):
        status, code = exc.http_status_code, ""
    elif isinstance(exc, requests.HTTPError) and exc.response is not None:
        status, code = exc.response.status_code, ""
    elif isinstance(exc, requests.RequestException | ConnectionError | TimeoutError):
        return ErrorKind.TRANSIENT
    else:
        return ErrorKind.PERMANENT
    if status == 429 or code in LIMIT_CODES:
        return ErrorKind.LIMIT
    if status in (401, 403):
        return ErrorKind.AUTH
    if status is None or status >= 500 or status in (408, 425):
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT


def describe_error(exc: BaseException) -> str:
    """A short message of an error for the job's `message` (the backend's code and message when it sent one)."""
    if isinstance(exc, OpenEoApiError):
        return f"{exc.code}: {exc.message}"
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def find_job_by_tag(conn: openeo.Connection, tag: str, page_size: int = 100) -> tuple[str, str] | None:
    """(backend job id, openEO status) of the job whose description or title carries `[tag]`, or None.

    Pages through `GET /jobs` following `rel=next` links (`Connection.list_jobs` returns only one page).
    """
    marker = tag_marker(tag)
    response = conn.get("/jobs", params={"limit": page_size}, expected_status=200)
    seen_pages = 0
    while True:
        body = response.json()
        for job in body.get("jobs", []):
            if marker in (job.get("description") or "") or marker in (job.get("title") or ""):
                return str(job["id"]), str(job.get("status") or "created")
        next_href = next((link.get("href") for link in body.get("links", []) if link.get("rel") == "next"), None)
        seen_pages += 1
        if not next_href or seen_pages > 100_000:
            return None
        response = conn.get(next_href, expected_status=200)


def create_job(conn: openeo.Connection, *, process_id: str, namespace: str | None, arguments: dict[str, Any],
               title: str, description: str, fmt: str) -> str:
    """Create (not start) a batch job calling the UDP with `arguments`; returns the backend job id."""
    cube = conn.datacube_from_process(process_id, namespace=namespace or None, **arguments)
    job = cube.create_job(title=title, description=description, out_format=openeo_format(fmt))
    return job.job_id


def create_only_job(conn: openeo.Connection, **kwargs: Any) -> tuple[str, None]:
    """`create_job`, as (backend job id, None)."""
    return create_job(conn, **kwargs), None


def create_and_start_job(conn: openeo.Connection, **kwargs: Any) -> tuple[str, Exception | None]:
    """`create_job` then `start_job` in one go: (backend job id, None) when both succeeded, (backend job id, the
    start's error) when only the create did; a failed create raises."""
    job_id = create_job(conn, **kwargs)
    try:
        start_job(conn, job_id)
    except Exception as exc:
        return job_id, exc
    return job_id, None


def job_status(conn: openeo.Connection, job_id: str) -> str:
    """The openEO status of a backend job."""
    return str(conn.job(job_id).describe().get("status") or "created")


def start_job(conn: openeo.Connection, job_id: str) -> None:
    """Start a created backend job (`POST /jobs/{id}/results`)."""
    conn.job(job_id).start()
