"""The accountability endpoint and configuration from env vars and flags."""

from __future__ import annotations

import openeo
import pytest
import requests
from local_openeo_support import ADMIN_TOKEN, LocalBackend, start_backend, stop_backend, wind_turbine_cube

from local_openeo.config import load_settings
from local_openeo.faults import parse_fault_spec
from tests.infra import ROOT


def test_report_counts_jobs_per_user_title_and_tag(backend: LocalBackend, con: openeo.Connection) -> None:
    alice = backend.connect("alice")
    for n in (1, 2, 2):
        con.create_job(
            wind_turbine_cube(con, backend), title=f"Task - Processing Job {n}", description=f"[unit-job:{n}]"
        )
    alice.create_job(
        wind_turbine_cube(alice, backend), title="Task - Processing Job 3", description="[unit-job:3] [task:9]"
    )
    report = backend.report()
    assert report["totals"]["created"] == 4
    assert {user: data["created"] for user, data in report["users"].items()} == {"alice": 1, "demo": 3}
    assert report["tags"] == {"unit-job:1": 1, "unit-job:2": 2, "unit-job:3": 1, "task:9": 1}
    assert report["duplicates"]["tags"] == {"unit-job:2": 2}
    assert report["duplicates"]["titles"] == {"Task - Processing Job 2": 2}
    assert report["descriptions"]["[unit-job:3] [task:9]"] == 1
    assert report["requests"]["create_job"] == 4
    assert report["users"]["demo"]["by_status"] == {"created": 3}
    jobs = backend.admin("GET", "jobs")["jobs"]
    assert sorted(job["user"] for job in jobs) == ["alice", "demo", "demo", "demo"]
    assert {job["output"] for job in jobs} == {"GeoJSON"}


def test_reset_and_config(backend: LocalBackend, con: openeo.Connection) -> None:
    con.create_job(wind_turbine_cube(con, backend))
    backend.admin("POST", "reset", {"jobs": False})
    totals = backend.report()["totals"]
    assert (totals["created"], totals["existing"]) == (0, 1)
    backend.admin("POST", "reset")
    assert con.list_jobs() == []
    settings = backend.configure(run_seconds=5, faults="create_job:503=0.25,get_job:delay=0.1")
    assert settings["faults"] == {"create_job": {"503": 0.25}, "get_job": {"delay": 0.1}}
    assert settings["users"] == ["alice", "demo"]  # passwords are not echoed
    config = backend.admin("GET", "config")
    assert config["settings"]["run_seconds"] == 5 and "lost_504" in config["fault_kinds"]
    for bad in (
        {"run_seconds": -1},
        {"port": 1},
        {"faults": {"nope": {"500": 1}}},
        {"faults": {"get_job": {"500": 2}}},
    ):
        response = backend.http.put(f"{backend.url}/admin/config", json=bad, timeout=5)
        assert response.status_code == 400 and response.json()["code"] == "ParameterInvalid", bad


def test_admin_requires_the_token(backend: LocalBackend) -> None:
    assert requests.get(f"{backend.url}/admin/report", timeout=5).status_code == 401
    wrong = {"Authorization": "Bearer wrong"}
    assert requests.get(f"{backend.url}/admin/report", headers=wrong, timeout=5).status_code == 403
    header = {"X-Admin-Token": ADMIN_TOKEN}
    assert requests.get(f"{backend.url}/admin/report", headers=header, timeout=5).status_code == 200


def test_env_configured_backend_without_admin() -> None:
    env = {
        "LOCAL_OPENEO_USERS": "carol:pw",
        "LOCAL_OPENEO_QUEUE_SECONDS": "0",
        "LOCAL_OPENEO_RUN_SECONDS": "0",
        "LOCAL_OPENEO_MAX_CONCURRENT": "1",
        "LOCAL_OPENEO_CONCURRENCY_STATUS": "429",
    }
    process, url = start_backend(env=env)
    try:
        assert requests.get(f"{url}/admin/report", timeout=5).status_code == 404
        con = openeo.connect(url).authenticate_basic("carol", "pw")
        cube = con.datacube_from_process(
            "wind_turbine_detection",
            namespace=f"{url}/udp/wind_turbine_detection.json",
            spatial_extent={"west": 5.0, "south": 51.0, "east": 5.1, "north": 51.1},
        )
        job = cube.create_job(out_format="GTiff")
        job.start()
        assert job.status() == "finished"
        assert job.get_results().get_metadata()["extent"]["spatial"]["bbox"] == [[5.0, 51.0, 5.1, 51.1]]
    finally:
        stop_backend(process)


def test_flags_override_env_vars() -> None:
    env = {
        "LOCAL_OPENEO_PORT": "9000",
        "LOCAL_OPENEO_RUN_SECONDS": "7",
        "LOCAL_OPENEO_FAULTS": '{"get_job": {"lost": 0.5}}',
    }
    settings = load_settings(["--port", "9100", "--seed", "3", "--access-log"], env)
    assert (settings.port, settings.run_seconds, settings.seed, settings.access_log) == (9100, 7.0, 3, True)
    assert settings.faults == {"get_job": {"lost": 0.5}}
    defaults = load_settings([], {})
    assert (defaults.host, defaults.port, defaults.users, defaults.admin_token) == (
        "127.0.0.1",
        8081,
        {"demo": "demo"},
        None,
    )
    # the project's own catalogue, inside the repository
    assert defaults.udp_dir == ROOT / "local_openeo" / "catalogue"
    assert (defaults.udp_dir / "wind_turbine_detection.json").is_file()
    with pytest.raises(SystemExit):
        load_settings(["--concurrency-status", "500"], {})


def test_fault_spec_parsing() -> None:
    assert parse_fault_spec("create_job:lost=0.1, create_job:503=0.2,*:delay=0.05") == {
        "create_job": {"lost": 0.1, "503": 0.2},
        "*": {"delay": 0.05},
    }
    for bad in ("create_job:418=0.1", "nowhere:500=0.1", "create_job:500=0.7,create_job:503=0.6", "create_job"):
        with pytest.raises(ValueError):
            parse_fault_spec(bad)
