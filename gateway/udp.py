"""User-defined processes (UDPs): fetch one by URL (cached), describe its parameters, validate and coerce
arguments against them, and turn tile Polygons into the `{west,south,east,north}` a bounding-box parameter
expects.

Validation follows what a backend would accept: unknown names and missing required parameters are rejected,
scalars are coerced when nothing is lost (`2024` -> `"2024"` for a string parameter), wrong shapes are rejected
(a string for a bounding box).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shapely.geometry import shape

from gateway.egress import EgressFetcher, FetchFailed
from upscaling.errors import InvalidArgument

MAX_UDP_BYTES = 4 * 1024 * 1024
GEOMETRY_TYPES = frozenset({"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
                            "GeometryCollection"})
GEOJSON_TYPES = GEOMETRY_TYPES | {"Feature", "FeatureCollection"}
BBOX_KEYS = ("west", "south", "east", "north")


class UdpError(Exception):
    """The UDP could not be fetched or is not a process definition."""


@dataclass(frozen=True)
class UdpParameter:
    """One parameter of a UDP, with its JSON schemas flattened to a list."""

    name: str
    schemas: tuple[dict[str, Any], ...]
    description: str = ""
    optional: bool = False
    has_default: bool = False
    default: Any = None

    @property
    def required(self) -> bool:
        """No default and not optional."""
        return not self.optional and not self.has_default

    @property
    def subtypes(self) -> set[str]:
        return {s["subtype"] for s in self.schemas if isinstance(s.get("subtype"), str)}

    @property
    def types(self) -> set[str]:
        found: set[str] = set()
        for s in self.schemas:
            t = s.get("type")
            if isinstance(t, str):
                found.add(t)
            elif isinstance(t, list):
                found.update(x for x in t if isinstance(x, str))
        return found

    @property
    def is_bbox(self) -> bool:
        return "bounding-box" in self.subtypes

    @property
    def is_geojson(self) -> bool:
        return "geojson" in self.subtypes

    @property
    def enum(self) -> list[Any] | None:
        for s in self.schemas:
            if isinstance(s.get("enum"), list):
                return s["enum"]
        return None

    @property
    def type_name(self) -> str:
        """The type name of `/params`, in APEx's vocabulary where it has one (bounding-box, polygon for GeoJSON,
        date-interval, datetime, string, integer, double, boolean, array-string), else date, array, object or
        any."""
        subtypes = self.subtypes
        for subtype, name in (("bounding-box", "bounding-box"), ("geojson", "polygon"),
                              ("temporal-interval", "date-interval"), ("date-time", "datetime"),
                              ("date", "date")):
            if subtype in subtypes:
                return name
        types = self.types - {"null"}
        if "array" in types and any(isinstance(s.get("items"), dict) and s["items"].get("type") == "string"
                                    for s in self.schemas):
            return "array-string"
        for json_type, name in (("string", "string"), ("integer", "integer"), ("number", "double"),
                                ("boolean", "boolean"), ("array", "array"), ("object", "object")):
            if json_type in types:
                return name
        return "any"


@dataclass(frozen=True)
class Udp:
    """A UDP: its process id, parameters and the URL it came from."""

    url: str
    id: str
    parameters: tuple[UdpParameter, ...]
    by_name: dict[str, UdpParameter] = field(default_factory=dict)

    def parameter(self, name: str) -> UdpParameter | None:
        return self.by_name.get(name)


def parse_udp(url: str, document: Any) -> Udp:
    """A `Udp` from a decoded process definition; UdpError when it is not one."""
    if not isinstance(document, dict):
        raise UdpError("the document is not a JSON object")
    process_id = document.get("id")
    if not isinstance(process_id, str) or not process_id:
        raise UdpError("the process definition has no 'id'")
    raw_params = document.get("parameters") or []
    if not isinstance(raw_params, list):
        raise UdpError("'parameters' is not a list")
    params = []
    for raw in raw_params:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise UdpError(f"invalid parameter entry: {str(raw)[:100]}")
        schema = raw.get("schema") or {}
        schemas = tuple(s for s in (schema if isinstance(schema, list) else [schema]) if isinstance(s, dict))
        params.append(UdpParameter(name=raw["name"], schemas=schemas, description=raw.get("description") or "",
                                   optional=bool(raw.get("optional", False)), has_default="default" in raw,
                                   default=raw.get("default")))
    return Udp(url=url, id=process_id, parameters=tuple(params), by_name={p.name: p for p in params})


def _ogc_schemas(schema: Any) -> tuple[dict[str, Any], ...]:
    """An OGC input's JSON schema as the list `UdpParameter` reads (`oneOf`/`anyOf` alternatives flattened); a
    GeoJSON geometry (`format: geojson-geometry`, `contentMediaType: application/geo+json` or a `$ref` to the OGC
    geometry schema) gets the openEO subtype `geojson`."""
    if not isinstance(schema, dict):
        return ()
    alternatives = schema.get("oneOf") or schema.get("anyOf")
    if isinstance(alternatives, list):
        return tuple(s for alt in alternatives for s in _ogc_schemas(alt))
    flat = dict(schema)
    ref = str(schema.get("$ref") or "")
    if (schema.get("format") in ("geojson-geometry", "geojson-feature", "geojson-feature-collection")
            or "geo+json" in str(schema.get("contentMediaType") or "") or "geojson" in ref.lower()):
        flat["subtype"] = "geojson"
    return (flat,)


def parse_ogc_process(url: str, document: Any) -> Udp:
    """A `Udp` from an OGC API - Processes process description (`id`, `inputs: {name: {schema, minOccurs,
    description}}`): an input is optional when `minOccurs` is 0 or its schema has a default. UdpError when the
    document is not a process description."""
    if not isinstance(document, dict):
        raise UdpError("the document is not a JSON object")
    process_id = document.get("id")
    if not isinstance(process_id, str) or not process_id:
        raise UdpError("the process description has no 'id'")
    inputs = document.get("inputs")
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, dict):
        raise UdpError("'inputs' is not an object (OGC API - Processes 1.0 process description)")
    params = []
    for name, raw in inputs.items():
        if not isinstance(raw, dict):
            raise UdpError(f"invalid input entry {name!r}")
        schemas = _ogc_schemas(raw.get("schema") or {})
        has_default = any("default" in s for s in schemas)
        min_occurs = raw.get("minOccurs", 1)
        params.append(UdpParameter(
            name=str(name), schemas=schemas, description=str(raw.get("description") or raw.get("title") or ""),
            optional=min_occurs == 0, has_default=has_default,
            default=next((s["default"] for s in schemas if "default" in s), None)))
    return Udp(url=url, id=process_id, parameters=tuple(params), by_name={p.name: p for p in params})


class UdpCache:
    """Fetches UDPs through the egress fetcher (timeout, size cap, policy) and caches them for `ttl_s` seconds."""

    def __init__(self, fetcher: EgressFetcher, ttl_s: float, max_bytes: int = MAX_UDP_BYTES) -> None:
        self.fetcher = fetcher
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._cache: dict[str, tuple[float, Udp]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, url: str, ogc: bool = False) -> Udp:
        """The UDP at `url` (cached); InvalidArgument naming the URL and the reason when it cannot be had. `ogc`:
        `url` is an OGC API - Processes process description (`parse_ogc_process`)."""
        if ogc:
            return await self._get(url, f"ogc {url}", parse_ogc_process)
        return await self._get(url, url, parse_udp)

    async def _get(self, url: str, key: str, parse: Callable[[str, Any], Udp]) -> Udp:
        hit = self._cache.get(key)
        if hit and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                hit = self._cache.get(key)
                if hit and time.monotonic() - hit[0] < self.ttl_s:
                    return hit[1]
                try:
                    udp = parse(url, await self._fetch(url))
                except UdpError as exc:
                    raise InvalidArgument(f"cannot use the application {url[:300]}: {exc}") from exc
                self._cache[key] = (time.monotonic(), udp)
                return udp
        finally:
            if not lock.locked() and self._locks.get(key) is lock:
                del self._locks[key]  # one lock per URL being fetched, not per URL ever asked for

    async def _fetch(self, url: str) -> Any:
        if not url.startswith(("http://", "https://")):
            raise UdpError("the application must be an http(s) URL")
        try:
            reply = await self.fetcher.get(url, self.max_bytes, headers={"Accept": "application/json"})
        except FetchFailed as exc:
            raise UdpError(str(exc)) from exc
        except ValueError as exc:  # larger than max_bytes
            raise UdpError(str(exc)) from exc
        if reply.status != 200:
            raise UdpError(f"HTTP {reply.status} {reply.reason}".strip())
        try:
            return json.loads(reply.body)
        except ValueError as exc:
            raise UdpError(f"not JSON ({exc})") from exc


def describe(udp: Udp) -> list[dict[str, Any]]:
    """The APEx `/params` answer: `[{name, type, optional, description, default, options}]`; `options` lists the
    allowed values of a parameter with an `enum`, and is `[]` (as APEx answers) for any other."""
    return [{"name": p.name, "type": p.type_name, "optional": not p.required, "description": p.description,
             "default": p.default, "options": list(p.enum or [])} for p in udp.parameters]


def geometry_bounds(value: Mapping[str, Any]) -> dict[str, float]:
    """`{west,south,east,north}` of a GeoJSON geometry, Feature or FeatureCollection."""
    geometries: list[Any]
    if value.get("type") == "Feature":
        geometries = [value.get("geometry")]
    elif value.get("type") == "FeatureCollection":
        geometries = [f.get("geometry") for f in value.get("features") or [] if isinstance(f, dict)]
    else:
        geometries = [value]
    bounds = [shape(g).bounds for g in geometries if g]
    if not bounds:
        raise ValueError("no geometry")
    west, south = min(b[0] for b in bounds), min(b[1] for b in bounds)
    east, north = max(b[2] for b in bounds), max(b[3] for b in bounds)
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise ValueError("empty geometry")
    return {"west": west, "south": south, "east": east, "north": north}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_geojson(value: Any) -> None:
    if not isinstance(value, dict) or value.get("type") not in GEOJSON_TYPES:
        raise ValueError("expected a GeoJSON geometry, Feature or FeatureCollection object")
    try:
        geometry_bounds(value)
    except Exception as exc:
        raise ValueError(f"invalid GeoJSON ({exc})") from exc


def _bbox(value: Any) -> dict[str, Any]:
    if isinstance(value, dict) and value.get("type") in GEOJSON_TYPES:
        try:
            return geometry_bounds(value)
        except Exception as exc:
            raise ValueError(f"invalid GeoJSON ({exc})") from exc
    if isinstance(value, dict) and all(_is_number(value.get(k)) for k in BBOX_KEYS):
        if value["west"] > value["east"] or value["south"] > value["north"]:
            raise ValueError("west must not exceed east nor south exceed north")
        return dict(value)
    raise ValueError("expected a bounding box {west, south, east, north} or a GeoJSON Polygon")


def _coerce_scalar(value: Any, types: set[str]) -> Any:
    """`value` as one of the JSON `types`, coerced only when lossless; ValueError otherwise."""
    if "number" in types and _is_number(value):
        return value
    if "integer" in types and (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if "string" in types and isinstance(value, str):
        return value
    if "boolean" in types and isinstance(value, bool):
        return value
    if "array" in types and isinstance(value, list):
        return value
    if "object" in types and isinstance(value, dict):
        return value
    if "string" in types and _is_number(value) and (isinstance(value, int) or math.isfinite(value)):
        return str(value)
    if "integer" in types:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    if "number" in types and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() \
                    else number
    if "boolean" in types and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    expected = " or ".join(sorted(types))
    raise ValueError(f"expected {expected}, got {type(value).__name__} {json.dumps(value)[:60]}")


def coerce_value(param: UdpParameter, value: Any) -> Any:
    """The value to submit for `param` (bounding boxes converted); ValueError with a reason when invalid."""
    types = param.types
    if value is None:
        if "null" in types or not param.required:
            return None
        raise ValueError("must not be null")
    if param.is_bbox:
        try:
            return _bbox(value)
        except ValueError:
            if param.is_geojson:
                _check_geojson(value)
                return value
            raise
    if param.is_geojson:
        _check_geojson(value)
        return value
    types = types - {"null"}
    if not types:
        return value
    coerced = _coerce_scalar(value, types)
    options = param.enum
    if options is not None and coerced not in options:
        raise ValueError(f"must be one of {json.dumps(options)}")
    if isinstance(coerced, list):
        for s in param.schemas:
            if isinstance(s.get("minItems"), int) and len(coerced) < s["minItems"]:
                raise ValueError(f"needs at least {s['minItems']} items")
            if isinstance(s.get("maxItems"), int) and len(coerced) > s["maxItems"]:
                raise ValueError(f"allows at most {s['maxItems']} items")
    return coerced


def validate_arguments(udp: Udp, arguments: Mapping[str, Any], provided: Iterable[str] = ()) -> dict[str, Any]:
    """Check `arguments` against the UDP's parameters; returns them coerced for submission.

    `provided` names parameters supplied elsewhere (the task's dimension). Raises InvalidArgument listing
    every problem.
    """
    problems: list[str] = []
    known = ", ".join(p.name for p in udp.parameters) or "none"
    result: dict[str, Any] = {}
    for name, value in arguments.items():
        param = udp.parameter(name)
        if param is None:
            problems.append(f"unknown parameter {name!r} (the process {udp.id} accepts: {known})")
            continue
        try:
            result[name] = coerce_value(param, value)
        except ValueError as exc:
            problems.append(f"parameter {name!r}: {exc}")
    given = set(arguments) | set(provided)
    for param in udp.parameters:
        if param.required and param.name not in given:
            problems.append(f"missing required parameter {param.name!r} ({param.type_name})")
    if problems:
        raise InvalidArgument("; ".join(problems))
    return result
