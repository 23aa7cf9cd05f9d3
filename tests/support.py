"""Shared test support: the local openEO backend process, private databases, polling, sample tiles."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import asyncpg
import openeo
import requests

from tests.infra import ROOT, stop_process, unique_name, with_database
from upscaling import broker
from upscaling.migrations import migrate

ADMIN_TOKEN = "test-admin-token"
EXTENT = {"west": 14.370712, "south": 47.265837, "east": 14.405670, "north": 47.275632}
POLYGON = {"type": "Polygon", "coordinates": [[[14.370712, 47.265837], [14.40567, 47.265837],
                                               [14.40567, 47.275632], [14.370712, 47.275632],
                                               [14.370712, 47.265837]]]}
BASELINE_CONFIG: dict[str, Any] = {"faults": {}, "queue_seconds": 0.2, "run_seconds": 0.5, "max_concurrent": 0,
                                   "start_rate": 0, "job_error_fraction": 0}


def spawn_listening(module: str, args: list[str], env_prefix: str) -> tuple[subprocess.Popen[str], str]:
    """Start `python -m module args` (without the caller's `env_prefix*` variables) and wait for its first line,
    `... listening on http://...`: (the process, that URL); RuntimeError (the process stopped) when it says else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(env_prefix)}
    process = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT,
                               env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if match is None:
        stop_process(process)
        raise RuntimeError(f"{module} did not start: {line!r}")
    return process, match.group(1)


class LocalOpenEO:
    """The local openEO backend as a subprocess on a free port, with admin access and an openeo client."""

    def __init__(self, *args: str) -> None:
        self.process, self.url = spawn_listening(
            "local_openeo", ["--port", "0", "--admin-token", ADMIN_TOKEN, "--queue-seconds", "0.2",
                             "--run-seconds", "0.5", "--result-size", "32", *args], "LOCAL_OPENEO_")
        self.endpoint = f"{self.url}/openeo/1.2"
        self.application = self.udp("wind_turbine_detection")
        self.admin_http = requests.Session()
        self.admin_http.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        self._client: openeo.Connection | None = None

    def udp(self, name: str) -> str:
        """URL of a UDP of the backend's catalogue."""
        return f"{self.url}/udp/{name}.json"

    @property
    def udp_catalogue(self) -> str:
        """The catalogue's URL prefix, for the gateway's UDP_ALLOWED_URLS (loopback is refused otherwise)."""
        return f"{self.url}/udp/"

    def stop(self) -> None:
        stop_process(self.process)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        response = self.admin_http.request(method, f"{self.url}/admin/{path}", json=body, timeout=10)
        assert response.status_code == 200, response.text
        return response.json() if response.content else None

    def configure(self, **changes: Any) -> None:
        self.admin("PUT", "config", changes)

    def reset(self) -> None:
        """Forget jobs and counters; no faults; default durations and limits."""
        self.admin("POST", "reset", {"jobs": True, "counters": True})
        self.configure(**BASELINE_CONFIG)

    def report(self) -> dict[str, Any]:
        return self.admin("GET", "report")

    def jobs(self) -> dict[str, dict[str, Any]]:
        """Every backend job by id (admin view)."""
        data = self.admin("GET", "jobs")
        items = data["jobs"] if isinstance(data, dict) else data
        return {j["id"]: j for j in items}

    def backends_env(self, **limits: Any) -> str:
        """OPENEO_BACKENDS for services that should use this backend (demo user), with optional limits."""
        return json.dumps([{"endpoint": self.endpoint,
                            "auth": {"method": "basic", "username": "demo", "password": "demo"}, **limits}])

    def client(self) -> openeo.Connection:
        if self._client is None:
            self._client = openeo.connect(self.endpoint, auto_validate=False).authenticate_basic("demo", "demo")
        return self._client

    def create_started_job(self, tag: str) -> str:
        """Create and start a wind turbine job tagged `[tag]`; returns its backend id (blocking)."""
        cube = self.client().datacube_from_process(
            "wind_turbine_detection", namespace=self.application, spatial_extent=EXTENT, year="2024")
        job = cube.create_job(out_format="GTiff", title=f"test {tag}", description=f"[{tag}]")
        job.start()
        return job.job_id


def tiles(n: int) -> list[dict[str, Any]]:
    """n distinct small Polygons (the shape of `POST /tiles` geometries)."""
    out = []
    for i in range(n):
        x, y = 14.0 + 0.05 * (i % 100), 47.0 + 0.05 * (i // 100)
        out.append({"type": "Polygon", "coordinates": [[[x, y], [x + 0.04, y], [x + 0.04, y + 0.04],
                                                        [x, y + 0.04], [x, y]]]})
    return out


async def db_connect(url: str) -> asyncpg.Connection:
    """A connection decoding json/jsonb to Python."""
    conn = await asyncpg.connect(url)
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    return conn


async def admin_sql(admin_url: str, sql: str) -> None:
    """Run one statement on the server's admin database."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def drop_private_resources(admin_url: str, db_name: str, rabbitmq_url: str, prefix: str) -> None:
    """Delete a test run's broker names (`prefix`) and drop its database (the database also when the broker
    cannot be reached)."""
    try:
        connection = await aio_pika.connect(rabbitmq_url)
        try:
            channel = await connection.channel()
            await broker.delete(channel, broker.Topology(prefix=prefix))
        finally:
            await connection.close()
    finally:
        await admin_sql(admin_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def private_database(admin_url: str, prefix: str = "upscaling_t") -> AsyncIterator[str]:
    """A fresh, migrated database of its own (its outbox is nobody else's), dropped afterwards."""
    name = unique_name(prefix)
    await admin_sql(admin_url, f'CREATE DATABASE "{name}"')
    url = with_database(admin_url, name)
    try:
        await migrate(url)
        yield url
    finally:
        await admin_sql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def wait_until(check: Callable[[], Awaitable[Any]], limit_s: float = 30.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `limit_s`."""
    deadline = time.monotonic() + limit_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s}s waiting for {what}")
        await asyncio.sleep(0.1)
