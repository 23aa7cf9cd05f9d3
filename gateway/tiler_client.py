"""Client of the tiler service, used by the HTTP bridge and the public gRPC API."""

from __future__ import annotations

import json
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from upscaling.config import Settings
from upscaling.errors import GRPC_TO_HTTP, ServiceError
from upscaling.grpc_server import CORRELATION_HEADER, ERROR_CODE_KEY, grpc_options
from upscaling.logs import correlation_id
from upscaling.v1 import tiler_pb2, tiler_pb2_grpc


class UpstreamError(ServiceError):
    """An error status answered by another service, carried on with its code and message."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        super().__init__(error.details() or error.code().name)
        self.grpc_code = error.code()
        self.http_status, self.error_code = GRPC_TO_HTTP.get(error.code(), (502, "UPSTREAM_ERROR"))
        for key, value in error.trailing_metadata() or ():
            if key == ERROR_CODE_KEY:
                self.error_code = value if isinstance(value, str) else value.decode()


def _metadata() -> tuple[tuple[str, str], ...]:
    cid = correlation_id.get()
    return ((CORRELATION_HEADER, cid),) if cid else ()


class TilerClient:
    """Async stub of TilerService with the correlation id forwarded and errors turned into UpstreamError."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.channel = grpc.aio.insecure_channel(settings.tiler_address, options=grpc_options(settings))
        self.stub = tiler_pb2_grpc.TilerServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    async def tile(self, request: tiler_pb2.TileAoiRequest) -> tiler_pb2.TileAoiResponse:
        """Tile an AOI (request as given)."""
        try:
            return await self.stub.TileAoi(request, timeout=self.settings.tiler_timeout_s, metadata=_metadata())
        except grpc.aio.AioRpcError as exc:
            raise UpstreamError(exc) from exc

    async def tile_geojson(self, aoi: Any, grid: str, full_cells: bool = False) -> tiler_pb2.TileAoiResponse:
        """Tile an AOI given as decoded GeoJSON."""
        return await self.tile(tiler_pb2.TileAoiRequest(aoi_geojson=json.dumps(aoi), grid=grid,
                                                        full_cells=full_cells))

    async def list_grids(self) -> tiler_pb2.ListGridsResponse:
        """The advertised grids and the tile cap."""
        try:
            return await self.stub.ListGrids(tiler_pb2.ListGridsRequest(), timeout=10, metadata=_metadata())
        except grpc.aio.AioRpcError as exc:
            raise UpstreamError(exc) from exc

    async def check(self) -> None:
        """Raise unless the tiler reports SERVING."""
        reply = await self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            raise RuntimeError(f"tiler health is {status}")

    async def close(self) -> None:
        await self.channel.close()
