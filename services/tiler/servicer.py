"""`TilerService` implementation: parses the AOI, checks the tile cap, tiles in worker threads."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from upscaling import grids, metrics
from upscaling.config import Settings
from upscaling.errors import InvalidArgument, ResourceExhausted
from upscaling.limits import check_aoi_vertices, exceeded, load_limits
from upscaling.tiles import tile_to_proto
from upscaling.v1 import tiler_pb2, tiler_pb2_grpc

log = logging.getLogger(__name__)


def _tile_request(request: tiler_pb2.TileAoiRequest, max_tiles: int, max_vertices: int = 0
                  ) -> tiler_pb2.TileAoiResponse:
    """The whole CPU-bound part of TileAoi (runs in a worker thread)."""
    try:
        grid = grids.parse_grid(request.grid)
    except grids.GridError as exc:
        raise InvalidArgument(str(exc)) from exc
    if not request.aoi_geojson.strip():
        raise InvalidArgument("aoi_geojson is empty: send a GeoJSON Polygon, MultiPolygon, Feature or "
                              "FeatureCollection")
    try:
        document = json.loads(request.aoi_geojson)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"aoi_geojson is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidArgument("aoi_geojson is nested too deeply to be a GeoJSON AOI") from exc
    check_aoi_vertices(document, max_vertices)
    try:
        aoi = grids.parse_aoi(document)
        tiles = grids.tile_aoi(aoi, grid, clip=not request.full_cells, max_tiles=max_tiles)
    except grids.AoiError as exc:
        raise InvalidArgument(f"invalid AOI: {exc}") from exc
    except grids.TooManyTilesError as exc:
        raise ResourceExhausted(exceeded("MAX_TILES", max_tiles, str(exc)), error_code="TOO_MANY_TILES") from exc
    return tiler_pb2.TileAoiResponse(
        tiles=[tile_to_proto(t) for t in tiles],
        warnings=aoi.warnings,
        grid=tiler_pb2.Grid(name=grid.name, size_km=grid.size_km),
    )


class TilerServicer(tiler_pb2_grpc.TilerServiceServicer):
    """Tiles AOIs; geometry work runs in a bounded thread pool so the event loop stays free."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.max_vertices = load_limits().max_aoi_vertices
        self.executor = ThreadPoolExecutor(max_workers=settings.tiler_workers, thread_name_prefix="tiler")

    async def ListGrids(
        self, request: tiler_pb2.ListGridsRequest, context: grpc.aio.ServicerContext
    ) -> tiler_pb2.ListGridsResponse:
        listed = [grids.parse_grid(name) for name in grids.STANDARD_GRIDS]
        return tiler_pb2.ListGridsResponse(
            grids=[tiler_pb2.Grid(name=g.name, size_km=g.size_km) for g in listed],
            max_tiles=self.settings.max_tiles,
        )

    async def TileAoi(
        self, request: tiler_pb2.TileAoiRequest, context: grpc.aio.ServicerContext
    ) -> tiler_pb2.TileAoiResponse:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            response = await loop.run_in_executor(self.executor, _tile_request, request, self.settings.max_tiles,
                                                  self.max_vertices)
        except Exception:
            metrics.TILER_REQUESTS.labels("error").inc()
            raise
        metrics.TILER_SECONDS.observe(time.perf_counter() - started)
        metrics.TILER_REQUESTS.labels("ok").inc()
        metrics.TILES.inc(len(response.tiles))
        log.info("tiled AOI", extra={"grid": response.grid.name, "tiles": len(response.tiles)})
        return response
