"""Hypothesis strategies of hostile inputs: garbage GeoJSON AOIs, grid names, task requests."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

# ---- JSON values ---------------------------------------------------------------------------------------------

ODD_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=30) | st.sampled_from(
    ["", " ", "\x00", "\ud800", "a\udfffb", "\u202e", "😀" * 10, "Ω≈ç√", "\ufeff", "a\nb", "null", "NaN", "[]", "{}",
     "%s%n", "../" * 5,
     "'; DROP TABLE upscale_tasks; --", "x" * 5000])
ODD_NUMBERS = st.sampled_from([0, -0.0, 1, -1, 2**31, 2**63, -(2**63) - 1, 2**64, 10**30, 10**400, 1e308, -1e308,
                               5e-324, math.nan, math.inf, -math.inf, 1.5, 180.0000000001, 90.0, -90.0, 360, 361])
NUMBERS = ODD_NUMBERS | st.floats(allow_nan=True, allow_infinity=True) | st.integers()
SCALARS = st.none() | st.booleans() | NUMBERS | ODD_TEXT


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON-like value (with NaN/inf and huge integers, which Python's json module writes)."""
    return st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ODD_TEXT, inner,
                                                                                            max_size=4),
                        max_leaves=max_leaves)


# ---- GeoJSON ---------------------------------------------------------------------------------------------------

GEOJSON_TYPES = ["Polygon", "MultiPolygon", "Feature", "FeatureCollection", "GeometryCollection", "Point",
                 "LineString", "MultiPoint", "MultiLineString", "polygon", "", "Topology", "Polygon "]


@st.composite
def rings(draw: st.DrawFn, max_vertices: int = 40) -> list[Any]:
    """A ring of random vertices: closed or not, self-intersecting, degenerate, odd positions in it."""
    kind = draw(st.sampled_from(["random", "box", "degenerate", "odd", "numbers"]))
    if kind == "numbers":  # NaN, infinities, huge integers, out-of-range longitudes and latitudes
        ring = draw(st.lists(st.lists(NUMBERS, min_size=2, max_size=3), min_size=3, max_size=6))
        if draw(st.booleans()):
            ring.append(ring[0])
    elif kind == "box":
        x = draw(st.floats(-400, 400) | st.sampled_from([1e308, -1e308, 5e-324, 180.0, -180.0, 360.0]))
        y = draw(st.floats(-100, 100) | st.sampled_from([90.0, -90.0, 1e308]))
        w, h = draw(st.floats(0, 400, allow_nan=False)), draw(st.floats(0, 200, allow_nan=False))
        ring = [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]
    else:
        cx = draw(st.floats(-179, 179))
        cy = draw(st.floats(-89, 89))
        span = draw(st.sampled_from([1e-12, 1e-6, 0.01, 1.0, 30.0, 400.0]))
        n = draw(st.integers(0, max_vertices))
        pts = draw(st.lists(st.tuples(st.floats(-1, 1), st.floats(-1, 1)), min_size=n, max_size=n))
        ring = [[cx + span * dx, cy + span * dy] for dx, dy in pts]
        if kind == "degenerate":
            ring = [[cx, cy]] * n
        if ring and draw(st.booleans()):
            ring.append(list(ring[0]))
    if kind == "odd" and ring:
        i = draw(st.integers(0, len(ring) - 1))
        ring[i] = draw(st.one_of(SCALARS, st.lists(NUMBERS, max_size=4), st.just([]), st.just([[1, 2]])))
        if i == 0 and draw(st.booleans()):
            ring[-1] = ring[0]
    return ring


def polygon_coords(max_vertices: int = 40) -> st.SearchStrategy[Any]:
    return st.lists(rings(max_vertices), max_size=3)


@st.composite
def big_polygon(draw: st.DrawFn) -> dict[str, Any]:
    """A closed star-shaped (or scrambled) ring of many vertices, within the body/message limits."""
    n = draw(st.sampled_from([1000, 5000, 20000]))
    cx, cy = draw(st.floats(-170, 170)), draw(st.floats(-80, 80))
    r = draw(st.sampled_from([0.01, 0.5, 5.0]))
    scramble = draw(st.booleans())
    pts = []
    for i in range(n):
        a = 2 * math.pi * ((i * 7919) % n if scramble else i) / n
        rr = r * (1 + 0.3 * math.sin(13 * a))
        pts.append([round(cx + rr * math.cos(a), 7), round(cy + rr * math.sin(a), 7)])
    pts.append(pts[0])
    return {"type": "Polygon", "coordinates": [pts]}


