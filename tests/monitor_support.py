"""Support for the monitor tests: monitor processes, DB rows, log parsing."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from tests.infra import ServiceProcess, free_port, wait_grpc_serving
from tests.support import BASELINE_CONFIG, EXTENT, LocalOpenEO


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


@contextlib.contextmanager
def configured(backend: LocalOpenEO, **changes: Any) -> Iterator[None]:
    """The backend with `changes` for the block; those settings back at their baseline values afterwards."""
    backend.configure(**changes)
    try:
        yield
    finally:
        backend.configure(**{key: BASELINE_CONFIG[key] for key in changes})


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

