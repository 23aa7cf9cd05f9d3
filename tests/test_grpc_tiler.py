"""TilerService through gRPC — on the tiler itself and on the gateway's public port — plus health/reflection."""

from __future__ import annotations

import json

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from shapely.geometry import shape

from tests import tile_properties as props
from tests.aois import SEED_AOI, SYNTHETIC, box, countries, europe
from upscaling.v1 import tiler_pb2, tiler_pb2_grpc


@pytest.fixture(params=["tiler", "gateway"])
def stub(request, tiler_channel, gateway_channel) -> tiler_pb2_grpc.TilerServiceStub:
    return tiler_pb2_grpc.TilerServiceStub(tiler_channel if request.param == "tiler" else gateway_channel)


def tile(stub, aoi, grid: str = "20x20km", full_cells: bool = False) -> tiler_pb2.TileAoiResponse:
    return stub.TileAoi(tiler_pb2.TileAoiRequest(aoi_geojson=json.dumps(aoi), grid=grid, full_cells=full_cells),
                        timeout=120)


def as_dicts(reply: tiler_pb2.TileAoiResponse) -> list[dict]:
    def bbox(b):
        return [b.west, b.south, b.east, b.north]

    return [{"id": t.id, "geometry": json.loads(t.geometry_geojson), "cell_bbox": bbox(t.cell_bbox), "epsg": t.epsg,
             "projected_bounds": bbox(t.projected_bounds)} for t in reply.tiles]


def test_seed_aoi_is_one_tile(stub) -> None:
    reply = tile(stub, SEED_AOI)
    assert len(reply.tiles) == 1
    t = reply.tiles[0]
    assert t.zone == "33N" and t.epsg == 32633
    assert t.id == f"33N-{t.col:04d}-{t.row:04d}"
    assert t.projected_bounds.west == t.col * 20000 and t.projected_bounds.south == t.row * 20000
    assert reply.grid.name == "20x20km" and reply.grid.size_km == 20


def test_all_countries_at_250km_and_20km(stub) -> None:
    for name, geometry in countries().items():
        for size in (250, 20):
            reply = tile(stub, geometry, f"{size}x{size}km")
            assert reply.tiles, name
            props.check_tiles(shape(geometry), as_dicts(reply), size)


@pytest.mark.parametrize("name,grid", [("Germany", "20x20km"), ("Austria", "10x10km"), ("France", "50x50km"),
                                       ("Italy", "100x100km"), ("Spain", "25x25km")])
def test_countries_at_finer_grids(stub, name: str, grid: str) -> None:
    geometry = countries()[name]
    props.check_tiles(shape(geometry), as_dicts(tile(stub, geometry, grid)), int(grid.split("x")[0]))


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_aois(stub, name: str) -> None:
    aoi = SYNTHETIC[name]
    reply = tile(stub, aoi, "20x20km")
    props.check_tiles(shape(aoi), as_dicts(reply), 20)


def test_same_aoi_same_ids_and_overlapping_aois_share_cells(stub) -> None:
    a, b = box(8.0, 47.0, 10.0, 48.5), box(9.0, 48.0, 11.5, 49.5)
    first, again = tile(stub, a), tile(stub, a)
    assert [t.id for t in first.tiles] == [t.id for t in again.tiles]
    full_a = {t.id: t for t in tile(stub, a, full_cells=True).tiles}
    full_b = {t.id: t for t in tile(stub, b, full_cells=True).tiles}
    common = set(full_a) & set(full_b)
    assert len(common) > 10
    for tile_id in common:
        assert full_a[tile_id].projected_bounds == full_b[tile_id].projected_bounds
        assert full_a[tile_id].geometry_geojson == full_b[tile_id].geometry_geojson


@pytest.mark.parametrize("aoi,needle", [
    ("not json at all", "JSON"),
    ('{"type": "Point", "coordinates": [1, 2]}', "Point"),
    ('{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 100], [0, 0]]]}', "latitude"),
    ('{"type": "Polygon", "coordinates": [[[0, 0], [400, 0], [1, 1], [0, 0]]]}', "longitude"),
    ('{"type": "Polygon", "coordinates": []}', "empty"),
    ('{"type": "Polygon", "coordinates": [[[0, 0], [0, 0], [0, 0], [0, 0]]]}', ""),
    ('{"type": "Feature", "geometry": null, "properties": {}}', ""),
    ('{"type": "FeatureCollection", "features": []}', "empty"),
    ('[1, 2, 3]', ""),
    ("", "empty"),
])
def test_invalid_aoi_is_invalid_argument(stub, aoi: str, needle: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.TileAoi(tiler_pb2.TileAoiRequest(aoi_geojson=aoi, grid="20x20km"), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle.lower() in err.value.details().lower()
    assert len(err.value.details()) > 10


@pytest.mark.parametrize("grid", ["", "20x20", "20x30km", "0x0km", "99999x99999km", "abc"])
def test_unknown_grid_is_invalid_argument(stub, grid: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        tile(stub, SEED_AOI, grid)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "grid" in err.value.details().lower()


def test_tile_cap_is_resource_exhausted_with_estimate(stub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        tile(stub, europe(), "1x1km")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = err.value.details().replace(",", "")
    assert "100000" in details
    assert dict(err.value.trailing_metadata())["error-code"] == "TOO_MANY_TILES"


def test_list_grids(stub) -> None:
    reply = stub.ListGrids(tiler_pb2.ListGridsRequest(), timeout=10)
    names = [g.name for g in reply.grids]
    assert {"5x5km", "10x10km", "20x20km", "50x50km", "100x100km", "250x250km"} <= set(names)
    assert reply.max_tiles == 100000


@pytest.mark.parametrize("target", ["tiler", "gateway"])
def test_health_and_reflection(target: str, tiler_channel, gateway_channel) -> None:
    channel = tiler_channel if target == "tiler" else gateway_channel
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "upscaling.v1.TilerService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = list(reflection.ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="upscaling.v1.TilerService"),
    ]), timeout=5))
    services = {s.name for s in replies[0].list_services_response.service}
    assert {"upscaling.v1.TilerService", "grpc.health.v1.Health"} <= services
    assert replies[1].file_descriptor_response.file_descriptor_proto
