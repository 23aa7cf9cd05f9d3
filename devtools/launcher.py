"""`make run` (`python -m devtools.launcher`), a development tool: apply migrations, start every service as a
local process, run the demo, stop them all on Ctrl-C.

Services run against RABBITMQ_URL / DATABASE_URL (defaults: the local RabbitMQ and PostgreSQL). The local
openEO backend (package `local_openeo`) starts too, as the built-in default backend, and the local OGC API -
Processes server (package `local_ogc`, LOCAL_OGC_PORT, default 8082) as a second backend (`ogc_api_process`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devtools import ogc_demo, service_accounts
from upscaling.backends import DEFAULT_BACKENDS, OGC_API_PROCESS
from upscaling.config import Settings, load_settings
from upscaling.logs import configure_logging
from upscaling.metrics import metrics_port
from upscaling.migrations import migrate

ROOT = Path(__file__).resolve().parents[1]
DEMO_AOI = ROOT / "examples" / "aoi" / "belgium.geojson"


@dataclass
class Child:
    """A service process and how to tell it is ready."""

    name: str
    module: str
    ready_url: str | None = None
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _wait_http(url: str, timeout_s: float, child: Child) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.process and child.process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status < 500:
                    return True
        except Exception:
            time.sleep(0.3)
    return False


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(f"{module}.__main__") is not None
    except ModuleNotFoundError:
        return False


def _children() -> list[Child]:
    s = load_settings()
    port = os.environ.get("LOCAL_OPENEO_PORT", "8081")
    ogc_port = os.environ.get("LOCAL_OGC_PORT", "8082")
    candidates = [
        Child("local-openeo", "local_openeo", f"http://127.0.0.1:{port}/.well-known/openeo"),
        Child("local-ogc", "local_ogc", f"http://127.0.0.1:{ogc_port}/processes?f=json"),
        Child("tiler", "services.tiler"),
        Child("dispatcher", "services.dispatcher"),
        Child("monitor", "services.monitor"),
        Child("gateway", "gateway", f"http://127.0.0.1:{s.gateway_http_port}/health"),
    ]
    return [c for c in candidates if _exists(c.module)]


def _stop(children: list[Child]) -> None:
    for child in reversed(children):
        if child.process and child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        if child.process:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()


# The built-in local openEO backend runs jobs quickly for the demo (each setting can be overridden).
# The local OGC server is the second backend (its demo process takes LOCAL_OGC_RUN_SECONDS per job).
LOCAL_DEFAULTS = {
    "LOCAL_OPENEO_QUEUE_SECONDS": "0.2",
    "LOCAL_OPENEO_RUN_SECONDS": "1.0",
    "LOCAL_OGC_RUN_SECONDS": "1.0",
}


def _local_backends(ogc_port: str) -> str:
    """OPENEO_BACKENDS of the local stack: the local openEO backend and the local OGC server."""
    ogc = {"endpoint": f"http://127.0.0.1:{ogc_port}", "aliases": [f"http://localhost:{ogc_port}"],
           "platform": OGC_API_PROCESS, "tag_input": "upscaling_tag", "max_running_jobs": 8}
    return json.dumps([{**DEFAULT_BACKENDS[0], "max_running_jobs": 8}, ogc])


def _demo(settings: Settings, openeo_url: str, run_dir: Path, aoi: Path) -> int:
    """Upscale a real AOI through the gateway with the Python client (examples/upscale_aoi.py): the CLI's
    progress display, then the results assembled into one mosaic."""
    script = ROOT / "examples" / "upscale_aoi.py"
    args = [sys.executable, str(script), "--address", f"127.0.0.1:{settings.gateway_grpc_port}",
            "--openeo", openeo_url, "--aoi", str(aoi), "--grid", os.environ.get("DEMO_GRID", "20x20km"),
            "--out", str(run_dir / "demo")]
    print("\nDemo: " + " ".join(args[1:]), flush=True)
    return subprocess.run(args, cwd=ROOT).returncode


def main(argv: list[str] | None = None) -> int:
    """Run the stack in the foreground (and the demo, unless --no-demo / DEMO=0); returns the exit code."""
    parser = argparse.ArgumentParser(description="Run the upscaling stack locally.")
    parser.add_argument("--no-demo", action="store_true", help="do not run the demo upscaling task")
    parser.add_argument("--exit-after-demo", action="store_true", help="stop the stack when the demo is done")
    parser.add_argument("--aoi", type=Path, default=Path(os.environ.get("DEMO_AOI", DEMO_AOI)),
                        help="the demo's AOI, a GeoJSON file (default: Belgium, examples/aoi/belgium.geojson)")
    args = parser.parse_args(argv)
    if not args.aoi.is_file():
        parser.error(f"--aoi {args.aoi}: no such file")
    aoi = args.aoi.resolve()
    settings = load_settings()
    configure_logging("launcher", settings.log_level, "text")
    asyncio.run(migrate(settings.database_url))
    port = os.environ.get("LOCAL_OPENEO_PORT", "8081")
    # The gateway fetches UDPs only at public addresses unless allowlisted: allow the built-in catalogue.
    ogc_port = os.environ.get("LOCAL_OGC_PORT", "8082")
    catalogue = (f"http://127.0.0.1:{port}/udp/ http://localhost:{port}/udp/ http://127.0.0.1:{ogc_port}/processes/"
                 f" http://localhost:{ogc_port}/processes/")
    env = {**LOCAL_DEFAULTS, "OPENEO_BACKENDS": _local_backends(ogc_port), "UDP_ALLOWED_URLS": catalogue,
           **os.environ, "MIGRATE_ON_START": "false"}
    own_env = service_accounts.stack_env(settings)  # each service under its own broker user and database role
    children = _children()
    log_dir = Path(os.environ.get("RUN_LOG_DIR", ROOT / ".run" / "logs"))
    log_dir.mkdir(parents=True, exist_ok=True)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for child in children:
            child.log_path = log_dir / f"{child.name}.log"
            with child.log_path.open("wb") as log:
                child.process = subprocess.Popen([sys.executable, "-m", child.module],
                                                 env={**env, **own_env.get(child.name, {})}, stdout=log,
                                                 stderr=subprocess.STDOUT)
            print(f"  started {child.name:<13} log: {child.log_path}", flush=True)
            if child.ready_url and not _wait_http(child.ready_url, 60, child):
                print(f"{child.name} did not become ready at {child.ready_url}; its log ends with:\n"
                      f"{child.log_tail()}", file=sys.stderr)
                return 1
        print("\nUpscaling service is up:")
        print(f"  HTTP/WebSocket  http://127.0.0.1:{settings.gateway_http_port}  (try GET /health)")
        print(f"  gRPC            127.0.0.1:{settings.gateway_grpc_port}")
        ports = {name: metrics_port(settings, name) for name in ("tiler", "dispatcher", "monitor")}
        print(f"  metrics         http://127.0.0.1:{settings.gateway_http_port}/metrics (gateway), "
              + ", ".join(f":{port}/metrics ({name})" for name, port in ports.items() if port))
        openeo_url = ""
        for child in children:
            if child.name == "local-openeo" and child.ready_url:
                openeo_url = child.ready_url.removesuffix("/.well-known/openeo")
                print(f"  local openEO    {openeo_url}")
            if child.name == "local-ogc" and child.ready_url:
                print(f"  local OGC API   {child.ready_url.removesuffix('/processes?f=json')} (OGC API - Processes)")
        print(f"  service logs    {log_dir}/<service>.log")
        print(f"  Python client   pip install ./client; upscale --address 127.0.0.1:{settings.gateway_grpc_port} ls")
        demo = _exists("services.dispatcher") and _exists("services.monitor") and not args.no_demo \
            and os.environ.get("DEMO", "1") != "0"
        if demo:
            code = _demo(settings, openeo_url or "http://127.0.0.1:8081", log_dir.parent, aoi)
            ogc_endpoint = ogc_demo.ogc_endpoint(env.get("OPENEO_BACKENDS"))
            if code == 0 and ogc_endpoint:
                code = ogc_demo.run(f"http://127.0.0.1:{settings.gateway_http_port}", ogc_endpoint, aoi)
            print(f"Demo {'succeeded' if code == 0 else 'FAILED'}.", flush=True)
            if args.exit_after_demo:
                return code
        print("Press Ctrl-C to stop.\n", flush=True)
        while not stopping:
            for child in children:
                if child.process and child.process.poll() is not None:
                    print(f"{child.name} exited with {child.process.returncode}; stopping. Its log "
                          f"({child.log_path}) ends with:\n{child.log_tail()}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        _stop(children)


if __name__ == "__main__":
    raise SystemExit(main())
