"""Garbage GeoJSON through the real TilerService (on the tiler and on the gateway's public port) and through
`POST /tiles`: every answer is a valid tiling or a clean INVALID_ARGUMENT/RESOURCE_EXHAUSTED (HTTP 4xx), never
INTERNAL/5xx, and the services stay up."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import requests
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz import counts
from tests.fuzz.stack import FuzzStack
from tests.fuzz.strategies import GRIDS, aois, big_polygon, wrapped
from upscaling.v1 import tiler_pb2, tiler_pb2_grpc

CLEAN_GRPC = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
# Regression examples: inputs that once answered INTERNAL/500.
REGRESSIONS: list[Any] = [
    {"type": "Polygon", "coordinates": [[[10**400, 0], [1, 0], [1, 1], [10**400, 0]]]},  # int too large for float
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]], "bbox": [10**400]},
    [[[[[[[[[[]]]]]]]]]],
]


def dumps(value: Any) -> str:
    """JSON text as Python writes it: NaN/Infinity literals and huge integers included."""
    return json.dumps(value, allow_nan=True)


def nested_text(depth: int) -> str:
    """A JSON document nested `depth` arrays deep (deeper than any parser's recursion limit)."""
    return '{"type": "Polygon", "coordinates": ' + "[" * depth + "]" * depth + "}"


@pytest.fixture(scope="module", params=["tiler", "gateway"])
def tiler_stub(request: pytest.FixtureRequest, fuzz_stack: FuzzStack) -> Iterator[Any]:
    address = fuzz_stack.tiler if request.param == "tiler" else fuzz_stack.gateway_grpc
    with grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 1 << 28),
                                                 ("grpc.max_send_message_length", 1 << 28)]) as channel:
        yield request.param, tiler_pb2_grpc.TilerServiceStub(channel)


def tile_grpc(stub: Any, text: str, grid: str, full_cells: bool = False) -> tuple[grpc.StatusCode, str]:
    try:
        reply = stub.TileAoi(tiler_pb2.TileAoiRequest(aoi_geojson=text, grid=grid, full_cells=full_cells),
                             timeout=120)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    assert reply.tiles, "an accepted AOI has at least one tile"
    return grpc.StatusCode.OK, ""


def check_grpc(tiler_stub: Any, text: str, grid: str, full_cells: bool = False) -> None:
    name, stub = tiler_stub
    counts.record(f"gRPC TileAoi ({name})")
    code, details = tile_grpc(stub, text, grid, full_cells)
    assert code in CLEAN_GRPC, f"{code}: {details} for {text[:300]!r} grid {grid!r}"
    if code != grpc.StatusCode.OK:
        assert details and "internal" not in details.lower(), details


@given(aoi=aois(), grid=GRIDS | st.just("20x20km"), full_cells=st.booleans())
@example(aoi=REGRESSIONS[0], grid="20x20km", full_cells=False)
@example(aoi=REGRESSIONS[1], grid="20x20km", full_cells=False)
@example(aoi=REGRESSIONS[2], grid="20x20km", full_cells=False)
def test_grpc_tile_aoi_garbage_geojson(tiler_stub: Any, aoi: Any, grid: str, full_cells: bool) -> None:
    check_grpc(tiler_stub, dumps(aoi), grid, full_cells)


@given(text=st.text(max_size=200) | st.sampled_from(["", " ", "{", "[1,", "NaN", '{"type": "Polygon"', "\x00",
                                                      nested_text(100_000), nested_text(900)]))
def test_grpc_tile_aoi_garbage_text(tiler_stub: Any, text: str) -> None:
    check_grpc(tiler_stub, text, "20x20km")


@given(aoi=wrapped(big_polygon()), grid=st.sampled_from(["20x20km", "1x1km", "100x100km"]))
def test_grpc_tile_aoi_huge_vertex_counts(tiler_stub: Any, aoi: Any, grid: str) -> None:
    check_grpc(tiler_stub, dumps(aoi), grid)


def post_tiles(stack: FuzzStack, body: Any) -> requests.Response:
    counts.record("HTTP POST /tiles")
    return requests.post(f"{stack.http}/tiles", data=dumps(body), headers={"Content-Type": "application/json"},
                         timeout=120)


def check_http(reply: requests.Response, what: Any) -> None:
    assert reply.status_code < 500, f"{reply.status_code} {reply.text[:500]} for {dumps(what)[:300]}"
    if reply.status_code >= 400:
        body = reply.json()
        assert body["status"] == "error" and body["message"], body
    else:
        assert reply.status_code == 201 and int(reply.headers["X-Tile-Count"]) > 0


@given(aoi=aois(), grid=GRIDS, fmt=st.sampled_from(["geometrycollection", "featurecollection", "GeoJSON", 1]),
       full_cells=st.sampled_from([False, True, "yes", None, 0]))
@example(aoi=REGRESSIONS[0], grid="20x20km", fmt="featurecollection", full_cells=False)
@example(aoi=REGRESSIONS[2], grid="20x20km", fmt="featurecollection", full_cells=False)
def test_http_tiles_garbage_geojson(fuzz_stack: FuzzStack, aoi: Any, grid: str, fmt: Any, full_cells: Any) -> None:
    body = {"aoi": aoi, "grid": grid, "format": fmt, "full_cells": full_cells}
    check_http(post_tiles(fuzz_stack, body), body)


@given(aoi=wrapped(big_polygon()))
def test_http_tiles_huge_vertex_counts(fuzz_stack: FuzzStack, aoi: Any) -> None:
    check_http(post_tiles(fuzz_stack, {"aoi": aoi, "grid": "20x20km"}), aoi)


@pytest.mark.parametrize("depth", [900, 5000, 200_000])
def test_http_tiles_deeply_nested_json(fuzz_stack: FuzzStack, depth: int) -> None:
    counts.record("HTTP POST /tiles")
    text = '{"aoi": ' + nested_text(depth) + "}"
    reply = requests.post(f"{fuzz_stack.http}/tiles", data=text, headers={"Content-Type": "application/json"},
                          timeout=60)
    check_http(reply, text[:100])
