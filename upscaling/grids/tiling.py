"""Vectorised tiling of an AOI on the fixed global NxN km grid (see ``zones`` for the grid frames).

Tile ids are ``<zone>-<col>-<row>``: ``<zone>`` is the UTM zone number (2 digits) and hemisphere (``N``/``S``)
or ``UPSN``/``UPSS``; ``<col>``/``<row>`` are the cell's column and row in that frame, zero-padded to at
least 4 digits, e.g. ``32N-0032-0264`` is the 20 km cell with easting 640-660 km and northing 5280-5300 km
of EPSG:32632. Polar cells count from the UPS false origin in steps of N x 0.994 km, offset by
P = ceil(2000 km / step) so that indices stay positive: the four cells touching the pole are P-1 and P in
both directions (``UPSN-0100-0100`` .. ``UPSN-0101-0101`` at 20 km). An id is unique within a grid, and the
same place always gets the same id.

How a zone piece of the AOI (lon/lat, already cut at zone borders, the equator, 84°N/80°S and the polar
quadrant lines) is tiled:

1. Densify it in lon/lat (``DENSIFY_DEG`` = 0.01°: GeoJSON edges are straight in lon/lat, so the projected
   boundary stays within ~3 cm of them) and project it, whole coordinate arrays at once.
2. Mark the *boundary cells*: every cell touched by the bounding box of a boundary segment (numpy only).
   Every other cell of the piece's projected bounding grid is wholly inside or wholly outside; a scanline
   parity test along the cell rows (numpy, O(vertices + cells)) tells which. Inside cells are emitted whole
   without any clipping (this plays the role of a prepared ``contains_properly``); outside cells are dropped.
3. Clip the piece to the boundary cells only: a k-d tree over those cells, each level clipping all current
   pieces to both halves' (slightly padded) bounding boxes at once with GEOS rectangle clipping (vectorised
   over rectangles), small groups straight to their exact cells; pieces without area are dropped.
4. Back to lon/lat (``cells``): edges lying on grid lines get fixed intermediate vertices (shared bit for
   bit by neighbouring tiles) before the inverse projection; AOI vertices, which rectangle clipping copies
   exactly, get their original lon/lat back instead of a round trip. Every lon/lat tile is checked with
   ``is_valid`` and repaired in the rare degenerate case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from .aoi import ParsedAoi, as_aoi_geometry, drop_slivers, polygonal_part
from .cells import (
    Frame,
    Source,
    cell_polygon,
    cells_to_lonlat,
    pieces_to_lonlat,
    split_antimeridian,
)
from .errors import TooManyTilesError
from .estimate import bbox_upper_bound, estimate_tile_count
from .spec import Grid
from .zones import UPS_CENTRE, Region, split_by_zone, transformer

__all__ = ["DENSIFY_DEG", "Tile", "geojson_geometry", "tile_aoi"]

DENSIFY_DEG = 0.01  # max AOI edge length (degrees) before projecting
_FAN_OUT = 16  # k-d tree groups of at most this many boundary cells are clipped straight to each cell

_clip_rects: Callable[[Any, Any, Any, Any, Any], np.ndarray]
try:  # the ufunc broadcasts rectangles too; shapely.clip_by_rect only takes scalars
    _clip_rects = shapely.lib.clip_by_rect
except AttributeError:  # pragma: no cover - other shapely builds

    def _clip_rects_each(geoms: Any, x0: Any, y0: Any, x1: Any, y1: Any) -> np.ndarray:
        g, a, b, c, d = np.broadcast_arrays(geoms, x0, y0, x1, y1)
        return np.array(
            [shapely.clip_by_rect(*args) for args in zip(g, a, b, c, d, strict=True)], dtype=object
        )

    _clip_rects = _clip_rects_each


def _clip(geoms: np.ndarray, x0: Any, y0: Any, x1: Any, y1: Any) -> np.ndarray:
    """Rectangle clip of each geometry; a degenerate GEOS result falls back to a robust intersection."""
    try:
        return _clip_rects(geoms, x0, y0, x1, y1)
    except shapely.errors.GEOSException:
        g, a, b, c, d = np.broadcast_arrays(geoms, x0, y0, x1, y1)
        out = np.empty(len(g), dtype=object)
        for i in range(len(g)):
            try:
                out[i] = _clip_rects(g[i], a[i], b[i], c[i], d[i])
            except shapely.errors.GEOSException:
                out[i] = polygonal_part(shapely.intersection(g[i], shapely.box(a[i], b[i], c[i], d[i])))
        return out


def geojson_geometry(geom: BaseGeometry) -> dict[str, Any]:
    """GeoJSON dict (lists, not tuples) of a lon/lat Polygon or MultiPolygon."""

    def poly(p: Polygon) -> list[list[list[float]]]:
        return [shapely.get_coordinates(r).tolist() for r in (p.exterior, *p.interiors)]

    if isinstance(geom, Polygon):
        return {"type": "Polygon", "coordinates": poly(geom)}
    if isinstance(geom, MultiPolygon):
        return {"type": "MultiPolygon", "coordinates": [poly(p) for p in geom.geoms]}
    raise TypeError(f"expected a Polygon or MultiPolygon, got {geom.geom_type}")


@dataclass(frozen=True)
class Tile:
    """One grid cell intersecting the AOI.

    ``geometry`` is the lon/lat tile (the cell clipped to the AOI, or the whole cell with ``clip=False``),
    ``cell_bbox`` the whole cell's lon/lat ``[west, south, east, north]`` (``west > east`` for a cell
    across the antimeridian, as in RFC 7946), ``projected_bounds`` the whole cell in ``epsg``.
    """

    id: str
    zone: str
    col: int
    row: int
    epsg: int
    projected_bounds: tuple[float, float, float, float]
    cell_bbox: tuple[float, float, float, float]
    geometry: BaseGeometry

    def to_geojson_geometry(self) -> dict[str, Any]:
        return geojson_geometry(self.geometry)

    def cell_geometry(self) -> BaseGeometry:
        """The whole cell in lon/lat (densified like the tiles; split at ±180 if it crosses it)."""
        return cell_polygon(self.epsg, self.projected_bounds)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form: id, zone, col, row, epsg, projected_bounds, cell_bbox, geometry (GeoJSON)."""
        return {
            "id": self.id,
            "zone": self.zone,
            "col": self.col,
            "row": self.row,
            "epsg": self.epsg,
            "projected_bounds": list(self.projected_bounds),
            "cell_bbox": list(self.cell_bbox),
            "geometry": self.to_geojson_geometry(),
        }


