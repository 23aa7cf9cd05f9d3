"""AOI parsing, validation and normalisation.

``parse_aoi`` accepts decoded GeoJSON (a dict) or a JSON string holding a ``Polygon``, ``MultiPolygon``,
``Feature`` with such a geometry, or ``FeatureCollection`` (the union of its features' polygonal
geometries; features without one are skipped with a warning). Positions are ``[longitude, latitude]``.

Normalisation:

* Longitudes may lie in [-360, 360]. Each ring is *unwrapped*: an edge whose longitude jumps by more than
  180° is taken to cross the antimeridian. Kept as drawn are edges along a pole and, unless the ring would
  then enclose nothing, edges from -180 to 180 along a parallel (bands and caps drawn edge to edge, as in
  Natural Earth's Antarctica). A ring whose unwrapped longitudes end 360° away from where they started
  goes around a pole and is closed through the nearer pole. Every piece is cut at ±180° and shifted into
  [-180, 180], so no polygon spans the globe.
* Invalid polygons (bow-tie, ring self-intersection, hole outside shell...) are repaired with
  ``shapely.make_valid`` keeping only polygonal parts, and a warning names the problem that
  ``shapely.is_valid_reason`` reported. Overlapping parts are merged (with a warning); collapsed rings
  enclosing less than 1e-12 square degrees (unions of touching countries leave such "spikes") are dropped.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from .errors import AoiError

__all__ = ["ACCEPTED_TYPES", "ParsedAoi", "as_aoi_geometry", "drop_slivers", "parse_aoi", "polygonal_part",
           "split_antimeridian"]

ACCEPTED_TYPES = ("Polygon", "MultiPolygon", "Feature", "FeatureCollection")
_ACCEPTED_TEXT = "Polygon, MultiPolygon, Feature or FeatureCollection"
_OTHER_GEOMETRIES = {"Point", "MultiPoint", "LineString", "MultiLineString", "GeometryCollection"}
_SNAP = 1e-9  # longitudes this close to ±180 are snapped onto it
_SLIVER_DEG2 = 1e-12  # rings enclosing less (about 0.01 m²) are collapsed artefacts and are dropped
# Self-crossings of ring edges that make_valid repairs per AOI: its cost grows faster than quadratically with
# them (about 2 s for 4000, 20 s for 11000, gigabytes beyond), so a scribble of a few thousand vertices could
# exhaust the tiler. Real invalid outlines (bow-ties, Natural Earth's) have a handful.
MAX_REPAIR_CROSSINGS = 2000


@dataclass
class ParsedAoi:
    """A validated AOI: ``geometry`` is a (Multi)Polygon in lon/lat within [-180, 180]."""

    geometry: Polygon | MultiPolygon
    warnings: list[str] = field(default_factory=list)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, numbers.Number):
        return f"a number ({value!r})"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return f"an array of {len(value)} elements"
    return type(value).__name__


def _is_number(v: Any) -> bool:
    t = type(v)
    if t is float or t is int:
        return True
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


# ---------------------------------------------------------------------------------------------- parsing


def _ring(raw: Any, where: str) -> np.ndarray:
    """Validate one linear ring; return its (n, 2) lon/lat array."""
    if not isinstance(raw, list | tuple):
        raise AoiError(f"{where} must be an array of positions (a linear ring), got {_kind(raw)}")
    if len(raw) < 4:
        raise AoiError(
            f"{where} has {len(raw)} position(s); a linear ring needs at least 4 (closed: last = first)"
        )
    try:
        xy = np.array([(p[0], p[1]) for p in raw], dtype=float)
        ok = all(type(p) in (list, tuple) and (_is_number(p[0]) and _is_number(p[1])) for p in raw)
    except (TypeError, ValueError, IndexError, KeyError, OverflowError):
        ok = False
    if not ok:
        for j, p in enumerate(raw):
            if not isinstance(p, list | tuple) or len(p) < 2:
                raise AoiError(f"{where}[{j}] must be a position [longitude, latitude], got {_kind(p)}")
            for name, v in (("longitude", p[0]), ("latitude", p[1])):
                if not _is_number(v):
                    raise AoiError(f"{where}[{j}]: {name} must be a number, got {_kind(v)}")
                try:
                    float(v)
                except OverflowError:
                    raise AoiError(f"{where}[{j}]: {name} {str(v)[:20]}... is too large a number") from None
        raise AoiError(f"{where}: malformed coordinates")  # pragma: no cover - defensive
    finite = np.isfinite(xy)
    if not finite.all():
        j = int(np.argmin(finite.all(axis=1)))
        raise AoiError(f"{where}[{j}] has a non-finite coordinate {xy[j].tolist()}")
    bad = np.abs(xy[:, 1]) > 90
    if bad.any():
        j = int(np.argmax(bad))
        raise AoiError(
            f"{where}[{j}]: latitude {float(xy[j, 1]):g} is outside [-90, 90] "
            "(positions are [longitude, latitude])"
        )
    bad = np.abs(xy[:, 0]) > 360
    if bad.any():
        j = int(np.argmax(bad))
        raise AoiError(f"{where}[{j}]: longitude {float(xy[j, 0]):g} is outside [-360, 360]")
    near = np.abs(np.abs(xy[:, 0]) - 180.0) < _SNAP
    if near.any():
        xy[near, 0] = np.copysign(180.0, xy[near, 0])
    if not (xy[0] == xy[-1]).all():
        raise AoiError(
            f"{where} is not closed: its first position {xy[0].tolist()} differs from its last "
            f"{xy[-1].tolist()}"
        )
    return xy


def _polygon(raw: Any, where: str) -> tuple[str, list[np.ndarray]]:
    if not isinstance(raw, list | tuple):
        raise AoiError(f"{where} must be an array of linear rings, got {_kind(raw)}")
    if len(raw) == 0:
        raise AoiError(f"{where} is empty: a Polygon needs an exterior ring (empty geometry)")
    return where, [_ring(r, f"{where}[{i}]") for i, r in enumerate(raw)]


def _coordinates(obj: Mapping[str, Any], where: str) -> Any:
    if "coordinates" not in obj:
        raise AoiError(f'{where} ({obj["type"]}) has no "coordinates" member')
    return obj["coordinates"]


def _collect(obj: Any, where: str, warnings: list[str], *, top: bool) -> list[tuple[str, list[np.ndarray]]]:
    if not isinstance(obj, Mapping):
        raise AoiError(f"{where} must be a GeoJSON object, got {_kind(obj)}")
    if "type" not in obj:
        raise AoiError(f'{where} has no "type" member; expected a GeoJSON {_ACCEPTED_TEXT}')
    t = obj["type"]
    if not isinstance(t, str):
        raise AoiError(f'{where} "type" must be a string, got {_kind(t)}')
    if t == "Polygon":
        return [_polygon(_coordinates(obj, where), f"{where}.coordinates")]
    if t == "MultiPolygon":
        coords = _coordinates(obj, where)
        if not isinstance(coords, list | tuple):
            raise AoiError(f"{where}.coordinates must be an array of polygons, got {_kind(coords)}")
        if len(coords) == 0:
            raise AoiError(f"{where} is an empty MultiPolygon (empty geometry)")
        return [_polygon(c, f"{where}.coordinates[{i}]") for i, c in enumerate(coords)]
    if t == "Feature" and top:
        if "geometry" not in obj:
            raise AoiError(f'{where} (Feature) has no "geometry" member')
        geom = obj["geometry"]
        if geom is None:
            raise AoiError(f"{where} (Feature) has a null geometry (empty geometry)")
        return _collect(geom, f"{where}.geometry", warnings, top=False)
    if t == "FeatureCollection" and top:
        feats = obj.get("features")
        if not isinstance(feats, list | tuple):
            raise AoiError(f'{where} (FeatureCollection) must have a "features" array, got {_kind(feats)}')
        if len(feats) == 0:
            raise AoiError(f"{where} is a FeatureCollection without features (empty geometry)")
        out: list[tuple[str, list[np.ndarray]]] = []
        for i, f in enumerate(feats):
            fw = f"{where}.features[{i}]"
            if not isinstance(f, Mapping) or f.get("type") != "Feature":
                raise AoiError(f"{fw} must be a GeoJSON Feature, got {_kind(f)}")
            geom = f.get("geometry")
            gtype = geom.get("type") if isinstance(geom, Mapping) else None
            if gtype not in ("Polygon", "MultiPolygon"):
                shown = "null" if geom is None else repr(gtype)
                warnings.append(f"{fw} was skipped: its geometry is {shown}, not a Polygon or MultiPolygon")
                continue
            out.extend(_collect(geom, f"{fw}.geometry", warnings, top=False))
        if not out:
            raise AoiError(f"{where} (FeatureCollection) contains no Polygon or MultiPolygon geometry")
        return out
    if t in _OTHER_GEOMETRIES or t in ("Feature", "FeatureCollection"):
        allowed = _ACCEPTED_TEXT if top else "Polygon or MultiPolygon"
        raise AoiError(f"unsupported type {t!r} at {where}: the AOI must be a {allowed}")
    raise AoiError(f"unknown GeoJSON type {t!r} at {where}; expected {_ACCEPTED_TEXT}")


# ---------------------------------------------------------------------------------------- normalising


def polygonal_part(geom: BaseGeometry) -> BaseGeometry:
    """The polygonal part of ``geom`` (Polygon/MultiPolygon, possibly empty); drops lines and points."""
    if isinstance(geom, Polygon | MultiPolygon):
        return geom
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, Polygon | MultiPolygon) and p.area > 0]
    if not parts:
        return Polygon()
    if len(parts) == 1:
        return parts[0]
    return shapely.union_all(parts)


def drop_slivers(geom: BaseGeometry, min_area: float) -> BaseGeometry:
    """Remove rings (holes, or whole parts) enclosing less than ``min_area``: collapsed "spike" rings that
    unions and repairs leave behind, which rectangle clipping mishandles."""
    parts = shapely.get_parts(geom)
    rings, owner = shapely.get_rings(parts, return_index=True)
    areas = shapely.area(shapely.polygons(rings))
    if not (areas < min_area).any():
        return geom
    first = np.concatenate([[True], owner[1:] != owner[:-1]])
    keep_part = np.zeros(len(parts), dtype=bool)
    keep_part[owner[first & (areas >= min_area)]] = True
    out = []
    for i in np.flatnonzero(keep_part):
        own = np.flatnonzero((owner == i) & ~first & (areas >= min_area))
        out.append(Polygon(rings[np.flatnonzero((owner == i) & first)[0]], list(rings[own])))
    if not out:
        return Polygon()
    return out[0] if len(out) == 1 else MultiPolygon(out)


@dataclass
class _RepairBudget:
    """Self-crossings that make_valid may still repair in this AOI."""

    crossings: int = MAX_REPAIR_CROSSINGS


def _count_crossings(poly: BaseGeometry, limit: int) -> int:
    """Number of proper crossings between the edges of ``poly``'s rings, counted up to just above ``limit``."""
    segments: list[Any] = []
    for ring in shapely.get_rings(poly):
        xy = shapely.get_coordinates(ring)
        segments.append(shapely.linestrings(np.stack([xy[:-1], xy[1:]], axis=1)))
    edges = np.concatenate(segments) if segments else np.empty(0, dtype=object)
    tree = shapely.STRtree(edges)
    # Query in growing chunks, so that a scribble whose every edge crosses thousands of others stops early.
    found, start, chunk, max_chunk = 0, 0, 1, max(1, 1_000_000 // max(1, len(edges)))
    while start < len(edges) and found <= 2 * limit:
        found += tree.query(edges[start:start + chunk], predicate="crosses").shape[1]  # each crossing twice
        start += chunk
        chunk = min(2 * chunk, max_chunk)
    return found // 2


def _repair(poly: BaseGeometry, where: str, warnings: list[str], budget: _RepairBudget, *,
            required: bool = True) -> BaseGeometry:
    """Return ``poly`` if valid, else its make_valid polygonal part (with a warning)."""
    if shapely.is_valid(poly):
        return poly
    reason = shapely.is_valid_reason(poly)
    crossings = _count_crossings(poly, budget.crossings)
    if crossings > budget.crossings:
        raise AoiError(f"{where} is invalid ({reason}) with more than {MAX_REPAIR_CROSSINGS} self-intersections "
                       "in the AOI, too many to repair automatically; send a valid polygon")
    budget.crossings -= crossings
    fixed = polygonal_part(shapely.make_valid(poly))
    if fixed.is_empty or fixed.area <= 0:
        if required:
            raise AoiError(f"{where} is invalid ({reason}) and cannot be repaired: make_valid yields no area")
        warnings.append(f"{where} is invalid ({reason}) and has no area; it was ignored")
        return Polygon()
    warnings.append(f"{where} was invalid ({reason}) and was repaired with make_valid")
    return fixed


def _jumps(xy: np.ndarray, keep_frame: bool = True) -> np.ndarray:
    """Edges whose longitude jumps by more than 180° and that are taken to cross the antimeridian.

    Edges along a pole are kept as drawn; so are, with ``keep_frame``, edges from -180 to 180 along a
    parallel (a band or cap drawn edge to edge, Natural Earth style).
    """
    lon, lat = xy[:, 0], xy[:, 1]
    d = np.diff(lon)
    jump = np.abs(d) > 180.0
    if jump.any():
        keep = (np.abs(lat[:-1]) == 90.0) & (lat[:-1] == lat[1:])
        if keep_frame:
            keep |= (np.abs(lon[:-1]) == 180.0) & (np.abs(lon[1:]) == 180.0) & (lat[:-1] == lat[1:])
        jump &= ~keep
    return jump


def _flat(ring: np.ndarray) -> bool:
    """Whether a ring encloses (next to) no area (shoelace formula)."""
    x, y = ring[:, 0], ring[:, 1]
    return abs(float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))) < 1e-9 * max(
        1.0, float(np.ptp(x) * np.ptp(y))
    )


