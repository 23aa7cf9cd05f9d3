"""`python -m gateway`: HTTP/WebSocket bridge (uvicorn) and public gRPC API in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn

from gateway.auth_grpc import AuthInterceptor
from gateway.deps import Dependencies
from gateway.grpc_api import PublicTilerServicer
from gateway.grpc_upscaling import FULL_NAME, UpscalingServicer
from gateway.http_app import create_app
from gateway.ws_protocol import WebSocketProtocol
from upscaling import event_loop, metrics
from upscaling.config import load_settings
from upscaling.grpc_server import GrpcServer, ServiceBinding, shutdown_event
from upscaling.health_watch import HealthWatch, broker_check, database_check
from upscaling.logs import configure_logging
from upscaling.v1 import tiler_pb2, tiler_pb2_grpc, upscaling_pb2_grpc

log = logging.getLogger("gateway")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway stops HTTP and gRPC together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def main() -> None:
    settings = load_settings()
    configure_logging("gateway", settings.log_level, settings.log_format)
    stop = shutdown_event()
    deps = Dependencies(settings)
    await deps.start()
    assert deps.tiler is not None and deps.pool is not None and deps.cluster_state is not None
    metrics.register("gateway", deps.cluster_state)
    grpc_server = GrpcServer(
        settings,
        [ServiceBinding(PublicTilerServicer(deps.tiler), tiler_pb2_grpc.add_TilerServiceServicer_to_server,
                        tiler_pb2.DESCRIPTOR.services_by_name["TilerService"].full_name),
         ServiceBinding(UpscalingServicer(deps.task_service(), deps.events_hub(), deps.pool, deps.watches),
                        upscaling_pb2_grpc.add_UpscalingServiceServicer_to_server, FULL_NAME)],
        settings.gateway_host,
        settings.gateway_grpc_port,
        interceptors=[AuthInterceptor(deps.authenticator, deps.rate)],
    )
    await grpc_server.start()
    assert deps.amqp is not None
    health_watch = HealthWatch(grpc_server.health, {"database": database_check(deps.pool),
                                                    "rabbitmq": broker_check(deps.amqp)})
    health_watch.start()  # NOT_SERVING while PostgreSQL or RabbitMQ is down (GET /health answers 503 then)
    http = _Server(uvicorn.Config(create_app(deps), host=settings.gateway_host, port=settings.gateway_http_port,
                                  log_config=None, access_log=False, ws=WebSocketProtocol))
    http_task = asyncio.create_task(http.serve())
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait({http_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down")
    http.should_exit = True
    await http_task
    await health_watch.stop()
    await grpc_server.stop()
    await deps.stop()
    stop_task.cancel()
    if not stop.is_set():
        raise SystemExit("HTTP server stopped on its own (is the port taken?)")


if __name__ == "__main__":
    event_loop.run(main())
