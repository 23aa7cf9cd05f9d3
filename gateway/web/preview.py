"""PNG previews of finished raster results for the map page: the first band of a job's GeoTIFF/COG asset,
reprojected to Web Mercator (so a Leaflet image overlay with its WGS84 corners lands exactly), stretched between
its 2nd and 98th percentiles onto a colour ramp, transparent where there is no data.

The asset is read where the backend published it (its STAC href; http(s) only, never a local path), from the
smallest overview that still has `MAX_PX` pixels along its longer side, so a large COG costs a few range requests.
"""

from __future__ import annotations

import asyncio
import math
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rasterio.warp import calculate_default_transform, reproject, transform_bounds

from upscaling.errors import FailedPrecondition, Unavailable

MAX_PX = 512
WEB_MERCATOR = "EPSG:3857"
# Colour ramp (viridis at five stops): low values dark blue, high values yellow.
RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)
GDAL_OPTIONS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_TIMEOUT": "30",
                "GDAL_HTTP_MAX_RETRY": "2", "GDAL_HTTP_RETRY_DELAY": "1"}
RASTER_TYPES = ("image/tiff", "image/geotiff", "application/x-geotiff")


@dataclass(frozen=True)
class Preview:
    """A rendered preview: PNG bytes and the WGS84 bounds (west, south, east, north) of its corners."""

    png: bytes
    bounds: tuple[float, float, float, float]


def raster_href(results: Mapping[str, Any]) -> str:
    """The href of the first raster (GeoTIFF) data asset of a job's STAC results."""
    assets = results.get("assets")
    if isinstance(assets, Mapping):
        for name, asset in assets.items():
            if not isinstance(asset, Mapping) or not isinstance(asset.get("href"), str):
                continue
            media = str(asset.get("type") or "").lower()
            path = urlsplit(asset["href"]).path.lower()
            if media.startswith(RASTER_TYPES) or str(name).lower().endswith((".tif", ".tiff")) \
                    or path.endswith((".tif", ".tiff")):
                return asset["href"]
    raise FailedPrecondition("the job's results have no raster (GeoTIFF) asset to preview",
                             error_code="NO_RASTER_RESULT")


def _check_href(href: str) -> None:
    parts = urlsplit(href)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FailedPrecondition("the raster asset's href is not an http(s) URL", error_code="NO_RASTER_RESULT")


def colorize(band: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """RGBA (4, h, w) uint8 of one band: percentile stretch onto RAMP; invalid pixels fully transparent."""
    rgba = np.zeros((4, *band.shape), dtype=np.uint8)
    if not valid.any():
        return rgba
    values = band[valid].astype(np.float64)
    low, high = np.percentile(values, [2, 98])
    scaled = np.zeros(band.shape, dtype=np.float64)
    if high > low:
        scaled = np.clip((band.astype(np.float64) - low) / (high - low), 0.0, 1.0)
    position = scaled * (len(RAMP) - 1)
    below = np.clip(np.floor(position).astype(int), 0, len(RAMP) - 2)
    weight = position - below
    colours = RAMP[below] * (1 - weight)[..., None] + RAMP[below + 1] * weight[..., None]
    rgba[:3] = np.moveaxis(np.rint(colours), -1, 0).astype(np.uint8)
    rgba[3] = np.where(valid, 255, 0).astype(np.uint8)
    return rgba


def render(href: str) -> Preview:
    """Read and render a raster asset (blocking: run it in a worker thread)."""
    _check_href(href)
    try:
        with rasterio.Env(**GDAL_OPTIONS), rasterio.open(href) as src:
            if src.crs is None:
                raise FailedPrecondition("the raster asset has no coordinate reference system",
                                         error_code="NO_RASTER_RESULT")
            factor = max(1, math.ceil(max(src.width, src.height) / MAX_PX))
            height, width = max(1, src.height // factor), max(1, src.width // factor)
            band = src.read(1, out_shape=(height, width), resampling=Resampling.average, masked=True)
            src_transform = src.transform * src.transform.scale(src.width / width, src.height / height)
            transform, out_w, out_h = calculate_default_transform(src.crs, WEB_MERCATOR, width, height,
                                                                  *src.bounds)
            data = np.full((out_h, out_w), np.nan, dtype=np.float64)
            filled = np.ma.filled(band.astype(np.float64), np.nan)
            reproject(filled, data, src_transform=src_transform, src_crs=src.crs, dst_transform=transform,
                      dst_crs=WEB_MERCATOR, src_nodata=np.nan, dst_nodata=np.nan, resampling=Resampling.nearest)
            valid = np.isfinite(data)
            rgba = colorize(np.nan_to_num(data), valid)
    except rasterio.RasterioIOError as exc:
        raise Unavailable(f"the raster asset could not be read: {str(exc)[:300]}") from exc
    west, south, east, north = rasterio.transform.array_bounds(out_h, out_w, transform)
    bounds = transform_bounds(WEB_MERCATOR, "EPSG:4326", west, south, east, north)
    with MemoryFile() as memory, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a plain PNG: its bounds travel separately
        with memory.open(driver="PNG", width=out_w, height=out_h, count=4, dtype="uint8") as dst:
            dst.write(rgba)
        png = memory.read()
    return Preview(png, (bounds[0], bounds[1], bounds[2], bounds[3]))


class PreviewCache:
    """Rendered previews by asset href (results of a finished job never change), least recently used evicted
    beyond `max_bytes`; at most `max_renders` rendered at once (each is a worker thread reading over HTTP)."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, max_renders: int = 2) -> None:
        self.max_bytes = max_bytes
        self._bytes = 0
        self._items: OrderedDict[str, Preview] = OrderedDict()
        self._pending: dict[str, asyncio.Future[Preview]] = {}
        self._renders = asyncio.Semaphore(max_renders)

    async def _render(self, href: str) -> Preview:
        async with self._renders:
            return await asyncio.to_thread(render, href)

    async def get(self, href: str) -> Preview:
        """The preview of `href`, rendered once however many requests ask for it at the same time."""
        if href in self._items:
            self._items.move_to_end(href)
            return self._items[href]
        pending = self._pending.get(href)
        if pending is not None:
            return await asyncio.shield(pending)
        pending = asyncio.ensure_future(self._render(href))
        self._pending[href] = pending
        try:
            preview = await asyncio.shield(pending)
        finally:
            self._pending.pop(href, None)
        if href not in self._items:
            self._items[href] = preview
            self._bytes += len(preview.png)
            while self._bytes > self.max_bytes and len(self._items) > 1:
                self._bytes -= len(self._items.popitem(last=False)[1].png)
        return preview
