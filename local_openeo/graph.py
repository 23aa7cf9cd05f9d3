"""Process graph checks and what a job will produce: output format, spatial and temporal extent."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyproj import Transformer

from local_openeo.errors import ApiError, graph_invalid
from local_openeo.udp import GEOJSON_TYPES, UdpResolver

Bounds = tuple[float, float, float, float]

# Lower-cased format names and aliases → canonical name listed in /file_formats.
FORMATS = {
    "gtiff": "GTiff",
    "geotiff": "GTiff",
    "tiff": "GTiff",
    "tif": "GTiff",
    "geojson": "GeoJSON",
    "netcdf": "netCDF",
    "nc": "netCDF",
    "json": "JSON",
}
_SPATIAL_ARGUMENTS = {
    "load_collection": "spatial_extent",
    "filter_bbox": "extent",
    "filter_spatial": "geometries",
    "aggregate_spatial": "geometries",
}


@dataclass(frozen=True, slots=True)
class GraphInfo:
    """What the backend needs to know about a job's process graph."""

    output: str  # canonical format of the result: GTiff, GeoJSON, netCDF or JSON
    extent: Bounds | None  # west, south, east, north in EPSG:4326
    extent_error: str | None  # why the job will fail, when the extent is unusable
    temporal: tuple[str | None, str | None] | None
    udps: tuple[str, ...]  # ids of the remote processes called


async def analyze_process(process: Any, resolver: UdpResolver, request_host: str | None) -> GraphInfo:
    """Check a ``{"process_graph": ...}`` like a backend does at job creation and describe its outcome."""
    if not isinstance(process, dict) or not isinstance(process.get("process_graph"), dict):
        raise ApiError(400, "ProcessGraphMissing", "No valid process graph given: 'process.process_graph'.")
    graph: dict = process["process_graph"]
    if not graph:
        raise graph_invalid("The process graph is empty.")
    result_id = None
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("process_id"), str):
            raise graph_invalid(f"Process graph node '{node_id}' has no valid 'process_id'.")
        arguments = node.get("arguments", {})
        if not isinstance(arguments, dict):
            raise graph_invalid(f"Process graph node '{node_id}' has no valid 'arguments'.")
        for value in arguments.values():
            if isinstance(value, dict) and "from_node" in value and value["from_node"] not in graph:
                raise graph_invalid(f"Node '{node_id}' refers to unknown node '{value['from_node']}'.")
        if node.get("result"):
            if result_id is not None:
                raise graph_invalid("The process graph has more than one result node.")
            result_id = node_id
    if result_id is None:
        if len(graph) != 1:
            raise graph_invalid("The process graph has no result node.")
        result_id = next(iter(graph))

    extent: Bounds | None = None
    extent_error: str | None = None
    temporal = None
    udps = []
    result_vector = False
    for node_id, node in graph.items():
        namespace = node.get("namespace")
        arguments = node.get("arguments", {})
        if isinstance(namespace, str) and namespace.startswith(("http://", "https://")):
            udp = await resolver.resolve(namespace, node["process_id"], request_host)
            udp.check_arguments(arguments)
            udps.append(udp.id)
            if node_id == result_id:
                result_vector = udp.returns_vector
            if extent is None and extent_error is None:
                for parameter in udp.parameters.values():
                    value = arguments.get(parameter.name, parameter.default)
                    if parameter.spatial and value is not None:
                        extent, extent_error = parse_extent(value)
                        if extent is not None or extent_error is not None:
                            break
            temporal = temporal or _temporal(arguments.get("temporal_extent"))
        elif extent is None and extent_error is None and node["process_id"] in _SPATIAL_ARGUMENTS:
            extent, extent_error = parse_extent(arguments.get(_SPATIAL_ARGUMENTS[node["process_id"]]))
            temporal = temporal or _temporal(arguments.get("temporal_extent"))
    if extent is None and extent_error is None:
        extent_error = "No spatial extent found in the process graph (bounding box or GeoJSON geometry)."
    return GraphInfo(
        output=_output_format(graph, result_id, result_vector),
        extent=extent,
        extent_error=extent_error,
        temporal=temporal,
        udps=tuple(udps),
    )


