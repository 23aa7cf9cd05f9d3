"""One gateway worker: the HTTP/WebSocket bridge (uvicorn) and the public gRPC API on the shared ports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator

import uvicorn

from gateway import workers
from gateway.audit_api import AuditServicer
from gateway.auth_grpc import AuthInterceptor
from gateway.deps import Dependencies
from gateway.grpc_api import PublicTilerServicer
from gateway.grpc_upscaling import FULL_NAME, UpscalingServicer, add_to_server
from gateway.http_app import create_app
from gateway.http_credentials import BackendCredentialsServicer
from gateway.tls import GatewayTls
from gateway.ws_protocol import WebSocketProtocol
from upscaling import metrics
from upscaling.config import Settings
from upscaling.grpc_server import GrpcServer, ServiceBinding, shutdown_event
from upscaling.health_watch import HealthWatch, broker_check, database_check
from upscaling.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    credentials_pb2,
    credentials_pb2_grpc,
    tiler_pb2,
    tiler_pb2_grpc,
)

log = logging.getLogger("gateway")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway stops HTTP and gRPC together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def main(settings: Settings, worker: int = 0, ws_deflate: bool = False) -> None:
    """One gateway worker until SIGTERM/SIGINT."""
    stop = shutdown_event()
    tls = GatewayTls.from_settings(settings)
    deps = Dependencies(settings)
    await deps.start()
    assert deps.tiler is not None and deps.pool is not None and deps.cluster_state is not None
    metrics.register("gateway", deps.cluster_state)
    grpc_server = GrpcServer(
        settings,
        [ServiceBinding(PublicTilerServicer(deps.tiler), tiler_pb2_grpc.add_TilerServiceServicer_to_server,
                        tiler_pb2.DESCRIPTOR.services_by_name["TilerService"].full_name),
         ServiceBinding(UpscalingServicer(deps.task_service(), deps.events_hub(), deps.watches, deps.sync),
                        add_to_server, FULL_NAME),
         ServiceBinding(AuditServicer(deps.task_service), audit_pb2_grpc.add_AuditServiceServicer_to_server,
                        audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name),
         ServiceBinding(BackendCredentialsServicer(deps.backend_credentials),
                        credentials_pb2_grpc.add_BackendCredentialsServiceServicer_to_server,
                        credentials_pb2.DESCRIPTOR.services_by_name["BackendCredentialsService"].full_name)],
        settings.gateway_host,
        settings.gateway_grpc_port,
        interceptors=[AuthInterceptor(deps.authenticator, deps.rate)],
        credentials=tls.grpc_credentials() if tls else None,
    )
    if tls and settings.gateway_plaintext_grpc_port:
        grpc_server.add_port(settings.gateway_host, settings.gateway_plaintext_grpc_port)
    await grpc_server.start()
    assert deps.amqp is not None
    health_watch = HealthWatch(grpc_server.health, {"database": database_check(deps.pool),
                                                    "rabbitmq": broker_check(deps.amqp)})
    health_watch.start()  # NOT_SERVING while PostgreSQL or RabbitMQ is down (GET /health answers 503 then)
    app = create_app(deps)
    listeners = [(settings.gateway_http_port, tls.uvicorn_options() if tls else {})]
    if tls and settings.gateway_plaintext_http_port:
        listeners.append((settings.gateway_plaintext_http_port, {}))
    # every worker binds its own socket of each port (SO_REUSEPORT): the kernel spreads the connections
    sockets = [workers.reuseport_socket(settings.gateway_host, port) for port, _ in listeners]
    servers = [_Server(uvicorn.Config(app, log_config=None, access_log=False, ws=WebSocketProtocol,
                                      ws_per_message_deflate=ws_deflate, **options)) for _, options in listeners]
    http_tasks = {asyncio.create_task(server.serve(sockets=[sock])) for server, sock in zip(servers, sockets,
                                                                                              strict=True)}
    hub = deps.events_hub()
    workers.install_retire(stop.set, hub.connected)  # (recycling: gateway.workers)
    log.info("gateway worker serving", extra={"worker": worker, "pid": os.getpid()})
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait({*http_tasks, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down")
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*http_tasks)
    await health_watch.stop()
    await grpc_server.stop()
    await deps.stop()
    stop_task.cancel()
    if not stop.is_set():
        raise SystemExit("HTTP server stopped on its own (is the port taken?)")
