"""Support for the monitor tests: the local openEO backend process, monitor processes, DB rows, log parsing."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import openeo
import requests

from tests.infra import ROOT, ServiceProcess, free_port, wait_grpc_serving

ADMIN_TOKEN = "monitor-test-admin"
EXTENT = {"west": 14.370712, "south": 47.265837, "east": 14.405670, "north": 47.275632}


class LocalOpenEO:
    """The local openEO backend as a subprocess, with admin access and an openeo client to create jobs."""

    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_OPENEO_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local_openeo", "--port", "0", "--admin-token", ADMIN_TOKEN,
             "--queue-seconds", "0.2", "--run-seconds", "0.5", "--result-size", "32"],
            cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"listening on (http://\S+)", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"local openEO backend did not start: {line!r}")
        self.url = match.group(1)
        self.endpoint = f"{self.url}/openeo/1.2"
        self.admin_http = requests.Session()
        self.admin_http.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        self._client: openeo.Connection | None = None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        response = self.admin_http.request(method, f"{self.url}/admin/{path}", json=body, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def configure(self, **changes: Any) -> None:
        self.admin("PUT", "config", changes)

    def report(self) -> dict[str, Any]:
        return self.admin("GET", "report")

    def jobs(self) -> dict[str, dict[str, Any]]:
        """Every backend job by id (admin view)."""
        data = self.admin("GET", "jobs")
        items = data["jobs"] if isinstance(data, dict) else data
        return {j["id"]: j for j in items}

    def backends_env(self) -> str:
        return json.dumps([{"endpoint": self.endpoint,
                            "auth": {"method": "basic", "username": "demo", "password": "demo"}}])

    def client(self) -> openeo.Connection:
        if self._client is None:
            self._client = openeo.connect(self.endpoint, auto_validate=False).authenticate_basic("demo", "demo")
        return self._client

    def create_started_job(self, tag: str) -> str:
        """Create and start a wind turbine job tagged `[tag]`; returns its backend id (blocking)."""
        cube = self.client().datacube_from_process(
            "wind_turbine_detection", namespace=f"{self.url}/udp/wind_turbine_detection.json",
            spatial_extent=EXTENT, year="2024")
        job = cube.create_job(out_format="GTiff", title=f"monitor test {tag}", description=f"[{tag}]")
        job.start()
        return job.job_id


def start_monitor(env: dict[str, str], log_path: Path) -> ServiceProcess:
    """`python -m services.monitor` with a free health port, waited until SERVING."""
    port = free_port()
    proc = ServiceProcess("monitor", "services.monitor",
                          {**env, "MONITOR_HEALTH_PORT": str(port), "MONITOR_HEALTH_HOST": "127.0.0.1"}, log_path)
    proc.start()
    wait_grpc_serving(f"127.0.0.1:{port}", proc, timeout=60)
    return proc


def cycles(proc: ServiceProcess, backend: str | None = None) -> list[dict[str, Any]]:
    """The monitor's per-cycle log entries (optionally of one backend)."""
    found = []
    for line in proc.log().splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("message") == "monitor cycle" and (backend is None or entry.get("backend") == backend):
            found.append(entry)
    return found


async def db_connect(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(url)
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    return conn


def new_tag() -> str:
    return f"uj-{uuid.uuid4()}"


async def insert_task(conn: asyncpg.Connection, endpoint: str, backend_jobs: list[tuple[str, str | None]],
                      *, max_attempts: int = 1, status: str = "queued") -> tuple[int, list[int]]:
    """A task with one unit job per (tag, backend job id); jobs without backend job are `created`."""
    service = {"endpoint": endpoint, "application": f"{endpoint}/udp/wind_turbine_detection.json"}
    task_id = await conn.fetchval(
        "INSERT INTO upscale_tasks (title, label, status, service, parameters, dimension_name, correlation_id,"
        " process_id, job_count, max_attempts) VALUES ('monitor test', 'openeo', $1, $2, '{}', 'spatial_extent',"
        " $3, 'wind_turbine_detection', $4, $5) RETURNING id",
        status, service, uuid.uuid4().hex, len(backend_jobs), max_attempts)
    job_ids = []
    for seq, (tag, backend_job_id) in enumerate(backend_jobs, start=1):
        job_ids.append(await conn.fetchval(
            "INSERT INTO unit_jobs (task_id, seq, title, label, status, service, parameters, format, tag,"
            " backend_job_id, backend, process_id, submit_arguments, attempts, submitted_at)"
            " VALUES ($1, $2, $3, 'openeo', $4, $5, $6, 'gtiff', $7, $8, $9, 'wind_turbine_detection', $10, $11,"
            " CASE WHEN $8::text IS NULL THEN NULL ELSE now() END) RETURNING id",
            task_id, seq, f"monitor test job {seq}", "queued" if backend_job_id else "created", service,
            {"spatial_extent": EXTENT, "year": "2024"}, tag, backend_job_id, endpoint,
            {"spatial_extent": EXTENT, "year": "2024"}, 1 if backend_job_id else 0))
    return task_id, job_ids


async def wait_until(check: Callable[[], Awaitable[Any]], limit_s: float = 20.0,
                     what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + limit_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s}s waiting for {what}")
        await asyncio.sleep(0.1)
