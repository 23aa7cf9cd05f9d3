"""The one antimeridian split (upscaling.grids.aoi.split_antimeridian), for any number of turns."""

from __future__ import annotations

import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from upscaling.grids.aoi import split_antimeridian
from upscaling.grids.cells import cell_polygon


def _within_range(geom: shapely.Geometry) -> bool:
    xmin, _, xmax, _ = geom.bounds
    return -180.0 <= xmin and xmax <= 180.0


def test_geometry_within_range_is_returned_as_is() -> None:
    geom = box(-180, -10, 180, 10)
    assert split_antimeridian(geom) is geom


@pytest.mark.parametrize(("west", "east", "expected"), [
    (170, 190, [(170, 180), (-180, -170)]),  # one turn east
    (-190, -170, [(170, 180), (-180, -170)]),  # one turn west
    (530, 550, [(170, 180), (-180, -170)]),  # crosses +540: k = 1 and 2 (the old copy stopped at |k| = 1)
    (-560, -530, [(160, 180), (-180, -170)]),  # crosses -540
    (190, 200, [(-170, -160)]),  # wholly one turn east: shifted, not cut
    (900, 910, [(-180, -170)]),  # 2.5 turns east, entirely within k = 3
])
def test_pieces_are_cut_and_shifted(west: float, east: float, expected: list[tuple[float, float]]) -> None:
    out = split_antimeridian(box(west, 10, east, 20))
    assert _within_range(out) and out.is_valid
    parts = sorted((round(p.bounds[0], 9), round(p.bounds[2], 9)) for p in shapely.get_parts(out))
    assert parts == sorted(expected)
    assert out.area == pytest.approx((east - west) * 10)


def test_more_than_one_turn_is_merged() -> None:
    out = split_antimeridian(box(-200, 0, 200, 5))  # 400° wide: the pieces overlap once shifted
    assert isinstance(out, Polygon) and out.bounds == pytest.approx((-180, 0, 180, 5))
    assert out.area == pytest.approx(360 * 5)


def test_line_touching_pieces_and_holes() -> None:
    # A zero-area piece (touching +180 only) is dropped; a hole crossing the line stays a hole on both sides.
    assert isinstance(split_antimeridian(box(170, 0, 180.0, 5).union(box(100, 0, 110, 5))), MultiPolygon)
    ring = Polygon([(170, -10), (190, -10), (190, 10), (170, 10)], [[(175, -5), (185, -5), (185, 5), (175, 5)]])
    out = split_antimeridian(ring)
    assert isinstance(out, MultiPolygon) and len(out.geoms) == 2
    assert out.area == pytest.approx(ring.area)
    assert not out.intersects(box(175.5, -4, 179.5, 4)) and not out.intersects(box(-179.5, -4, -175.5, 4))


def test_cells_use_the_same_split() -> None:
    # A cell of UTM zone 60N (EPSG:32660) near the antimeridian: its east edge goes beyond 180°.
    cell = cell_polygon(32660, (700_000.0, 5_000_000.0, 800_000.0, 5_100_000.0))
    assert _within_range(cell)
    assert isinstance(cell, MultiPolygon) and len(cell.geoms) == 2
