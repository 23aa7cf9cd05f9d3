"""Assembling downloaded tile results into one product (needs the `geo` extra: rasterio, geopandas, pyarrow).

Raster tiles become a GDAL VRT (an XML index over the tile files, no pixel copied) and, on request, one
Cloud-Optimised GeoTIFF copied from it; tiles in another CRS than the first one are warped into that CRS first.
Vector tiles (GeoJSON FeatureCollections) become one GeoJSON or GeoParquet file, each feature tagged with
the item it came from. Where tiles overlap, the later one in the list wins.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from upscaling_client.errors import MosaicError

RASTER_SUFFIXES = {".tif", ".tiff"}
VECTOR_SUFFIXES = {".geojson", ".json"}


def _rasterio() -> Any:
    try:
        import rasterio
    except ImportError as exc:
        raise MosaicError("raster mosaics need rasterio: pip install 'upscaling-client[geo]'", "") from exc
    return rasterio


def _same_crs(paths: Sequence[Path], folder: Path) -> list[Path]:
    """The tiles, those in another CRS than the first warped into it (written under `folder/_warped`)."""
    rasterio = _rasterio()
    from rasterio.vrt import WarpedVRT

    with rasterio.open(paths[0]) as first:
        crs = first.crs
    out = []
    for path in paths:
        with rasterio.open(path) as src:
            if src.crs == crs:
                out.append(path)
                continue
            target = folder / "_warped" / f"{path.parent.name}_{path.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            with WarpedVRT(src, crs=crs) as vrt:
                profile = {"driver": "GTiff", "width": vrt.width, "height": vrt.height, "count": vrt.count,
                           "dtype": vrt.dtypes[0], "crs": crs, "transform": vrt.transform, "nodata": vrt.nodata}
                with rasterio.open(target, "w", **profile) as dst:
                    dst.write(vrt.read())
            out.append(target)
    return out


def build_vrt(paths: Sequence[Path], vrt_path: Path) -> Path:
    """A GDAL VRT mosaic over raster tiles of one CRS; source paths are stored relative to the VRT. Resolutions
    may differ (a tile clipped to a sliver of the AOI can be far finer): the median one is used, each pixel
    taking the value of the source pixel under its centre."""
    rasterio = _rasterio()
    if not paths:
        raise MosaicError("no raster tiles to assemble", "")
    infos = []
    for path in paths:
        with rasterio.open(path) as src:
            infos.append((path, src.bounds, src.width, src.height, src.count, src.dtypes, src.crs, src.nodata,
                          src.descriptions, abs(src.transform.a), abs(src.transform.e)))
    crs = infos[0][6]
    count, dtypes, descriptions = infos[0][4], infos[0][5], infos[0][8]
    if any(i[6] != crs for i in infos) or any(i[4] != count for i in infos):
        raise MosaicError("raster tiles differ in CRS or band count", "")
    res_x, res_y = statistics.median_low(i[9] for i in infos), statistics.median_low(i[10] for i in infos)
    left, bottom = min(i[1].left for i in infos), min(i[1].bottom for i in infos)
    right, top = max(i[1].right for i in infos), max(i[1].top for i in infos)
    width, height = max(1, math.ceil((right - left) / res_x - 1e-9)), max(1, math.ceil((top - bottom) / res_y - 1e-9))
    gdal_type = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
                 "float32": "Float32", "float64": "Float64", "int8": "Int8"}
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
             f"  <SRS>{escape(crs.to_wkt())}</SRS>",
             f"  <GeoTransform>{left!r}, {res_x!r}, 0.0, {top!r}, 0.0, {-res_y!r}</GeoTransform>"]
    for band in range(1, count + 1):
        lines.append(f'  <VRTRasterBand dataType="{gdal_type.get(dtypes[band - 1], "Float64")}" band="{band}">')
        if descriptions[band - 1]:
            lines.append(f"    <Description>{escape(descriptions[band - 1])}</Description>")
        if infos[0][7] is not None:
            lines.append(f"    <NoDataValue>{infos[0][7]!r}</NoDataValue>")
        for path, bounds, w, h, *_rest in infos:
            rel = os.path.relpath(path, vrt_path.parent)
            x_off, y_off = (bounds.left - left) / res_x, (top - bounds.top) / res_y
            x_size, y_size = (bounds.right - bounds.left) / res_x, (bounds.top - bounds.bottom) / res_y
            lines += ["    <SimpleSource>",
                      f'      <SourceFilename relativeToVRT="1">{escape(rel)}</SourceFilename>',
                      f"      <SourceBand>{band}</SourceBand>",
                      f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}" />',
                      f'      <DstRect xOff="{x_off!r}" yOff="{y_off!r}" xSize="{x_size!r}" ySize="{y_size!r}" />',
                      "    </SimpleSource>"]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    vrt_path.parent.mkdir(parents=True, exist_ok=True)
    vrt_path.write_text("\n".join(lines) + "\n")
    return vrt_path


def raster_mosaic(paths: Sequence[Path], out: Path) -> Path:
    """`out.vrt` → the VRT only; `out.tif` → the VRT beside it (`out` with `.vrt`) and a COG copied from it."""
    _rasterio()
    import rasterio
    import rasterio.shutil

    vrt = out if out.suffix.lower() == ".vrt" else out.with_suffix(".vrt")
    build_vrt(_same_crs(paths, vrt.parent), vrt)
    if out.suffix.lower() in RASTER_SUFFIXES:
        with rasterio.open(vrt) as src:
            rasterio.shutil.copy(src, out, driver="COG", compress="DEFLATE", blocksize=512)
    return out


def vector_mosaic(paths: Sequence[Path], out: Path, item_ids: Sequence[str]) -> Path:
    """One GeoJSON (or `.parquet` GeoParquet) of every feature of the tiles, each with an `item` property."""
    features = []
    for path, item_id in zip(paths, item_ids, strict=True):
        data = json.loads(path.read_text())
        for feature in data.get("features", []) if isinstance(data, dict) else []:
            feature = dict(feature)
            feature["properties"] = {**(feature.get("properties") or {}), "item": item_id}
            features.append(feature)
    collection = {"type": "FeatureCollection", "features": features}
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".parquet":
        try:
            import geopandas
        except ImportError as exc:
            raise MosaicError("GeoParquet needs geopandas and pyarrow: pip install 'upscaling-client[geo]'",
                              "") from exc
        frame = geopandas.GeoDataFrame.from_features(features, crs="EPSG:4326")
        frame.to_parquet(out)
    else:
        out.write_text(json.dumps(collection))
    return out


def mosaic(files: Sequence[tuple[str, Path]], out: Path) -> Path:
    """Assemble `(item id, file)` pairs into `out`: rasters for `.tif`/`.vrt`, vectors for `.geojson`/`.parquet`."""
    suffix = out.suffix.lower()
    if suffix in RASTER_SUFFIXES | {".vrt"}:
        rasters = [path for _, path in files if path.suffix.lower() in RASTER_SUFFIXES]
        if not rasters:
            raise MosaicError("the task's results hold no GeoTIFF to mosaic", "")
        return raster_mosaic(rasters, out)
    if suffix in {".geojson", ".parquet"}:
        vectors = [(item, path) for item, path in files if path.suffix.lower() in VECTOR_SUFFIXES]
        if not vectors:
            raise MosaicError("the task's results hold no GeoJSON to merge", "")
        return vector_mosaic([p for _, p in vectors], out, [i for i, _ in vectors])
    raise MosaicError(f"unknown mosaic format {out.suffix!r}: use .tif, .vrt, .geojson or .parquet", "")
