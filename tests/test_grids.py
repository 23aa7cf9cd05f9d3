"""Tests of the grid library (upscaling.grids) through its public API, checked with tests/tile_properties.py.

Real AOIs come from shared/data/countries_naturalearth_110m.geojson (override with the environment
variable UPSCALING_COUNTRIES_GEOJSON, e.g. a full Natural Earth 110m file). Countries of the selection that
the file lacks (the shared copy holds 8 western European countries) are replaced by coarse hand-drawn
stand-ins with the same awkward features: Fiji and Russia across the antimeridian, Antarctica around the
south pole (drawn Natural Earth style, along ±180 and the pole), Greenland/Canada/Norway near 84°N,
Indonesia across the equator, Chile long and thin.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import shapely
from pyproj import Geod, Proj
from shapely.geometry import MultiPolygon, Polygon, box, shape

from tests import tile_properties as tp
from tests.shared_data import countries_file
from upscaling.grids import (
    STANDARD_GRIDS,
    AoiError,
    Grid,
    GridError,
    ParsedAoi,
    Tile,
    TooManyTilesError,
    estimate_tile_count,
    parse_aoi,
    parse_grid,
    tile_aoi,
)

GEOD = Geod(ellps="WGS84")
ID_RE = re.compile(r"^(?:(?:0[1-9]|[1-5][0-9]|60)[NS]|UPS[NS])-\d{4,}-\d{4,}$")
SEED_AOI = {
    "type": "Polygon",
    "coordinates": [
        [
            [14.370712654502597, 47.27563273620049],
            [14.370712654502597, 47.26583764118868],
            [14.405670947432327, 47.26583764118868],
            [14.405670947432327, 47.27563273620049],
            [14.370712654502597, 47.27563273620049],
        ]
    ],
}


def _countries_file() -> Path | None:
    candidates = [
        os.environ.get("UPSCALING_COUNTRIES_GEOJSON", ""),
        countries_file(),
    ]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None


COUNTRIES_FILE = _countries_file()
COUNTRIES: dict[str, dict] = (
    {
        f["properties"].get("name") or f["properties"].get("NAME"): f
        for f in json.loads(COUNTRIES_FILE.read_text())["features"]
    }
    if COUNTRIES_FILE
    else {}
)

# Coarse outlines ("lon lat, lon lat, ..." per ring, one ring per part), used when the file lacks a country.
STAND_IN_RINGS: dict[str, list[str]] = {
    "Fiji": [
        "180 -16.07, 180 -16.56, 179.36 -16.8, 178.73 -17.01, 178.6 -16.64, 179.1 -16.43, 180 -16.07",
        (
            "177.29 -17.72, 177.67 -17.38, 178.37 -17.34, 178.72 -17.63, 178.55 -18.15, 177.38 -18.16, "
            "177.29 -17.72"
        ),
        "-179.79 -16.02, -179.92 -16.5, -180 -16.56, -180 -16.16, -179.79 -16.02",
    ],
    "Russia": [
        (
            "28 60, 30 69, 40 67, 44 68, 60 69, 70 73, 87 75, 100 77, 113 73.5, 130 71, 150 71.5, "
            "160 69.5, 170 70, 180 69, 180 65, 178 62, 170 60, 163 56, 156 51, 156 57, 143 59, 141 52, "
            "135 43, 131 43, 127 50, 120 53, 108 49, 97 50, 87 49, 80 51, 70 55, 60 50, 50 47, 47 42, "
            "38 45, 38 48, 32 52, 28 56, 28 60"
        ),
        "-180 65, -180 69, -175 67.5, -170 66, -172 64.5, -180 65",
        "45 80, 65 80, 65 81.5, 45 81.5, 45 80",
        "19.7 54.4, 22.8 54.4, 22.7 55.1, 21 55.3, 19.7 54.4",
    ],
    "Greenland": [
        "-73 78, -60 82, -30 83.6, -12 81.5, -20 70, -43 60, -50 64, -55 70, -73 78",
    ],
    "Canada": [
        (
            "-141 60, -141 69.6, -120 70, -95 68, -80 73, -62 67, -55 52, -67 45, -83 42, -95 49, -123 49, "
            "-131 55, -141 60"
        ),
        "-90 76.5, -62 82, -70 83.1, -90 81, -90 76.5",
    ],
    "Indonesia": [
        "95.3 5.5, 98 4, 104 -1, 106 -6, 102 -4, 98 0, 95.3 5.5",
        "109 2, 117 4.3, 119 1, 116 -4, 110 -3, 109 2",
        "119 -5.5, 121 -1, 125 1.5, 123 -1, 121 -4.5, 119 -5.5",
        "105 -6.8, 114 -6.9, 114.5 -8.7, 106 -7.4, 105 -6.8",
        "131 -1, 138 -1.5, 141 -2.5, 141 -9, 137.5 -8.3, 134 -3.5, 131 -1",
    ],
    "Chile": [
        (
            "-70.4 -17.5, -69.5 -17.5, -68.3 -21, -67 -23, -68.5 -27, -70 -33, -71 -40, -71.7 -45, "
            "-72.5 -50, -68.6 -52.3, -75 -52, -74 -45, -73.5 -40, -72 -33, -71.4 -25, -70.4 -17.5"
        ),
        "-68.6 -52.6, -68.6 -55, -71 -55.5, -74 -53, -68.6 -52.6",
    ],
    "Norway": [
        (
            "5 58.2, 8 58, 11 59, 12.2 61, 12.5 64, 14.5 66, 18 68.5, 21 69, 25 68.6, 29 69.5, 31.1 70.3, "
            "28 71.1, 24 71, 19 70.2, 14 68, 12 65.5, 8 63.3, 5 62, 4.8 60, 5 58.2"
        ),
        "10.5 78, 16 76.5, 22 77.5, 27 79.5, 22 80.5, 16 80, 11 79.5, 10.5 78",
    ],
}


def _ring_of(text: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (p.split() for p in text.split(","))]


STAND_INS: dict[str, list[list[tuple[float, float]]]] = {
    name: [_ring_of(r) for r in rings] for name, rings in STAND_IN_RINGS.items()
}
# Antarctica, drawn Natural Earth style: a wavy coast around the pole, closed along ±180 and the pole.
_coast = [(float(x), -70 + 4 * math.sin(math.radians(3 * x))) for x in np.arange(-180.0, 180.1, 5.0)]
STAND_INS["Antarctica"] = [[(-180.0, -90.0), *_coast, (180.0, -90.0), (-180.0, -90.0)]]


def country(name: str) -> dict:
    """GeoJSON Feature of a country: from the countries file, or the stand-in above."""
    if name in COUNTRIES:
        return COUNTRIES[name]
    parts = STAND_INS[name]
    geom = {"type": "MultiPolygon", "coordinates": [[[list(p) for p in ring]] for ring in parts]}
    return {"type": "Feature", "properties": {"name": name, "stand_in": True}, "geometry": geom}


def dicts(tiles: list[Tile]) -> list[dict]:
    return [t.to_dict() for t in tiles]


def check(aoi: ParsedAoi, grid: str, *, clip: bool = True) -> list[Tile]:
    g = parse_grid(grid)
    tiles = tile_aoi(aoi, g, clip=clip)
    assert tiles, "no tiles"
    assert [t.id for t in tiles] == sorted(t.id for t in tiles)
    assert all(ID_RE.match(t.id) for t in tiles), [t.id for t in tiles if not ID_RE.match(t.id)][:5]
    tp.check_tiles(aoi.geometry, dicts(tiles), g.size_km, clipped=clip)
    return tiles


def poly(coords: list, holes: list | None = None) -> dict:
    return {"type": "Polygon", "coordinates": [coords, *(holes or [])]}


def ring(w: float, s: float, e: float, n: float) -> list[list[float]]:
    return [[w, s], [e, s], [e, n], [w, n], [w, s]]


# ------------------------------------------------------------------------------------------------ grids


@pytest.mark.parametrize("name", STANDARD_GRIDS)
def test_standard_grids(name: str) -> None:
    g = parse_grid(name)
    assert g.name == name and f"{g.size_km}x{g.size_km}km" == name


def test_parse_grid_any_size() -> None:
    assert parse_grid("1x1km") == Grid(1, "1x1km")
    assert parse_grid("1000x1000km").size_km == 1000
    assert parse_grid("7x7km").size_m == 7000.0


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("20x30km", "square"),
        ("0x0km", "between 1 and 1000"),
        ("1001x1001km", "between 1 and 1000"),
        ("20km", "expected 'NxNkm'"),
        ("20x20", "expected 'NxNkm'"),
        ("20x20 km", "expected 'NxNkm'"),
        ("-5x-5km", "expected 'NxNkm'"),
        ("2.5x2.5km", "expected 'NxNkm'"),
        ("020x020km", "leading zeros"),
        ("", "expected 'NxNkm'"),
        (20, "must be a string"),
        (None, "must be a string"),
    ],
)
def test_parse_grid_errors(name: object, needle: str) -> None:
    with pytest.raises(GridError, match=re.escape(needle)):
        parse_grid(name)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ real AOIs


@pytest.mark.skipif(not COUNTRIES, reason="countries file not found")
@pytest.mark.parametrize("name", sorted(COUNTRIES))
def test_every_country_250km(name: str) -> None:
    aoi = parse_aoi(COUNTRIES[name])
    check(aoi, "250x250km")
    check(aoi, "250x250km", clip=False)


SELECTION = [
    ("Germany", "20x20km"),
    ("Germany", "50x50km"),
    ("Germany", "100x100km"),
    ("Fiji", "20x20km"),
    ("Fiji", "50x50km"),
    ("Fiji", "100x100km"),
    ("Chile", "20x20km"),
    ("Chile", "100x100km"),
    ("Norway", "20x20km"),
    ("Norway", "50x50km"),
    ("Indonesia", "50x50km"),
    ("Indonesia", "100x100km"),
    ("Greenland", "50x50km"),
    ("Greenland", "100x100km"),
    ("Canada", "100x100km"),
    ("Russia", "100x100km"),
    ("Antarctica", "100x100km"),
]


@pytest.mark.parametrize(("name", "grid"), SELECTION)
def test_selection(name: str, grid: str) -> None:
    aoi = parse_aoi(country(name))
    tiles = check(aoi, grid)
    estimate = estimate_tile_count(aoi, parse_grid(grid))
    assert 0.75 * len(tiles) <= estimate <= 3 * len(tiles) + 10, (estimate, len(tiles))


@pytest.mark.parametrize("name", ["Fiji", "Russia", "Antarctica"])
def test_selection_whole_cells(name: str) -> None:
    aoi = parse_aoi(country(name))
    tiles = check(aoi, "100x100km", clip=False)
    clipped = tile_aoi(aoi, parse_grid("100x100km"))
    assert [t.id for t in tiles] == [t.id for t in clipped]


def test_seed_notebook_aoi_is_one_tile() -> None:
    aoi = parse_aoi(SEED_AOI)
    assert aoi.warnings == []
    tiles = check(aoi, "20x20km")
    assert len(tiles) == 1  # the notebook prints "Processing 1 tiles"
    t = tiles[0]
    assert (t.id, t.epsg, t.projected_bounds) == (
        "33N-0022-0261",
        32633,
        (440000.0, 5220000.0, 460000.0, 5240000.0),
    )
    assert t.to_geojson_geometry()["type"] == "Polygon"
    assert shapely.equals_exact(shapely.normalize(t.geometry), shapely.normalize(shape(SEED_AOI)), 1e-9) or (
        abs(t.geometry.area - shape(SEED_AOI).area) < 1e-12
        and t.geometry.within(shape(SEED_AOI).buffer(1e-9))
    )
    w, s, e, n = t.cell_bbox
    assert w < 14.3707 and e > 14.4057 and s < 47.2658 and n > 47.2757


def test_norway_uses_regular_zones() -> None:
    """No Norway/Svalbard exceptions: Bergen is in regular zone 31 (officially 32V), Svalbard in 33."""
    bergen = parse_aoi(poly(ring(5.2, 60.3, 5.4, 60.45)))
    svalbard = parse_aoi(poly(ring(15.0, 78.0, 15.5, 78.2)))
    assert {t.zone for t in tile_aoi(bergen, parse_grid("20x20km"))} == {"31N"}
    assert {t.zone for t in tile_aoi(svalbard, parse_grid("20x20km"))} == {"33N"}


# ------------------------------------------------------------------------------------- synthetic AOIs


def test_holes_are_respected() -> None:
    aoi = parse_aoi(
        poly(ring(8, 48, 11, 50), [ring(9, 48.5, 10, 49.5)[::-1], ring(10.2, 49.6, 10.25, 49.65)])
    )
    tiles = check(aoi, "20x20km")
    hole = box(9, 48.5, 10, 49.5)
    assert sum(t.geometry.intersection(hole).area for t in tiles) < 1e-7 * hole.area
    small = box(10.2, 49.6, 10.25, 49.65)
    assert sum(t.geometry.intersection(small).area for t in tiles) < 1e-7 * small.area


def test_multipart() -> None:
    aoi = parse_aoi(
        {"type": "MultiPolygon", "coordinates": [[ring(2, 45, 3, 46)], [ring(20, -30, 21.5, -29)]]}
    )
    tiles = check(aoi, "20x20km")
    assert {t.zone for t in tiles} == {"31N", "34S"}


ANTIMERIDIAN_FORMS = {
    "beyond_180": poly(ring(175, -20, 185, -10)),
    "both_sides": {
        "type": "MultiPolygon",
        "coordinates": [[ring(175, -20, 180, -10)], [ring(-180, -20, -175, -10)]],
    },
    "jumping_ring": poly([[175, -20], [-175, -20], [-175, -10], [175, -10], [175, -20]]),
}


@pytest.mark.parametrize("form", sorted(ANTIMERIDIAN_FORMS))
def test_antimeridian(form: str) -> None:
    aoi = parse_aoi(ANTIMERIDIAN_FORMS[form])
    xmin, _, xmax, _ = aoi.geometry.bounds
    assert (xmin, xmax) == (-180.0, 180.0) and aoi.geometry.area == pytest.approx(100.0)
    tiles = check(aoi, "50x50km")
    assert {t.zone for t in tiles} == {"60S", "01S"}
    reference = tile_aoi(parse_aoi(ANTIMERIDIAN_FORMS["beyond_180"]), parse_grid("50x50km"))
    assert [t.id for t in tiles] == [t.id for t in reference]
    if form != "both_sides":
        assert any("antimeridian" in w for w in aoi.warnings)


def test_antimeridian_whole_cells_are_split() -> None:
    aoi = parse_aoi(ANTIMERIDIAN_FORMS["beyond_180"])
    cells = check(aoi, "50x50km", clip=False)
    crossing = [t for t in cells if t.cell_bbox[0] > t.cell_bbox[2]]
    assert crossing, "a zone 60 cell next to the antimeridian should reach across it"
    for t in crossing:
        assert isinstance(t.geometry, MultiPolygon)
        assert {round(b, 9) for p in t.geometry.geoms for b in (p.bounds[0], p.bounds[2])} >= {-180.0, 180.0}


def test_antimeridian_polygon_with_hole_across() -> None:
    aoi = parse_aoi(poly([[170, 60], [190, 60], [190, 66], [170, 66], [170, 60]], [ring(178, 62, 182, 64)]))
    assert aoi.geometry.area == pytest.approx(120 - 8)
    check(aoi, "20x20km")


def _pole_tiles(tiles: list[Tile], north: bool) -> list[Tile]:
    pole = 90.0 if north else -90.0
    return [t for t in tiles if any(abs(y - pole) < 1e-9 for _, y in shapely.get_coordinates(t.geometry))]


@pytest.mark.parametrize("north", [True, False])
def test_cap_containing_the_pole(north: bool) -> None:
    lat = 86.0 if north else -86.0
    pole = 90.0 if north else -90.0
    aoi = parse_aoi(poly([[-180, lat], [180, lat], [180, pole], [-180, pole], [-180, lat]]))
    tiles = check(aoi, "50x50km")
    assert {t.zone for t in tiles} == {"UPSN" if north else "UPSS"}
    at_pole = _pole_tiles(tiles, north)
    assert len(at_pole) == 4  # the pole is a grid corner: one tile per quadrant touches it
    for t in at_pole:
        lons = {round(x, 9) for x, y in shapely.get_coordinates(t.geometry) if abs(y - pole) < 1e-9}
        assert len(lons) >= 2 and max(lons) - min(lons) == pytest.approx(90.0)  # a segment along the pole
        assert t.cell_bbox[2] - t.cell_bbox[0] == pytest.approx(90.0)


def test_ring_around_the_pole_without_pole_vertices() -> None:
    """A ring going once around the south pole (lon -180..180, then back at the start) encloses the pole."""
    lons = list(range(-180, 181, 10))
    aoi = parse_aoi(poly([[x, -82.0] for x in lons] + [[-180, -82.0]]))
    assert aoi.geometry.bounds[1] == -90.0
    assert any("pole" in w for w in aoi.warnings)
    tiles = check(aoi, "100x100km")
    assert {t.zone for t in tiles} == {"UPSS"}
    assert len(_pole_tiles(tiles, north=False)) == 4


def test_near_polar_boxes() -> None:
    north = parse_aoi(poly(ring(-30, 83, 60, 88)))  # UTM below 84°N, UPS above
    tiles = check(north, "20x20km")
    assert "UPSN" in {t.zone for t in tiles} and "31N" in {t.zone for t in tiles}
    south = parse_aoi(poly(ring(10, -85, 100, -79)))  # UPS below 80°S
    tiles = check(south, "50x50km")
    assert "UPSS" in {t.zone for t in tiles} and "33S" in {t.zone for t in tiles}


def test_ups_cells_are_at_most_n_km() -> None:
    aoi = parse_aoi(poly([[-180, 87], [180, 87], [180, 90], [-180, 90], [-180, 87]]))
    tiles = tile_aoi(aoi, parse_grid("25x25km"), clip=False)
    areas = [abs(GEOD.geometry_area_perimeter(t.geometry)[0]) / 1e6 for t in tiles]
    assert max(areas) <= 625.0 and max(areas) > 0.99 * 625  # step N*0.994 in UPS: N km at the pole
    for t in tiles:
        xmin, _, xmax, _ = t.projected_bounds
        assert xmax - xmin == pytest.approx(25_000 * 0.994)
        assert (xmin - 2_000_000) / (25_000 * 0.994) == pytest.approx(
            round((xmin - 2_000_000) / (25_000 * 0.994))
        )


@pytest.mark.parametrize("lat", [-79.5, -45.0, 0.5, 30.0, 55.0, 70.0, 83.5])
@pytest.mark.parametrize("size", [20, 100])
def test_utm_cells_are_n_km(lat: float, size: int) -> None:
    """Whole cells in lon/lat have the geodesic area of the true cell (N² km² / UTM's own areal scale)
    within 0.01 %: the densified edges are faithful. That is N² within +0.1 %/-0.3 % (at low latitudes
    UTM's scale reaches 1.001 at the zone edges, a little more for big cells reaching past them)."""
    aoi = parse_aoi(poly(ring(0.0, lat, 6.0, lat + 0.01)))
    for t in tile_aoi(aoi, parse_grid(f"{size}x{size}km"), clip=False):
        area = abs(GEOD.geometry_area_perimeter(t.geometry)[0]) / 1e6
        c = t.geometry.centroid
        scale = Proj(f"EPSG:{t.epsg}").get_factors(c.x, c.y).areal_scale
        assert area == pytest.approx(size**2 / scale, rel=1e-4), (t.id, area)
        assert size**2 * 0.997 <= area <= size**2 * 1.001, (t.id, area)
        assert t.cell_geometry().equals_exact(t.geometry, 0.0)


def test_equator_and_zone_border() -> None:
    aoi = parse_aoi(poly(ring(4, -2, 8, 2)))
    tiles = check(aoi, "20x20km")
    assert {t.zone for t in tiles} == {"31N", "31S", "32N", "32S"}
    assert all(t.geometry.bounds[1] >= 0 for t in tiles if t.zone.endswith("N"))
    assert all(t.geometry.bounds[3] <= 0 for t in tiles if t.zone.endswith("S"))


def test_shapely_geometry_input() -> None:
    geom = shape(SEED_AOI)
    assert [t.id for t in tile_aoi(geom, parse_grid("20x20km"))] == ["33N-0022-0261"]
    wrapped = tile_aoi(box(175, -20, 185, -10), parse_grid("100x100km"))
    assert {t.zone for t in wrapped} == {"60S", "01S"}


def test_clip_false_returns_whole_cells_that_touch_the_aoi() -> None:
    aoi = parse_aoi(poly(ring(10.0, 50.0, 10.5, 50.3)))
    clipped = tile_aoi(aoi, parse_grid("20x20km"))
    whole = check(aoi, "20x20km", clip=False)
    assert [t.id for t in clipped] == [t.id for t in whole]
    for c, w in zip(clipped, whole, strict=True):
        assert c.projected_bounds == w.projected_bounds and c.cell_bbox == w.cell_bbox
        assert w.geometry.area > c.geometry.area or w.geometry.equals(c.geometry)
        assert w.geometry.equals_exact(w.cell_geometry(), 0.0)


# ----------------------------------------------------------------------------------- consistency


def test_deterministic() -> None:
    aoi = parse_aoi(country("Germany"))
    a = tile_aoi(aoi, parse_grid("50x50km"))
    b = tile_aoi(parse_aoi(country("Germany")), parse_grid("50x50km"))
    assert [t.id for t in a] == [t.id for t in b]
    assert all(
        x.geometry.equals_exact(y.geometry, 0.0) and x.cell_bbox == y.cell_bbox
        for x, y in zip(a, b, strict=True)
    )


def test_overlapping_aois_share_cells() -> None:
    grid = parse_grid("20x20km")
    a = {t.id: t for t in tile_aoi(parse_aoi(poly(ring(5, 45, 9.5, 49))), grid)}
    b = {t.id: t for t in tile_aoi(parse_aoi(poly(ring(7, 47, 12, 51))), grid)}
    both = tile_aoi(parse_aoi(poly(ring(7, 47, 9.5, 49))), grid)
    assert both
    for t in both:
        for other in (a[t.id], b[t.id]):
            assert (other.epsg, other.projected_bounds, other.cell_bbox) == (
                t.epsg,
                t.projected_bounds,
                t.cell_bbox,
            )
    inner = [t.id for t in both if t.geometry.equals_exact(t.cell_geometry(), 0.0)]
    assert inner and all(a[i].geometry.equals_exact(b[i].geometry, 0.0) for i in inner)


def test_neighbours_share_vertices() -> None:
    tiles = tile_aoi(parse_aoi(poly(ring(8.2, 48.3, 9.4, 49.1))), parse_grid("20x20km"))
    by_cell = {(t.col, t.row): t for t in tiles}
    shared = 0
    for (c, r), t in by_cell.items():
        right = by_cell.get((c + 1, r))
        if right is not None and t.zone == right.zone:
            pa = {tuple(p) for p in shapely.get_coordinates(t.geometry)}
            pb = {tuple(p) for p in shapely.get_coordinates(right.geometry)}
            common = pa & pb
            assert len(common) >= 2
            shared += len(common)
    assert shared > 0


# ------------------------------------------------------------------------------------ input handling


def test_feature_collection_union_and_warnings() -> None:
    fc = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {}, "geometry": poly(ring(10, 50, 10.2, 50.2))},
            {"type": "Feature", "properties": {}, "geometry": poly(ring(10.1, 50.1, 10.3, 50.3))},
            {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [10, 50]}},
            {"type": "Feature", "properties": {}, "geometry": None},
        ],
    }
    aoi = parse_aoi(json.dumps(fc))
    assert isinstance(aoi.geometry, Polygon)
    assert aoi.geometry.area == pytest.approx(0.04 + 0.04 - 0.01)
    assert sum("skipped" in w for w in aoi.warnings) == 2
    assert any("overlapping" in w for w in aoi.warnings)
    check(aoi, "5x5km")


