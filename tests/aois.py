"""AOIs the tests use: the seed notebook's, the Natural Earth countries, and synthetic ones."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from tests.shared_data import countries_file

COUNTRIES_FILE = countries_file()

# The AOI of ../shared/seed/upscaling_notebook.txt, as the notebook sends it.
SEED_AOI: dict[str, Any] = {
    "coordinates": [[
        [14.370712654502597, 47.27563273620049],
        [14.370712654502597, 47.26583764118868],
        [14.405670947432327, 47.26583764118868],
        [14.405670947432327, 47.27563273620049],
        [14.370712654502597, 47.27563273620049],
    ]],
    "type": "Polygon",
}


@cache
def countries() -> dict[str, dict[str, Any]]:
    """Country name → GeoJSON geometry, from the Natural Earth file."""
    data = json.loads(COUNTRIES_FILE.read_text())
    out = {}
    for feature in data["features"]:
        props = feature["properties"]
        name = props.get("name") or props.get("NAME") or props.get("ADMIN")
        out[name] = feature["geometry"]
    return out


def europe() -> dict[str, Any]:
    """All countries of the file (eight western/central European countries) as one MultiPolygon."""
    polygons: list[Any] = []
    for geometry in countries().values():
        polygons.extend([geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"])
    return {"type": "MultiPolygon", "coordinates": polygons}


def box(west: float, south: float, east: float, north: float) -> dict[str, Any]:
    """A GeoJSON Polygon rectangle."""
    return {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north], [west, north],
                                                [west, south]]]}


# Synthetic AOIs covering the awkward cases.
SYNTHETIC: dict[str, dict[str, Any]] = {
    "holes": {"type": "Polygon", "coordinates": [
        [[4.0, 50.0], [6.5, 50.0], [6.5, 51.5], [4.0, 51.5], [4.0, 50.0]],
        [[4.5, 50.3], [5.5, 50.3], [5.5, 51.0], [4.5, 51.0], [4.5, 50.3]],
    ]},
    "multipart": {"type": "MultiPolygon", "coordinates": [
        box(10.0, 45.0, 10.8, 45.6)["coordinates"], box(12.0, 46.0, 12.5, 46.4)["coordinates"]]},
    "antimeridian_beyond_180": box(178.5, -17.5, 181.5, -15.5),
    "antimeridian_parts": {"type": "MultiPolygon", "coordinates": [
        box(178.5, 65.0, 180.0, 66.0)["coordinates"], box(-180.0, 65.0, -178.5, 66.0)["coordinates"]]},
    "near_pole_north": box(-30.0, 83.0, 30.0, 89.0),
    "pole_cap_south": {"type": "Polygon", "coordinates": [[[-180, -90], [180, -90], [180, -87], [-180, -87],
                                                           [-180, -90]]]},
    "equator_and_zone_border": box(5.0, -1.0, 7.5, 1.0),
}