def _crosses(xy: np.ndarray) -> bool:
    """Whether a ring needs antimeridian handling (longitudes beyond ±180 or a crossing edge)."""
    if np.abs(xy[:, 0]).max() > 180.0 or _jumps(xy).any():
        return True
    return bool(_jumps(xy, keep_frame=False).any() and _flat(xy))


def _unwrap(xy: np.ndarray, keep_frame: bool = True) -> tuple[np.ndarray, int]:
    """Unwrap longitudes across antimeridian jumps; return the ring and its winding (-1, 0, 1...)."""
    lon = xy[:, 0].copy()
    lat = xy[:, 1]
    d = np.diff(lon)
    jump = _jumps(xy, keep_frame)
    if not jump.any():
        return xy, 0
    k = np.where(jump, np.round(d / 360.0), 0.0)
    offset = np.concatenate([[0.0], -360.0 * np.cumsum(k)])
    lon = lon + offset
    return np.column_stack([lon, lat]), round(-offset[-1] / 360.0)


def _ring_region(xy: np.ndarray, where: str, warnings: list[str], budget: _RepairBudget, *,
                 required: bool) -> BaseGeometry:
    """The region enclosed by one ring, in an unwrapped longitude frame (may exceed ±180)."""
    ring, winding = _unwrap(xy)
    if not winding and _jumps(xy, keep_frame=False).any() and _flat(ring):
        # -180 -> 180 along a parallel enclosing nothing: a ring around a pole, crossing there
        ring, winding = _unwrap(xy, keep_frame=False)
    if winding:
        pole = 90.0 if ring[:, 1].mean() >= 0 else -90.0
        closing = np.array([[ring[-1, 0], pole], [ring[0, 0], pole], ring[0]])
        ring = np.concatenate([ring, closing])
        warnings.append(
            f"{where} goes all the way around the {'north' if pole > 0 else 'south'} pole; "
            "it was taken to enclose the pole"
        )
    return _repair(Polygon(ring), where, warnings, budget, required=required)


