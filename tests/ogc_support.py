"""The local OGC API - Processes server (`python -m local_ogc`: pygeoapi) as a subprocess on a free port, and a
stack of real processes (gateway, dispatcher, monitor) whose only backend it is."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.full_stack import services
from tests.infra import (
    ServiceProcess,
    stop_process,
)
from tests.support import spawn_listening

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
    env = {"OPENEO_BACKENDS": json.dumps([entry, *(extra_backends or [])]),
           "UDP_ALLOWED_URLS": f"{via or ogc.url}/processes/"}
    with services(infra, service_env, tiler_address, logs, env, name="ogc", log_prefix="ogc-") as running:
        yield OgcStack(running.http, running.grpc, ogc, running.processes)


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
