"""`POST /tiles` and `GET /health` of the HTTP bridge, through real HTTP against the running gateway."""

from __future__ import annotations

import json

import pytest
import requests
from shapely.geometry import shape

from tests import tile_properties as props
from tests.aois import SEED_AOI, SYNTHETIC, countries, europe


def post_tiles(stack, body, **kw) -> requests.Response:
    return requests.post(f"{stack.http}/tiles", json=body, timeout=120, **kw)


def test_seed_notebook_cell_runs_unchanged(stack) -> None:
    # The notebook's code, with only the host changed.
    dispatch_api = stack.http.removeprefix("http://")
    spatial_extent = SEED_AOI
    tiles = requests.post(f"http://{dispatch_api}/tiles", json={
        "grid": "20x20km",
        "aoi": spatial_extent
    }).json()
    assert len(tiles["geometries"]) == 1
    assert tiles["type"] == "GeometryCollection"
    tile = shape(tiles["geometries"][0])
    assert tile.equals_exact(shape(SEED_AOI).normalize(), 1e-7) or tile.symmetric_difference(
        shape(SEED_AOI)).area < 1e-6 * shape(SEED_AOI).area


def test_status_201_and_correlation_id_echoed(stack) -> None:
    reply = post_tiles(stack, {"aoi": SEED_AOI, "grid": "250x250km"}, headers={"X-Correlation-ID": "abc-123"})
    assert reply.status_code == 201
    assert reply.headers["x-correlation-id"] == "abc-123"
    assert reply.headers["x-tile-count"] == "1"
    assert post_tiles(stack, {"aoi": SEED_AOI}).headers["x-correlation-id"]


@pytest.mark.parametrize("name,grid", [("Germany", "20x20km"), ("Netherlands", "5x5km"), ("Poland", "50x50km"),
                                       ("Belgium", "250x250km"), ("France", "100x100km")])
def test_countries_tile_exactly(stack, name: str, grid: str) -> None:
    aoi = countries()[name]
    reply = post_tiles(stack, {"aoi": aoi, "grid": grid, "format": "featurecollection"})
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert body["type"] == "FeatureCollection" and body["grid"] == grid
    tiles = [{"id": f["id"], "geometry": f["geometry"], **f["properties"]} for f in body["features"]]
    props.check_tiles(shape(aoi), tiles, int(grid.split("x")[0]))


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_aois_geometry_collection_covers_aoi(stack, name: str) -> None:
    reply = post_tiles(stack, {"aoi": SYNTHETIC[name], "grid": "20x20km"})
    assert reply.status_code == 201, reply.text
    geoms = reply.json()["geometries"]
    assert geoms
    for g in geoms:
        lons = [c[0] for c in json.dumps(g) and _coords(g)]
        assert max(lons) - min(lons) < 180, f"{name}: a tile spans the globe"


def _coords(geometry: dict) -> list[list[float]]:
    out: list[list[float]] = []

    def walk(node) -> None:
        if isinstance(node[0], (int, float)):
            out.append(node)
        else:
            for child in node:
                walk(child)

    walk(geometry["coordinates"])
    return out


def test_full_cells_option_returns_whole_cells(stack) -> None:
    clipped = post_tiles(stack, {"aoi": SEED_AOI, "grid": "20x20km", "format": "featurecollection"}).json()
    full = post_tiles(stack, {"aoi": SEED_AOI, "grid": "20x20km", "format": "featurecollection",
                              "full_cells": True}).json()
    assert [f["id"] for f in clipped["features"]] == [f["id"] for f in full["features"]]
    assert shape(full["features"][0]["geometry"]).area > 50 * shape(clipped["features"][0]["geometry"]).area
    p = full["features"][0]["properties"]
    assert p["epsg"] == 32633 and p["zone"] == "33N"
    xmin, ymin, xmax, ymax = p["projected_bounds"]
    assert (xmax - xmin, ymax - ymin) == (20000, 20000) and xmin % 20000 == 0 and ymin % 20000 == 0


