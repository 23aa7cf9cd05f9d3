"""Backend calls of the monitor through the `openeo` client (synchronous: run them in worker threads).

Every function counts the HTTP requests it makes in a `CallCounter`, so a cycle can report its cost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openeo
from openeo.rest import OpenEoApiPlainError

from upscaling import openeo_conn
from upscaling.backends import BackendConfig

T = TypeVar("T")


@dataclass
class CallCounter:
    """Backend HTTP calls of one cycle, by kind (thread-safe)."""

    listing: int = 0
    job_gets: int = 0
    results: int = 0
    logs: int = 0
    stops: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, kind: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, kind, getattr(self, kind) + n)

    @property
    def total(self) -> int:
        return self.listing + self.job_gets + self.results + self.logs + self.stops

    def by_kind(self) -> dict[str, int]:
        return {"listing": self.listing, "job_gets": self.job_gets, "results": self.results, "logs": self.logs,
                "stops": self.stops}

    def as_log(self) -> dict[str, int]:
        return {"backend_calls": self.total, "listing_calls": self.listing, "job_gets": self.job_gets,
                "result_fetches": self.results, "log_fetches": self.logs, "stop_calls": self.stops}


def _call(backend: BackendConfig, timeout_s: float, fn: Callable[[openeo.Connection], T]) -> T:
    """Run `fn` on this thread's connection; on 401/403 re-authenticate once."""
    conn = openeo_conn.connect(backend, timeout_s)
    try:
        return fn(conn)
    except OpenEoApiPlainError as exc:
        if exc.http_status_code not in (401, 403):
            raise
        openeo_conn.forget(backend)
        return fn(openeo_conn.connect(backend, timeout_s))


def _next_href(page: dict[str, Any]) -> str | None:
    for link in page.get("links") or ():
        if isinstance(link, dict) and link.get("rel") == "next" and link.get("href"):
            return str(link["href"])
    return None


def list_jobs(backend: BackendConfig, timeout_s: float, page_size: int, wanted: set[str],
              calls: CallCounter) -> dict[str, dict[str, Any]]:
    """Page through `GET /jobs?limit=page_size` (following rel=next) until every wanted job id was seen or
    the pages end; returns the listing entries of the wanted jobs by id."""
    found: dict[str, dict[str, Any]] = {}
    path: str = "/jobs"
    params: dict[str, Any] | None = {"limit": page_size}
    while len(found) < len(wanted):
        def fetch(conn: openeo.Connection, path: str = path, params: dict[str, Any] | None = params) -> dict:
            return conn.get(path, params=params, expected_status=200).json()

        page = _call(backend, timeout_s, fetch)
        calls.add("listing")
        for job in page.get("jobs") or ():
            job_id = job.get("id")
            if job_id in wanted:
                found[job_id] = job
        href = _next_href(page)
        if href is None:
            break
        path, params = href, None
    return found


def describe(backend: BackendConfig, timeout_s: float, job_id: str, calls: CallCounter) -> dict[str, Any] | None:
    """`GET /jobs/{id}`; None when the backend does not know the job (404)."""
    calls.add("job_gets")
    try:
        return _call(backend, timeout_s, lambda conn: conn.job(job_id).describe())
    except OpenEoApiPlainError as exc:
        if exc.http_status_code == 404:
            return None
        raise


def results_metadata(backend: BackendConfig, timeout_s: float, job_id: str, calls: CallCounter) -> dict[str, Any]:
    """The STAC results metadata of a finished job (`GET /jobs/{id}/results`)."""
    calls.add("results")
    return _call(backend, timeout_s, lambda conn: conn.job(job_id).get_results().get_metadata())


def error_message(backend: BackendConfig, timeout_s: float, job_id: str, calls: CallCounter) -> str | None:
    """The message of the last error-level log entry of a job (`GET /jobs/{id}/logs?level=error`), if any."""
    calls.add("logs")
    entries = _call(backend, timeout_s, lambda conn: list(conn.job(job_id).logs(level="error")))
    for entry in reversed(entries):
        if str(entry.get("level", "")).lower() == "error" and entry.get("message"):
            return str(entry["message"])
    return None


def stop(backend: BackendConfig, timeout_s: float, job_id: str, calls: CallCounter) -> None:
    """Cancel a job on the backend (`DELETE /jobs/{id}/results`)."""
    calls.add("stops")
    _call(backend, timeout_s, lambda conn: conn.job(job_id).stop())