def _shift_lon(coords: np.ndarray, by: float) -> np.ndarray:
    shifted: np.ndarray = coords + np.array([by, 0.0])
    return shifted


def split_antimeridian(geom: BaseGeometry) -> BaseGeometry:
    """A lon/lat geometry with longitudes beyond ±180 cut at the odd multiples of 180° (any number of turns), each
    piece shifted by whole turns into [-180, 180]. Pieces overlap only when ``geom`` spans more than one turn;
    then they are merged, otherwise kept as the parts of a MultiPolygon. The one owner of this rule."""
    xmin, _, xmax, _ = geom.bounds
    if xmin >= -180.0 and xmax <= 180.0:
        return geom
    pieces: list[Polygon] = []
    for k in range(math.floor((xmin + 180.0) / 360.0), math.ceil((xmax - 180.0) / 360.0) + 1):
        window = shapely.box(-180.0 + 360.0 * k, -90.0, 180.0 + 360.0 * k, 90.0)
        piece = polygonal_part(shapely.intersection(geom, window))
        if piece.is_empty or piece.area <= 0:
            continue
        if k:
            piece = shapely.transform(piece, functools.partial(_shift_lon, by=-360.0 * k))
        pieces.extend(p for p in shapely.get_parts(piece) if isinstance(p, Polygon))
    if not pieces:
        return Polygon()
    if xmax - xmin > 360.0:
        out = polygonal_part(shapely.union_all(pieces))
    else:
        out = MultiPolygon(pieces) if len(pieces) > 1 else pieces[0]
    coords = shapely.get_coordinates(out)
    coords[:, 0] = np.clip(coords[:, 0], -180.0, 180.0)  # a shift by whole turns may leave 180 + 1 ulp
    return shapely.set_coordinates(out, coords)


