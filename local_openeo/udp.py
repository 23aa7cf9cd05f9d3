"""Remote process definitions (UDPs): the local catalogue, URL resolution with caching, argument checks."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from local_openeo.config import Settings
from local_openeo.errors import ApiError

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
GEOJSON_TYPES = frozenset(
    {
        "Point",
        "MultiPoint",
        "LineString",
        "MultiLineString",
        "Polygon",
        "MultiPolygon",
        "GeometryCollection",
        "Feature",
        "FeatureCollection",
    }
)
_BBOX_KEYS = ("west", "south", "east", "north")
_REFERENCE_KEYS = ("from_parameter", "from_node", "process_graph")


class UdpCatalogue:
    """UDP JSON files of one folder, served at ``/udp/<name>.json``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.json") if _NAME.match(p.stem))

    def read_bytes(self, name: str) -> bytes | None:
        if not _NAME.match(name):
            return None
        path = self.folder / f"{name}.json"
        try:
            return path.read_bytes()
        except OSError:
            return None


def _schemas(schema: Any) -> tuple[dict, ...]:
    if isinstance(schema, dict):
        return (schema,)
    if isinstance(schema, list):
        return tuple(s for s in schema if isinstance(s, dict))
    return ()


def _subtypes(schemas: tuple[dict, ...]) -> set[str]:
    found: set[str] = set()
    for schema in schemas:
        if isinstance(schema.get("subtype"), str):
            found.add(schema["subtype"])
        for key in ("anyOf", "oneOf"):
            found |= _subtypes(_schemas(schema.get(key)))
    return found


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _matches(value: Any, schema: dict) -> bool:
    """Lenient JSON-schema check: accepts lossless scalar coercions, rejects wrong shapes."""
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return any(_matches(value, s) for s in _schemas(schema[key]))
    types = schema.get("type")
    if types is None:
        return True
    if isinstance(types, str):
        types = [types]
    return any(_matches_type(value, t, schema) for t in types)


def _matches_type(value: Any, kind: str, schema: dict) -> bool:
    if kind == "null":
        return value is None
    if kind == "object":
        if not isinstance(value, dict):
            return False
        subtype = schema.get("subtype")
        if subtype == "bounding-box":
            return all(_is_number(value.get(k)) for k in _BBOX_KEYS)
        if subtype == "geojson":
            return value.get("type") in GEOJSON_TYPES
        return subtype not in ("datacube", "raster-cube", "vector-cube")
    if kind == "array":
        if not isinstance(value, list):
            return False
        return schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value))
    if kind == "string":
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return False
        return "enum" not in schema or str(value) in schema["enum"]
    if kind in ("number", "integer"):
        if isinstance(value, bool):
            return False
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            return False
        if not _is_number(number):
            return False
        return kind == "number" or float(number).is_integer()
    if kind == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    return True


def _describe(schemas: tuple[dict, ...]) -> str:
    parts = []
    for schema in schemas:
        label = schema.get("title") or schema.get("subtype") or schema.get("type") or "any"
        parts.append(label if isinstance(label, str) else "/".join(map(str, label)))
    return " or ".join(parts) or "any value"


@dataclass(slots=True)
class UdpParameter:
    name: str
    required: bool
    schemas: tuple[dict, ...]
    has_default: bool
    default: Any
    spatial: bool  # takes a bounding box or GeoJSON


@dataclass
class Udp:
    """A resolved UDP: its parameters and what it returns."""

    id: str
    url: str
    parameters: dict[str, UdpParameter]
    returns_vector: bool
    _shapes: dict[frozenset[str], tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)

    @classmethod
    def from_document(cls, document: dict, url: str) -> Udp:
        parameters = {}
        for raw in document.get("parameters") or []:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                continue
            schemas = _schemas(raw.get("schema"))
            parameters[raw["name"]] = UdpParameter(
                name=raw["name"],
                required=not raw.get("optional", False) and "default" not in raw,
                schemas=schemas,
                has_default="default" in raw,
                default=raw.get("default"),
                spatial=bool(_subtypes(schemas) & {"bounding-box", "geojson"}),
            )
        returns = document.get("returns") or {}
        returns_schemas = _schemas(returns.get("schema"))
        vector = "vector-cube" in _subtypes(returns_schemas) or any(
            any(isinstance(d, dict) and d.get("type") == "geometry" for d in s.get("dimensions") or [])
            for s in returns_schemas
        )
        description = str(returns.get("description") or "").lower()
        vector = vector or "vector data cube" in description or "vector cube" in description
        return cls(id=document["id"], url=url, parameters=parameters, returns_vector=vector)

    def check_arguments(self, arguments: dict) -> None:
        """Raise the openEO 400 error a backend answers for missing, unknown or malformed arguments."""
        names = frozenset(arguments)
        shape = self._shapes.get(names)
        if shape is None:
            missing = tuple(p.name for p in self.parameters.values() if p.required and p.name not in names)
            unknown = tuple(sorted(names - self.parameters.keys()))
            shape = self._shapes[names] = (missing, unknown)
        missing, unknown = shape
        if missing:
            raise ApiError(
                400,
                "ProcessParameterMissing",
                f"Process '{self.id}' parameter '{missing[0]}' is required but missing "
                f"(process defined at {self.url}).",
            )
        if unknown:
            raise ApiError(
                400,
                "ProcessParameterInvalid",
                f"Process '{self.id}' has no parameter '{unknown[0]}'; "
                f"known parameters: {', '.join(self.parameters) or 'none'}.",
            )
        for name, value in arguments.items():
            parameter = self.parameters[name]
            if not parameter.schemas:
                continue
            if isinstance(value, dict) and any(k in value for k in _REFERENCE_KEYS):
                continue
            if not any(_matches(value, schema) for schema in parameter.schemas):
                raise ApiError(
                    400,
                    "ProcessParameterInvalid",
                    f"The value passed for parameter '{name}' in process '{self.id}' is invalid: "
                    f"expected {_describe(parameter.schemas)}, got {json.dumps(value)[:200]}.",
                )


