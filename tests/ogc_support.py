"""The local OGC API - Processes server (`python -m local_ogc`: pygeoapi) as a subprocess on a free port, and a
stack of real processes (gateway, dispatcher, monitor) whose only backend it is."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.infra import (
    ServiceProcess,
    free_port,
    stop_process,
    unique_name,
    wait_grpc_serving,
    wait_http_ok,
    with_database,
)
from tests.support import admin_sql, drop_private_resources, spawn_listening

PROCESS = "geometry-statistics"
TAG_INPUT = "upscaling_tag"


class LocalOGC:
    """`python -m local_ogc --port 0` and its URL."""

    def __init__(self, run_seconds: float = 1.0) -> None:
        self.process, self.url = spawn_listening("local_ogc", ["--port", "0", "--run-seconds", str(run_seconds)],
                                                 "LOCAL_OGC_")
        self.process_url = f"{self.url}/processes/{PROCESS}"

    def stop(self) -> None:
        stop_process(self.process)

    def entry(self, **changes: Any) -> dict[str, Any]:
        """Its OPENEO_BACKENDS entry."""
        return {"endpoint": self.url, "platform": "ogc_api_process", "tag_input": TAG_INPUT, **changes}

    def job(self, job_id: str) -> requests.Response:
        return requests.get(f"{self.url}/jobs/{job_id}", params={"f": "json"}, timeout=10)

    def jobs(self) -> list[dict[str, Any]]:
        reply = requests.get(f"{self.url}/jobs", params={"f": "json", "limit": 1000}, timeout=10)
        assert reply.status_code == 200, reply.text
        return list(reply.json()["jobs"])


@dataclass
class OgcStack:
    http: str
    grpc: str
    ogc: LocalOGC
    processes: list[ServiceProcess]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-3000:]}" for p in self.processes)


@contextlib.contextmanager
def ogc_stack(infra: Any, service_env: dict[str, str], tiler_address: str, logs: Path, ogc: LocalOGC,
              extra_backends: list[dict[str, Any]] | None = None, via: str = "") -> Iterator[OgcStack]:
    """Gateway, dispatcher and monitor on a database and broker prefix of their own, with `ogc` as backend
    (reached through `via`, a proxy URL, when given)."""
    entry = ogc.entry(max_running_jobs=8, **({"url": via} if via else {}))
    prefix = unique_name("ogc")
    db_name = unique_name("ogc_test")
    asyncio.run(admin_sql(infra.admin_database_url, f'CREATE DATABASE "{db_name}"'))
    http_port, grpc_port = free_port(), free_port()
    env = {**service_env, "BROKER_PREFIX": prefix, "DATABASE_URL": with_database(infra.admin_database_url, db_name),
           "TILER_ADDRESS": tiler_address, "GATEWAY_HTTP_PORT": str(http_port), "GATEWAY_GRPC_PORT": str(grpc_port),
           "OPENEO_BACKENDS": json.dumps([entry, *(extra_backends or [])]),
           "HEALTH_HOST": "127.0.0.1", "UDP_ALLOWED_URLS": f"{via or ogc.url}/processes/",
           "DISPATCHER_HEALTH_PORT": str(free_port()), "MONITOR_HEALTH_PORT": str(free_port()),
           "MONITOR_INTERVAL_MIN_S": "0.2", "MONITOR_INTERVAL_MAX_S": "1", "OUTBOX_POLL_S": "0.5", "GRPC_GRACE_S": "3",
           "DB_POOL_MAX": "4"}
    gateway = ServiceProcess("gateway", "gateway", env, logs / "ogc-gateway.log")
    dispatcher = ServiceProcess("dispatcher", "services.dispatcher", env, logs / "ogc-dispatcher.log")
    monitor = ServiceProcess("monitor", "services.monitor", env, logs / "ogc-monitor.log")
    started: list[ServiceProcess] = []
    try:
        gateway.start()
        started.append(gateway)
        wait_http_ok(f"http://127.0.0.1:{http_port}/health", gateway)
        wait_grpc_serving(f"127.0.0.1:{grpc_port}", gateway)
        for proc, port in ((dispatcher, env["DISPATCHER_HEALTH_PORT"]), (monitor, env["MONITOR_HEALTH_PORT"])):
            proc.start()
            started.append(proc)
            wait_grpc_serving(f"127.0.0.1:{port}", proc)
        yield OgcStack(f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", ogc, started)
    finally:
        for proc in reversed(started):
            proc.stop()
        asyncio.run(drop_private_resources(infra.admin_database_url, db_name, infra.rabbitmq_url, prefix))


class AnswerDroppingProxy:
    """An HTTP proxy in front of a server that forwards every request; once armed, it forwards the next execution
    request (`POST .../execution`) and then closes the connection without answering: a lost answer."""

    def __init__(self, target: str) -> None:
        import http.server
        import threading

        proxy = self
        self.target = target.rstrip("/")
        self.armed = threading.Event()
        self.dropped = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "prefer", "accept", "authorization", "x-correlation-id")}
                reply = requests.request(self.command, f"{proxy.target}{self.path}", data=body, headers=headers,
                                         timeout=30, allow_redirects=False)
                if self.command == "POST" and self.path.split("?")[0].endswith("/execution") and proxy.armed.is_set():
                    proxy.armed.clear()
                    proxy.dropped += 1
                    self.close_connection = True
                    return  # the job was created; its answer is lost
                self.send_response(reply.status_code)
                for key, value in reply.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply.content)))
                self.end_headers()
                self.wfile.write(reply.content)

            do_GET = do_POST = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
