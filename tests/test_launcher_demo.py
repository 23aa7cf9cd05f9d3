"""`make run RUN_ARGS=--exit-after-demo` (`python -m devtools.launcher --exit-after-demo`) on a private database
and broker prefix: the terminal shows a readable summary and the demo's progress, never the services' JSON log
lines, which go to one file per service; the demo (the Python client) ends with "Demo succeeded"."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio

from tests.aois import countries
from tests.infra import ROOT, free_port, unique_name, with_database
from tests.support import admin_sql, drop_private_resources


@pytest.mark.timeout(400)
def test_make_run_demo_summary_and_log_files(infra, service_env: dict[str, str], tmp_path: Path) -> None:
    db_name, prefix = unique_name("launcher_demo"), unique_name("demo")
    asyncio.run(admin_sql(infra.admin_database_url, f'CREATE DATABASE "{db_name}"'))
    openeo_port, tiler_port, ogc_port = free_port(), free_port(), free_port()
    openeo = f"http://127.0.0.1:{openeo_port}"
    env = {**service_env, "DATABASE_URL": with_database(infra.admin_database_url, db_name), "BROKER_PREFIX": prefix,
           "LOCAL_OPENEO_PORT": str(openeo_port), "LOCAL_OGC_PORT": str(ogc_port),
           "GATEWAY_HTTP_PORT": str(free_port()),
           "GATEWAY_GRPC_PORT": str(free_port()), "TILER_PORT": str(tiler_port),
           "TILER_ADDRESS": f"127.0.0.1:{tiler_port}", "DISPATCHER_HEALTH_PORT": str(free_port()),
           "MONITOR_HEALTH_PORT": str(free_port()), "MONITOR_INTERVAL_MIN_S": "0.2",
           "OPENEO_BACKENDS": json.dumps([{"endpoint": f"{openeo}/openeo/1.2", "max_running_jobs": 8,
                                           "auth": {"method": "basic", "username": "demo", "password": "demo"}},
                                          {"endpoint": f"http://127.0.0.1:{ogc_port}", "platform": "ogc_api_process",
                                           "tag_input": "upscaling_tag"}]),
           "RUN_LOG_DIR": str(tmp_path / "logs"), "DEMO_GRID": "50x50km", "LOG_FORMAT": "json"}
    aoi = tmp_path / "netherlands.geojson"  # the user's own AOI (--aoi); the default is the shipped Belgium
    aoi.write_text(json.dumps(countries()["Netherlands"]))
    try:
        command = [sys.executable, "-m", "devtools.launcher", "--exit-after-demo", "--aoi", str(aoi)]
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=360,
                                stdin=subprocess.DEVNULL)
    finally:
        asyncio.run(drop_private_resources(infra.admin_database_url, db_name, infra.rabbitmq_url, prefix))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "Demo succeeded." in result.stdout and "Upscaling service is up" in result.stdout
    logs = {path.stem: path for path in (tmp_path / "logs").glob("*.log")}
    assert set(logs) == {"local-openeo", "local-ogc", "tiler", "dispatcher", "monitor", "gateway"}
    assert all(f"log: {path}" in result.stdout for path in logs.values())
    assert '"correlation_id"' in logs["dispatcher"].read_text()  # the services' JSON lines are in the files...
    assert not [line for line in output.splitlines() if line.lstrip().startswith('{"')], output  # ...not here
    # the progress summary of the client (not a terminal here: summary lines), then the mosaic
    assert "jobs done (finished" in result.stdout and "Job finished with status finished" in result.stdout
    # then the small OGC API - Processes task on the local OGC server
    assert "finished (4 of 4 jobs with statistics)" in result.stdout, result.stdout[-3000:]
    mosaic = tmp_path / "demo" / "netherlands.tif"
    with rasterio.open(mosaic) as src:
        assert src.count == 3 and src.bounds.left < 4.0 and src.bounds.right > 7.0