def _normalise_polygon(where: str, rings: list[np.ndarray], warnings: list[str],
                       budget: _RepairBudget) -> BaseGeometry:
    if not any(_crosses(r) for r in rings):
        return _repair(Polygon(rings[0], rings[1:]), where, warnings, budget)
    # Antimeridian handling: work ring by ring, each in its own unwrapped frame, then combine in [-180, 180].
    shell = split_antimeridian(_ring_region(rings[0], f"{where}[0]", warnings, budget, required=True))
    holes = [
        split_antimeridian(_ring_region(r, f"{where}[{i}]", warnings, budget, required=False))
        for i, r in enumerate(rings[1:], 1)
    ]
    holes = [h for h in holes if not h.is_empty]
    if holes:
        shell = polygonal_part(shapely.difference(shell, shapely.union_all(holes)))
    return shell


def _finish(polys: list[BaseGeometry], warnings: list[str]) -> Polygon | MultiPolygon:
    polys = [p for p in polys if not p.is_empty]
    if not polys:
        raise AoiError("the AOI has no area (empty geometry)")
    if len(polys) == 1:
        geom = polys[0]
    else:
        parts = [q for p in polys for q in shapely.get_parts(p)]
        geom = MultiPolygon(parts)
        if not shapely.is_valid(geom):
            geom = polygonal_part(shapely.union_all(parts))
            total = float(sum(p.area for p in parts))
            if total - geom.area > 1e-9 * total:
                warnings.append("overlapping AOI parts were merged")
    geom = drop_slivers(geom, _SLIVER_DEG2)
    if geom.is_empty or geom.area <= 0:
        raise AoiError("the AOI has no area (empty geometry)")
    if not isinstance(geom, Polygon | MultiPolygon):  # pragma: no cover - defensive
        raise AoiError(f"the AOI could not be turned into a polygon (got {geom.geom_type})")
    return geom


