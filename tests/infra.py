"""Test infrastructure: the real PostgreSQL and RabbitMQ (or testcontainers where a Docker engine answers),
a private database and broker prefix per run, and service processes started on free ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reachable(url: str, default_port: int) -> bool:
    """Whether the host:port of a URL accepts TCP connections."""
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def docker_answers() -> bool:
    """Whether a Docker engine answers (testcontainers needs one)."""
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


@contextlib.contextmanager
def service_urls() -> Iterator[tuple[str, str]]:
    """(DATABASE_URL, RABBITMQ_URL): from the environment or the local defaults; else testcontainers."""
    db_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    mq_url = os.environ.get("RABBITMQ_URL", DEFAULT_RABBITMQ_URL)
    with contextlib.ExitStack() as stack:
        if not reachable(db_url, 5432) or not reachable(mq_url, 5672):
            if not docker_answers():
                raise RuntimeError(f"PostgreSQL ({db_url}) or RabbitMQ ({mq_url}) is not reachable and no Docker "
                                   "engine answers for testcontainers")
            from testcontainers.postgres import PostgresContainer
            from testcontainers.rabbitmq import RabbitMqContainer

            if not reachable(db_url, 5432):
                pg = stack.enter_context(PostgresContainer("postgres:16", driver=None))
                db_url = pg.get_connection_url()
            if not reachable(mq_url, 5672):
                mq = stack.enter_context(RabbitMqContainer("rabbitmq:3-management"))
                mq_url = f"amqp://guest:guest@{mq.get_container_host_ip()}:{mq.get_exposed_port(5672)}/"
        yield db_url, mq_url


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def unique_name(prefix: str) -> str:
    """A name no other test run uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@dataclass
class ServiceProcess:
    """A service started with `python -m module`, its log file and its ports."""

    name: str
    module: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(default_factory=dict)

    def start(self) -> None:
        self.log_file = self.log_path.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", self.module], env=self.env, cwd=ROOT,
                                        stdout=self.log_file, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int | None:
        if self.process is None:
            return None
        stop_process(self.process, timeout)
        self.log_file.close()
        return self.process.returncode

    def assert_alive(self) -> None:
        assert self.process is not None and self.process.poll() is None, (
            f"{self.name} exited with {self.process and self.process.returncode}:\n{self.log()[-4000:]}")


def stop_process(process: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM a child process, SIGKILL it after `timeout` seconds, and reap it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_grpc_serving(address: str, proc: ServiceProcess, timeout: float = 60) -> None:
    """Block until the gRPC health service at `address` says SERVING."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            proc.assert_alive()
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"{proc.name} at {address} not SERVING after {timeout}s:\n{proc.log()[-4000:]}")


def wait_http_ok(url: str, proc: ServiceProcess, timeout: float = 60) -> None:
    """Block until GET url answers 200."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.assert_alive()
        try:
            if requests.get(url, timeout=3).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{proc.name} at {url} not healthy after {timeout}s:\n{proc.log()[-4000:]}")
