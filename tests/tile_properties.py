"""Reusable property checks for grid tiles given as plain dicts (as sent over gRPC/HTTP).

A tile dict has at least ``id``, ``geometry`` (GeoJSON Polygon/MultiPolygon in lon/lat), ``cell_bbox``
``[w, s, e, n]`` (``w > e`` for a cell across the antimeridian), ``epsg`` and ``projected_bounds``
``[xmin, ymin, xmax, ymax]`` of the whole cell. The AOI is a shapely lon/lat (Multi)Polygon, either
within [-180, 180] or drawn in one continuous longitude frame (e.g. 170..190); it is cut at ±180 here.
(A ring that jumps from 179 to -179 must be given as parsed by the library, or redrawn continuously.)

These helpers deliberately do not use the library under test. GeoJSON edges are straight in lon/lat, so:

* unions are taken in lon/lat, where such edges are exactly straight;
* areas are measured after densifying in lon/lat (``DENSIFY_DEG``) and projecting to the cylindrical
  equal-area EPSG:6933 (exact areas everywhere, poles included: a pole is a straight line there);
* "inside its cell" is checked in the cell's own CRS after densifying the tile in lon/lat.

Every check raises AssertionError with a readable message. ``check_tiles`` runs them all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import shapely
from pyproj import Geod, Transformer
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry

__all__ = [
    "DENSIFY_DEG",
    "check_cells",
    "check_covers",
    "check_no_overlap",
    "check_tiles",
    "check_union",
    "check_unique_ids",
    "equal_area",
    "tile_geometries",
]

DENSIFY_DEG = 0.01
UPS_SCALE = 0.994  # polar cells are N x 0.994 km in UPS coordinates (at most N km on the ground)
_GEOD = Geod(ellps="WGS84")
Tiles = Sequence[Mapping[str, Any]]


@lru_cache(maxsize=256)
def _transformer(src: int, dst: int) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


def _project(geom: Any, epsg: int) -> Any:
    tr = _transformer(4326, epsg)

    def fwd(c: np.ndarray) -> np.ndarray:
        x, y = tr.transform(c[:, 0], c[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geom, fwd)


def _wrap(geom: BaseGeometry) -> BaseGeometry:
    """Cut a lon/lat geometry at odd multiples of 180° and shift the pieces into [-180, 180]."""
    xmin, _, xmax, _ = geom.bounds
    if xmin >= -180 and xmax <= 180:
        return geom
    pieces = []
    for k in range(math.floor((xmin + 180) / 360), math.floor((xmax + 180) / 360) + 1):
        piece = shapely.intersection(geom, shapely.box(-180 + 360 * k, -90, 180 + 360 * k, 90))
        if not piece.is_empty:
            pieces.append(shapely.transform(piece, lambda c, k=k: c - [360.0 * k, 0.0]))
    return shapely.union_all(pieces)


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    if isinstance(geom, Polygon | MultiPolygon):
        return geom
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, Polygon | MultiPolygon)]
    return shapely.union_all(parts) if parts else Polygon()


def equal_area(geom: Any) -> Any:
    """Lon/lat geometry (or array of them) in EPSG:6933, every edge densified to ``DENSIFY_DEG`` first."""
    return _project(shapely.segmentize(geom, DENSIFY_DEG), 6933)


def tile_geometries(tiles: Tiles) -> np.ndarray:
    """Shapely lon/lat geometries of the tile dicts; checks each is a valid, non-empty (Multi)Polygon within
    [-180, 180] x [-90, 90] whose parts do not wrap around the globe."""
    out = np.empty(len(tiles), dtype=object)
    for i, t in enumerate(tiles):
        g = shape(t["geometry"])
        assert isinstance(g, Polygon | MultiPolygon), f"tile {t['id']}: geometry is a {g.geom_type}"
        assert not g.is_empty and g.area > 0, f"tile {t['id']}: empty geometry"
        assert g.is_valid, f"tile {t['id']}: invalid geometry ({shapely.is_valid_reason(g)})"
        xmin, ymin, xmax, ymax = g.bounds
        assert -180 <= xmin and xmax <= 180 and -90 <= ymin and ymax <= 90, (
            f"tile {t['id']}: bounds {g.bounds}"
        )
        for p in shapely.get_parts(g):  # a cell across ±180 comes as a MultiPolygon split there
            px0, _, px1, _ = p.bounds
            assert px1 - px0 < 180, f"tile {t['id']} spans {px1 - px0:.1f}° of longitude (wraps the globe?)"
        out[i] = g
    return out


def check_unique_ids(tiles: Tiles) -> None:
    ids = [t["id"] for t in tiles]
    assert all(isinstance(i, str) and i for i in ids), "every tile needs a non-empty string id"
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dupes = sorted({i for i in ids if i in seen or seen.add(i)})
        raise AssertionError(f"duplicate tile ids: {dupes[:10]}")


def _union_ea(geoms: np.ndarray) -> BaseGeometry:
    return equal_area(shapely.union_all(geoms))


def _aoi_ea(aoi: BaseGeometry) -> BaseGeometry:
    return equal_area(_polygonal(_wrap(aoi)))


def check_union(
    aoi: BaseGeometry, tiles: Tiles, rel_tol: float = 1e-6, *, _union: BaseGeometry | None = None
) -> None:
    """The union of the tiles equals the AOI: area(union Δ AOI) / area(AOI) < rel_tol (equal-area)."""
    aoi_ea = _aoi_ea(aoi)
    union = _union if _union is not None else _union_ea(tile_geometries(tiles))
    diff = shapely.symmetric_difference(union, aoi_ea).area
    rel = diff / aoi_ea.area
    assert rel < rel_tol, (
        f"union of {len(tiles)} tiles differs from the AOI by {diff / 1e6:.6g} km² "
        f"({rel:.3g} of {aoi_ea.area / 1e6:.6g} km², limit {rel_tol:g})"
    )


def check_covers(
    aoi: BaseGeometry, tiles: Tiles, rel_tol: float = 1e-6, *, _union: BaseGeometry | None = None
) -> None:
    """The tiles (e.g. whole cells) cover the AOI: area(AOI - union) / area(AOI) < rel_tol (equal-area)."""
    aoi_ea = _aoi_ea(aoi)
    union = _union if _union is not None else _union_ea(tile_geometries(tiles))
    rel = shapely.difference(aoi_ea, union).area / aoi_ea.area
    assert rel < rel_tol, f"{len(tiles)} tiles leave {rel:.3g} of the AOI uncovered (limit {rel_tol:g})"


def check_no_overlap(
    tiles: Tiles,
    rel_tol: float = 1e-6,
    *,
    _geoms: np.ndarray | None = None,
    _union: BaseGeometry | None = None,
) -> None:
    """Tile interiors do not overlap: the sum of the tile areas equals the area of their union."""
    geoms = _geoms if _geoms is not None else tile_geometries(tiles)
    total = float(shapely.area(equal_area(geoms)).sum())
    union = (_union if _union is not None else _union_ea(geoms)).area
    rel = (total - union) / union
    assert abs(rel) < rel_tol, (
        f"tiles overlap: sum of areas {total / 1e6:.6g} km² vs union {union / 1e6:.6g} km² (rel {rel:.3g})"
    )


def _step_m(epsg: int, size_km: float) -> float:
    return size_km * 1000.0 * (UPS_SCALE if epsg in (32661, 32761) else 1.0)


def check_cells(
    tiles: Tiles,
    size_km: float,
    tol_m: float = 1.5,
    area_factor: float = 1.001,
    *,
    _geoms: np.ndarray | None = None,
) -> None:
    """Every tile lies inside its NxN km cell.

    * ``epsg`` is UTM (326zz/327zz) or UPS (32661/32761); ``projected_bounds`` is a square cell of side
      N km (N x 0.994 km for UPS) on the grid lines (multiples of the side from the false origin; UPS
      lines pass through the pole at 2 000 000 m);
    * the tile, densified in lon/lat and projected to ``epsg``, stays within the cell bounds ± ``tol_m``;
    * its geodesic area (pyproj.Geod) is at most N² km² x ``area_factor``;
    * its lon/lat bounds lie within ``cell_bbox`` (1e-7° tolerance).
    """
    geoms = _geoms if _geoms is not None else tile_geometries(tiles)
    for t, geom in zip(tiles, geoms, strict=True):
        tid, epsg = t["id"], int(t["epsg"])
        assert 32601 <= epsg <= 32661 or 32701 <= epsg <= 32761, f"tile {tid}: unexpected EPSG:{epsg}"
        xmin, ymin, xmax, ymax = (float(v) for v in t["projected_bounds"])
        step = _step_m(epsg, size_km)
        origin = 2_000_000.0 if epsg in (32661, 32761) else 0.0
        assert abs((xmax - xmin) - step) < 1e-6 and abs((ymax - ymin) - step) < 1e-6, (
            f"tile {tid}: cell {t['projected_bounds']} is not {step} m square"
        )
        for v in (xmin, ymin):
            k = (v - origin) / step
            assert abs(k - round(k)) < 1e-9, f"tile {tid}: cell {t['projected_bounds']} is off the grid lines"
        xy = shapely.get_coordinates(shapely.segmentize(geom, DENSIFY_DEG))
        x, y = _transformer(4326, epsg).transform(xy[:, 0], xy[:, 1])
        out = max(xmin - np.min(x), np.max(x) - xmax, ymin - np.min(y), np.max(y) - ymax)
        assert out <= tol_m, f"tile {tid} sticks out of its cell {t['projected_bounds']} by {out:.3f} m"
        area_km2 = abs(_GEOD.geometry_area_perimeter(geom)[0]) / 1e6
        assert area_km2 <= size_km**2 * area_factor, (
            f"tile {tid}: geodesic area {area_km2:.4f} km² > {size_km}² km² x {area_factor}"
        )
        w, s, e, n = (float(v) for v in t["cell_bbox"])
        gx0, gy0, gx1, gy1 = geom.bounds
        eps = 1e-7
        assert gy0 >= s - eps and gy1 <= n + eps, f"tile {tid}: bounds {geom.bounds} outside {t['cell_bbox']}"
        if w <= e:
            assert gx0 >= w - eps and gx1 <= e + eps, (
                f"tile {tid}: bounds {geom.bounds} outside {t['cell_bbox']}"
            )
        else:  # cell across the antimeridian: every part lies in [w, 180] or [-180, e]
            for p in shapely.get_parts(geom):
                px0, _, px1, _ = p.bounds
                assert px0 >= w - eps or px1 <= e + eps, (
                    f"tile {tid}: part {p.bounds} outside {t['cell_bbox']}"
                )


def check_tiles(
    aoi: BaseGeometry,
    tiles: Tiles,
    size_km: float,
    *,
    rel_tol: float = 1e-6,
    tol_m: float = 1.5,
    clipped: bool = True,
) -> None:
    """All checks: ids unique, tiles inside their cells, and either (clipped tiles) no overlaps and
    union == AOI, or (whole cells, ``clipped=False``) union ⊇ AOI: cells of neighbouring zones overlap."""
    assert tiles, "no tiles"
    check_unique_ids(tiles)
    geoms = tile_geometries(tiles)
    check_cells(tiles, size_km, tol_m=tol_m, _geoms=geoms)
    union = _union_ea(geoms)
    if clipped:
        check_no_overlap(tiles, rel_tol=rel_tol, _geoms=geoms, _union=union)
        check_union(aoi, tiles, rel_tol=rel_tol, _union=union)
    else:
        check_covers(aoi, tiles, rel_tol=rel_tol, _union=union)
