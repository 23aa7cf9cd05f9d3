"""Seeded fault injection: per-endpoint errors, delays, lost responses and failing jobs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import openeo
import pytest
import requests
from local_openeo_support import LocalBackend, wait_for_status, wind_turbine_cube
from openeo.rest import OpenEoApiError

Call = Callable[[openeo.Connection, openeo.BatchJob, Path], object]

# Each endpoint name and a client call that reaches it (given a finished job).
ENDPOINT_CALLS: dict[str, Call] = {
    "create_job": lambda con, job, tmp: con.create_job(job.describe()["process"]["process_graph"]),
    "start_job": lambda con, job, tmp: job.start(),
    "get_job": lambda con, job, tmp: job.describe(),
    "list_jobs": lambda con, job, tmp: con.list_jobs(),
    "update_job": lambda con, job, tmp: con.patch(f"/jobs/{job.job_id}", json={"title": "x"}),
    "get_results": lambda con, job, tmp: job.get_results().get_metadata(),
    "download_asset": lambda con, job, tmp: job.get_results().download_files(tmp),
    "get_logs": lambda con, job, tmp: job.logs(),
    "cancel_job": lambda con, job, tmp: job.stop(),
    "delete_job": lambda con, job, tmp: job.delete(),
    "validation": lambda con, job, tmp: con.validate_process_graph(job.describe()["process"]["process_graph"]),
    "file_formats": lambda con, job, tmp: con.get("/file_formats"),  # the client caches list_file_formats()
    "processes": lambda con, job, tmp: con.list_processes(),
    "collections": lambda con, job, tmp: con.list_collections(),
    "credentials_oidc": lambda con, job, tmp: con.get("/credentials/oidc"),
    "me": lambda con, job, tmp: con.describe_account(),
    "credentials_basic": lambda con, job, tmp: con.authenticate_basic("demo", "demo"),
    "capabilities": lambda con, job, tmp: con.capabilities() and con.get("/"),
}


@pytest.fixture
def strict(backend: LocalBackend) -> openeo.Connection:
    """A client without retries and without preflight validation: every fault is visible."""
    return backend.connect(retry=False, auto_validate=False)


@pytest.fixture
def finished_job(backend: LocalBackend, strict: openeo.Connection) -> openeo.BatchJob:
    backend.configure(queue_seconds=0, run_seconds=0)
    job = wind_turbine_cube(strict, backend).create_job(out_format="GTiff")
    job.start()
    assert wait_for_status(job, {"finished"})["status"] == "finished"
    return job


@pytest.mark.parametrize("endpoint", sorted(ENDPOINT_CALLS))
def test_every_endpoint_can_answer_503(
    backend: LocalBackend, strict: openeo.Connection, finished_job: openeo.BatchJob, endpoint: str, tmp_path: Path
) -> None:
    backend.configure(faults={endpoint: {"503": 1.0}})
    with pytest.raises(OpenEoApiError) as error:
        ENDPOINT_CALLS[endpoint](strict, finished_job, tmp_path)
    assert (error.value.http_status_code, error.value.code) == (503, "ServiceUnavailable")
    assert "Injected fault" in error.value.message
    assert list(backend.report()["faults"]) == [endpoint]


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("500", "Internal"),
        ("502", "BadGateway"),
        ("503", "ServiceUnavailable"),
        ("504", "GatewayTimeout"),
        ("429", "TooManyRequests"),
    ],
)
def test_every_status_kind(
    backend: LocalBackend, strict: openeo.Connection, finished_job: openeo.BatchJob, kind: str, code: str
) -> None:
    backend.configure(faults={"create_job": {kind: 1.0}, "get_job": {kind: 1.0}})
    for call in (lambda: finished_job.describe(), lambda: wind_turbine_cube(strict, backend).create_job()):
        with pytest.raises(OpenEoApiError) as error:
            call()
        assert (error.value.http_status_code, error.value.code) == (int(kind), code)
    report = backend.report()
    assert report["faults"] == {"create_job": {kind: 1}, "get_job": {kind: 1}}
    assert report["totals"]["created"] == 1  # only the fixture's job: an error answer creates nothing


def test_well_known_and_udp_catalogue_faults(backend: LocalBackend) -> None:
    backend.configure(faults={"well_known": {"502": 1.0}, "udp_catalogue": {"500": 1.0}})
    assert requests.get(f"{backend.url}/.well-known/openeo", timeout=5).status_code == 502
    assert requests.get(backend.udp_url(), timeout=5).status_code == 500
    assert backend.report()["faults"] == {"well_known": {"502": 1}, "udp_catalogue": {"500": 1}}


def test_wildcard_applies_to_all_endpoints(backend: LocalBackend, strict: openeo.Connection) -> None:
    backend.configure(faults={"*": {"500": 1.0}})
    with pytest.raises(OpenEoApiError):
        strict.list_jobs()
    with pytest.raises(OpenEoApiError):
        strict.list_file_formats()
    assert set(backend.report()["faults"]) == {"list_jobs", "file_formats"}


def test_lost_response_creates_the_job_but_the_client_sees_an_error(
    backend: LocalBackend, strict: openeo.Connection
) -> None:
    backend.configure(faults={"create_job": {"lost": 1.0}})
    with pytest.raises(requests.exceptions.ConnectionError):
        wind_turbine_cube(strict, backend).create_job(title="Tile 1 [unit-job:1]")
    backend.configure(faults={"create_job": {"lost_504": 1.0}})
    with pytest.raises(OpenEoApiError) as error:
        wind_turbine_cube(strict, backend).create_job(title="Tile 2 [unit-job:2]")
    assert error.value.http_status_code == 504
    backend.configure(faults={})
    jobs = strict.list_jobs()
    assert sorted(job["title"] for job in jobs) == ["Tile 1 [unit-job:1]", "Tile 2 [unit-job:2]"]
    report = backend.report()
    assert report["faults"] == {"create_job": {"lost": 1, "lost_504": 1}}
    assert report["totals"]["lost_responses"] == 2 and report["totals"]["created"] == 2
    assert [(e["endpoint"], e["kind"], e["status"]) for e in report["lost_responses"]] == [
        ("create_job", "lost", 201),
        ("create_job", "lost_504", 201),
    ]
    assert {e["job_id"] for e in report["lost_responses"]} == {job["id"] for job in jobs}
    assert report["tags"] == {"unit-job:1": 1, "unit-job:2": 1}


def test_lost_start_still_starts(backend: LocalBackend, strict: openeo.Connection) -> None:
    backend.configure(run_seconds=30)
    job = wind_turbine_cube(strict, backend).create_job()
    backend.configure(faults={"start_job": {"lost": 1.0}})
    with pytest.raises(requests.exceptions.ConnectionError):
        job.start()
    assert job.status() in ("queued", "running")
    assert backend.report()["lost_responses"][0]["job_id"] == job.job_id


def test_delay_outlasts_the_client_timeout_and_still_takes_effect(backend: LocalBackend) -> None:
    impatient = backend.connect(retry=False, auto_validate=False, default_timeout=0.3)
    backend.configure(faults={"create_job": {"delay": 1.0}}, fault_delay=0.8)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.Timeout):
        wind_turbine_cube(impatient, backend).create_job(title="slow")
    assert time.monotonic() - started < 0.8
    backend.configure(faults={})
    deadline = time.monotonic() + 5
    while not impatient.list_jobs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [job["title"] for job in impatient.list_jobs()] == ["slow"]
    assert backend.report()["faults"] == {"create_job": {"delay": 1}}


def test_job_error_fraction(backend: LocalBackend, con: openeo.Connection) -> None:
    backend.configure(queue_seconds=0, run_seconds=0.1, job_error_fraction=1.0)
    job = wind_turbine_cube(con, backend).create_job()
    job.start()
    description = wait_for_status(job, {"error", "finished"})
    assert description["status"] == "error"
    errors = job.logs(level="error")
    assert len(errors) == 1 and "Simulated processing failure" in errors[0]["message"]
    with pytest.raises(OpenEoApiError) as error:
        job.get_results().get_metadata()
    assert (error.value.http_status_code, error.value.code) == (424, "JobFailed")
    assert backend.report()["totals"]["failing"] == 1


def test_job_errors_are_a_seeded_fraction(backend: LocalBackend, con: openeo.Connection) -> None:
    def run() -> list[str]:
        backend.reset()
        backend.configure(queue_seconds=0, run_seconds=0, job_error_fraction=0.5, seed=11)
        jobs = [con.create_job(wind_turbine_cube(con, backend)) for _ in range(12)]
        for job in jobs:
            job.start()
        return [job.status() for job in jobs]

    first = run()
    assert set(first) == {"finished", "error"}
    assert run() == first


def test_faults_are_reproducible_with_a_seed(backend: LocalBackend, con: openeo.Connection) -> None:
    job = con.create_job(wind_turbine_cube(con, backend))
    headers = {"Authorization": f"Bearer {con.auth.bearer}"}

    def statuses(seed: int) -> list[int]:
        backend.configure(seed=seed, faults={"get_job": {"503": 0.3, "500": 0.2}})
        url = f"{backend.api}/jobs/{job.job_id}"
        return [requests.get(url, headers=headers, timeout=5).status_code for _ in range(30)]

    first = statuses(5)
    assert {200, 500, 503} == set(first)
    assert statuses(5) == first  # changing the config restarts the seeded streams
    assert statuses(6) != first


def test_default_client_retries_recover_from_transient_faults(backend: LocalBackend) -> None:
    patient = backend.connect(retry={"total": 8, "backoff_factor": 0.001})
    job = patient.create_job(wind_turbine_cube(patient, backend))
    backend.configure(faults={"get_job": {"503": 0.5}})
    for _ in range(10):
        assert patient.job(job.job_id).status() == "created"
    assert backend.report()["faults"]["get_job"]["503"] > 0
