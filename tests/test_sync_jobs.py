"""Synchronous jobs (`POST /sync_jobs`, gRPC `RunSyncJob`) and service parameters (`POST /params`) of a real
gateway process against the local openEO backend, which really computes `POST /result`."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import rasterio
import requests
from rasterio.io import MemoryFile
from upscaling_client import Client, LimitExceededError

from tests.client_support import UPSCALE
from tests.support import ROOT, db_connect, wait_until
from tests.tasks_support import TILE, Gateway, gateway_process
from upscaling.v1 import common_pb2, upscaling_pb2, upscaling_pb2_grpc

MAX_BYTES = 3_000_000
TIMEOUT_S = 3
# 1° x 1° at 47° N: about 8,400 km², more than the default SYNC_MAX_AREA_KM2 of 2,500.
LARGE = {"type": "Polygon", "coordinates": [[[14.0, 47.0], [15.0, 47.0], [15.0, 48.0], [14.0, 48.0], [14.0, 47.0]]]}
TILE_BOUNDS = (14.37, 47.26, 14.40, 47.27)
ALICE, BOB = "sync-key-of-alice-0001", "sync-key-of-bob-00001"


@pytest.fixture(scope="module")
def sync_gateway(stack: Any, service_env: dict[str, str], infra: Any,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway (API keys of alice and bob, default SYNC_MAX_AREA_KM2, a small SYNC_MAX_BYTES and SYNC_TIMEOUT_S)
    and its local backend."""
    with gateway_process(stack, service_env, infra, Path(tmp_path_factory.mktemp("sync")), name="sync",
                         AUTH_MODE="token", AUTH_TOKENS=json.dumps({ALICE: "alice", BOB: "bob"}),
                         SYNC_MAX_BYTES=str(MAX_BYTES), SYNC_TIMEOUT_S=str(TIMEOUT_S), SYNC_MAX_RUNNING="3") as gateway:
        yield gateway


@pytest.fixture
def gw(sync_gateway: Gateway) -> Gateway:
    """The gateway, its backend reset (no faults, default result size, counters zero)."""
    sync_gateway.backend.reset()
    sync_gateway.backend.configure(result_size=32)
    return sync_gateway


@pytest.fixture(scope="module")
def stub(sync_gateway: Gateway) -> Iterator[Any]:
    channel = grpc.insecure_channel(sync_gateway.grpc, options=[("grpc.max_receive_message_length", 1 << 26)])
    yield upscaling_pb2_grpc.UpscalingServiceStub(channel)
    channel.close()


def body(gw: Gateway, aoi: Any = TILE, **changes: Any) -> dict[str, Any]:
    """A `/sync_jobs` body: the wind turbine UDP over `aoi`."""
    request: dict[str, Any] = {
        "title": "Wind turbines, one tile", "label": "openeo",
        "service": {"endpoint": gw.backend.endpoint, "application": gw.backend.application},
        "parameters": {"spatial_extent": aoi, "year": 2024}}
    request.update(changes)
    return request


def sync(gw: Gateway, request: dict[str, Any], token: str | None = ALICE, **headers: str) -> requests.Response:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(f"{gw.http}/sync_jobs", json=request, headers=headers, timeout=60)


def backend_calls(gw: Gateway) -> int:
    """`POST /result` requests the local backend received since its reset."""
    return int(gw.backend.report()["requests"].get("compute_result", 0))


def to_proto(request: dict[str, Any]) -> upscaling_pb2.RunSyncJobRequest:
    return upscaling_pb2.RunSyncJobRequest(
        title=request["title"], label=request["label"], service=common_pb2.ServiceRef(**request["service"]),
        parameters_json=json.dumps(request["parameters"]), format=request.get("format") or "")


def run_sync(stub: Any, request: dict[str, Any]) -> list[upscaling_pb2.RunSyncJobResponse]:
    """RunSyncJob as alice: every message of the stream."""
    return list(stub.RunSyncJob(to_proto(request), metadata=(("authorization", f"Bearer {ALICE}"),), timeout=60))


