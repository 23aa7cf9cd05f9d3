"""One gateway worker: the HTTP/WebSocket bridge (uvicorn) and the public gRPC API on the shared ports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator

import uvicorn

from gateway import workers
from gateway.auth_grpc import AuthInterceptor
from gateway.deps import Dependencies
from gateway.grpc_api import PublicTilerServicer
from gateway.grpc_upscaling import FULL_NAME, UpscalingServicer, add_to_server
from gateway.http_app import create_app
from gateway.ws_protocol import WebSocketProtocol
from upscaling import metrics
from upscaling.config import Settings
from upscaling.grpc_server import GrpcServer, ServiceBinding, shutdown_event
from upscaling.v1 import tiler_pb2, tiler_pb2_grpc

log = logging.getLogger("gateway")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway stops HTTP and gRPC together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def main(settings: Settings, worker: int = 0, ws_deflate: bool = False) -> None:
    """One gateway worker until SIGTERM/SIGINT."""
    stop = shutdown_event()
    deps = Dependencies(settings, run_relay=worker == 0)
    await deps.start()
    assert deps.tiler is not None and deps.pool is not None and deps.cluster_state is not None
    metrics.register("gateway", deps.cluster_state)
    grpc_server = GrpcServer(
        settings,
        [ServiceBinding(PublicTilerServicer(deps.tiler), tiler_pb2_grpc.add_TilerServiceServicer_to_server,
                        tiler_pb2.DESCRIPTOR.services_by_name["TilerService"].full_name),
         ServiceBinding(UpscalingServicer(deps.task_service(), deps.events_hub(), deps.watches), add_to_server,
                        FULL_NAME)],
        settings.gateway_host,
        settings.gateway_grpc_port,
        interceptors=[AuthInterceptor(deps.authenticator, deps.rate)],
    )
    await grpc_server.start()
    sock = workers.reuseport_socket(settings.gateway_host, settings.gateway_http_port)
    http = _Server(uvicorn.Config(create_app(deps), log_config=None, access_log=False, ws=WebSocketProtocol,
                                  ws_per_message_deflate=ws_deflate))
    http_task = asyncio.create_task(http.serve(sockets=[sock]))
    log.info("gateway worker serving", extra={"worker": worker, "pid": os.getpid()})
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait({http_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down")
    http.should_exit = True
    await http_task
    await grpc_server.stop()
    await deps.stop()
    stop_task.cancel()
    if not stop.is_set():
        raise SystemExit("HTTP server stopped on its own (is the port taken?)")
