"""`upscaling health`: the probe the compose health checks and Kubernetes exec probes run, against real
gRPC health and HTTP servers (exit code 0 only when healthy)."""

from __future__ import annotations

import asyncio
import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.infra import ROOT, free_port


def _probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "upscaling.healthcheck", "--timeout", "5", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


async def _probe_async(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_probe, *args)


async def test_grpc_probe_follows_the_serving_status() -> None:
    port = free_port()
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        serving = await _probe_async("grpc", str(port))
        assert serving.returncode == 0, serving.stderr
        assert "SERVING" in serving.stdout
        await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        not_serving = await _probe_async("grpc", f"127.0.0.1:{port}")
        assert not_serving.returncode == 1 and "NOT_SERVING" in not_serving.stderr
        unknown = await _probe_async("grpc", str(port), "no.such.Service")
        assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr
    finally:
        await server.stop(None)
    closed = await _probe_async("grpc", str(port))
    assert closed.returncode == 1 and "UNAVAILABLE" in closed.stderr


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_http_probe_needs_a_2xx(http_server: int) -> None:
    ok = _probe("http", f"http://127.0.0.1:{http_server}/health")
    assert ok.returncode == 0 and "HTTP 200" in ok.stdout
    failing = _probe("http", f"http://127.0.0.1:{http_server}/other")
    assert failing.returncode == 1 and "HTTP 503" in failing.stderr
    refused = _probe("http", f"http://127.0.0.1:{free_port()}/health")
    assert refused.returncode == 1


def test_probe_usage_errors_exit_non_zero() -> None:
    assert _probe().returncode == 2
    assert _probe("tcp", "1").returncode == 2
