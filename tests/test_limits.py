"""Every limit hit through the real interfaces, with its error naming the limit, and nothing stored when a request
is refused: request body size (HTTP 413), gRPC message size, AOI vertices, tiles per request, dimension values
per task, tasks in flight per user, watches per user, requests per second per user, WebSocket messages per
second per connection."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import grpc
import pytest
import websockets

from tests import auth_support
from tests.auth_support import LIMITS, AuthGateway, ws_first, ws_messages_until_close
from tests.support import db_connect
from upscaling.v1 import common_pb2, tiler_pb2, tiler_pb2_grpc, upscaling_pb2, upscaling_pb2_grpc

limits_gateway = auth_support.limits_gateway
BIG_AOI = {"type": "Polygon", "coordinates": [[[14.0, 47.0], [15.0, 47.0], [15.0, 48.0], [14.0, 48.0],
                                               [14.0, 47.0]]]}


def circle(n: int) -> dict[str, Any]:
    ring = [[14.4 + 0.05 * math.cos(2 * math.pi * i / n), 47.3 + 0.05 * math.sin(2 * math.pi * i / n)]
            for i in range(n)]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def create_request(gw: AuthGateway, n: int = 1, title: str = "limits") -> upscaling_pb2.CreateTaskRequest:
    body = gw.task_body(n)
    return upscaling_pb2.CreateTaskRequest(
        title=title, label="openeo",
        service=common_pb2.ServiceRef(endpoint=body["service"]["endpoint"],
                                      application=body["service"]["application"]),
        parameters_json=json.dumps(body["parameters"]),
        dimension=upscaling_pb2.Dimension(name="spatial_extent",
                                          values_json=[json.dumps(v) for v in body["dimension"]["values"]]))


def assert_limit(reply: Any, status: int, error_code: str, name: str) -> None:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["status"] == "error" and body["error_code"] == error_code, body
    assert f"limit {name}={LIMITS[name]} exceeded" in body["message"], body["message"]


def assert_grpc_limit(err: grpc.RpcError, name: str) -> None:
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
    assert f"limit {name}={LIMITS[name]} exceeded" in err.details(), err.details()


async def tasks_of(gw: AuthGateway, user: str) -> int:
    conn = await db_connect(gw.database_url)
    try:
        return await conn.fetchval("SELECT count(*) FROM upscale_tasks WHERE owner = $1", user)
    finally:
        await conn.close()


# ---- sizes of one request ------------------------------------------------------------------------------------

async def test_request_size_limits(limits_gateway: AuthGateway) -> None:
    gw = limits_gateway
    huge_title = "x" * (LIMITS["HTTP_MAX_BODY_BYTES"] + 1000)
    reply = await asyncio.to_thread(gw.call, "POST", "/upscale_tasks", "sizes", json=gw.task_body(1, title=huge_title))
    assert_limit(reply, 413, "PAYLOAD_TOO_LARGE", "HTTP_MAX_BODY_BYTES")
    with grpc.insecure_channel(gw.grpc) as channel:
        stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateTask(create_request(gw, 1, huge_title), metadata=gw.md("sizes"), timeout=10)
        # refused by gRPC itself (GRPC_MAX_MESSAGE_BYTES is the server's max receive message length)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"{LIMITS['GRPC_MAX_MESSAGE_BYTES']}" in err.value.details(), err.value.details()

        values = LIMITS["MAX_DIMENSION_VALUES"] + 1
        reply = await asyncio.to_thread(gw.call, "POST", "/upscale_tasks", "sizes", json=gw.task_body(values))
        assert_limit(reply, 413, "TOO_MANY_DIMENSION_VALUES", "MAX_DIMENSION_VALUES")
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateTask(create_request(gw, values), metadata=gw.md("sizes"), timeout=10)
        assert_grpc_limit(err.value, "MAX_DIMENSION_VALUES")
    assert await tasks_of(gw, "sizes") == 0   # nothing of a refused request was stored


def test_aoi_vertex_and_tile_limits(limits_gateway: AuthGateway) -> None:
    gw = limits_gateway
    many = circle(LIMITS["MAX_AOI_VERTICES"] + 10)
    assert_limit(gw.call("POST", "/tiles", "sizes", json={"aoi": many, "grid": "20x20km"}), 413,
                 "TOO_MANY_VERTICES", "MAX_AOI_VERTICES")
    assert_limit(gw.call("POST", "/tiles", "sizes", json={"aoi": BIG_AOI, "grid": "5x5km"}), 413,
                 "TOO_MANY_TILES", "MAX_TILES")
    assert gw.call("POST", "/tiles", "sizes", json={"aoi": circle(20), "grid": "20x20km"}).status_code == 201
    with grpc.insecure_channel(gw.grpc) as channel:
        tiler = tiler_pb2_grpc.TilerServiceStub(channel)
        for aoi, grid, name, code in ((many, "20x20km", "MAX_AOI_VERTICES", "TOO_MANY_VERTICES"),
                                      (BIG_AOI, "5x5km", "MAX_TILES", "TOO_MANY_TILES")):
            with pytest.raises(grpc.RpcError) as err:
                tiler.TileAoi(tiler_pb2.TileAoiRequest(aoi_geojson=json.dumps(aoi), grid=grid),
                              metadata=gw.md("sizes"), timeout=30)
            assert_grpc_limit(err.value, name)
            assert dict(err.value.trailing_metadata())["error-code"] == code


# ---- per user --------------------------------------------------------------------------------------------------

async def test_tasks_in_flight_per_user(limits_gateway: AuthGateway) -> None:
    gw = limits_gateway
    first = await asyncio.to_thread(gw.create, "inflight")
    await asyncio.to_thread(gw.create, "inflight")
    reply = await asyncio.to_thread(gw.call, "POST", "/upscale_tasks", "inflight", json=gw.task_body(1))
    assert_limit(reply, 429, "TOO_MANY_TASKS_IN_FLIGHT", "MAX_TASKS_IN_FLIGHT_PER_USER")
    job = {k: v for k, v in gw.task_body().items() if k != "dimension"}
    job["parameters"] = {**job["parameters"], "spatial_extent": gw.task_body(1)["dimension"]["values"][0]}
    reply = await asyncio.to_thread(gw.call, "POST", "/unit_jobs", "inflight", json=job)
    assert_limit(reply, 429, "TOO_MANY_TASKS_IN_FLIGHT", "MAX_TASKS_IN_FLIGHT_PER_USER")
    async with grpc.aio.insecure_channel(gw.grpc) as channel:
        stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateTask(create_request(gw), metadata=gw.md("inflight"))
        assert_grpc_limit(err.value, "MAX_TASKS_IN_FLIGHT_PER_USER")
        assert await tasks_of(gw, "inflight") == 2
        # another user is not affected; a finished (here: canceled) task frees a place
        assert (await stub.CreateTask(create_request(gw), metadata=gw.md("other"))).task.id
        await stub.CancelTask(upscaling_pb2.CancelTaskRequest(task_id=first), metadata=gw.md("inflight"))
        assert (await stub.CreateTask(create_request(gw), metadata=gw.md("inflight"))).task.id
    assert await tasks_of(gw, "inflight") == 3


async def test_tasks_in_flight_holds_under_concurrent_creates(limits_gateway: AuthGateway) -> None:
    gw = limits_gateway
    async with grpc.aio.insecure_channel(gw.grpc) as channel:
        stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
        results = await asyncio.gather(*(stub.CreateTask(create_request(gw), metadata=gw.md("racer"))
                                         for _ in range(6)), return_exceptions=True)
    created = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(created) == LIMITS["MAX_TASKS_IN_FLIGHT_PER_USER"] and len(refused) == 6 - len(created), results
    for err in refused:
        assert_grpc_limit(err, "MAX_TASKS_IN_FLIGHT_PER_USER")
    assert await tasks_of(gw, "racer") == LIMITS["MAX_TASKS_IN_FLIGHT_PER_USER"]


async def test_watches_per_user(limits_gateway: AuthGateway) -> None:
    gw = limits_gateway
    task_id = await asyncio.to_thread(gw.create, "watcher")
    url = gw.ws_url(f"/ws/upscale_tasks/{task_id}?interval=5")
    async with grpc.aio.insecure_channel(gw.grpc) as channel:
        stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
        first_ws = await websockets.connect(url, additional_headers=gw.headers("watcher"))
        assert json.loads(await asyncio.wait_for(first_ws.recv(), 10))["type"] == "init"
        stream = stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id), metadata=gw.md("watcher"))
        assert (await asyncio.wait_for(stream.read(), 10)).snapshot.id == task_id
        # both watches of the user are open: a third one, of either kind, is refused
        messages, code, reason = await ws_messages_until_close(url, headers=gw.headers("watcher"))
        assert code == 1008 and reason == "TOO_MANY_SUBSCRIPTIONS"
        assert messages[-1]["type"] == "error"
        assert f"limit MAX_WATCHES_PER_USER={LIMITS['MAX_WATCHES_PER_USER']} exceeded" in messages[-1]["message"]
        third = stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id), metadata=gw.md("watcher"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(third.read(), 10)
        assert_grpc_limit(err.value, "MAX_WATCHES_PER_USER")
        # closing one frees its place
        await first_ws.close()
        deadline = time.monotonic() + 10
        while True:
            first = await ws_first(url, headers=gw.headers("watcher"))
            if first["type"] == "init" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        assert first["type"] == "init", first
        stream.cancel()


async def test_requests_per_second_per_user(limits_gateway: AuthGateway) -> None:
    gw = limits_gateway
    replies = [await asyncio.to_thread(gw.call, "GET", "/upscale_tasks", "ratey") for _ in range(30)]
    codes = [r.status_code for r in replies]
    assert codes.count(200) >= LIMITS["MAX_REQUESTS_BURST_PER_USER"] - 1 and 429 in codes, codes
    limited = next(r for r in replies if r.status_code == 429)
    assert_limit(limited, 429, "RATE_LIMITED", "MAX_REQUESTS_PER_S_PER_USER")
    async with grpc.aio.insecure_channel(gw.grpc) as channel:
        stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListTasks(upscaling_pb2.ListTasksRequest(), metadata=gw.md("ratey"))
        assert_grpc_limit(err.value, "MAX_REQUESTS_PER_S_PER_USER")
    messages, code, reason = await ws_messages_until_close(gw.ws_url("/ws/jobs_status"), headers=gw.headers("ratey"))
    assert code == 1008 and reason == "RATE_LIMITED" and "MAX_REQUESTS_PER_S_PER_USER" in messages[0]["message"]
    # other users keep their own budget
    assert (await asyncio.to_thread(gw.call, "GET", "/upscale_tasks", "other")).status_code == 200


async def test_websocket_messages_per_second(limits_gateway: AuthGateway) -> None:
    gw = limits_gateway
    async with websockets.connect(gw.ws_url("/ws/jobs_status?interval=5"),
                                  additional_headers=gw.headers("wsrate")) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "init"
        for i in range(10):
            await ws.send(json.dumps({"n": i}))
        received: list[dict[str, Any]] = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                received.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    errors = [m for m in received if m["type"] == "error"]
    assert errors and f"limit WS_MAX_MESSAGES_PER_S={LIMITS['WS_MAX_MESSAGES_PER_S']} exceeded" in \
        errors[0]["message"]
    assert closed.value.rcvd.reason.startswith("limit WS_MAX_MESSAGES_PER_S=")
