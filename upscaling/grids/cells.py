"""Grid cells and the way back from projected coordinates to lon/lat.

Cell edges are straight in the projected CRS but curved in lon/lat. Before the inverse projection every edge
lying on a grid line gets ``k - 1`` intermediate vertices at fixed positions ``lo + m*(hi - lo)/k`` along
that grid line, ``k`` depending only on the edge itself (``edge_pieces``): the two cells sharing an edge,
and any tile clipped from them, get bit-identical shared vertices, whatever AOI is asked. ``k`` keeps every
lon/lat chord within ``EDGE_TOL_M`` (1 m) of the true grid line (checked over UTM and UPS cells of 1 to
1000 km: at most 0.94 m), from a model of the chord deviation d of a piece of length l:

* UTM: horizontal lines curve in lon/lat like parallels, d = l²·tan|lat|/(8R) (10.8 m for an undivided 20 km
  edge at 54°N); vertical ones much less near the central meridian, d ~ l²·(dx/R)/cos³(lat)/(8R);
* UPS: a straight line at distance rho from the pole, d = l²/(8 rho); lines through the pole are meridians
  (straight in lon/lat, k = 1). A pole vertex becomes a segment along lat ±90 between the longitudes of its
  two neighbours, so cells touching the pole reach it along a segment.

Whole cells are then faithful: their geodesic area is the true cell's within 0.01 %, i.e. N² km² divided by
UTM's own areal scale (within +0.1 %/-0.2 % of N²; UPS cells are at most N² km²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely import GeometryType
from shapely.geometry.base import BaseGeometry

from .aoi import polygonal_part, split_antimeridian
from .zones import UPS_CENTRE, UPS_SCALE, Region, Zone, fast_utm_ok, transformer, zone_for_epsg

__all__ = [
    "EDGE_TOL_M",
    "Frame",
    "Source",
    "cell_polygon",
    "cells_to_lonlat",
    "edge_pieces",
    "pieces_to_lonlat",
]

EDGE_TOL_M = 1.0
_SNAP_DEG = 1e-9
_EARTH_R = 6_371_008.8
_MAX_PIECES = 4096


@dataclass(frozen=True)
class Frame:
    """Grid lines of one zone for one cell size: line k lies at ``c + (k - p)·step``."""

    zone: Zone
    step: float
    cx: float
    cy: float
    p: int
    fast: bool = False  # inverse transforms may use the fast UTM algorithm (see zones.fast_utm_ok)

    @classmethod
    def of(cls, zone: Zone, size_km: int) -> Frame:
        step = zone.step(size_km)
        cx, cy, p = zone.origin(step)
        return cls(zone, step, cx, cy, p)

    def for_cells(self, c0: int, c1: int, r0: int, r1: int) -> Frame:
        """This frame, allowed the fast inverse transform if cells c0..c1 x r0..r1 are within its range."""
        fast = fast_utm_ok(self.zone, self.xs(c0), self.xs(c1 + 1), self.ys(r0), self.ys(r1 + 1))
        return Frame(self.zone, self.step, self.cx, self.cy, self.p, fast)

    def inverse(self) -> Any:
        """Projected -> lon/lat transformer for this frame's cells."""
        return transformer(self.zone.epsg, inverse=True, fast=self.fast)

    def xs(self, col: Any) -> Any:
        """Easting of vertical grid line ``col`` (the one formula used everywhere)."""
        return self.cx + (np.asarray(col, dtype=np.int64) - self.p) * self.step

    def ys(self, row: Any) -> Any:
        return self.cy + (np.asarray(row, dtype=np.int64) - self.p) * self.step

    def col_of(self, x: float) -> int:
        return math.floor((x - self.cx) / self.step) + self.p

    def row_of(self, y: float) -> int:
        return math.floor((y - self.cy) / self.step) + self.p