def _ranges(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    owner = np.repeat(np.arange(len(n)), n)
    return owner, np.arange(len(owner)) - np.repeat(np.cumsum(n) - n, n)


def _classify(
    frame: Frame, rings: tuple[np.ndarray, np.ndarray], c0: int, r0: int, nc: int, nr: int
) -> tuple[np.ndarray, np.ndarray]:
    """(boundary mask, inside mask) over the nr x nc cells starting at (c0, r0); ``rings`` = (vertices,
    ring index of each vertex) of the projected piece."""
    coords, ridx = rings
    step = frame.step
    # Cell coordinates (floats) relative to the grid origin (c0, r0).
    u = (coords[:, 0] - frame.xs(c0)) / step
    v = (coords[:, 1] - frame.ys(r0)) / step
    same = ridx[1:] == ridx[:-1]
    ua, ub, va, vb = u[:-1][same], u[1:][same], v[:-1][same], v[1:][same]
    ulo, uhi = np.minimum(ua, ub), np.maximum(ua, ub)
    vlo, vhi = np.minimum(va, vb), np.maximum(va, vb)
    eps = 1e-6
    ci0 = np.clip(np.floor(ulo - eps), 0, nc - 1).astype(np.intp)
    ci1 = np.clip(np.floor(uhi + eps), 0, nc - 1).astype(np.intp)
    ri0 = np.clip(np.floor(vlo - eps), 0, nr - 1).astype(np.intp)
    ri1 = np.clip(np.floor(vhi + eps), 0, nr - 1).astype(np.intp)
    mark = np.zeros((nr, nc), dtype=bool)
    small = ((ci1 - ci0) <= 1) & ((ri1 - ri0) <= 1)  # the usual case: at most 2 x 2 cells
    mark[ri0[small], ci0[small]] = True
    mark[ri0[small], ci1[small]] = True
    mark[ri1[small], ci0[small]] = True
    mark[ri1[small], ci1[small]] = True
    big = np.flatnonzero(~small)
    if len(big):
        w, h = ci1[big] - ci0[big] + 1, ri1[big] - ri0[big] + 1
        owner, j = _ranges(w * h)
        mark[ri0[big][owner] + j // w[owner], ci0[big][owner] + j % w[owner]] = True
    # Scanline parity along the row centre lines (v = r + 0.5), half-open rule vlo <= v < vhi.
    k0 = np.ceil(vlo - 0.5).astype(np.intp)
    k1 = np.ceil(vhi - 0.5).astype(np.intp)
    n = k1 - k0
    one = np.flatnonzero(n == 1)
    many = np.flatnonzero(n > 1)
    if len(many):
        owner, j = _ranges(n[many])
        seg = np.concatenate([one, many[owner]])
        row = np.concatenate([k0[one], k0[many][owner] + j])
    else:
        seg, row = one, k0[one]
    yc = row + 0.5
    ok = (vlo[seg] <= yc) & (yc < vhi[seg]) & (row >= 0) & (row < nr)
    seg, row, yc = seg[ok], row[ok], yc[ok]
    xcross = ua[seg] + (yc - va[seg]) * (ub[seg] - ua[seg]) / (vb[seg] - va[seg])
    width = nc + 2.0
    key = np.sort(row * width + np.clip(xcross, 0.0, nc))
    rr, cc = np.nonzero(~mark)
    left = np.searchsorted(key, rr * width + cc + 0.5) - np.searchsorted(key, rr * width - 0.5)
    inside = np.zeros((nr, nc), dtype=bool)
    inside[rr, cc] = (left % 2) == 1
    return mark, inside


def _clip_boundary(
    frame: Frame, xy: BaseGeometry, mark: np.ndarray, c0: int, r0: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip ``xy`` to every marked cell; returns (local cols, local rows, pieces).

    A k-d tree over the marked cells: each level splits every node's cells at the median along the
    longer side of their bounding box and clips the node's piece to each half's (padded) bounding box,
    all nodes at once; halves of at most ``_FAN_OUT`` cells are clipped straight to their exact cells.
    """
    mr, mc = np.nonzero(mark)
    n = len(mc)
    pad = frame.step * 1e-3

    def cell_clip(g: np.ndarray, c: np.ndarray, r: np.ndarray) -> np.ndarray:
        return _clip(g, frame.xs(c0 + c), frame.ys(r0 + r), frame.xs(c0 + c + 1), frame.ys(r0 + r + 1))

    geoms = np.array([xy], dtype=object)
    if n <= _FAN_OUT:
        return mc, mr, cell_clip(geoms[np.zeros(n, dtype=np.int64)], mc, mr)
    node = np.zeros(n, dtype=np.int64)  # node of each cell; cells stay grouped by node
    leaf_c, leaf_r, leaf_g = [], [], []
    while n:
        starts = np.flatnonzero(np.concatenate([[True], node[1:] != node[:-1]]))
        counts = np.diff(np.append(starts, n))
        span_c = np.maximum.reduceat(mc, starts) - np.minimum.reduceat(mc, starts)
        span_r = np.maximum.reduceat(mr, starts) - np.minimum.reduceat(mr, starts)
        by_col = np.repeat(span_c >= span_r, counts)
        order = np.lexsort((np.where(by_col, mc, mr), node))
        mc, mr, node = mc[order], mr[order], node[order]
        rank = np.arange(n) - np.repeat(starts, counts)
        child = 2 * node + (rank >= np.repeat(counts // 2, counts))
        cstarts = np.flatnonzero(np.concatenate([[True], child[1:] != child[:-1]]))
        ccounts = np.diff(np.append(cstarts, n))
        cgeoms = geoms[node[cstarts]]
        small = ccounts <= _FAN_OUT
        if small.any():
            f = np.flatnonzero(np.repeat(small, ccounts))
            g = cell_clip(np.repeat(cgeoms, ccounts)[f], mc[f], mr[f])
            ok = ~shapely.is_empty(g)
            leaf_c.append(mc[f][ok])
            leaf_r.append(mr[f][ok])
            leaf_g.append(g[ok])
        big = np.flatnonzero(~small)
        cl, ch = np.minimum.reduceat(mc, cstarts)[big], np.maximum.reduceat(mc, cstarts)[big] + 1
        rl, rh = np.minimum.reduceat(mr, cstarts)[big], np.maximum.reduceat(mr, cstarts)[big] + 1
        g = _clip(
            cgeoms[big],
            frame.xs(c0 + cl) - pad,
            frame.ys(r0 + rl) - pad,
            frame.xs(c0 + ch) + pad,
            frame.ys(r0 + rh) + pad,
        )
        more = np.zeros(len(cstarts), dtype=bool)
        more[big] = ~shapely.is_empty(g)
        geoms = g[more[big]]
        keep = np.repeat(more, ccounts)
        node = np.repeat(np.cumsum(more) - 1, ccounts)[keep]
        mc, mr = mc[keep], mr[keep]
        n = len(mc)
    return np.concatenate(leaf_c), np.concatenate(leaf_r), np.concatenate(leaf_g)


def _clean_pieces(
    frame: Frame, xy: BaseGeometry, cols: np.ndarray, rows: np.ndarray, g: np.ndarray
) -> np.ndarray:
    """Keep the polygonal part of every clipped piece (validity is checked on the lon/lat tiles)."""
    tid = shapely.get_type_id(g)
    good = (tid == 3) | (tid == 6)
    for i in np.flatnonzero(~good):
        piece = polygonal_part(shapely.make_valid(g[i]))
        if not shapely.is_valid(piece):  # pragma: no cover - defensive
            box = shapely.box(
                frame.xs(cols[i]), frame.ys(rows[i]), frame.xs(cols[i] + 1), frame.ys(rows[i] + 1)
            )
            piece = polygonal_part(shapely.intersection(shapely.make_valid(xy), box))
        g[i] = piece
    return g


def _rings_coords(geom: BaseGeometry | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ring vertices of a (Multi)Polygon (same order as get_coordinates) and each one's ring index."""
    return shapely.get_coordinates(shapely.get_rings(shapely.get_parts(geom)), return_index=True)


def _densify(lonlat: np.ndarray, ridx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split ring edges longer than ``DENSIFY_DEG`` into equal pieces (as shapely.segmentize does)."""
    d = np.diff(lonlat, axis=0)
    pieces = np.ceil(np.sqrt(np.einsum("ij,ij->i", d, d)) / DENSIFY_DEG)
    long = np.flatnonzero((pieces > 1) & (ridx[1:] == ridx[:-1]))
    if not len(long):
        return lonlat, ridx
    k = pieces[long].astype(np.int64)
    owner, j = _ranges(k - 1)
    seg = long[owner]
    pts = lonlat[seg] + d[seg] * ((j + 1) / k[owner])[:, None]
    return np.insert(lonlat, seg + 1, pts, axis=0), np.insert(ridx, seg + 1, ridx[seg])


def _project_piece(
    frame: Frame, part_ll: BaseGeometry
) -> tuple[BaseGeometry, Source | None, tuple[np.ndarray, np.ndarray] | None]:
    """Densify a lon/lat zone piece and project it.

    Returns the projected piece, its vertices for the way back (None if they were changed) and its
    (vertices, ring index) for the cell classification (None if the piece had to be repaired).
    """
    parts = shapely.get_parts(part_ll)
    lonlat, ridx = _densify(*_rings_coords(parts))
    x, y = transformer(frame.zone.epsg).transform(lonlat[:, 0], lonlat[:, 1])
    coords = np.column_stack([x, y])
    if frame.zone.polar:
        coords[np.abs(coords - UPS_CENTRE) < 1e-6] = UPS_CENTRE  # quadrant edges lie exactly on pole lines
    ring_off = np.concatenate([[0], np.cumsum(np.bincount(ridx))])
    part_off = np.concatenate([[0], np.cumsum(shapely.get_num_interior_rings(parts) + 1)])
    offsets = (ring_off, part_off, np.array([0, len(parts)]))
    xy = shapely.from_ragged_array(shapely.GeometryType.MULTIPOLYGON, coords, offsets)[0]
    if frame.zone.polar:
        return _repaired(shapely.remove_repeated_points(xy)), None, None
    if not shapely.is_valid(xy):
        return _repaired(xy), Source(coords, lonlat), None
    return xy, Source(coords, lonlat), (coords, ridx)


def _repaired(xy: BaseGeometry) -> BaseGeometry:
    if shapely.is_valid(xy):
        return xy
    # A hole touching the shell at a vertex lying on an edge is valid in lon/lat but may cross it by a
    # rounding error once projected (the edge is straight in neither); the "structure" repair is cheap.
    return drop_slivers(
        polygonal_part(shapely.make_valid(xy, method="structure", keep_collapsed=False)), 1e-2
    )


def _bboxes(b: np.ndarray) -> list[tuple[float, float, float, float]]:
    """Cell lon/lat bounds -> (w, s, e, n) tuples; across ±180 in RFC 7946 style (w > e)."""
    west, east = b[:, 0].copy(), b[:, 2].copy()
    cross = (west < -180.0) | (east > 180.0)
    if cross.any():
        west[cross] = (west[cross] + 180.0) % 360.0 - 180.0
        east[cross] = (east[cross] + 180.0) % 360.0 - 180.0
    out = np.column_stack([np.maximum(west, -180.0), b[:, 1], np.minimum(east, 180.0), b[:, 3]])
    return list(zip(*(out[:, k].tolist() for k in range(4)), strict=True))


def _tile_region(region: Region, part_ll: BaseGeometry, grid: Grid, clip: bool) -> list[Tile]:
    zone = region.zone
    frame = Frame.of(zone, grid.size_km)
    xy, source, rings = _project_piece(frame, part_ll)
    if xy.is_empty:
        return []
    xmin, ymin, xmax, ymax = xy.bounds
    c0, r0 = frame.col_of(xmin), frame.row_of(ymin)
    nc, nr = frame.col_of(xmax) - c0 + 1, frame.row_of(ymax) - r0 + 1
    frame = frame.for_cells(c0, c0 + nc - 1, r0, r0 + nr - 1)
    mark, inside = _classify(frame, rings or _rings_coords(xy), c0, r0, nc, nr)
    bc, br, pieces = _clip_boundary(frame, xy, mark, c0, r0)
    pieces = _clean_pieces(frame, xy, c0 + bc, r0 + br, pieces)
    keep = shapely.area(pieces) > frame.step * frame.step * 1e-12
    bc, br, pieces = bc[keep] + c0, br[keep] + r0, pieces[keep]
    ir, ic = np.nonzero(inside)
    cols = np.concatenate([ic + c0, bc]).astype(np.int64)
    rows = np.concatenate([ir + r0, br]).astype(np.int64)
    n_in, n = len(ic), len(cols)
    if n == 0:
        return []
    cells, bounds = cells_to_lonlat(region, frame, cols, rows, n_in if clip else n)
    if clip:
        geoms = np.concatenate([cells, pieces_to_lonlat(region, frame, pieces, bc, br, source)])
    else:
        geoms = cells
    if not zone.polar:
        cross = np.flatnonzero((bounds[:, 0] < -180.0) | (bounds[:, 2] > 180.0))
        for c in cross:
            if not clip or c < n_in:
                geoms[c] = split_antimeridian(geoms[c])
    key, epsg = zone.key, zone.epsg
    cl, rl = cols.tolist(), rows.tolist()
    cmin, rmin = min(cl), min(rl)
    cs = [f"{key}-{c:04d}-" for c in range(cmin, max(cl) + 1)]
    rs = [f"{r:04d}" for r in range(rmin, max(rl) + 1)]
    ids = [cs[c - cmin] + rs[r - rmin] for c, r in zip(cl, rl, strict=True)]
    bounds_xy = (frame.xs(cols), frame.ys(rows), frame.xs(cols + 1), frame.ys(rows + 1))
    pbs = list(zip(*(v.tolist() for v in bounds_xy), strict=True))
    bbs = _bboxes(bounds)
    gl = geoms.tolist()
    new = object.__new__
    tiles = []
    for i in range(n):
        # Frozen dataclass: fill the instance dict directly (much faster than __init__ for many tiles).
        t = new(Tile)
        d = t.__dict__
        d["id"], d["zone"], d["col"], d["row"], d["epsg"] = ids[i], key, cl[i], rl[i], epsg
        d["projected_bounds"], d["cell_bbox"], d["geometry"] = pbs[i], bbs[i], gl[i]
        tiles.append(t)
    return tiles


def tile_aoi(
    aoi: ParsedAoi | BaseGeometry, grid: Grid, *, clip: bool = True, max_tiles: int = 100_000
) -> list[Tile]:
    """Tiles of ``grid`` intersecting the AOI, sorted by id.

    ``clip=False`` returns whole cells (still only those intersecting the AOI). Raises TooManyTilesError
    before any tiling when ``estimate_tile_count`` exceeds ``max_tiles``, and also when the real count does.
    """
    geom = as_aoi_geometry(aoi)
    if bbox_upper_bound(geom, grid) > max_tiles:  # else the estimate can't exceed the cap either
        estimated = estimate_tile_count(geom, grid)
        if estimated > max_tiles:
            raise TooManyTilesError(estimated, max_tiles, grid.name)
    tiles: list[Tile] = []
    for region, part in split_by_zone(geom):
        tiles.extend(_tile_region(region, part, grid, clip))
        if len(tiles) > max_tiles:
            raise TooManyTilesError(len(tiles), max_tiles, grid.name, exact=True)
    tiles.sort(key=attrgetter("id"))
    return tiles