def grpc_error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        list(call)
    return caught.value


def sync_error(stub: Any, request: upscaling_pb2.RunSyncJobRequest) -> grpc.RpcError:
    """The error of RunSyncJob as alice."""
    return grpc_error(stub.RunSyncJob(request, metadata=(("authorization", f"Bearer {ALICE}"),), timeout=30))


def error_code(error: grpc.RpcError) -> str:
    return dict(error.trailing_metadata() or ()).get("error-code", "")


# ---- HTTP ---------------------------------------------------------------------------------------------------


def sync_metric(gw: Gateway, series: str, outcome: str | None = None) -> float:
    """The value of a sync-job series of the gateway's /metrics for its backend (0 when not exported yet)."""
    labels = f'backend="{gw.backend.endpoint}"' + (f',outcome="{outcome}"' if outcome else "")
    for line in requests.get(f"{gw.http}/metrics", timeout=10).text.splitlines():
        if line.startswith(f"{series}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_small_aoi_answers_a_readable_geotiff(gw: Gateway) -> None:
    before = await asyncio.to_thread(sync_metric, gw, "upscaling_sync_jobs_total", "ok")
    cid = f"sync-{uuid.uuid4().hex}"
    reply = await asyncio.to_thread(functools.partial(sync, gw, body(gw), **{"X-Correlation-ID": cid}))
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-correlation-id"] == cid
    assert gw.backend.report()["correlation_ids"][cid]["compute_result"] == 1  # the request id reached the backend
    assert reply.headers["content-type"].startswith("image/tiff; application=geotiff")
    with MemoryFile(reply.content) as memory, memory.open() as raster:
        assert raster.driver == "GTiff" and raster.count == 3 and raster.crs.to_epsg() == 4326
        assert tuple(round(v, 6) for v in raster.bounds) == TILE_BOUNDS
        assert raster.read(1).max() > 0
    assert gw.backend.report()["totals"]["sync_results"] == {"ok": 1}
    assert gw.backend.report()["totals"]["created"] == 0  # no batch job: one POST /result
    assert await asyncio.to_thread(sync_metric, gw, "upscaling_sync_jobs_total", "ok") == before + 1
    assert await asyncio.to_thread(sync_metric, gw, "upscaling_sync_job_seconds_count") >= 1

    conn = await db_connect(gw.database_url)
    try:
        entry = await conn.fetchrow("SELECT * FROM audit_log WHERE action = 'job.sync' ORDER BY id DESC LIMIT 1")
        assert entry["outcome"] == "ok" and entry["resource"] == "job" and entry["actor"] == "alice"
        assert await conn.fetchval("SELECT count(*) FROM unit_jobs") == 0  # nothing stored
    finally:
        await conn.close()


def test_geojson_result(gw: Gateway) -> None:
    reply = sync(gw, body(gw, format="geojson"))
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/geo+json"
    collection = reply.json()
    assert collection["type"] == "FeatureCollection" and collection["features"]
    west, south, east, north = TILE_BOUNDS
    for feature in collection["features"]:
        x, y = feature["geometry"]["coordinates"]
        assert west < x < east and south < y < north


def test_authentication_is_required(gw: Gateway, stub: Any) -> None:
    for token in (None, "not-a-key"):
        reply = sync(gw, body(gw), token=token)
        assert reply.status_code == 401 and reply.json()["error_code"] == "AUTHENTICATION_FAILED", reply.text
    error = grpc_error(stub.RunSyncJob(to_proto(body(gw)), timeout=30))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert backend_calls(gw) == 0


def test_too_large_aoi_is_refused_before_the_backend(gw: Gateway) -> None:
    reply = sync(gw, body(gw, LARGE))
    assert reply.status_code == 413, reply.text
    error = reply.json()
    assert error["error_code"] == "AOI_TOO_LARGE"
    assert "SYNC_MAX_AREA_KM2=2500" in error["message"] and "8,37" in error["message"]
    assert "/upscale_tasks" in error["message"] and "/unit_jobs" in error["message"]
    # as a bounding box in a projected CRS (60 km x 60 km in UTM 33N) too
    utm = {"west": 500000, "south": 5200000, "east": 560000, "north": 5260000, "crs": 32633}
    reply = sync(gw, body(gw, utm))
    assert reply.status_code == 413 and "3,6" in reply.json()["message"], reply.text
    assert backend_calls(gw) == 0


@pytest.mark.parametrize(("change", "expected"), [
    ({"service": {"endpoint": "https://openeo.example.org", "application": None}}, "not a configured backend"),
    ({"parameters": {"spatial_extent": TILE, "colour": "red"}}, "unknown parameter 'colour'"),
    ({"parameters": {"year": 2024}}, "missing required parameter 'spatial_extent'"),
    ({"parameters": {"spatial_extent": "Austria"}}, "parameter 'spatial_extent'"),
    ({"format": "png"}, "format must be one of"),
    ({"label": "wps"}, "label"),
    ({"title": " "}, "title is required"),
])
def test_bad_requests_are_refused_before_the_backend(gw: Gateway, change: dict[str, Any], expected: str) -> None:
    request = body(gw)
    if "service" in change:
        change = {"service": {**change["service"], "application": gw.backend.application}}
    request.update(change)
    reply = sync(gw, request)
    assert reply.status_code == 422, reply.text
    assert reply.json()["error_code"] == "VALIDATION_ERROR" and expected in reply.json()["message"]
    assert backend_calls(gw) == 0


def test_backend_errors_are_clear(gw: Gateway) -> None:
    # a backend 4xx: the extent is empty for the backend (west == east); its message is quoted
    empty = {"west": 14.37, "south": 47.26, "east": 14.37, "north": 47.27}
    reply = sync(gw, body(gw, empty))
    assert reply.status_code == 422, reply.text
    assert reply.json()["error_code"] == "BACKEND_REJECTED"
    assert gw.backend.endpoint in reply.json()["message"] and "is empty or outside" in reply.json()["message"]

    gw.backend.configure(job_error_fraction=1.0)
    reply = sync(gw, body(gw))
    assert reply.status_code == 502, reply.text
    assert reply.json()["error_code"] == "BACKEND_ERROR" and "Simulated processing failure" in reply.json()["message"]

    gw.backend.configure(job_error_fraction=0.0, faults={"compute_result": {"429": 1.0}})
    reply = sync(gw, body(gw))
    assert reply.status_code == 429 and reply.json()["error_code"] == "BACKEND_BUSY", reply.text
    for outcome in ("BACKEND_REJECTED", "BACKEND_ERROR", "BACKEND_BUSY"):
        assert sync_metric(gw, "upscaling_sync_jobs_total", outcome) >= 1


def test_result_larger_than_the_limit(gw: Gateway) -> None:
    gw.backend.configure(result_size=1500)  # netCDF of 1500 x 500 px x 3 bands: about 4.5 MB
    reply = sync(gw, body(gw, format="netcdf"))
    assert reply.status_code == 413, reply.text
    error = reply.json()
    assert error["error_code"] == "RESULT_TOO_LARGE"
    assert f"SYNC_MAX_BYTES={MAX_BYTES}" in error["message"] and "/unit_jobs" in error["message"]


async def test_timeout_and_running_jobs_per_user_and_gateway(gw: Gateway) -> None:
    gw.backend.configure(faults={"compute_result": {"delay": 1.0}}, fault_delay=TIMEOUT_S + 5)
    slow = [asyncio.create_task(asyncio.to_thread(sync, gw, body(gw))) for _ in range(2)]

    def at_the_backend(n: int) -> Any:
        async def check() -> bool:
            return await asyncio.to_thread(backend_calls, gw) == n
        return check

    await wait_until(at_the_backend(2), limit_s=15, what="two synchronous requests at the backend")
    third = await asyncio.to_thread(sync, gw, body(gw))  # alice's SYNC_MAX_PER_USER=2 are running
    assert third.status_code == 429, third.text
    assert third.json()["error_code"] == "TOO_MANY_SYNC_JOBS" and "SYNC_MAX_PER_USER=2" in third.json()["message"]
    slow.append(asyncio.create_task(asyncio.to_thread(sync, gw, body(gw), BOB)))  # another user is not held
    await wait_until(at_the_backend(3), limit_s=15, what="bob's synchronous request at the backend")
    fourth = await asyncio.to_thread(sync, gw, body(gw), BOB)  # the gateway's SYNC_MAX_RUNNING=3 are running
    assert fourth.status_code == 503, fourth.text
    assert fourth.json()["error_code"] == "SYNC_BUSY" and "SYNC_MAX_RUNNING=3" in fourth.json()["message"]
    replies = await asyncio.gather(*slow)
    assert [r.status_code for r in replies] == [504, 504, 504]
    assert all(r.json()["error_code"] == "BACKEND_TIMEOUT" for r in replies)
    assert "did not answer in time" in replies[-1].json()["message"]
    assert await asyncio.to_thread(backend_calls, gw) == 3


# ---- gRPC ---------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # the netCDF container itself
def test_grpc_small_aoi_streams_the_result(gw: Gateway, stub: Any, tmp_path: Path) -> None:
    gw.backend.configure(result_size=1000)  # netCDF of about 2 MB: more than one chunk of 1 MiB
    replies = run_sync(stub, body(gw, format="netcdf"))
    assert len(replies) >= 2
    assert replies[0].content_type == "application/x-netcdf"
    content = b"".join(r.chunk for r in replies)
    assert replies[0].size == len(content) > 1 << 20
    assert all(not r.content_type and not r.size for r in replies[1:])
    path = tmp_path / "result.nc"
    path.write_bytes(content)
    with rasterio.open(path) as dataset:  # one subdataset per band
        assert len(dataset.subdatasets) == 3
        with rasterio.open(dataset.subdatasets[0]) as band:
            assert band.width == 1000 and band.read(1).max() > 0

    gw.backend.configure(result_size=32)
    replies = run_sync(stub, body(gw))
    assert len(replies) == 1 and replies[0].content_type.startswith("image/tiff")
    with MemoryFile(replies[0].chunk) as memory, memory.open() as raster:
        assert tuple(round(v, 6) for v in raster.bounds) == TILE_BOUNDS


def test_grpc_errors(gw: Gateway, stub: Any) -> None:
    error = sync_error(stub, to_proto(body(gw, LARGE)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and error_code(error) == "AOI_TOO_LARGE"
    assert "SYNC_MAX_AREA_KM2=2500" in error.details()

    request = body(gw)
    request["parameters"]["colour"] = "red"
    error = sync_error(stub, to_proto(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown parameter 'colour'" in error.details()
    error = sync_error(stub, upscaling_pb2.RunSyncJobRequest(
        title="t", label="openeo", service=common_pb2.ServiceRef(endpoint=gw.backend.endpoint,
                                                                 application=gw.backend.application),
        parameters_json="{not json"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "parameters_json" in error.details()
    assert backend_calls(gw) == 0

    gw.backend.configure(faults={"compute_result": {"500": 1.0}})
    error = sync_error(stub, to_proto(body(gw)))
    assert error.code() == grpc.StatusCode.UNAVAILABLE and error_code(error) == "BACKEND_ERROR"
    assert "Injected fault 500" in error.details()


# ---- /params ------------------------------------------------------------------------------------------------


def params(gw: Gateway, udp: str) -> list[dict[str, Any]]:
    reply = requests.post(f"{gw.http}/params", json={
        "label": "openeo", "service": {"endpoint": gw.backend.endpoint, "application": gw.backend.udp(udp)}},
        headers={"Authorization": f"Bearer {BOB}"}, timeout=30)
    assert reply.status_code == 200, reply.text
    return list(reply.json())


def test_params_options_as_apex(gw: Gateway, stub: Any) -> None:
    by_name = {p["name"]: p for p in params(gw, "cropsar2d")}
    assert by_name["output"]["options"] == ["FAPAR", "FCOVER", "NDVI"] and by_name["output"]["type"] == "string"
    assert by_name["geometry"]["options"] == [] and by_name["geometry"]["type"] == "polygon"
    assert by_name["output"]["optional"] and not by_name["geometry"]["optional"]
    reply = stub.DescribeService(upscaling_pb2.DescribeServiceRequest(label="openeo", service=common_pb2.ServiceRef(
        endpoint=gw.backend.endpoint, application=gw.backend.udp("cropsar2d"))),
        metadata=(("authorization", f"Bearer {BOB}"),), timeout=30)
    grpc_params = {p.name: p for p in reply.parameters}
    assert json.loads(grpc_params["output"].options_json) == ["FAPAR", "FCOVER", "NDVI"]
    assert json.loads(grpc_params["geometry"].options_json) == []


@pytest.mark.parametrize("udp", ["cropsar2d", "eurac_pv_farm_detection", "max_ndvi", "variabilitymap",
                                 "wind_turbine_detection"])
def test_params_of_every_catalogue_udp(gw: Gateway, udp: str) -> None:
    document = requests.get(gw.backend.udp(udp), timeout=30).json()
    answered = params(gw, udp)
    assert [p["name"] for p in answered] == [p["name"] for p in document["parameters"]]
    apex_types = {"bounding-box", "polygon", "date-interval", "datetime", "string", "integer", "double", "boolean",
                  "array-string", "date"}
    for declared, param in zip(document["parameters"], answered, strict=True):
        assert set(param) == {"name", "type", "optional", "description", "default", "options"}
        schemas = declared["schema"] if isinstance(declared["schema"], list) else [declared["schema"]]
        enum = next((s["enum"] for s in schemas if "enum" in s), [])
        assert param["options"] == enum and param["type"] in apex_types
        assert param["default"] == declared.get("default")
        assert param["optional"] == (bool(declared.get("optional")) or "default" in declared)


# ---- Python client and `upscale sync` -------------------------------------------------------------------------


def test_python_client_and_cli(gw: Gateway, tmp_path: Path) -> None:
    parameters = {"spatial_extent": TILE, "year": 2024}
    with Client(gw.grpc, token=ALICE) as client:
        result = client.run_sync(gw.backend.application, backend=gw.backend.endpoint, parameters=parameters,
                                 format="geojson")
        assert result.content_type == "application/geo+json" and json.loads(result.content)["features"]
        with pytest.raises(LimitExceededError) as caught:
            client.run_sync(gw.backend.application, backend=gw.backend.endpoint,
                            parameters={**parameters, "spatial_extent": LARGE})
        assert caught.value.error_code == "AOI_TOO_LARGE" and "SYNC_MAX_AREA_KM2" in str(caught.value)

    out = tmp_path / "tile.tif"
    env = {**os.environ, "UPSCALE_ADDRESS": gw.grpc, "UPSCALE_TOKEN": ALICE, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([UPSCALE, "sync", "--udp", gw.backend.application, "--backend", gw.backend.endpoint,
                           "-p", f"spatial_extent={json.dumps(TILE)}", "-p", "year=2024", "-o", str(out), "--json"],
                          env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["content_type"].startswith("image/tiff") and answer["size"] == out.stat().st_size
    with rasterio.open(out) as raster:
        assert tuple(round(v, 6) for v in raster.bounds) == TILE_BOUNDS
    refused = subprocess.run([UPSCALE, "sync", "--udp", gw.backend.application, "--backend", gw.backend.endpoint,
                              "-p", f"spatial_extent={json.dumps(LARGE)}", "-o", str(tmp_path / "no.tif")],
                             env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert refused.returncode == 10 and "SYNC_MAX_AREA_KM2" in refused.stderr, refused.stderr
    assert not (tmp_path / "no.tif").exists()