def _namespace_error(url: str, reason: str) -> ApiError:
    return ApiError(400, "ProcessNamespaceInvalid", f"Process namespace '{url}' can't be used: {reason}")


class UdpResolver:
    """Resolves ``(process_id, namespace URL)`` to a Udp; local catalogue URLs are read from disk."""

    def __init__(self, settings: Settings, catalogue: UdpCatalogue) -> None:
        self._settings = settings
        self._catalogue = catalogue
        self._cache: dict[tuple[str, str], tuple[float, Udp]] = {}
        self._inflight: dict[str, asyncio.Future[dict]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.local_netlocs: set[str] = set()
        self.stats: Counter[str] = Counter()

    def clear(self) -> None:
        self._cache.clear()
        self.stats.clear()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def resolve(self, url: str, process_id: str, request_host: str | None) -> Udp:
        key = (url, process_id)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            self.stats["cache_hits"] += 1
            return cached[1]
        document = await self._document(url, request_host)
        if isinstance(document.get("processes"), list):
            document = next((p for p in document["processes"] if isinstance(p, dict) and p.get("id") == process_id), {})
        if document.get("id") != process_id:
            found = document.get("id")
            raise ApiError(
                400,
                "ProcessUnsupported",
                f"Process '{process_id}' is not available in namespace '{url}'"
                + (f" (it defines '{found}')." if found else "."),
            )
        if not isinstance(document.get("process_graph"), dict):
            raise _namespace_error(url, f"the definition of '{process_id}' has no process_graph.")
        udp = Udp.from_document(document, url)
        self._cache[key] = (now + self._settings.udp_cache_seconds, udp)
        return udp

    def _local_name(self, url: str, request_host: str | None) -> str | None:
        parts = urlsplit(url)
        if parts.netloc not in self.local_netlocs and parts.netloc != request_host:
            return None
        match = re.fullmatch(r"/udp/([A-Za-z0-9_.-]+)\.json", parts.path)
        return match.group(1) if match else None

    async def _document(self, url: str, request_host: str | None) -> dict:
        name = self._local_name(url, request_host)
        if name is not None:
            self.stats["local_reads"] += 1
            raw = self._catalogue.read_bytes(name)
            if raw is None:
                raise _namespace_error(url, f"no UDP '{name}' in the local catalogue.")
            return self._parse(url, raw)
        inflight = self._inflight.get(url)
        if inflight is not None:
            return await asyncio.shield(inflight)
        future: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self._inflight[url] = future
        try:
            document = await self._fetch(url)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark as retrieved when nobody else waits
            raise
        else:
            future.set_result(document)
            return document
        finally:
            del self._inflight[url]

    async def _fetch(self, url: str) -> dict:
        if urlsplit(url).scheme not in ("http", "https"):
            raise _namespace_error(url, "only http(s) URLs are supported.")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self.stats["remote_fetches"] += 1
        try:
            timeout = aiohttp.ClientTimeout(total=self._settings.udp_fetch_timeout)
            async with self._session.get(url, timeout=timeout) as response:
                if response.status != 200:
                    raise _namespace_error(url, f"fetching it answered HTTP {response.status}.")
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _namespace_error(url, f"it could not be fetched ({type(exc).__name__}: {exc}).") from None
        return self._parse(url, raw)

    @staticmethod
    def _parse(url: str, raw: bytes) -> dict:
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _namespace_error(url, "it is not valid JSON.") from None
        if not isinstance(document, dict):
            raise _namespace_error(url, "it is not a process definition (JSON object).")
        return document
