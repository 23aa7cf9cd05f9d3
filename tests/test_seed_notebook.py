"""The seed notebook's client code, verbatim, against the stack started the way `make run` starts it.

Only the gateway host and the openEO endpoint/application URLs are changed (pointing at the built-in local
openEO backend). The notebook must print `Job finished with status finished` and open every tile's openEO.tif.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from tests.infra import ROOT, free_port
from tests.notebook import run_seed_notebook


@dataclass
class Launched:
    http: str
    openeo: str
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def launched(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    """`python -m devtools.launcher --no-demo` (what `make run` runs) on free ports."""
    openeo_port, http_port = free_port(), free_port()
    tiler_port = free_port()
    openeo = f"http://127.0.0.1:{openeo_port}"
    env = {
        **service_env,
        "LOCAL_OPENEO_PORT": str(openeo_port),
        "GATEWAY_HTTP_PORT": str(http_port),
        "GATEWAY_GRPC_PORT": str(free_port()),
        "TILER_PORT": str(tiler_port),
        "TILER_ADDRESS": f"127.0.0.1:{tiler_port}",
        "DISPATCHER_HEALTH_PORT": str(free_port()),
        "MONITOR_HEALTH_PORT": str(free_port()),
        "OPENEO_BACKENDS": json.dumps([{"endpoint": f"{openeo}/openeo/1.2",
                                        "auth": {"method": "basic", "username": "demo", "password": "demo"},
                                        "max_running_jobs": 8}]),
        "MONITOR_INTERVAL_MIN_S": "0.2",
        "GATEWAY_WORKERS": "2",  # the notebook against several gateway workers sharing the ports
    }
    log_path = tmp_path_factory.mktemp("launcher") / "launcher.log"
    env["RUN_LOG_DIR"] = str(log_path.parent / "logs")
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "devtools.launcher", "--no-demo"], cwd=ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while "Upscaling service is up" not in log_path.read_text(errors="replace"):
            assert process.poll() is None, log_path.read_text(errors="replace")[-5000:]
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-5000:]
            time.sleep(0.3)
        yield Launched(f"127.0.0.1:{http_port}", openeo, process)
    finally:
        process.terminate()
        try:
            assert process.wait(timeout=30) == 0, log_path.read_text(errors="replace")[-5000:]
        finally:
            if process.poll() is None:
                process.kill()


def test_seed_notebook_runs_unchanged(launched: Launched, capsys: pytest.CaptureFixture[str]) -> None:
    ns = run_seed_notebook(launched.http, launched.openeo)
    out = capsys.readouterr().out
    assert "Processing 1 tiles for area of interest" in out
    assert "Job finished with status finished" in out
    task = requests.get(f"http://{launched.http}/upscale_tasks/{ns['upscaling_task_id']}", timeout=10).json()
    job_ids = {job["id"] for job in task["jobs"]}
    assert job_ids and ns["processed_jobs"] == job_ids
    overlays = [layer for layer in ns["m"].layers if type(layer).__name__ == "ImageOverlay"]
    assert len(overlays) == len(job_ids)
    assert all(o.url.startswith("data:image/png;base64,") for o in overlays)