def test_bow_tie_is_repaired_with_a_warning() -> None:
    aoi = parse_aoi(poly([[10, 50], [10.4, 50.4], [10.4, 50], [10, 50.4], [10, 50]]))
    assert any("make_valid" in w and "Self-intersection" in w for w in aoi.warnings), aoi.warnings
    assert aoi.geometry.area == pytest.approx(0.08)
    check(aoi, "10x10km")


BAD_INPUTS = [
    ("not json", "not valid JSON"),
    (b"\xff\xfe", "not valid UTF-8"),
    ([1, 2], "must be a GeoJSON object"),
    (42, "must be a GeoJSON object"),
    ({"coordinates": []}, 'no "type"'),
    ({"type": 5}, '"type" must be a string'),
    ({"type": "Banana"}, "unknown GeoJSON type 'Banana'"),
    ({"type": "Point", "coordinates": [1, 2]}, "unsupported type 'Point'"),
    (
        {"type": "LineString", "coordinates": [[1, 2], [3, 4]]},
        "Polygon, MultiPolygon, Feature or FeatureCollection",
    ),
    ({"type": "GeometryCollection", "geometries": []}, "unsupported type 'GeometryCollection'"),
    ({"type": "Polygon"}, 'no "coordinates"'),
    ({"type": "Polygon", "coordinates": []}, "empty"),
    ({"type": "MultiPolygon", "coordinates": []}, "empty"),
    ({"type": "Polygon", "coordinates": "x"}, "array of linear rings"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}, "coordinates[0] has 3 position(s)"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}, "coordinates[0] is not closed"),
    (
        {"type": "Polygon", "coordinates": [[[0, 0], [1, "a"], [1, 1], [0, 0]]]},
        "coordinates[0][1]: latitude must be a number",
    ),
    (
        {"type": "Polygon", "coordinates": [[[0, 0], [1, None], [1, 1], [0, 0]]]},
        "latitude must be a number, got null",
    ),
    (
        {"type": "Polygon", "coordinates": [[[0, 0], [True, 0], [1, 1], [0, 0]]]},
        "longitude must be a number, got a boolean",
    ),
    (
        {"type": "Polygon", "coordinates": [[[0, 0], [1], [1, 1], [0, 0]]]},
        "coordinates[0][1] must be a position",
    ),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, float("nan")], [1, 1], [0, 0]]]}, "non-finite"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, float("inf")], [1, 1], [0, 0]]]}, "non-finite"),
    (
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 91], [1, 1], [0, 0]]]},
        "latitude 91 is outside [-90, 90]",
    ),
    (
        {"type": "Polygon", "coordinates": [[[0, 0], [361, 0], [1, 1], [0, 0]]]},
        "longitude 361 is outside [-360, 360]",
    ),
    (
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [2, 2], [0, 0]]]},
        "cannot be repaired: make_valid yields no area",
    ),
    ({"type": "Feature", "geometry": None}, "null geometry"),
    ({"type": "Feature"}, 'no "geometry"'),
    (
        {"type": "Feature", "geometry": {"type": "Feature", "geometry": None}},
        "must be a Polygon or MultiPolygon",
    ),
    ({"type": "FeatureCollection", "features": []}, "without features"),
    ({"type": "FeatureCollection"}, '"features" array'),
    (
        {"type": "FeatureCollection", "features": [{"type": "Polygon"}]},
        "features[0] must be a GeoJSON Feature",
    ),
    (
        {
            "type": "FeatureCollection",
            "features": [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]}}],
        },
        "contains no Polygon or MultiPolygon",
    ),
    (
        {"type": "MultiPolygon", "coordinates": [[[[0, 0], [1, 0], [1, 1], [0, 0]]], [[[0, 0], [1, 0]]]]},
        "coordinates[1][0] has 2",
    ),
]