@pytest.mark.parametrize("body,needle", [
    ({"aoi": {"type": "Point", "coordinates": [1, 2]}, "grid": "20x20km"}, "Point"),
    ({"aoi": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 95], [0, 0]]]}, "grid": "20x20km"},
     "latitude"),
    ({"aoi": {"type": "Polygon", "coordinates": []}, "grid": "20x20km"}, "empty"),
    ({"aoi": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1]]]}, "grid": "20x20km"}, ""),
    ({"aoi": {"type": "Polygon", "coordinates": [[["a", 0], [1, 0], [1, 1], ["a", 0]]]}, "grid": "20x20km"}, ""),
    ({"aoi": SEED_AOI, "grid": "20x30km"}, "20x30km"),
    ({"aoi": SEED_AOI, "grid": "hexagons"}, "hexagons"),
    ({"aoi": "POLYGON((0 0,1 0,1 1,0 0))", "grid": "20x20km"}, "aoi"),
    ({"grid": "20x20km"}, "aoi"),
    ({"aoi": SEED_AOI, "grid": 20}, "grid"),
    ({"aoi": SEED_AOI, "grid": "20x20km", "full_cells": "yes"}, "full_cells"),
    ({"aoi": SEED_AOI, "grid": "20x20km", "colour": "red"}, "colour"),
])
def test_invalid_requests_get_422_validation_error(stack, body, needle: str) -> None:
    reply = post_tiles(stack, body)
    assert reply.status_code == 422, reply.text
    error = reply.json()
    assert error["status"] == "error" and error["error_code"] == "VALIDATION_ERROR"
    assert needle.lower() in error["message"].lower()
    assert error["request_id"] == reply.headers["x-correlation-id"]


def test_body_that_is_not_json_is_rejected(stack) -> None:
    reply = requests.post(f"{stack.http}/tiles", data=b"{not json", headers={"Content-Type": "application/json"},
                          timeout=10)
    assert reply.status_code == 422
    assert reply.json()["error_code"] == "VALIDATION_ERROR"


def test_too_many_tiles_names_the_estimate(stack) -> None:
    reply = post_tiles(stack, {"aoi": europe(), "grid": "1x1km"})
    assert reply.status_code == 413, reply.text
    error = reply.json()
    assert error["error_code"] == "TOO_MANY_TILES"
    assert "100000" in error["message"].replace(",", "")


def test_oversized_body_is_refused_with_413(stack) -> None:
    ring = [[10 + i * 1e-6, 45.0] for i in range(1_000_000)] + [[10, 46], [10, 45.0]]
    reply = post_tiles(stack, {"aoi": {"type": "Polygon", "coordinates": [ring]}, "grid": "20x20km"})
    assert reply.status_code == 413
    assert reply.json()["error_code"] == "PAYLOAD_TOO_LARGE"
    assert "limit" in reply.json()["message"]


def test_repaired_polygon_reports_a_warning(stack) -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[10, 45], [10.5, 45.5], [10.5, 45], [10, 45.5], [10, 45]]]}
    reply = post_tiles(stack, {"aoi": bowtie, "grid": "20x20km", "format": "featurecollection"})
    assert reply.status_code == 201, reply.text
    assert any("make_valid" in w for w in reply.json()["warnings"])
    assert "make_valid" in reply.headers["x-warnings"]


def test_unknown_path_and_method_use_the_envelope(stack) -> None:
    reply = requests.get(f"{stack.http}/no/such/path", timeout=10)
    assert reply.status_code == 404 and reply.json()["error_code"] == "NOT_FOUND"
    reply = requests.get(f"{stack.http}/tiles", timeout=10)
    assert reply.status_code == 405 and reply.json()["status"] == "error"


def test_health_reports_every_dependency(stack) -> None:
    reply = requests.get(f"{stack.http}/health", timeout=10)
    assert reply.status_code == 200
    body = reply.json()
    assert body["status"] == "ok"
    for dependency in ("database", "rabbitmq", "tiler"):
        assert body[dependency] == {"status": "ok"}