def _nest(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def geometries(draw: st.DrawFn, depth: int = 0) -> Any:
    """A GeoJSON-ish object: right or wrong types, right or wrong nesting, odd members."""
    t = draw(st.sampled_from(GEOJSON_TYPES))
    choice = draw(st.integers(0, 9))
    obj: dict[str, Any] = {"type": t}
    if choice <= 3:
        obj["coordinates"] = draw(polygon_coords())
    elif choice == 4:
        obj["coordinates"] = [draw(polygon_coords()) for _ in range(draw(st.integers(0, 3)))]
    elif choice == 5:
        obj["coordinates"] = _nest(draw(st.lists(NUMBERS, max_size=3)), draw(st.integers(0, 8)))
    elif choice == 6:
        obj["coordinates"] = draw(json_values())
    elif choice == 7 and depth < 3:
        inner = draw(st.lists(geometries(depth=depth + 1), max_size=3))
        obj["geometries"] = inner
        obj["features"] = [{"type": draw(st.sampled_from(["Feature", "feature", "Polygon"])), "geometry": g,
                            "properties": None} for g in inner]
    elif choice == 8 and depth < 3:
        obj["geometry"] = draw(st.none() | geometries(depth=depth + 1))
    # else: no coordinates at all
    if draw(st.integers(0, 4)) == 0:
        obj[draw(ODD_TEXT)] = draw(json_values(4))
    if draw(st.integers(0, 6)) == 0:
        del obj["type"]
    return obj


def wrapped(geometry: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The geometry bare, as a Feature, or in a FeatureCollection (possibly among empty/odd features)."""
    return st.one_of(
        geometry,
        geometry.map(lambda g: {"type": "Feature", "geometry": g, "properties": {}}),
        st.lists(geometry, max_size=4).map(lambda gs: {"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": g, "properties": {}} for g in gs]}),
        st.tuples(geometry, json_values(4)).map(lambda p: {"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": p[0]}, p[1], {"type": "Feature", "geometry": None}]}),
    )


def aois() -> st.SearchStrategy[Any]:
    """Every kind of AOI input a hostile or careless client may send."""
    return st.one_of(
        wrapped(geometries()),
        wrapped(st.fixed_dictionaries({"type": st.sampled_from(["Polygon", "MultiPolygon"]),
                                       "coordinates": polygon_coords()})),
        wrapped(st.builds(lambda rs: {"type": "MultiPolygon", "coordinates": [[r] for r in rs]},
                          st.lists(rings(), min_size=1, max_size=4))),
        json_values(),
        st.integers(0, 60).map(lambda d: _nest([], d)),  # deeper nesting: as JSON text in the geometry tests
    )


GRIDS = st.sampled_from(["20x20km", "250x250km", "1x1km", "1000x1000km", "0x0km", "1001x1001km", "20x10km",
                         "-5x-5km", "20x20", "", "x", "20X20KM", "\uff11x\uff11km", "9" * 20 + "x" + "9" * 20 + "km"]) \
    | st.text(max_size=12)


# ---- task requests -------------------------------------------------------------------------------------------

def urls(valid: str) -> st.SearchStrategy[str]:
    """URLs near a valid one: wrong scheme, closed port, unknown path, garbage, odd unicode; never a DNS name."""
    return st.sampled_from([
        valid, valid + "/", valid.upper(), valid.replace("http://", "https://"), valid.replace("http://", "ftp://"),
        valid + "?x=1", valid + "#frag", valid.replace("127.0.0.1", "127.0.0.1:1"), "http://127.0.0.1:1/udp.json",
        "http://127.0.0.1", "http://", "file:///etc/passwd", "", " ", "openeo", "http://[::1", "http://127.0.0.1:99999/",
        valid + "\x00", valid + "/😀", "javascript:alert(1)", valid.rsplit("/", 1)[0] + "/missing.json",
        valid.rsplit("/", 2)[0],
    ]) | ODD_TEXT
