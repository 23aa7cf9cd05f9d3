"""TLS on the gateway's public ports, with certificates of a development CA made by `devtools.certs`:

- a TLS gateway in token mode: Python and Node.js gRPC clients use their library's standard TLS channel plus call
  credentials (the token), HTTPS/WSS work, plaintext on the TLS ports is refused;
- a TLS gateway without authentication runs the seed notebook over https/wss (jobs finish through the dispatcher
  and monitor), and its optional plaintext listener answers while the TLS port refuses plaintext;
- an mTLS gateway refuses clients without a certificate of its client CA;
- the health probe speaks TLS.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
import websockets

from devtools.certs import DevCerts, create
from tests.infra import ServiceProcess, free_port, unique_name, wait_grpc_serving, with_database
from tests.notebook import run_seed_notebook
from tests.support import LocalOpenEO, admin_sql, drop_private_resources, tiles
from upscaling import healthcheck
from upscaling.migrations import migrate
from upscaling.v1 import common_pb2, upscaling_pb2, upscaling_pb2_grpc

TOKEN = "tls-test-key-5e6f7a8b9c0d1e2f"
NODE_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "node"


@dataclass
class TlsGateway:
    proc: ServiceProcess
    http_port: int
    grpc_port: int
    plaintext_http_port: int = 0

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


@dataclass
class TlsWorld:
    certs: DevCerts
    backend: LocalOpenEO
    token: TlsGateway  # TLS + AUTH_MODE=token
    open: TlsGateway  # TLS + no authentication + a plaintext listener
    mtls: TlsGateway  # client certificates required


def _wait_tls_ready(gw: TlsGateway, certs: DevCerts, client_cert: bool = False) -> None:
    tls = healthcheck.Tls(str(certs.ca), str(certs.client_cert) if client_cert else None,
                          str(certs.client_key) if client_cert else None)
    for _ in range(300):
        gw.proc.assert_alive()
        if healthcheck.check_http(f"{gw.https}/health", 2, tls)[0] and \
                healthcheck.check_grpc(gw.grpc, "", 2, tls)[0]:
            return
        asyncio.run(asyncio.sleep(0.2))
    raise TimeoutError(f"{gw.proc.name} not ready:\n{gw.proc.log()[-4000:]}")


@pytest.fixture(scope="module")
def world(infra: Any, service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsWorld]:
    tmp = Path(tmp_path_factory.mktemp("tls"))
    certs = create(tmp / "certs")
    backend = LocalOpenEO()
    db_name, prefix = unique_name("tls_test"), unique_name("tls")
    asyncio.run(admin_sql(infra.admin_database_url, f'CREATE DATABASE "{db_name}"'))
    db_url = with_database(infra.admin_database_url, db_name)
    procs: list[ServiceProcess] = []
    try:
        asyncio.run(migrate(db_url))
        tiler_port = free_port()
        env = {**service_env, "DATABASE_URL": db_url, "BROKER_PREFIX": prefix, "MIGRATE_ON_START": "false",
               "OPENEO_BACKENDS": backend.backends_env(), "UDP_ALLOWED_URLS": backend.udp_catalogue,
               "TILER_PORT": str(tiler_port), "TILER_ADDRESS": f"127.0.0.1:{tiler_port}", "HEALTH_HOST": "127.0.0.1",
               "DISPATCHER_HEALTH_PORT": str(free_port()), "MONITOR_HEALTH_PORT": str(free_port()),
               "MONITOR_INTERVAL_MIN_S": "0.2", "MONITOR_INTERVAL_MAX_S": "1", "OUTBOX_POLL_S": "0.5",
               "GATEWAY_TLS_CERT": str(certs.server_cert), "GATEWAY_TLS_KEY": str(certs.server_key)}
        tiler = ServiceProcess("tls-tiler", "services.tiler", env, tmp / "tiler.log")
        procs.append(tiler)
        tiler.start()
        for name in ("dispatcher", "monitor"):
            procs.append(ServiceProcess(f"tls-{name}", f"services.{name}", env, tmp / f"{name}.log"))
            procs[-1].start()

        def gateway(name: str, **extra: str) -> TlsGateway:
            http_port, grpc_port = free_port(), free_port()
            proc = ServiceProcess(name, "gateway", {**env, "GATEWAY_HTTP_PORT": str(http_port),
                                                    "GATEWAY_GRPC_PORT": str(grpc_port), **extra},
                                  tmp / f"{name}.log")
            procs.append(proc)
            proc.start()
            return TlsGateway(proc, http_port, grpc_port, int(extra.get("GATEWAY_PLAINTEXT_HTTP_PORT", "0")))

        token = gateway("tls-token-gateway", AUTH_MODE="token", AUTH_TOKENS=json.dumps({TOKEN: "alice"}))
        open_gw = gateway("tls-open-gateway", GATEWAY_PLAINTEXT_HTTP_PORT=str(free_port()))
        mtls = gateway("tls-mtls-gateway", GATEWAY_TLS_CLIENT_CA=str(certs.ca))
        wait_grpc_serving(f"127.0.0.1:{tiler_port}", tiler)
        _wait_tls_ready(token, certs)
        _wait_tls_ready(open_gw, certs)
        _wait_tls_ready(mtls, certs, client_cert=True)
        yield TlsWorld(certs, backend, token, open_gw, mtls)
    finally:
        for proc in reversed(procs):
            proc.stop()
        backend.stop()
        asyncio.run(drop_private_resources(infra.admin_database_url, db_name, infra.rabbitmq_url, prefix))


def _credentials(certs: DevCerts, token: str | None = None, client_cert: bool = False) -> grpc.ChannelCredentials:
    channel = grpc.ssl_channel_credentials(
        certs.ca.read_bytes(), certs.client_key.read_bytes() if client_cert else None,
        certs.client_cert.read_bytes() if client_cert else None)
    return grpc.composite_channel_credentials(channel, grpc.access_token_call_credentials(token)) if token \
        else channel


def _task_request(world: TlsWorld) -> upscaling_pb2.CreateTaskRequest:
    return upscaling_pb2.CreateTaskRequest(
        title="over TLS", label="openeo",
        service=common_pb2.ServiceRef(endpoint=world.backend.endpoint, application=world.backend.application),
        parameters_json=json.dumps({"year": 2024}),
        dimension=upscaling_pb2.Dimension(name="spatial_extent", values_json=[json.dumps(t) for t in tiles(2)]))


def test_grpc_tls_with_call_credentials(world: TlsWorld) -> None:
    with grpc.secure_channel(world.token.grpc, _credentials(world.certs, TOKEN)) as channel:
        stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
        task = stub.CreateTask(_task_request(world), timeout=60).task
        events = stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task.id), timeout=120)
        for event in events:
            status = event.snapshot.status if event.HasField("snapshot") else event.task_event.status \
                if event.HasField("task_event") else None
            if status == common_pb2.TASK_STATUS_FINISHED:
                break
        else:
            pytest.fail("the watch ended before the task finished")
        events.cancel()
    with grpc.secure_channel(world.token.grpc, _credentials(world.certs)) as channel:  # TLS, no token
        with pytest.raises(grpc.RpcError) as missing:
            upscaling_pb2_grpc.UpscalingServiceStub(channel).ListTasks(upscaling_pb2.ListTasksRequest(), timeout=30)
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with grpc.insecure_channel(world.token.grpc) as channel:  # plaintext on the TLS port
        with pytest.raises(grpc.RpcError) as plaintext:
            upscaling_pb2_grpc.UpscalingServiceStub(channel).ListTasks(
                upscaling_pb2.ListTasksRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10)
        assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE


def test_https_and_wss_with_token(world: TlsWorld) -> None:
    gw = world.token
    headers = {"Authorization": f"Bearer {TOKEN}"}
    listed = requests.get(f"{gw.https}/upscale_tasks", headers=headers, verify=str(world.certs.ca), timeout=30)
    assert listed.status_code == 200, listed.text
    with pytest.raises(requests.exceptions.SSLError):  # a client that does not trust the CA
        requests.get(f"{gw.https}/health", timeout=10)
    with pytest.raises(requests.exceptions.ConnectionError):  # plaintext on the TLS port
        requests.get(f"http://127.0.0.1:{gw.http_port}/health", timeout=10)
    created = requests.post(f"{gw.https}/upscale_tasks", headers=headers, verify=str(world.certs.ca), timeout=60,
                            json={"title": "over https", "label": "openeo",
                                  "service": {"endpoint": world.backend.endpoint,
                                              "application": world.backend.application},
                                  "parameters": {"year": 2024},
                                  "dimension": {"name": "spatial_extent", "values": tiles(1)}})
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]

    async def first_status() -> dict[str, Any]:
        context = ssl.create_default_context(cafile=str(world.certs.ca))
        url = f"wss://127.0.0.1:{gw.http_port}/ws/upscale_tasks/{task_id}?interval=1"
        async with websockets.connect(url, ssl=context, additional_headers=headers) as socket:
            assert json.loads(await asyncio.wait_for(socket.recv(), 30))["type"] == "init"
            return json.loads(await asyncio.wait_for(socket.recv(), 30))

    status = asyncio.run(first_status())
    assert status["type"] == "status" and status["data"]["id"] == task_id


def test_seed_notebook_over_https_and_wss(world: TlsWorld, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(world.certs.ca))
    monkeypatch.setenv("SSL_CERT_FILE", str(world.certs.ca))
    ns = run_seed_notebook(f"127.0.0.1:{world.open.http_port}", world.backend.url, tls=True)
    out = capsys.readouterr().out
    assert "Processing 1 tiles for area of interest" in out and "Job finished with status finished" in out
    assert ns["processed_jobs"]


def test_plaintext_listener_and_refusal(world: TlsWorld) -> None:
    gw = world.open
    plain = requests.get(f"http://127.0.0.1:{gw.plaintext_http_port}/health", timeout=10)
    assert plain.status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{gw.http_port}/health", timeout=10)
    ok, said = healthcheck.check_http(f"{gw.https}/health", 5, healthcheck.Tls(str(world.certs.ca)))
    assert ok, said
    assert healthcheck.main(["--ca", str(world.certs.ca), "grpc", gw.grpc]) == 0
    assert healthcheck.main(["grpc", gw.grpc]) == 1  # plaintext probe of the TLS port


def test_mtls_requires_a_client_certificate(world: TlsWorld) -> None:
    gw = world.mtls
    with grpc.secure_channel(gw.grpc, _credentials(world.certs, client_cert=True)) as channel:
        reply = upscaling_pb2_grpc.UpscalingServiceStub(channel).ListTasks(upscaling_pb2.ListTasksRequest(),
                                                                           timeout=30)
        assert reply is not None
    with grpc.secure_channel(gw.grpc, _credentials(world.certs)) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            upscaling_pb2_grpc.UpscalingServiceStub(channel).ListTasks(upscaling_pb2.ListTasksRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    ca = str(world.certs.ca)
    assert requests.get(f"{gw.https}/health", verify=ca, cert=(str(world.certs.client_cert),
                                                                 str(world.certs.client_key)),
                        timeout=10).status_code == 200
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.get(f"{gw.https}/health", verify=ca, timeout=10)


def test_node_client_over_tls_with_call_credentials(world: TlsWorld) -> None:
    """The Node.js example (@grpc/grpc-js) with its standard TLS channel and the token as call credentials."""
    node = shutil.which("node")
    assert node, "node is missing: scripts/ensure-test-tools.sh installs it"
    assert (NODE_EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir(), "run `make node-example` (npm ci)"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [node, str(NODE_EXAMPLE / "upscale.js"), "--gateway", world.token.grpc, "--endpoint",
             world.backend.endpoint, "--application", world.backend.application, "--grid", "5x5km",
             "--disconnect-after", "2", *args], capture_output=True, text=True, timeout=300, cwd=NODE_EXAMPLE)

    ok = run("--tls", "--ca", str(world.certs.ca), "--token", TOKEN)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert re.search(r"^\[\d+\] task \d+ finished", ok.stdout, re.M), ok.stdout
    without_token = run("--tls", "--ca", str(world.certs.ca))
    assert without_token.returncode == 1 and "UNAUTHENTICATED" in without_token.stdout + without_token.stderr
    plaintext = run("--token", TOKEN)  # an insecure channel to the TLS port
    assert plaintext.returncode == 1 and "UNAVAILABLE" in plaintext.stdout + plaintext.stderr