@pytest.mark.parametrize(("obj", "needle"), BAD_INPUTS, ids=[f"bad{i}" for i in range(len(BAD_INPUTS))])
def test_invalid_input_is_explained(obj: object, needle: str) -> None:
    with pytest.raises(AoiError) as err:
        parse_aoi(obj)
    assert needle in str(err.value), str(err.value)


def test_invalid_shapely_input() -> None:
    with pytest.raises(AoiError, match="unsupported geometry type 'LineString'"):
        tile_aoi(shapely.LineString([(0, 0), (1, 1)]), parse_grid("20x20km"))
    with pytest.raises(AoiError, match="empty"):
        tile_aoi(Polygon(), parse_grid("20x20km"))


def test_cap_raises_with_the_estimate() -> None:
    aoi = parse_aoi(country("Germany"))
    with pytest.raises(TooManyTilesError) as err:
        tile_aoi(aoi, parse_grid("1x1km"))
    e = err.value
    assert e.cap == 100_000 and e.estimated > 100_000
    assert str(e) == f"AOI would produce about {e.estimated} tiles at 1x1km, more than the limit of 100000"
    assert e.estimated == estimate_tile_count(aoi, parse_grid("1x1km"))
    with pytest.raises(TooManyTilesError, match=r"more than the limit of 10$"):
        tile_aoi(aoi, parse_grid("20x20km"), max_tiles=10)
    assert len(tile_aoi(aoi, parse_grid("250x250km"), max_tiles=100)) <= 100


def test_estimate_is_close_for_germany() -> None:
    aoi = parse_aoi(country("Germany"))
    for grid in ("5x5km", "20x20km", "100x100km"):
        n = len(tile_aoi(aoi, parse_grid(grid)))
        assert n <= estimate_tile_count(aoi, parse_grid(grid)) <= 1.5 * n + 10
