"""Cheap tile-count estimate, O(vertices), computed before any tiling.

For a shape of area A and perimeter P on a randomly placed grid of cell size c, the expected number of
cells it meets is A/c² + (2/π)·P/c + 1 per convex piece (Steiner's formula). The AOI is cut at zone
borders, the equator and polar quadrant lines, which adds boundaries on both sides of each cut, so the
estimate is::

    A / c² + (2/π) · (P + 2 · L_cut) / c + (number of parts) + (number of zone pieces)

with A and P on the sphere (numpy, authalic radius), L_cut the length of the zone/equator/84°N/80°S/
quadrant lines inside each part's bounding box (an upper bound of the real cuts), and c = 0.99 x size
(polar cells are 0.994 x size on UPS, so a little smaller on the ground). Jagged outlines make P (and so the
estimate) larger, never smaller; the result is also capped by the number of cells of each part's
bounding box, which can't be exceeded by much.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from .aoi import ParsedAoi, as_aoi_geometry
from .spec import Grid
from .zones import UTM_NORTH_LIMIT, UTM_SOUTH_LIMIT, candidate_regions

__all__ = ["bbox_upper_bound", "estimate_tile_count"]

_R_KM = 6371.0072  # authalic radius
_KM_PER_DEG = math.pi * _R_KM / 180.0


def _cut_length_km(b: np.ndarray) -> float:
    xmin, ymin, xmax, ymax = (float(v) for v in b)
    total = 0.0
    lat_lo, lat_hi = max(ymin, UTM_SOUTH_LIMIT), min(ymax, UTM_NORTH_LIMIT)
    n_meridians = max(0, math.ceil((xmax + 180.0) / 6.0) - math.floor((xmin + 180.0) / 6.0) - 1)
    if lat_hi > lat_lo:
        total += n_meridians * (lat_hi - lat_lo) * _KM_PER_DEG
    width_deg = xmax - xmin
    for lat, cut in ((0.0, True), (UTM_NORTH_LIMIT, True), (UTM_SOUTH_LIMIT, True)):
        if cut and ymin < lat < ymax:
            total += width_deg * _KM_PER_DEG * math.cos(math.radians(lat))
    for lo, hi in ((UTM_NORTH_LIMIT, 90.0), (-90.0, UTM_SOUTH_LIMIT)):
        top, bottom = min(ymax, hi), max(ymin, lo)
        if top > bottom:
            n_quadrant_lines = sum(1 for q in (-90.0, 0.0, 90.0) if xmin < q < xmax)
            total += n_quadrant_lines * (top - bottom) * _KM_PER_DEG
    return total


def _bbox_cells(b: np.ndarray, c: float) -> float:
    xmin, ymin, xmax, ymax = (float(v) for v in b)
    height = (ymax - ymin) * _KM_PER_DEG
    coslat = max(math.cos(math.radians(max(abs(ymin), abs(ymax)))), 0.0)
    coslat_max = 1.0 if ymin < 0.0 < ymax else max(math.cos(math.radians(min(abs(ymin), abs(ymax)))), coslat)
    width = min((xmax - xmin) * _KM_PER_DEG * coslat_max, 2 * math.pi * _R_KM)
    if max(abs(ymin), abs(ymax)) > 80.0:  # near a pole the bounding box is a poor measure
        width = max(width, 2 * (90.0 - min(abs(ymin), abs(ymax))) * _KM_PER_DEG)
        height = max(height, width)
    n_regions = max(1, len(candidate_regions((xmin, ymin, xmax, ymax))))
    return (height / c + 2.0) * (width / c + 2.0) + 2.0 * n_regions * (height / c + width / c + 2.0)


def bbox_upper_bound(geom: BaseGeometry, grid: Grid) -> float:
    """Cells of each part's (lon/lat) bounding box, with margins for zone cuts: O(parts), no vertex work.

    ``estimate_tile_count`` never exceeds it, so a bound within a cap means the estimate is too.
    """
    c = grid.size_km * 0.99
    return sum(_bbox_cells(b, c) for b in shapely.bounds(shapely.get_parts(geom)))


def estimate_tile_count(aoi: ParsedAoi | BaseGeometry, grid: Grid) -> int:
    """Estimated number of tiles of ``grid`` for the AOI; cheap and on the safe (high) side."""
    geom = as_aoi_geometry(aoi)
    c = grid.size_km * 0.99
    parts = shapely.get_parts(geom)
    rings = shapely.get_rings(parts)
    n_rings = shapely.get_num_interior_rings(parts) + 1
    exterior = np.zeros(len(rings), dtype=bool)
    exterior[np.concatenate([[0], np.cumsum(n_rings)[:-1]])] = True
    coords, ridx = shapely.get_coordinates(rings, return_index=True)
    lon, lat = np.radians(coords[:, 0]), np.radians(coords[:, 1])
    same = ridx[1:] == ridx[:-1]
    dlon, dlat = np.diff(lon), np.diff(lat)
    s = np.sin(lat)
    signed = np.bincount(
        ridx[:-1], weights=np.where(same, dlon, 0.0) * (s[:-1] + s[1:]), minlength=len(rings)
    )
    ring_area = np.abs(signed) / 2.0 * _R_KM * _R_KM
    area = float(ring_area[exterior].sum() - ring_area[~exterior].sum())
    # Edge lengths: local equirectangular (segments are short; long ones only make the estimate larger).
    coslat = np.cos((lat[:-1] + lat[1:]) / 2.0)
    perimeter = float(np.hypot(dlon * coslat, dlat)[same].sum() * _R_KM)
    bounds = shapely.bounds(parts)
    cut = sum(_cut_length_km(b) for b in bounds)
    pieces = sum(len(candidate_regions(tuple(b))) for b in bounds)
    steiner = area / c**2 + (2.0 / math.pi) * (perimeter + 2.0 * cut) / c + len(parts) + pieces
    upper = sum(_bbox_cells(b, c) for b in bounds)
    return max(1, math.ceil(min(steiner, upper)))
