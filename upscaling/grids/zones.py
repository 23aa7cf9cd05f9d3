"""UTM/UPS zones, their CRSs and grid frames, and the split of an AOI into zone regions.

* UTM: regular 6° zones 1..60 (zone z spans longitudes -180+6(z-1) .. -180+6z) with **no** Norway/Svalbard
  exceptions (32V and 31X-37X are not special), split at the equator: north EPSG:326zz for latitudes
  0..84, south EPSG:327zz for -80..0. Grid lines at multiples of the cell size in the zone's own easting
  and northing (false easting/northing included): column = floor(x / size), row = floor(y / size).
* UPS: latitudes above 84°N use EPSG:32661, below 80°S EPSG:32761. UPS has a scale of 0.994 at the pole,
  so the polar grid step is ``size x 0.994`` projected metres, making every polar cell at most size x size
  on the ground (about 0.985 x size² in area at 80°S). The pole (false origin 2 000 000, 2 000 000) is a grid
  corner: lines lie at 2 000 000 ± k·step, column = floor((x - 2e6) / step) + P with P = ceil(2e6 / step), so
  indices are non-negative. Polar caps are split into quadrants along the grid lines through the pole
  (meridians 0, ±90, 180), so no tile wraps around the pole or crosses the antimeridian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import shapely
from pyproj import Transformer
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from .aoi import polygonal_part

__all__ = [
    "UPS_CENTRE",
    "UPS_SCALE",
    "UTM_NORTH_LIMIT",
    "UTM_SOUTH_LIMIT",
    "Region",
    "Zone",
    "fast_utm_ok",
    "split_by_zone",
    "transformer",
    "zone_for_epsg",
]

UTM_NORTH_LIMIT = 84.0
UTM_SOUTH_LIMIT = -80.0
UPS_SCALE = 0.994
UPS_CENTRE = 2_000_000.0


@dataclass(frozen=True)
class Zone:
    """A projected grid frame: a UTM zone in one hemisphere (``"32N"``) or a UPS cap (``"UPSN"``)."""

    key: str
    epsg: int
    number: int  # UTM zone number; 0 for UPS
    north: bool

    @property
    def polar(self) -> bool:
        return self.number == 0

    @property
    def central_meridian(self) -> float:
        return -183.0 + 6.0 * self.number if self.number else 0.0

    def step(self, size_km: int) -> float:
        """Grid step in projected metres for cells of ``size_km`` km on the ground."""
        return size_km * 1000.0 * (UPS_SCALE if self.polar else 1.0)

    def origin(self, step: float) -> tuple[float, float, int]:
        """``(cx, cy, P)``: grid line k lies at ``c + (k - P) * step`` (UTM: c = 0, P = 0)."""
        if self.polar:
            return UPS_CENTRE, UPS_CENTRE, math.ceil(UPS_CENTRE / step)
        return 0.0, 0.0, 0


@dataclass(frozen=True)
class Region:
    """The lon/lat box of a zone (or of a polar quadrant) that an AOI is cut to."""

    zone: Zone
    west: float
    south: float
    east: float
    north: float

    @property
    def box(self) -> Polygon:
        return shapely.box(self.west, self.south, self.east, self.north)


@lru_cache(maxsize=256)
def utm_zone(number: int, north: bool) -> Zone:
    return Zone(f"{number:02d}{'N' if north else 'S'}", (32600 if north else 32700) + number, number, north)


UPS_NORTH = Zone("UPSN", 32661, 0, True)
UPS_SOUTH = Zone("UPSS", 32761, 0, False)


def zone_for_epsg(epsg: int) -> Zone:
    """The Zone of an EPSG code used by the grids (32601-32660, 32701-32760, 32661, 32761)."""
    if epsg == 32661:
        return UPS_NORTH
    if epsg == 32761:
        return UPS_SOUTH
    if 32601 <= epsg <= 32660:
        return utm_zone(epsg - 32600, True)
    if 32701 <= epsg <= 32760:
        return utm_zone(epsg - 32700, False)
    raise ValueError(f"EPSG:{epsg} is not a UTM/UPS CRS of the grids")


# UTM is projected with PROJ's "+approx" transverse Mercator (Evenden/Snyder series) where that is accurate:
# it is twice as fast as the exact (Poder/Engsager) algorithm and within 0.6 mm of it up to 6° from the
# central meridian, 5 mm up to 8° (measured), but metres off beyond 15°. AOI pieces always lie within 3° of
# their zone's meridian; inverse transforms of cells use it only when ``fast_utm_ok`` says the cells stay
# within FAST_UTM_MAX_DLON of it, which excludes big cells and cells near the poles.
FAST_UTM = True
FAST_UTM_MAX_DLON = 7.0


@lru_cache(maxsize=512)
def transformer(epsg: int, inverse: bool = False, fast: bool = True) -> Transformer:
    """Cached lon/lat -> EPSG transformer (or the inverse), lon/lat in x/y order (always_xy)."""
    if fast and FAST_UTM and (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760):
        utm = f"+proj=utm +approx +zone={epsg % 100}{' +south' if epsg > 32700 else ''} +ellps=WGS84"
        if inverse:
            steps = f"+step +inv {utm} +step +proj=unitconvert +xy_in=rad +xy_out=deg"
        else:
            steps = f"+step +proj=unitconvert +xy_in=deg +xy_out=rad +step {utm}"
        return Transformer.from_pipeline(f"+proj=pipeline {steps}")
    if inverse:
        return Transformer.from_crs(epsg, 4326, always_xy=True)
    return Transformer.from_crs(4326, epsg, always_xy=True)


def fast_utm_ok(zone: Zone, x_lo: float, x_hi: float, y_lo: float, y_hi: float) -> bool:
    """Whether the fast UTM transform is accurate over this projected box (conservative estimate)."""
    if zone.polar:
        return False
    y_eq = 0.0 if zone.north else 10_000_000.0
    lat = min(max(abs(y_lo - y_eq), abs(y_hi - y_eq)) / 110_574.0 + 1.0, 89.9)
    dx = max(abs(x_lo - 500_000.0), abs(x_hi - 500_000.0))
    return dx / (6_360_000.0 * math.cos(math.radians(lat))) <= math.radians(FAST_UTM_MAX_DLON)


def _utm_regions(number: int, south: float, north: float) -> list[Region]:
    west = -180.0 + 6.0 * (number - 1)
    out = []
    if north > 0.0 and south < UTM_NORTH_LIMIT:
        out.append(Region(utm_zone(number, True), west, 0.0, west + 6.0, UTM_NORTH_LIMIT))
    if south < 0.0 and north > UTM_SOUTH_LIMIT:
        out.append(Region(utm_zone(number, False), west, UTM_SOUTH_LIMIT, west + 6.0, 0.0))
    return out


_QUADRANTS = ((-180.0, -90.0), (-90.0, 0.0), (0.0, 90.0), (90.0, 180.0))


def candidate_regions(bounds: tuple[float, float, float, float]) -> list[Region]:
    """Regions whose box overlaps the interior of a lon/lat bounding box."""
    xmin, ymin, xmax, ymax = bounds
    out: list[Region] = []
    first = max(1, math.floor((xmin + 180.0) / 6.0) + 1)
    last = min(60, max(first, math.ceil((xmax + 180.0) / 6.0)))
    for number in range(first, last + 1):
        out.extend(_utm_regions(number, ymin, ymax))
    for cap, zone, lo, hi in (
        (ymax > UTM_NORTH_LIMIT, UPS_NORTH, UTM_NORTH_LIMIT, 90.0),
        (ymin < UTM_SOUTH_LIMIT, UPS_SOUTH, -90.0, UTM_SOUTH_LIMIT),
    ):
        if cap:
            out.extend(Region(zone, w, lo, e, hi) for w, e in _QUADRANTS if xmin < e and xmax > w)
    return out


def _cut(geom: BaseGeometry, region: Region) -> BaseGeometry:
    """``geom ∩ region box``, polygonal (fast rectangle clip; validity is checked once projected)."""
    piece = shapely.clip_by_rect(geom, region.west, region.south, region.east, region.north)
    if not isinstance(piece, Polygon | MultiPolygon):
        piece = polygonal_part(shapely.intersection(geom, region.box))
    return piece


def split_by_zone(geom: BaseGeometry) -> list[tuple[Region, BaseGeometry]]:
    """Cut a normalised lon/lat AOI into pieces, one per zone region it overlaps (sorted by zone key)."""
    parts = shapely.get_parts(geom)
    bounds = shapely.bounds(parts)
    members: dict[Region, list[int]] = {}
    for i, b in enumerate(bounds):
        for region in candidate_regions(tuple(b)):
            members.setdefault(region, []).append(i)
    out = []
    for region, idx in members.items():
        sub = parts[idx[0]] if len(idx) == 1 else MultiPolygon(list(parts[idx]))
        b = bounds[idx]
        inside = (
            b[:, 0].min() >= region.west
            and b[:, 1].min() >= region.south
            and b[:, 2].max() <= region.east
            and b[:, 3].max() <= region.north
        )
        piece = sub if inside else _cut(sub, region)
        if not piece.is_empty and piece.area > 0:
            out.append((region, piece))
    out.sort(key=lambda rp: (rp[0].zone.key, rp[0].west, rp[0].south))
    return out
