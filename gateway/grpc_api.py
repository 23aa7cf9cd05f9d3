"""The gateway's public gRPC services (port 50051)."""

from __future__ import annotations

import grpc

from gateway.auth import caller_or_fail
from gateway.tiler_client import TilerClient
from upscaling.v1 import tiler_pb2, tiler_pb2_grpc


class PublicTilerServicer(tiler_pb2_grpc.TilerServiceServicer):
    """TilerService on the public port, forwarded to the tiler service (authenticated like every public call)."""

    def __init__(self, tiler: TilerClient) -> None:
        self.tiler = tiler

    async def ListGrids(
        self, request: tiler_pb2.ListGridsRequest, context: grpc.aio.ServicerContext
    ) -> tiler_pb2.ListGridsResponse:
        caller_or_fail()
        return await self.tiler.list_grids()

    async def TileAoi(
        self, request: tiler_pb2.TileAoiRequest, context: grpc.aio.ServicerContext
    ) -> tiler_pb2.TileAoiResponse:
        caller_or_fail()
        return await self.tiler.tile(request)