def edge_pieces(
    frame: Frame, fixed: np.ndarray, lo: np.ndarray, hi: np.ndarray, vertical: bool
) -> np.ndarray:
    """Equal pieces for grid-line edges (x = fixed, y in [lo, hi] if vertical; else y = fixed)."""
    span = np.abs(hi - lo)
    if frame.zone.polar:
        d_line = np.abs(fixed - UPS_CENTRE)
        d_along = np.maximum(0.0, np.maximum(lo - UPS_CENTRE, UPS_CENTRE - hi))
        rho = np.hypot(d_line, d_along)
        ell = np.sqrt(8.0 * np.maximum(rho, 1.0) * EDGE_TOL_M / 1.25)
        k = np.where(d_line == 0.0, 1.0, np.ceil(span / ell))
    else:
        y_eq = 0.0 if frame.zone.north else 10_000_000.0
        dist = np.maximum(np.abs(lo - y_eq), np.abs(hi - y_eq)) if vertical else np.abs(fixed - y_eq)
        lat = np.radians(np.minimum(dist / 110_574.0 + 0.2, 89.0))  # slightly poleward of the true latitude
        curvature = np.tan(lat) + 0.1  # in units of 1/R
        if vertical:  # northing lines bend less, the more so the closer they are to the central meridian
            dx = np.abs(fixed - 500_000.0) / _EARTH_R
            curvature = np.minimum(curvature, 1.25 * dx / np.cos(lat) ** 3)
        ell = np.sqrt(8.0 * _EARTH_R * EDGE_TOL_M / np.maximum(curvature, 1e-12))
        k = np.ceil(span / ell)
    return np.clip(k, 1, _MAX_PIECES).astype(np.int64)


