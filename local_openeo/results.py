"""Synthetic result files (COG, GeoJSON, netCDF, JSON) covering a job's extent, generated lazily and cached."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import tempfile
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.io import MemoryFile
from rasterio.transform import from_bounds

Bounds = tuple[float, float, float, float]

# Output format → (asset name, media type); APEx relies on these names.
ASSETS = {
    "GTiff": ("openEO.tif", "image/tiff; application=geotiff; profile=cloud-optimized"),
    "GeoJSON": ("vectorcube.geojson", "application/geo+json"),
    "netCDF": ("openEO.nc", "application/x-netcdf"),
    "JSON": ("timeseries.json", "application/json"),
}
BANDS = (
    ("score", "synthetic detection score, scaled 0-10000"),
    ("index", "synthetic vegetation-like index, scaled 0-10000"),
    ("mask", "1 where score > 6000, else 0"),
)


def raster_shape(extent: Bounds, max_px: int) -> tuple[int, int]:
    """(height, width): the longer side gets `max_px` pixels; bounds stay exactly the extent."""
    west, south, east, north = extent
    dx, dy = east - west, north - south
    min_px = min(16, max_px)
    if dx >= dy:
        return max(min_px, round(max_px * dy / dx)), max_px
    return max_px, max(min_px, round(max_px * dx / dy))


def render_bands(extent: Bounds, height: int, width: int) -> np.ndarray:
    """Three uint16 bands: smooth patterns in geographic coordinates plus a local gradient (never constant)."""
    west, south, east, north = extent
    lon = west + (np.arange(width) + 0.5) * (east - west) / width
    lat = north - (np.arange(height) + 0.5) * (north - south) / height
    lon2d, lat2d = np.meshgrid(lon, lat)
    ramp = np.add.outer(np.arange(height), np.arange(width)) / max(1, height + width - 2)
    score = 0.5 + 0.3 * np.sin(2 * np.pi * lon2d / 0.05) * np.cos(2 * np.pi * lat2d / 0.05) + 0.2 * ramp - 0.1
    index = 0.5 + 0.4 * np.sin(2 * np.pi * (lon2d + lat2d) / 0.2) + 0.1 * ramp - 0.05
    score = np.clip(score, 0, 1) * 10000
    index = np.clip(index, 0, 1) * 10000
    mask = (score > 6000).astype(np.float64)
    return np.stack([score, index, mask]).astype(np.uint16)


def _write_raster(dst: rasterio.io.DatasetWriter, data: np.ndarray) -> None:
    dst.write(data)
    for number, (name, description) in enumerate(BANDS, start=1):
        dst.set_band_description(number, name)
        dst.update_tags(number, name=name, description=description)
    dst.update_tags(source="local_openeo synthetic result")


def _profile(extent: Bounds, max_px: int) -> dict:
    height, width = raster_shape(extent, max_px)
    return {
        "width": width,
        "height": height,
        "count": len(BANDS),
        "dtype": "uint16",
        "crs": "EPSG:4326",
        "transform": from_bounds(*extent, width, height),
    }


def make_cog(extent: Bounds, max_px: int) -> bytes:
    profile = _profile(extent, max_px)
    data = render_bands(extent, profile["height"], profile["width"])
    with MemoryFile() as memory:
        with memory.open(driver="COG", compress="DEFLATE", blocksize=256, **profile) as dst:
            _write_raster(dst, data)
        return memory.read()


def make_netcdf(extent: Bounds, max_px: int) -> bytes:
    profile = _profile(extent, max_px)
    data = render_bands(extent, profile["height"], profile["width"])
    with MemoryFile() as memory, tempfile.TemporaryDirectory(prefix="local_openeo_") as folder:
        with memory.open(driver="GTiff", **profile) as dst:
            _write_raster(dst, data)
        path = os.path.join(folder, "openEO.nc")
        with memory.open() as src:
            rasterio.shutil.copy(src, path, driver="netCDF")
        with open(path, "rb") as handle:
            return handle.read()


def _rng(extent: Bounds) -> random.Random:
    return random.Random(hashlib.sha256(json.dumps([round(v, 9) for v in extent]).encode()).digest())


def make_geojson(extent: Bounds, max_px: int) -> bytes:
    """A FeatureCollection of a few synthetic point detections strictly inside the extent."""
    west, south, east, north = extent
    rng = _rng(extent)
    features = []
    for number in range(3 + rng.randrange(8)):
        x = west + (0.05 + 0.9 * rng.random()) * (east - west)
        y = south + (0.05 + 0.9 * rng.random()) * (north - south)
        features.append(
            {
                "type": "Feature",
                "id": number,
                "geometry": {"type": "Point", "coordinates": [x, y]},
                "properties": {"id": number, "label": "detection", "score": round(rng.uniform(0.5, 1), 3)},
            }
        )
    collection = {"type": "FeatureCollection", "bbox": list(extent), "features": features}
    return json.dumps(collection).encode()


def make_json(extent: Bounds, max_px: int) -> bytes:
    rng = _rng(extent)
    series = {f"2024-{month:02d}-01T00:00:00Z": [[round(rng.random(), 4)]] for month in range(1, 13)}
    return json.dumps({"bbox": list(extent), "timeseries": series}).encode()


MAKERS: dict[str, Callable[[Bounds, int], bytes]] = {
    "GTiff": make_cog,
    "GeoJSON": make_geojson,
    "netCDF": make_netcdf,
    "JSON": make_json,
}


class ResultFiles:
    """Generates result files on first use (in a worker thread) and keeps them in a bounded LRU cache."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._inflight: dict[tuple, asyncio.Future[bytes]] = {}
        self.generated = 0

    def clear(self) -> None:
        self._cache.clear()
        self._bytes = 0

    async def get(self, output: str, extent: Bounds, max_px: int) -> bytes:
        key = (output, extent, max_px)
        data = self._cache.get(key)
        if data is not None:
            self._cache.move_to_end(key)
            return data
        inflight = self._inflight.get(key)
        if inflight is not None:
            return await asyncio.shield(inflight)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            data = await asyncio.to_thread(MAKERS[output], extent, max_px)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()
            raise
        finally:
            del self._inflight[key]
        future.set_result(data)
        self.generated += 1
        self._cache[key] = data
        self._bytes += len(data)
        while self._bytes > self._max_bytes and len(self._cache) > 1:
            _, evicted = self._cache.popitem(last=False)
            self._bytes -= len(evicted)
        return data
