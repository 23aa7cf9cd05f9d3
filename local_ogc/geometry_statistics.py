"""The `geometry-statistics` process: area (km², geodesic on WGS84), centroid, bounds and vertex count of a
GeoJSON geometry, taking `run_seconds` (from the server's process configuration) so that jobs are seen running."""

from __future__ import annotations

import time
from typing import Any

import shapely
from pygeoapi.process.base import BaseProcessor, ProcessorExecuteError
from pyproj import Geod
from shapely.geometry import shape

_GEOD = Geod(ellps="WGS84")

PROCESS_METADATA: dict[str, Any] = {
    "version": "1.0.0",
    "id": "geometry-statistics",
    "title": "Geometry statistics",
    "description": "Area in km² (geodesic, WGS84), centroid, bounds and vertex count of a GeoJSON geometry.",
    "jobControlOptions": ["sync-execute", "async-execute"],
    "keywords": ["geometry", "statistics", "area"],
    "inputs": {
        "geometry": {
            "title": "Geometry",
            "description": "The area to describe: a GeoJSON Polygon or MultiPolygon in WGS84 longitude/latitude.",
            "schema": {"type": "object", "format": "geojson-geometry",
                       "contentMediaType": "application/geo+json"},
            "minOccurs": 1,
            "maxOccurs": 1,
        },
        "year": {
            "title": "Year",
            "description": "A year the statistics are labelled with (echoed in the output).",
            "schema": {"type": "integer", "minimum": 1900, "maximum": 2100, "default": 2024},
            "minOccurs": 0,
            "maxOccurs": 1,
        },
        "fail": {
            "title": "Fail",
            "description": "When true the job fails (for tests of failed jobs).",
            "schema": {"type": "boolean", "default": False},
            "minOccurs": 0,
            "maxOccurs": 1,
        },
    },
    "outputs": {
        "statistics": {
            "title": "Statistics",
            "description": "{area_km2, centroid: [lon, lat], bounds: [west, south, east, north], vertex_count, year}",
            "schema": {"type": "object", "contentMediaType": "application/json"},
        },
    },
    "example": {"inputs": {"geometry": {"type": "Polygon", "coordinates": [[[14.3, 47.2], [14.4, 47.2], [14.4, 47.3],
                                                                            [14.3, 47.2]]]}, "year": 2024}},
}


def statistics(geometry: dict[str, Any], year: int | None = None) -> dict[str, Any]:
    """The statistics of a GeoJSON geometry; ValueError when it is not a valid areal geometry."""
    try:
        geom = shape(geometry)
    except Exception as exc:
        raise ValueError(f"not a GeoJSON geometry: {exc}") from exc
    if geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise ValueError(f"expected a non-empty Polygon or MultiPolygon, got {geom.geom_type}")
    area_m2, _ = _GEOD.geometry_area_perimeter(geom)
    centroid = geom.centroid
    return {"area_km2": round(abs(area_m2) / 1e6, 6), "centroid": [centroid.x, centroid.y],
            "bounds": list(geom.bounds), "vertex_count": int(shapely.get_num_coordinates(geom)), "year": year}


class GeometryStatisticsProcessor(BaseProcessor):
    """pygeoapi processor of `geometry-statistics` (`run_seconds` in its process configuration)."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, PROCESS_METADATA)
        self.run_seconds = float(processor_def.get("run_seconds", 0.0))

    def execute(self, data: dict[str, Any], outputs: dict[str, Any] | None = None) -> tuple[str, Any]:
        geometry = data.get("geometry")
        if not isinstance(geometry, dict):
            raise ProcessorExecuteError("the input 'geometry' (a GeoJSON geometry object) is required")
        year = data.get("year", 2024)
        if year is not None and (not isinstance(year, int) or isinstance(year, bool)):
            raise ProcessorExecuteError(f"the input 'year' must be an integer, got {year!r}")
        time.sleep(self.run_seconds)
        if data.get("fail") is True:
            raise ProcessorExecuteError("failed on request (input 'fail' is true)")
        try:
            result = statistics(geometry, year)
        except ValueError as exc:
            raise ProcessorExecuteError(str(exc)) from exc
        return "application/json", {"statistics": result}