def _ranges(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For counts n: (owner index, position within owner) of every element of the concatenated ranges."""
    owner = np.repeat(np.arange(len(n)), n)
    return owner, np.arange(len(owner)) - np.repeat(np.cumsum(n) - n, n)


def _fix_lon(region: Region, lon: np.ndarray) -> np.ndarray:
    """Unwrap longitudes around the zone (UTM) or into the polar quadrant (UPS)."""
    if region.zone.polar:
        mid = (region.west + region.east) / 2.0
        return np.clip(mid + ((lon - mid + 180.0) % 360.0 - 180.0), region.west, region.east)
    mid = region.zone.central_meridian
    return mid + ((lon - mid + 180.0) % 360.0 - 180.0)


def _expand_poles(
    lon: np.ndarray, lat: np.ndarray, pole: np.ndarray, ring_off: np.ndarray, pole_lat: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Replace each pole vertex by a segment along the pole, from the previous to the next longitude."""
    nring = len(ring_off) - 1
    vring = np.repeat(np.arange(nring), np.diff(ring_off))
    idx = np.flatnonzero(pole)
    start, end = ring_off[vring[idx]], ring_off[vring[idx] + 1]
    closing = idx == end - 1
    prev = np.where(idx > start, idx - 1, end - 2)
    nxt = np.where(idx < end - 1, idx + 1, start + 1)
    rep = np.ones(len(lon), dtype=np.int64)
    rep[idx[~closing]] = 2
    pos = np.cumsum(rep) - rep
    new_lon, new_lat = np.repeat(lon, rep), np.repeat(lat, rep)
    new_lon[pos[idx]] = lon[prev]
    new_lon[pos[idx[~closing]] + 1] = lon[nxt[~closing]]
    new_lat[pos[idx]] = pole_lat
    new_lat[pos[idx[~closing]] + 1] = pole_lat
    added = np.bincount(vring[idx[~closing]], minlength=nring)
    return new_lon, new_lat, ring_off + np.concatenate([[0], np.cumsum(added)])


# ------------------------------------------------------------------------------------------ whole cells


def _unique_inverse(key: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(key, return_inverse=True)`` for keys in [0, size), without sorting when size is small."""
    if size > 8 * len(key) + 65_536:
        return np.unique(key, return_inverse=True)
    used = np.zeros(size, dtype=bool)
    used[key] = True
    return np.flatnonzero(used), (np.cumsum(used) - 1)[key]


def _edges(frame: Frame, line: np.ndarray, idx: np.ndarray, vertical: bool) -> tuple[Any, ...]:
    """Unique grid-line edges (line, idx): inverse map, pieces k and the (m = 1..k-1) interior points."""
    lmin, imin = int(line.min()), int(idx.min())
    base = int(idx.max()) - imin + 2
    key = (line - lmin) * base + (idx - imin)
    ukey, inv = _unique_inverse(key, (int(line.max()) - lmin + 1) * base)
    uline, uidx = ukey // base + lmin, ukey % base + imin
    if vertical:
        fixed, lo, hi = frame.xs(uline), frame.ys(uidx), frame.ys(uidx + 1)
    else:
        fixed, lo, hi = frame.ys(uline), frame.xs(uidx), frame.xs(uidx + 1)
    k = edge_pieces(frame, fixed, lo, hi, vertical)
    owner, j = _ranges(k - 1)
    u = lo[owner] + (j + 1) * ((hi - lo) / k)[owner]
    pts = np.column_stack([fixed[owner], u] if vertical else [u, fixed[owner]])
    return inv, k - 1, np.cumsum(k - 1) - (k - 1), pts


def cells_to_lonlat(
    region: Region, frame: Frame, cols: np.ndarray, rows: np.ndarray, n_geom: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Whole cells (cols, rows) in lon/lat: Polygons of the first ``n_geom`` (default all) and the exact
    lon/lat bounds (n, 4) of all, with one inverse projection of every lattice point.

    Polygons are densified (see module doc) and share identical vertices. Bounds: grid lines are monotonic
    in longitude, so longitudes peak at corners, as does the latitude on the equator side; the poleward
    extreme is the cell point nearest the pole (UTM: on the poleward edge, nearest the central meridian).
    Longitudes are unwrapped around the zone's central meridian, so a cell across ±180 may pass it.
    """
    n = len(cols)
    n_geom = n if n_geom is None else n_geom
    # corners of every cell: bl, br, tr, tl
    cc = np.concatenate([cols, cols + 1, cols + 1, cols])
    cr = np.concatenate([rows, rows, rows + 1, rows + 1])
    cmin, rmin = int(cols.min()), int(rows.min())
    base = int(cols.max()) - cmin + 2
    ukey, cinv = _unique_inverse((cr - rmin) * base + (cc - cmin), (int(rows.max()) - rmin + 2) * base)
    cinv = cinv.reshape(4, n)
    x0, x1, y0, y1 = frame.xs(cols), frame.xs(cols + 1), frame.ys(rows), frame.ys(rows + 1)
    if frame.zone.polar:
        ex, ey = np.clip(UPS_CENTRE, x0, x1), np.clip(UPS_CENTRE, y0, y1)
    else:
        ex, ey = np.clip(500_000.0, x0, x1), (y1 if frame.zone.north else y0)
    parts_x = [frame.xs(ukey % base + cmin), ex]
    parts_y = [frame.ys(ukey // base + rmin), ey]
    g_cols, g_rows = cols[:n_geom], rows[:n_geom]
    if n_geom:
        hinv, hn, hstart, hpts = _edges(
            frame, np.concatenate([g_rows, g_rows + 1]), np.concatenate([g_cols, g_cols]), False
        )
        vinv, vn, vstart, vpts = _edges(
            frame, np.concatenate([g_cols, g_cols + 1]), np.concatenate([g_rows, g_rows]), True
        )
        parts_x += [hpts[:, 0], vpts[:, 0]]
        parts_y += [hpts[:, 1], vpts[:, 1]]
    pts_x, pts_y = np.concatenate(parts_x), np.concatenate(parts_y)
    lon, lat = frame.inverse().transform(pts_x, pts_y)
    lon = _fix_lon(region, np.asarray(lon, dtype=float))
    lat = np.asarray(lat, dtype=float)
    pole = (pts_x == UPS_CENTRE) & (pts_y == UPS_CENTRE) if frame.zone.polar else None

    e0 = len(ukey)
    idx = np.vstack([cinv, e0 + np.arange(n)])  # (5, n): corners and the poleward extreme
    plon, plat = lon[idx], lat[idx]
    if pole is not None:  # a pole corner has no longitude of its own: the quadrant's meridians bound it
        plon = np.where(pole[idx], np.where(np.arange(5)[:, None] % 2 == 0, region.west, region.east), plon)
    bounds = np.column_stack([plon.min(axis=0), plat.min(axis=0), plon.max(axis=0), plat.max(axis=0)])
    if not n_geom:
        return np.empty(0, dtype=object), bounds

    h0 = e0 + n
    v0 = h0 + len(hpts)
    m = n_geom
    # ring = bl, bottom ->, br, right ^, tr, top <-, tl, left v, bl
    blocks = [
        (cinv[0, :m], None, 0, False),
        (hinv[:m], hn, h0 + hstart, False),
        (cinv[1, :m], None, 0, False),
        (vinv[m:], vn, v0 + vstart, False),
        (cinv[2, :m], None, 0, False),
        (hinv[m:], hn, h0 + hstart, True),
        (cinv[3, :m], None, 0, False),
        (vinv[:m], vn, v0 + vstart, True),
        (cinv[0, :m], None, 0, False),
    ]
    lengths = np.stack([np.ones(m, np.int64) if cnt is None else cnt[e] for e, cnt, _, _ in blocks])
    offs = np.cumsum(lengths, axis=0) - lengths
    ring_off = np.concatenate([[0], np.cumsum(lengths.sum(axis=0))])
    index = np.empty(int(ring_off[-1]), dtype=np.int64)
    for k, (e, cnt, start, desc) in enumerate(blocks):
        at = ring_off[:-1] + offs[k]
        if cnt is None:
            index[at] = e
            continue
        owner, j = _ranges(cnt[e])
        jj = cnt[e][owner] - 1 - j if desc else j
        index[at[owner] + j] = start[e[owner]] + jj
    rlon, rlat = lon[index], lat[index]
    if pole is not None and pole.any():
        rlon, rlat, ring_off = _expand_poles(
            rlon, rlat, pole[index], ring_off, 90.0 if frame.zone.north else -90.0
        )
    geoms = shapely.from_ragged_array(
        GeometryType.POLYGON, np.column_stack([rlon, rlat]), (ring_off, np.arange(m + 1))
    )
    return geoms, bounds


# ----------------------------------------------------------------------------------------- clipped tiles


def _densify_edges(
    frame: Frame,
    coords: np.ndarray,
    ring_off: np.ndarray,
    vgeom: np.ndarray,
    cols: np.ndarray,
    rows: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Insert the fixed grid-line points into every ring segment lying on its cell's edge.

    Returns the new coordinates, ring offsets and a mask of the vertices lying on their cell's edges.
    """
    x, y = coords[:, 0], coords[:, 1]
    gx0, gx1 = frame.xs(cols), frame.xs(cols + 1)
    gy0, gy1 = frame.ys(rows), frame.ys(rows + 1)
    ex = (x == gx0[vgeom]) | (x == gx1[vgeom])
    ey = (y == gy0[vgeom]) | (y == gy1[vgeom])
    on_edge = ex | ey
    # segment i runs from vertex i to i + 1; the last vertex of each ring starts none
    last = np.zeros(len(x), dtype=bool)
    last[ring_off[1:] - 1] = True
    seg_ok = ~last[:-1]
    vert = seg_ok & ex[:-1] & ex[1:] & (x[:-1] == x[1:])
    horiz = seg_ok & ey[:-1] & ey[1:] & (y[:-1] == y[1:]) & ~vert
    at_list, pts_list = [], []
    for mask, vertical in ((vert, True), (horiz, False)):
        s = np.flatnonzero(mask)
        if not len(s):
            continue
        g = vgeom[s]
        if vertical:
            fixed, ua, ub, lo, hi = x[s], y[s], y[s + 1], gy0[g], gy1[g]
        else:
            fixed, ua, ub, lo, hi = y[s], x[s], x[s + 1], gx0[g], gx1[g]
        k = edge_pieces(frame, fixed, lo, hi, vertical)
        h = (hi - lo) / k
        umin, umax = np.minimum(ua, ub), np.maximum(ua, ub)
        m0 = np.clip(np.floor((umin - lo) / h), 1, k).astype(np.int64)
        m1 = np.clip(np.ceil((umax - lo) / h), 0, k - 1).astype(np.int64)
        owner, j = _ranges(np.maximum(m1 - m0 + 1, 0))
        if not len(owner):
            continue
        m = np.where(ub[owner] > ua[owner], m0[owner] + j, m1[owner] - j)
        u = lo[owner] + m * h[owner]
        keep = (u > umin[owner]) & (u < umax[owner])
        owner, u = owner[keep], u[keep]
        at_list.append(s[owner])
        pts_list.append(np.column_stack([fixed[owner], u] if vertical else [u, fixed[owner]]))
    if not at_list:
        return coords, ring_off, on_edge
    at = np.concatenate(at_list)
    pts = np.concatenate(pts_list)
    if len(at_list) > 1:
        order = np.argsort(at, kind="stable")
        at, pts = at[order], pts[order]
    nring = len(ring_off) - 1
    vring = np.searchsorted(ring_off, at, side="right") - 1
    added = np.bincount(vring, minlength=nring)
    return (
        np.insert(coords, at + 1, pts, axis=0),
        ring_off + np.concatenate([[0], np.cumsum(added)]),
        np.insert(on_edge, at + 1, True),
    )


@dataclass(frozen=True)
class Source:
    """The AOI piece's vertices: projected ``xy`` and the original ``lonlat`` (same order).

    Rectangle clipping copies input vertices bit for bit, so tile vertices that are AOI vertices take their
    original lon/lat (exact, and cheaper than an inverse projection); only new vertices are projected back.
    """

    xy: np.ndarray
    lonlat: np.ndarray

    def lookup(
        self, coords: np.ndarray, on_edge: np.ndarray, ring_off: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices of ``coords`` found among the AOI vertices, their AOI vertex indices).

        Clipped rings keep the AOI's vertex order, so only the first vertex of each run of AOI vertices
        (vertices not on a cell edge) is searched; the others follow by position and are verified.
        """
        cand = ~on_edge
        n_src = len(self.xy)
        if not n_src or not cand.any():
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        start = cand.copy()
        start[1:] &= ~cand[:-1]
        start[ring_off[:-1]] = cand[ring_off[:-1]]
        starts = np.flatnonzero(start)
        sx = self.xy[:, 0]
        order = np.argsort(sx)
        pos = np.searchsorted(sx[order], coords[starts, 0])
        first = order[np.minimum(pos, n_src - 1)]
        at = np.flatnonzero(cand)
        run = np.cumsum(start)[at] - 1
        idx = first[run] + (at - starts[run])
        idx[idx >= n_src] = 0
        ok = (sx[idx] == coords[at, 0]) & (self.xy[idx, 1] == coords[at, 1])
        return at[ok], idx[ok]


def pieces_to_lonlat(
    region: Region,
    frame: Frame,
    geoms: np.ndarray,
    cols: np.ndarray,
    rows: np.ndarray,
    source: Source | None = None,
) -> np.ndarray:
    """Projected tiles (clipped to their cells cols/rows, inside ``region``) → lon/lat (Multi)Polygons."""
    n = len(geoms)
    parts, owner = shapely.get_parts(geoms, return_index=True)
    multi = len(parts) != n
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    coords = shapely.get_coordinates(rings)
    ring_off = np.concatenate([[0], np.cumsum(shapely.get_num_coordinates(rings))])
    part_off = np.concatenate([[0], np.cumsum(np.bincount(ring_part, minlength=len(parts)))])
    ring_geom = owner[ring_part]
    vgeom = np.repeat(ring_geom, np.diff(ring_off))
    coords, ring_off, on_edge = _densify_edges(frame, coords, ring_off, vgeom, cols, rows)
    zone = frame.zone
    lon = np.empty(len(coords))
    lat = np.empty(len(coords))
    todo = np.ones(len(coords), dtype=bool)
    if source is not None:
        at, idx = source.lookup(coords, on_edge, ring_off)
        lon[at] = source.lonlat[idx, 0]
        lat[at] = source.lonlat[idx, 1]
        todo[at] = False
    todo_idx = np.flatnonzero(todo)
    if len(todo_idx):
        tlon, tlat = frame.inverse().transform(coords[todo_idx, 0], coords[todo_idx, 1])
        lon[todo_idx] = np.clip(_fix_lon(region, np.asarray(tlon, dtype=float)), region.west, region.east)
        lat[todo_idx] = np.clip(tlat, region.south, region.north)
        # Vertices on the cut lines (zone borders, equator, 84N/80S, quadrant meridians) exactly on them, as
        # the AOI vertices there are: rounding must not make the tile zig-zag across its border.
        for values, edges in ((lon, (region.west, region.east)), (lat, (region.south, region.north))):
            for e in edges:
                v = values[todo_idx]
                values[todo_idx[np.abs(v - e) < _SNAP_DEG]] = e
    if zone.polar:
        pole = (coords[:, 0] == UPS_CENTRE) & (coords[:, 1] == UPS_CENTRE)
        if pole.any():
            lon, lat, ring_off = _expand_poles(lon, lat, pole, ring_off, 90.0 if zone.north else -90.0)
    out = shapely.from_ragged_array(GeometryType.POLYGON, np.column_stack([lon, lat]), (ring_off, part_off))
    if multi:
        out = np.asarray(shapely.multipolygons(out, indices=owner))
        single = shapely.get_num_geometries(out) == 1
        out[single] = shapely.get_geometry(out[single], 0)
    for i in np.flatnonzero(~shapely.is_valid(out)):
        # Rare: an AOI vertex within rounding distance of a cell edge leaves a sub-micrometre spike.
        g = shapely.remove_repeated_points(out[i], _SNAP_DEG)
        out[i] = g if shapely.is_valid(g) else polygonal_part(shapely.make_valid(g))
    return out


# --------------------------------------------------------------------------------------------- helpers


def region_for_cell(frame: Frame, col: int, row: int) -> Region:
    """The zone region (UTM zone, or the UPS quadrant) a cell belongs to."""
    zone = frame.zone
    if zone.polar:
        east, up = col >= frame.p, row >= frame.p
        # UPS north: x = 2e6 + r·sin(lon), y = 2e6 - r·cos(lon); south: y = 2e6 + r·cos(lon).
        if zone.north:
            west = (90.0 if up else 0.0) if east else (-180.0 if up else -90.0)
            return Region(zone, west, 84.0, west + 90.0, 90.0)
        west = (0.0 if up else 90.0) if east else (-90.0 if up else -180.0)
        return Region(zone, west, -90.0, west + 90.0, -80.0)
    w = -180.0 + 6.0 * (zone.number - 1)
    return Region(zone, w, 0.0 if zone.north else -80.0, w + 6.0, 84.0 if zone.north else 0.0)


def cell_polygon(
    epsg: int, projected_bounds: tuple[float, float, float, float] | list[float]
) -> BaseGeometry:
    """The whole grid cell with these projected bounds in lon/lat, densified exactly like the tiles."""
    zone = zone_for_epsg(int(epsg))
    xmin, ymin, xmax, _ = (float(v) for v in projected_bounds)
    size_km = round((xmax - xmin) / (1000.0 * (UPS_SCALE if zone.polar else 1.0)))
    frame = Frame.of(zone, size_km)
    col = frame.col_of(xmin + frame.step / 2)
    row = frame.row_of(ymin + frame.step / 2)
    frame = frame.for_cells(col, col, row, row)
    geoms, _ = cells_to_lonlat(region_for_cell(frame, col, row), frame, np.array([col]), np.array([row]))
    return split_antimeridian(geoms[0])
