"""A constrained backend: concurrent job limit (both answer styles) and the start-rate limit."""

from __future__ import annotations

import time

import openeo
import pytest
import requests
from local_openeo_support import LocalBackend, wait_for_status, wind_turbine_cube
from openeo.rest import OpenEoApiError


def _jobs(con: openeo.Connection, backend: LocalBackend, count: int) -> list[openeo.BatchJob]:
    return [con.create_job(wind_turbine_cube(con, backend)) for _ in range(count)]


@pytest.mark.parametrize(("status", "code"), [(400, "ConcurrentJobLimit"), (429, "TooManyRequests")])
def test_concurrent_job_limit(backend: LocalBackend, con: openeo.Connection, status: int, code: str) -> None:
    backend.configure(max_concurrent=2, concurrency_status=status, queue_seconds=0.2, run_seconds=30)
    first, second, third = _jobs(con, backend, 3)
    first.start()
    second.start()
    with pytest.raises(OpenEoApiError) as error:
        third.start()
    assert (error.value.http_status_code, error.value.code) == (status, code)
    assert third.status() == "created"
    first.stop()  # frees a slot
    third.start()
    assert third.status() in ("queued", "running")
    other_user = backend.connect("alice")  # limits are per user
    wind_turbine_cube(other_user, backend).create_job().start()
    report = backend.report()
    assert report["users"]["demo"]["rejections"] == {"concurrency": 1}
    assert report["users"]["demo"]["max_active"] == 2
    assert report["totals"]["started"] == 4


def test_finished_jobs_free_their_slot(backend: LocalBackend, con: openeo.Connection) -> None:
    backend.configure(max_concurrent=1, queue_seconds=0, run_seconds=0.2)
    first, second = _jobs(con, backend, 2)
    first.start()
    with pytest.raises(OpenEoApiError):
        second.start()
    wait_for_status(first, {"finished"})
    second.start()
    assert wait_for_status(second, {"finished"})["status"] == "finished"


def test_start_rate_limit(backend: LocalBackend, con: openeo.Connection) -> None:
    backend.configure(start_rate=2.0, start_burst=1)
    first, second, third = _jobs(con, backend, 3)
    first.start()
    with pytest.raises(OpenEoApiError) as error:
        second.start()
    assert (error.value.http_status_code, error.value.code) == (429, "TooManyRequests")
    time.sleep(0.55)
    second.start()
    headers = {"Authorization": f"Bearer {con.auth.bearer}"}
    response = requests.post(f"{backend.api}/jobs/{third.job_id}/results", headers=headers, timeout=5)
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    report = backend.report()
    assert report["users"]["demo"]["rejections"] == {"start_rate": 2}
    assert report["totals"]["started"] == 2


def test_start_burst(backend: LocalBackend, con: openeo.Connection) -> None:
    backend.configure(start_rate=0.1, start_burst=3)
    jobs = _jobs(con, backend, 4)
    for job in jobs[:3]:
        job.start()
    with pytest.raises(OpenEoApiError) as error:
        jobs[3].start()
    assert error.value.http_status_code == 429
