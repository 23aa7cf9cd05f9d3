"""Service behaviour as processes: graceful SIGTERM, dependency health, correlated JSON logs."""

from __future__ import annotations

import json
import signal
import time

import grpc
import requests

from tests.aois import SEED_AOI, europe
from tests.infra import ServiceProcess, free_port, wait_grpc_serving, wait_http_ok
from upscaling.v1 import tiler_pb2, tiler_pb2_grpc


def test_correlation_id_travels_from_http_to_the_tiler_log(stack) -> None:
    cid = f"trace-{time.time_ns()}"
    reply = requests.post(f"{stack.http}/tiles", json={"aoi": SEED_AOI, "grid": "20x20km"},
                          headers={"X-Correlation-ID": cid}, timeout=30)
    assert reply.status_code == 201
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in stack.tiler.log().splitlines() if line.startswith("{")]
        mine = [entry for entry in lines if entry.get("correlation_id") == cid]
        if mine:
            assert mine[0]["service"] == "tiler" and mine[0]["message"] == "tiled AOI" and mine[0]["tiles"] == 1
            return
        time.sleep(0.1)
    raise AssertionError(f"no tiler log line with correlation id {cid}")


def test_sigterm_lets_the_inflight_call_finish(service_env, tmp_path) -> None:
    port = free_port()
    tiler = ServiceProcess("tiler", "services.tiler",
                           {**service_env, "TILER_PORT": str(port), "MAX_TILES": "1000000"}, tmp_path / "t.log")
    tiler.start()
    try:
        wait_grpc_serving(f"127.0.0.1:{port}", tiler)
        with grpc.insecure_channel(f"127.0.0.1:{port}",
                                   options=[("grpc.max_receive_message_length", 1 << 29)]) as channel:
            stub = tiler_pb2_grpc.TilerServiceStub(channel)
            request = tiler_pb2.TileAoiRequest(aoi_geojson=json.dumps(europe()), grid="5x5km")
            future = stub.TileAoi.future(request, timeout=120)
            time.sleep(0.3)
            assert not future.done(), "the call finished before SIGTERM; pick a larger AOI"
            tiler.process.send_signal(signal.SIGTERM)
            reply = future.result()
            assert len(reply.tiles) > 10000
        assert tiler.process.wait(timeout=30) == 0
        assert "shutdown signal received" in tiler.log()
    finally:
        tiler.stop()


def test_gateway_health_is_503_naming_the_dependency_that_is_down(service_env, tmp_path) -> None:
    http_port = free_port()
    gateway = ServiceProcess(
        "gateway", "gateway",
        {**service_env, "TILER_ADDRESS": f"127.0.0.1:{free_port()}", "GATEWAY_HTTP_PORT": str(http_port),
         "GATEWAY_GRPC_PORT": str(free_port()), "MIGRATE_ON_START": "false"},
        tmp_path / "g.log")
    gateway.start()
    try:
        url = f"http://127.0.0.1:{http_port}/health"
        deadline = time.monotonic() + 60
        while True:
            gateway.assert_alive()
            try:
                reply = requests.get(url, timeout=10)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, gateway.log()
                time.sleep(0.2)
        assert reply.status_code == 503
        body = reply.json()
        assert body["status"] == "error"
        assert body["database"] == {"status": "ok"} and body["rabbitmq"] == {"status": "ok"}
        assert body["tiler"]["status"] == "error" and body["tiler"]["message"]
        tiles = requests.post(f"http://127.0.0.1:{http_port}/tiles", json={"aoi": SEED_AOI}, timeout=30)
        assert tiles.status_code == 503 and tiles.json()["error_code"] == "SERVICE_UNAVAILABLE"
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(timeout=30) == 0
    finally:
        gateway.stop()


def test_gateway_exits_cleanly_on_sigterm(service_env, stack, tmp_path) -> None:
    http_port = free_port()
    gateway = ServiceProcess(
        "gateway", "gateway",
        {**service_env, "TILER_ADDRESS": stack.tiler_address, "GATEWAY_HTTP_PORT": str(http_port),
         "GATEWAY_GRPC_PORT": str(free_port())},
        tmp_path / "g2.log")
    gateway.start()
    try:
        wait_http_ok(f"http://127.0.0.1:{http_port}/health", gateway)
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(timeout=30) == 0
    finally:
        gateway.stop()
