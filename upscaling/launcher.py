"""`make run`: apply migrations, start every service as a local process, stop them all on Ctrl-C.

Services run against RABBITMQ_URL / DATABASE_URL (defaults: the local RabbitMQ and PostgreSQL). The local
openEO backend (package `local_openeo`) starts too, as the built-in default backend.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

from upscaling.config import load_settings
from upscaling.logs import configure_logging
from upscaling.migrations import migrate


@dataclass
class Child:
    """A service process and how to tell it is ready."""

    name: str
    module: str
    ready_url: str | None = None
    process: subprocess.Popen[bytes] | None = None


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


def _children() -> list[Child]:
    s = load_settings()
    children = []
    if importlib.util.find_spec("local_openeo") and importlib.util.find_spec("local_openeo.__main__"):
        port = os.environ.get("LOCAL_OPENEO_PORT", "8081")
        children.append(Child("local-openeo", "local_openeo", f"http://127.0.0.1:{port}/.well-known/openeo"))
    children.append(Child("tiler", "services.tiler"))
    children.append(Child("gateway", "gateway", f"http://127.0.0.1:{s.gateway_http_port}/health"))
    return children


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


def main() -> int:
    """Run the stack in the foreground; returns the exit code."""
    settings = load_settings()
    configure_logging("launcher", settings.log_level, "text")
    asyncio.run(migrate(settings.database_url))
    env = {**os.environ, "MIGRATE_ON_START": "false"}
    children = _children()
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for child in children:
            child.process = subprocess.Popen([sys.executable, "-m", child.module], env=env)
            if child.ready_url and not _wait_http(child.ready_url, 60, child):
                print(f"{child.name} did not become ready at {child.ready_url}", file=sys.stderr)
                return 1
        print("\nUpscaling service is up:")
        print(f"  HTTP/WebSocket  http://127.0.0.1:{settings.gateway_http_port}  (try GET /health)")
        print(f"  gRPC            127.0.0.1:{settings.gateway_grpc_port}")
        for child in children:
            if child.name == "local-openeo" and child.ready_url:
                print(f"  local openEO    {child.ready_url.removesuffix('/.well-known/openeo')}")
        print("Press Ctrl-C to stop.\n", flush=True)
        while not stopping:
            for child in children:
                if child.process and child.process.poll() is not None:
                    print(f"{child.name} exited with {child.process.returncode}; stopping", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        _stop(children)


if __name__ == "__main__":
    raise SystemExit(main())