def parse_aoi(obj: Any) -> ParsedAoi:
    """Validate and normalise a GeoJSON AOI (dict or JSON string); raise AoiError saying what is wrong."""
    if isinstance(obj, bytes | bytearray):
        try:
            obj = obj.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AoiError(f"the AOI is not valid UTF-8 JSON: {exc}") from None
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as exc:
            raise AoiError(f"the AOI is not valid JSON: {exc}") from None
        except RecursionError:
            raise AoiError("the AOI is not usable JSON: it is nested too deeply") from None
    if not isinstance(obj, Mapping):
        raise AoiError(f"the AOI must be a GeoJSON object ({_ACCEPTED_TEXT}), got {_kind(obj)}")
    warnings: list[str] = []
    raw = _collect(obj, "AOI", warnings, top=True)
    budget = _RepairBudget()
    polys = [_normalise_polygon(where, rings, warnings, budget) for where, rings in raw]
    if any(_crosses(r) for _, rs in raw for r in rs):
        warnings.append(
            "the AOI crosses the antimeridian or uses longitudes beyond ±180; it was split at ±180°"
        )
    return ParsedAoi(geometry=_finish(polys, warnings), warnings=warnings)


def as_aoi_geometry(aoi: ParsedAoi | BaseGeometry) -> Polygon | MultiPolygon:
    """The normalised lon/lat geometry of a ParsedAoi or of a shapely (Multi)Polygon."""
    if isinstance(aoi, ParsedAoi):
        return aoi.geometry
    if isinstance(aoi, Polygon | MultiPolygon):
        if aoi.is_empty:
            raise AoiError("the AOI has no area (empty geometry)")
        xmin, ymin, xmax, ymax = aoi.bounds
        if xmin >= -180 and xmax <= 180 and ymin >= -90 and ymax <= 90 and shapely.is_valid(aoi):
            return aoi
        return parse_aoi(shapely.geometry.mapping(aoi)).geometry
    if isinstance(aoi, BaseGeometry):
        raise AoiError(
            f"unsupported geometry type {aoi.geom_type!r}: the AOI must be a Polygon or MultiPolygon"
        )
    raise AoiError(f"the AOI must be a ParsedAoi or a shapely Polygon/MultiPolygon, got {_kind(aoi)}")
