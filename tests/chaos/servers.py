"""A private RabbitMQ node and a private PostgreSQL cluster on free ports (as checked in
`../shared/reference/private-servers.md`), so a test can stop and start them without touching the machine's own
servers. Each keeps its data in a temporary folder removed by `destroy`."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.infra import free_port


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _wait_port(port: int, up: bool, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while _listening(port) != up:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} port {port} still {'down' if up else 'up'} after {timeout}s")
        time.sleep(0.2)


def _as_user(user: str, *command: str, env: dict[str, str] | None = None) -> list[str]:
    """The command run as `user` when we are root (the servers refuse root), else as ourselves."""
    if os.geteuid() != 0:
        return list(command)
    extra = [f"{k}={v}" for k, v in (env or {}).items()]
    return ["runuser", "-u", user, "--", "env", *extra, *command] if extra else ["runuser", "-u", user, "--",
                                                                                 *command]


def _chown(path: Path, user: str) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user)
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                shutil.chown(os.path.join(root, name), user)


def _stop_if_up(server: PrivateRabbitMQ | PrivatePostgres) -> None:
    if _listening(server.port):
        with contextlib.suppress(Exception):
            server.stop()


class PrivateRabbitMQ:
    """`rabbitmq-server` as a second node on a free AMQP port (its own config file, data folder and node name)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dist_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="chaos-rabbitmq-"))
        self.node = f"chaos{uuid.uuid4().hex[:8]}@localhost"
        (self.dir / "plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
                                                "loopback_users = none\n")
        _chown(self.dir, "rabbitmq")
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        return {"RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"), "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_DIST_PORT": str(self.dist_port), "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.dir / "log"), "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "plugins"),
                "RABBITMQ_PID_FILE": str(self.dir / "pid"), "HOME": str(self.dir)}

    def start(self, timeout: float = 90) -> None:
        subprocess.run(["rabbitmq-server", "-detached"], env={**os.environ, **self._env()}, check=True,
                       capture_output=True)
        _wait_port(self.port, True, timeout, "RabbitMQ")

    def stop(self, timeout: float = 60) -> None:
        subprocess.run(["rabbitmqctl", "-n", self.node, "stop"], env={**os.environ, **self._env()},
                       capture_output=True, timeout=timeout)
        _wait_port(self.port, False, timeout, "RabbitMQ")

    def ctl(self, *args: str) -> str:
        """Output of `rabbitmqctl -n <node> <args>`."""
        done = subprocess.run(["rabbitmqctl", "-n", self.node, *args], env={**os.environ, **self._env()},
                              capture_output=True, text=True, timeout=60)
        return done.stdout

    def destroy(self) -> None:
        _stop_if_up(self)
        pid_file = self.dir / "pid"
        if pid_file.exists() and _listening(self.dist_port):
            subprocess.run(["kill", pid_file.read_text().strip()], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb as the `postgres` user, trust auth) on a free port."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(bins[-1])
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="chaos-postgres-"))
        _chown(self.dir, "postgres")
        subprocess.run(_as_user("postgres", str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-A", "trust",
                                "-U", "postgres"), check=True, capture_output=True)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 60) -> None:
        subprocess.run(_as_user("postgres", str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-l",
                                str(self.dir / "log"), "-w", "-o",
                                f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300",
                                "start"), check=True, capture_output=True, timeout=timeout)
        _wait_port(self.port, True, timeout, "PostgreSQL")

    def stop(self, timeout: float = 60) -> None:
        subprocess.run(_as_user("postgres", str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast",
                                "-w", "stop"), capture_output=True, timeout=timeout)
        _wait_port(self.port, False, timeout, "PostgreSQL")

    def destroy(self) -> None:
        _stop_if_up(self)
        shutil.rmtree(self.dir, ignore_errors=True)
