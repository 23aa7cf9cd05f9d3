"""Support for the local openEO backend tests: start/stop it as a subprocess, admin access, helpers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openeo
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token"
USERS = {"demo": "demo", "alice": "alice-secret"}
BASELINE: dict[str, Any] = {
    "users": USERS,
    "queue_seconds": 0.1,
    "run_seconds": 0.2,
    "max_concurrent": 0,
    "concurrency_status": 400,
    "start_rate": 0,
    "start_burst": 1,
    "seed": 1,
    "faults": {},
    "fault_delay": 1.0,
    "job_error_fraction": 0.0,
    "udp_fetch_timeout": 2.0,
    "udp_cache_seconds": 300,
    "result_size": 64,
}
BBOX = {"west": 14.370712, "south": 47.265837, "east": 14.405670, "north": 47.275632}
POLYGON = {
    "type": "Polygon",
    "coordinates": [[[14.37, 47.27], [14.37, 47.26], [14.41, 47.26], [14.41, 47.28], [14.37, 47.27]]],
}


def start_backend(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``python -m local_openeo`` on a free port; returns the process and its base URL."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_OPENEO_")}
    environment.update(env or {}, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "local_openeo", "--port", "0", *args],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if match is None:
        process.kill()
        pytest.fail(f"local openEO backend did not start: {line!r}")
    return process, match.group(1)


def stop_backend(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class LocalBackend:
    """Handle on a running backend: openeo connections, UDP URLs and the admin endpoints."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.api = f"{url}/openeo/1.2"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"

    def udp_url(self, name: str = "wind_turbine_detection") -> str:
        return f"{self.url}/udp/{name}.json"

    def connect(self, user: str = "demo", **options: Any) -> openeo.Connection:
        """An authenticated openeo client connection (options go to ``openeo.connect``)."""
        return openeo.connect(self.url, **options).authenticate_basic(user, USERS[user])

    def admin(self, method: str, path: str, json: Any = None) -> dict:
        response = self.http.request(method, f"{self.url}/admin/{path}", json=json, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def report(self) -> dict:
        return self.admin("GET", "report")

    def configure(self, **changes: Any) -> dict:
        return self.admin("PUT", "config", changes)["settings"]

    def reset(self) -> None:
        self.admin("POST", "reset")
        self.configure(**BASELINE)


def wait_for_status(job: openeo.BatchJob, wanted: set[str], timeout: float = 10.0) -> dict:
    """Poll ``job.describe()`` until its status is in `wanted`; returns the last description."""
    deadline = time.monotonic() + timeout
    while True:
        description = job.describe()
        if description["status"] in wanted or time.monotonic() > deadline:
            return description
        time.sleep(0.05)


def wind_turbine_cube(
    connection: openeo.Connection, backend: LocalBackend, extent: dict | None = None, **arguments: Any
) -> openeo.DataCube:
    return connection.datacube_from_process(
        "wind_turbine_detection",
        namespace=backend.udp_url(),
        spatial_extent=extent or BBOX,
        year="2024",
        **arguments,
    )