def _output_format(graph: dict, result_id: str, result_vector: bool) -> str:
    saves = [n for n in graph.values() if n["process_id"] == "save_result"]
    if not saves:
        return "GeoJSON" if result_vector else "GTiff"
    node = graph[result_id] if graph[result_id]["process_id"] == "save_result" else saves[0]
    name = node.get("arguments", {}).get("format")
    canonical = FORMATS.get(name.lower()) if isinstance(name, str) else None
    if canonical is None:
        raise ApiError(
            400,
            "FormatUnsupported",
            f"Output format {name!r} is not supported; use one of GTiff, GeoJSON, netCDF, JSON.",
        )
    return canonical


def _temporal(value: Any) -> tuple[str | None, str | None] | None:
    if isinstance(value, list) and len(value) == 2 and all(v is None or isinstance(v, str) for v in value):
        return value[0], value[1]
    return None


def parse_extent(value: Any) -> tuple[Bounds | None, str | None]:
    """Bounds in EPSG:4326 of a bounding box or GeoJSON object: (bounds, None), (None, error) or (None, None)."""
    if not isinstance(value, dict) or "from_parameter" in value or "from_node" in value:
        return None, None
    try:
        if all(k in value for k in ("west", "south", "east", "north")):
            bounds = tuple(float(value[k]) for k in ("west", "south", "east", "north"))
            crs = value.get("crs")
            if crs not in (None, 4326, "4326", "EPSG:4326", "epsg:4326"):
                bounds = _to_wgs84(str(crs) if not isinstance(crs, int) else f"EPSG:{crs}", bounds)
        elif value.get("type") in GEOJSON_TYPES:
            xs, ys = [], []
            for x, y in _positions(value):
                xs.append(x)
                ys.append(y)
            if not xs:
                return None, "The GeoJSON spatial extent has no coordinates."
            bounds = (min(xs), min(ys), max(xs), max(ys))
        else:
            return None, None
    except (TypeError, ValueError, IndexError) as exc:
        return None, f"The spatial extent is invalid: {exc}."
    west, south, east, north = bounds
    if not all(map(math.isfinite, bounds)):
        return None, "The spatial extent is not finite."
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        return None, f"The spatial extent {list(bounds)} is empty or outside EPSG:4326 bounds."
    return (west, south, east, north), None


def _positions(geojson: Any) -> Iterator[tuple[float, float]]:
    kind = geojson.get("type")
    if kind == "FeatureCollection":
        for feature in geojson.get("features") or []:
            yield from _positions(feature)
    elif kind == "Feature":
        if geojson.get("geometry"):
            yield from _positions(geojson["geometry"])
    elif kind == "GeometryCollection":
        for geometry in geojson.get("geometries") or []:
            yield from _positions(geometry)
    else:
        yield from _walk(geojson.get("coordinates"))


def _walk(coordinates: Any) -> Iterator[tuple[float, float]]:
    if isinstance(coordinates, list) and coordinates and isinstance(coordinates[0], int | float):
        yield float(coordinates[0]), float(coordinates[1])
    elif isinstance(coordinates, list):
        for item in coordinates:
            yield from _walk(item)
    elif coordinates is not None:
        raise ValueError("GeoJSON coordinates must be nested arrays of numbers")


@functools.lru_cache(maxsize=64)
def _transformer(crs: str) -> Transformer:
    return Transformer.from_crs(crs, "EPSG:4326", always_xy=True)


def _to_wgs84(crs: str, bounds: tuple[float, ...]) -> tuple[float, ...]:
    try:
        west, south, east, north = bounds
        return tuple(_transformer(crs).transform_bounds(west, south, east, north))
    except Exception as exc:  # pyproj raises several types for unknown CRSs
        raise ValueError(f"can't transform from CRS {crs!r} ({exc})") from None
